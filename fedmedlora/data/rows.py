"""Rows of the datasets a run names, for its task: the one entry point from dataset names to rows."""

from __future__ import annotations

from typing import Any

from .entries import entry_rows


def load_rows(task: str, datasets: list[str]) -> list[dict[str, Any]]:
    """Rows of the named datasets (bundled names, files, or hub ids where the task takes them), in order; each entry
    is checked and read by `entries.entry_rows`."""
    rows: list[dict[str, Any]] = []
    for name in datasets:
        rows.extend(entry_rows(task, name))
    return rows
