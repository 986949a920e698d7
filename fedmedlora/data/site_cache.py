"""A site's rows and tokenized splits kept on the site's own disk, named by what they were made from.

A deployed SuperNode runs each message in a fresh process: without this, every message re-reads the site's files
(or re-partitions the bundled pool), re-splits and re-tokenizes them. With it, the first process writes

    <cache>/site-rows/<key>/rows.json        the site's train/val/test rows, name and sources
    <cache>/tokenized/<key>/                  one split tokenized for one model (datasets.save_to_disk)

and later processes read them back; `datasets.load_from_disk` memory-maps the Arrow files, so a large split costs
neither a copy nor a parse. Keys (local_cache.digest) cover the content of the input files and every setting that
shapes the result, so a changed file, tokenizer, label set or setting makes a new entry instead of a stale hit.
The cache never leaves the site; delete the folder to reclaim the space.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedmedlora_data import DATA_ROOT

from ..local_cache import digest, file_digest, files_digest, published
from ..settings import Settings
from .files import user_path
from .sites import Site

# What shapes a site's split beyond its input rows (data.datasets and partitioning only matter for the pool).
HOLD_OUT_KEYS = ("data.task", "run.seed", "data.val-fraction", "data.test-fraction", "data.max-train-examples",
                 "data.max-eval-examples")
POOL_KEYS = ("data.datasets", "data.num-sites", "data.partitioning", "data.partition-by", "data.dirichlet-alpha")

_BUNDLED: list[tuple[str, str]] = []


def bundled_digest() -> list[tuple[str, str]]:
    """Content digests of every bundled data file (about 10 MB, hashed once per process)."""
    if not _BUNDLED:
        files = sorted(p for p in DATA_ROOT.rglob("*") if p.is_file() and p.suffix in (".gz", ".json", ".txt"))
        _BUNDLED.extend((str(p.relative_to(DATA_ROOT)), file_digest(p)) for p in files)
    return _BUNDLED


def pool_site_key(settings: Settings, site_id: int) -> str:
    """Site `site_id` of the bundled pool partitioned as the settings say."""
    user_files = [p for p in (user_path(n) for n in settings.datasets) if p is not None and p.is_file()]
    return digest("pool-site", site_id, [settings[k] for k in HOLD_OUT_KEYS + POOL_KEYS], bundled_digest(),
                  files_digest(user_files))


def own_site_key(settings: Settings, paths: list[Path], name: str) -> str:
    """A site's own files, split on that site."""
    return digest("own-site", name, [settings[k] for k in HOLD_OUT_KEYS], files_digest(paths))


def tokenizer_digest(tokenizer: Any) -> str:
    """The tokenizer's content: its full serialized form (vocabulary, merges, normalizer) and special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return digest(type(tokenizer).__name__, body, tokenizer.padding_side, tokenizer.pad_token_id,
                  tokenizer.eos_token_id, getattr(tokenizer, "bos_token_id", None))


class SiteCache:
    """Rows and tokenized splits of sites under one cache root (see the module docstring)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def site(self, key: str, build: Callable[[], Site]) -> tuple[Site, bool]:
        """The site stored under `key`, or `build()` stored there first; True when it came from the cache."""
        made: list[Site] = []

        def write(folder: Path) -> None:
            site = build()
            made.append(site)
            payload = {"site_id": site.site_id, "name": site.name, "sources": site.sources,
                       "train": site.train, "val": site.val, "test": site.test}
            (folder / "rows.json").write_text(json.dumps(payload), encoding="utf-8")

        entry, hit = published(self.root / "site-rows" / key, write)
        if made:
            site = made[0]
        else:
            payload = json.loads((entry / "rows.json").read_text(encoding="utf-8"))
            site = Site(payload["site_id"], payload["name"], payload["train"], payload["val"], payload["test"],
                        payload["sources"])
        site.content_key = key
        return site, hit

    def store_site(self, key: str, site: Site) -> None:
        """Keep an already built site (the pool's other sites, computed anyway when one is partitioned out)."""
        self.site(key, lambda: site)

    def tokenized(self, key: str, build: Callable[[], Any]) -> tuple[Any, bool]:
        """The tokenized split stored under `key` (memory-mapped), or `build()` saved there first."""
        import datasets

        def write(folder: Path) -> None:
            build().save_to_disk(str(folder / "dataset"))

        entry, hit = published(self.root / "tokenized" / key, write)
        return datasets.load_from_disk(str(entry / "dataset")), hit
