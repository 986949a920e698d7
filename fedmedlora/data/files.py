"""Reading data files: the error every reader raises, text and JSONL access, and what a dataset entry names.

Every reader raises `DataFormatError` with the file and line, so a user fixes the file rather than reads a traceback.
"""

from __future__ import annotations

import codecs
import gzip
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, TextIO


class DataFormatError(ValueError):
    """A data file that cannot be read; the message names the file and line."""


def _open_bytes(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _open_text(path: Path) -> TextIO:
    # utf-8-sig: a leading byte-order mark (some editors write one) is not part of the first line
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its line end) of a UTF-8 text file, gzipped when its name ends in .gz.

    A binary or compressed file is named as such before any line is read (NUL bytes in its first 8 KiB, as `file`
    and git tell binary from text). Bytes that are not UTF-8 are reported with their line and column: the text
    decoder reads whole blocks and cannot say where, so on that error the file is read again line by line to find
    them.
    """
    path = Path(path)
    try:
        with _open_bytes(path) as fh:
            head = fh.read(8192)
        if head.startswith(b"\x1f\x8b"):
            raise DataFormatError(f"{path}: a gzip-compressed file: name it {path.name}.gz")
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise DataFormatError(f"{path}: UTF-16 text; save the file as UTF-8")
        if b"\0" in head:
            raise DataFormatError(f"{path}: a binary file, not text (it has NUL bytes)")
        with _open_text(path) as fh:
            try:
                for lineno, line in enumerate(fh, start=1):
                    yield lineno, line.rstrip("\r\n")
            except UnicodeDecodeError:
                raise DataFormatError(_where_not_utf8(path)) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataFormatError(f"{path}: not a readable gzip file ({err}); a name ending in .gz means gzip") from None
    except OSError as err:
        raise DataFormatError(f"{path}: cannot read: {err.strerror or err}") from None


def _where_not_utf8(path: Path) -> str:
    with _open_bytes(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                return (f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                        "save the file as UTF-8")
    return f"{path}: not UTF-8 text; save the file as UTF-8"


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, decoded record) for every non-blank line of a JSONL file (optionally gzipped)."""
    for lineno, line in text_lines(path):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno})") from None


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
