"""Which site this SuperNode is, from its node config, and the job that serves it in this process.

Node-config keys (`flower-supernode --node-config '...'`, or set by the simulation):

| key | meaning |
|---|---|
| `partition-id`, `num-partitions` | partition k of the pool `data.datasets` names, split as data/sites.py does (the simulation sets them; a deployment may use them for trials on public data) |
| `data-path` | this site's own file(s), absolute, comma-separated, in any format the task's reader takes: the site reads these and nothing else (data/own_site.py) |
| `site-name` | with `data-path`: the site's name in the results (default: the first file's name without its suffixes) |
| `cache-dir` | where the site keeps its rows, tokenized splits and converted base model (default: $FEDMEDLORA_CACHE, else ~/.cache/fedmedlora) |
| `cache` | `false`: keep nothing on disk |

A ClientApp process keeps what it built (the site's rows, its job) for the next message it serves: the simulation's
long-lived workers reuse it across rounds and nodes; a deployment's one-message processes read the disk cache
instead (data/site_cache.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.files import source_name
from ..data.own_site import own_paths, own_site
from ..data.site_cache import SiteCache, own_site_key, pool_site_key
from ..data.sites import Site, load_sites
from ..job import Job, resolve_family
from ..local_cache import cache_root
from ..settings import ConfigError, Settings
from ..tasks.registry import task_class

POOL, OWN = "pool", "own"


@dataclass(frozen=True)
class NodeSite:
    """Where a node's site data comes from (hashable: it keys this process's caches)."""

    kind: str  # POOL (a partition of data.datasets) or OWN (the node's data-path files)
    partition_id: int  # the pool partition, or an own-data site's partition-id if the operator gave one, else -1
    paths: tuple[str, ...]
    name: str
    cache_dir: str  # "" when the site keeps nothing on disk


def node_site(node_config: Mapping[str, Any], settings: Settings) -> NodeSite:
    """This node's site from its node config; a ConfigError names the key and value that cannot work."""
    cache_dir = "" if node_config.get("cache") is False else str(cache_root(node_config.get("cache-dir") or None))
    partition = node_config.get("partition-id")
    if partition is not None and (isinstance(partition, bool) or not isinstance(partition, int) or partition < 0):
        raise ConfigError([f"node config 'partition-id' = {partition!r}: expected a non-negative integer"])
    if "data-path" in node_config:
        data_path = node_config["data-path"]
        if not isinstance(data_path, str):
            raise ConfigError([f"node config 'data-path' = {data_path!r}: expected a quoted path, e.g. "
                               "--node-config 'data-path=\"/data/site.tsv\"'"])
        paths = own_paths(data_path)
        name = str(node_config.get("site-name") or source_name(paths[0]))
        return NodeSite(OWN, -1 if partition is None else partition, tuple(map(str, paths)), name, cache_dir)
    if partition is None:
        raise ConfigError(["this SuperNode's node config names no data: start it with "
                           "--node-config 'data-path=\"/path/to/this/site.tsv\"' (its own data) or "
                           "--node-config \"partition-id=<k> num-partitions=<n>\" (a partition of data.datasets)"])
    count = int(node_config.get("num-partitions", settings.data.num_sites))
    if count != settings.data.num_sites:
        raise ConfigError([f"key 'data.num-sites' = {settings.data.num_sites}, but the federation has {count} "
                           f"SuperNodes: run with --federation-config \"num-supernodes={settings.data.num_sites}\" "
                           "(`fedmedlora run` sets it for you)"])
    if partition >= count:
        raise ConfigError([f"node config 'partition-id' = {partition}: must be below num-partitions = {count}"])
    return NodeSite(POOL, partition, (), f"site{partition}", cache_dir)


# This process's memory of what it built (one run config at a time).
_POOL: dict[Settings, list[Site]] = {}
_SITES: dict[tuple[Settings, NodeSite], tuple[Site, str]] = {}
_JOBS: dict[tuple[Settings, NodeSite, tuple[str, ...]], Job] = {}


def forget_sites() -> None:
    """Drop every site and job this process built: what a new ClientApp process starts without (tests, benches)."""
    for memo in (_POOL, _SITES, _JOBS):
        memo.clear()


def _forget_other_runs(settings: Settings) -> None:
    for memo in (_POOL, _SITES, _JOBS):
        for key in [k for k in memo if (k if isinstance(k, Settings) else k[0]) != settings]:
            del memo[key]


def load_node_site(node: NodeSite, settings: Settings) -> tuple[Site, str]:
    """(the node's site, where it came from: "memory", "disk cache" or "read")."""
    _forget_other_runs(settings)
    if (settings, node) in _SITES:
        return _SITES[(settings, node)][0], "memory"
    cache = SiteCache(Path(node.cache_dir)) if node.cache_dir else None
    if node.kind == OWN:
        paths = [Path(p) for p in node.paths]
        build = lambda: own_site(settings, paths, node.name)  # noqa: E731
        key = own_site_key(settings, paths, node.name)
    else:
        def build() -> Site:
            return pool_sites(settings)[node.partition_id]

        key = pool_site_key(settings, node.partition_id)
    if cache is None:
        site, origin = build(), "read"
        site.content_key = ""
    else:
        site, hit = cache.site(key, build)
        origin = "disk cache" if hit else "read"
    _SITES[(settings, node)] = (site, origin)
    return site, origin


def pool_sites(settings: Settings) -> list[Site]:
    """Every site of the bundled pool, partitioned once per process (a simulation worker serves many)."""
    _forget_other_runs(settings)
    if settings not in _POOL:
        _POOL[settings] = load_sites(settings)
    return _POOL[settings]


def pool_vocabulary(settings: Settings) -> list[str]:
    """The label set of the whole pool (what every partition uses when no server says otherwise)."""
    rows = [r for site in pool_sites(settings) for split in ("train", "val", "test") for r in site.split(split)]
    return task_class(settings, resolve_family(settings)).vocabulary(rows)


def client_job(settings: Settings, node: NodeSite, vocabulary: Sequence[str]) -> Job:
    """The job of this node's site with the agreed label set, kept for the next message this process serves."""
    site, _ = load_node_site(node, settings)
    key = (settings, node, tuple(vocabulary))
    if key not in _JOBS:
        cache = SiteCache(Path(node.cache_dir)) if node.cache_dir else None
        _JOBS[key] = Job(settings, sites=[site], vocabulary=list(vocabulary), cache=cache)
    return _JOBS[key]
