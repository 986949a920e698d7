"""Rows of the datasets a run names, for its task: the one entry point from dataset names to rows."""

from __future__ import annotations

from typing import Any

from .instruct import instruct_rows
from .ner import ner_rows
from .relations import re_rows

READERS = {"ner": ner_rows, "re": re_rows, "instruct": instruct_rows}


def load_rows(task: str, datasets: list[str]) -> list[dict[str, Any]]:
    """Rows of the named datasets (bundled names, files, or hub ids where the task takes them), in order."""
    if task not in READERS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(READERS)}")
    return READERS[task](list(datasets))
