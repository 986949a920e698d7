"""A site's own data: the file(s) a SuperNode names in its node config, read and split on that site alone.

This is how a hospital joins a deployment: `--node-config 'data-path="/data/ner.tsv"'` (several files joined by
commas; any format the task's reader takes, see data/rows.py). Nothing else is read: not the bundled pool, not
another site's file. The site holds out its own validation and test rows as data/sites.py does for a partition
(`data.val-fraction`, `data.test-fraction`, the caps), shuffled with the run seed and the site's name, so every
process of the site (one per message in a deployment) cuts the same split.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..settings import Settings
from .files import DataFormatError
from .rows import load_rows
from .sites import Site, hold_out


def own_paths(data_path: str) -> list[Path]:
    """The files of a node config's `data-path` (comma-separated), checked to exist."""
    paths = []
    for name in (p.strip() for p in data_path.split(",")):
        if not name:
            continue
        path = Path(name).expanduser()
        if not path.is_absolute():
            raise DataFormatError(f"node config 'data-path' = {data_path!r}: {name!r} is relative; give absolute "
                                  "paths (a ClientApp does not run in the directory the SuperNode was started in)")
        if not path.is_file():
            raise DataFormatError(f"node config 'data-path' = {data_path!r}: file {name!r} does not exist")
        paths.append(path)
    if not paths:
        raise DataFormatError(f"node config 'data-path' = {data_path!r} names no file")
    return paths


def own_site(settings: Settings, paths: list[Path], name: str) -> Site:
    """The site of these files: every row read with the task's reader, then this site's held-out splits."""
    rows = load_rows(settings.data.task, [str(p) for p in paths])
    if len(rows) < 3:
        raise DataFormatError(f"node config 'data-path': {', '.join(map(str, paths))} hold {len(rows)} rows for "
                              f"task {settings.data.task!r}: too few to hold out a validation and a test split")
    train, val, test = hold_out(rows, settings, f"{settings.run.seed}/{name}")
    return Site(-1, name, train, val, test, dict(Counter(r["source"] for r in rows)))
