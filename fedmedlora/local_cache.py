"""This machine's cache folder, content digests, and entries published whole or not at all.

In a deployment every message to a site runs in a fresh ClientApp process (Flower 1.42 starts one per message), so
what a site computes once (its rows split into train/val/test, the tokenized splits, a converted base model) is kept
on the site's own disk, under a name derived from the *content* it was made from: a changed file, tokenizer or
setting gives a new name, never a stale hit. Entries are written to a temporary folder and renamed into place under a
file lock, so a process killed mid-write leaves no half entry and concurrent processes build an entry once.

The root is the node config's `cache-dir`, else $FEDMEDLORA_CACHE, else $XDG_CACHE_HOME/fedmedlora (~/.cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def machine_cache_root() -> Path:
    """This machine's cache: where models built or converted offline live, and sites' caches by default
    (`FEDMEDLORA_CACHE`, else `$XDG_CACHE_HOME/fedmedlora`)."""
    root = os.environ.get("FEDMEDLORA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "fedmedlora")
    return Path(root)


def cache_root(override: str | None = None) -> Path:
    """`override` (a node config's cache-dir), else the machine's cache."""
    return Path(os.path.expanduser(override)) if override else machine_cache_root()


def digest(*parts: Any) -> str:
    """A short stable name for JSON-able `parts` (sha256, 24 hex digits)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def sha256_of_file(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 16 MiB blocks (model files are gigabytes)."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            sha.update(block)
    return sha.hexdigest()


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, remembered per (path, size, mtime) for this process."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        _FILE_DIGESTS[key] = sha256_of_file(path)
    return _FILE_DIGESTS[key]


def files_digest(paths: Iterable[str | Path]) -> list[tuple[str, str]]:
    """(file name, content digest) of each file, in order: what a cache key needs of input files."""
    return [(Path(p).name, file_digest(p)) for p in paths]


def published(entry: Path, build: Callable[[Path], None]) -> tuple[Path, bool]:
    """`entry`, built by `build(tmp_folder)` unless it exists; returns (entry, True if it was already there)."""
    from filelock import FileLock

    done = entry / "COMPLETE"
    if done.exists():
        return entry, True
    entry.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(entry) + ".lock"):
        if done.exists():
            return entry, True
        tmp = entry.with_name(f"{entry.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            build(tmp)
            (tmp / "COMPLETE").write_text("")
            shutil.rmtree(entry, ignore_errors=True)  # a half entry left by a killed writer of an older version
            os.replace(tmp, entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return entry, False
