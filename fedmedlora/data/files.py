"""Reading data files: the error every reader raises, text and JSONL access, and what a dataset entry names.

Every reader raises `DataFormatError` with the file and line, so a user fixes the file rather than reads a traceback.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO


class DataFormatError(ValueError):
    """A data file that cannot be read; the message names the file and line."""


def open_text(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, decoded record) for every non-blank line of a JSONL file (optionally gzipped)."""
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as err:
                raise DataFormatError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None


FILE_SUFFIXES = {".gz", ".tsv", ".conll", ".txt", ".jsonl", ".json", ".bio", ".iob", ".pubtator"}


def source_name(path: Path) -> str:
    """A file's name without its data suffixes: the site name of a user's file under natural partitioning."""
    name = path.name
    for suffix in (".gz", ".tsv", ".conll", ".txt", ".jsonl", ".json", ".bio", ".pubtator"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def user_path(name: str) -> Path | None:
    """The file a dataset entry names; None when it reads as a hub id ("org/name") rather than a path."""
    path = Path(os.path.expanduser(name))
    if path.exists():
        return path.resolve()
    looks_like_file = name.startswith(("/", ".", "~")) or path.suffix in FILE_SUFFIXES or name.count("/") != 1
    return path.resolve() if looks_like_file else None


def missing_file(name: str, path: Path) -> DataFormatError:
    return DataFormatError(
        f"key 'data.datasets': file {name!r} does not exist (looked at {path}). Relative paths resolve against the "
        "working directory of the process reading them: use absolute paths (`fedmedlora run` makes them absolute)."
    )
