"""Sites: the pooled rows split among simulated hospitals, each with its own train/validation/test split.

Partitioning goes through flwr-datasets partitioners (IID, Dirichlet over a column, natural ids) on the pooled rows,
shuffled with the run seed first (flwr's IID partitioner takes contiguous shards). Each site then holds out its own
validation and test rows, so every site is evaluated on data like its own. The server and every client compute the
same split from the same settings (the job that asks keeps them).
"""

from __future__ import annotations

import random
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..settings import ConfigError, Settings
from .relation_fields import relation_counts
from .rows import load_rows


@dataclass
class Site:
    site_id: int  # index in the federation; -1 for a site's own data until the server places it (own_site.py)
    name: str  # natural id (source) for natural partitioning, else "site<k>"; a site's own data: its name
    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    test: list[dict[str, Any]]
    sources: dict[str, int] = field(default_factory=dict)
    content_key: str = ""  # digest of what the rows were made from (site_cache.py), "" when not computed

    def split(self, name: str) -> list[dict[str, Any]]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def _partitioner(settings: Settings, columns: list[str]) -> Any:
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, NaturalIdPartitioner

    kind = settings.data.partitioning
    sites = settings.data.num_sites
    if kind == "iid":
        return IidPartitioner(num_partitions=sites)
    column = settings.data.partition_by if kind == "dirichlet" else "source"
    if column not in columns:
        raise ConfigError([f"key 'data.partition-by' = {column!r}: no such column; rows of task "
                           f"{settings.data.task!r} have {sorted(c for c in columns if c != 'uid')}"])
    if kind == "natural":
        return NaturalIdPartitioner(partition_by="source")
    return DirichletPartitioner(
        num_partitions=sites,
        partition_by=column,
        alpha=settings.data.dirichlet_alpha,
        min_partition_size=10,
        self_balancing=False,
        shuffle=True,
        seed=settings.run.seed,
    )


def hold_out(rows: list[dict[str, Any]], settings: Settings, seed: int | str) -> tuple[list, list, list]:
    """(train, val, test) of one site's rows: shuffled with `seed`, the fractions held out, the caps applied."""
    rng = random.Random(seed)
    rows = list(rows)
    rng.shuffle(rows)
    n_test = round(len(rows) * settings.data.test_fraction)
    n_val = round(len(rows) * settings.data.val_fraction)
    test, val, train = rows[:n_test], rows[n_test:n_test + n_val], rows[n_test + n_val:]
    if cap := settings.data.max_train_examples:
        train = train[:cap]
    if cap := settings.data.max_eval_examples:
        val, test = val[:cap], test[:cap]
    return train, val, test


def load_sites(settings: Settings, rows: list[dict[str, Any]] | None = None) -> list[Site]:
    """Every site's rows, split as the data settings and the run seed say; `rows` are those of data.datasets when
    the caller has read them already."""
    import datasets

    if rows is None:
        rows = load_rows(settings.data.task, settings.datasets)
    pool = datasets.Dataset.from_list(rows).shuffle(seed=settings.run.seed)
    partitioner = _partitioner(settings, pool.column_names)
    partitioner.dataset = pool
    if settings.data.partitioning == "natural" and partitioner.num_partitions != settings.data.num_sites:
        natural = sorted(set(pool["source"]))
        raise ConfigError([f"key 'data.num-sites' = {settings.data.num_sites}: natural partitioning of "
                           f"{settings['data.datasets']!r} gives {len(natural)} sites ({', '.join(natural)})"])
    sites = []
    for site_id in range(settings.data.num_sites):
        try:
            with warnings.catch_warnings():  # its retries warn once per draw; the error below says it all
                warnings.filterwarnings("ignore", message="The specified min_partition_size")
                part = partitioner.load_partition(site_id)
        except ValueError as err:  # flwr-datasets' Dirichlet sampler gives up after 10 draws with a too-small site
            raise ConfigError([f"keys 'data.dirichlet-alpha' = {settings.data.dirichlet_alpha}, 'data.num-sites' = "
                               f"{settings.data.num_sites}: Dirichlet partitioning of {len(rows)} rows found no "
                               f"split giving every site 10 rows ({err}); raise data.dirichlet-alpha or lower "
                               "data.num-sites"]) from None
        part_rows = part.to_list()
        if len(part_rows) < 3:
            fix = "raise data.dirichlet-alpha or lower" if settings.data.partitioning == "dirichlet" else "lower"
            raise ConfigError([f"key 'data.num-sites' = {settings.data.num_sites}: site {site_id} receives "
                               f"{len(part_rows)} of the {len(rows)} rows (data.partitioning = "
                               f"{settings.data.partitioning!r}), too few to hold out validation and test rows; "
                               f"{fix} data.num-sites"])
        name = (partitioner.partition_id_to_natural_id[site_id]
                if settings.data.partitioning == "natural" else f"site{site_id}")
        train, val, test = hold_out(part_rows, settings, settings.run.seed * 1009 + site_id)
        sites.append(Site(site_id, str(name), train, val, test, dict(Counter(r["source"] for r in part_rows))))
    return sites


def site_statistics(sites: list[Site], task: str) -> list[dict[str, Any]]:
    """Per-site counts printed and saved at the start of a run."""
    stats = []
    for site in sites:
        entry: dict[str, Any] = {"site": site.site_id, "name": site.name, "sources": site.sources}
        for split in ("train", "val", "test"):
            rows = site.split(split)
            entry[f"{split}-examples"] = len(rows)
            if task == "ner":
                entry[f"{split}-entities"] = dict(sorted(Counter(
                    t[2:] for r in rows for t in r["tags"] if t.startswith("B-")).items()))
            elif task == "re":  # examples are text units; relations are what is learned and scored
                entry[f"{split}-relations"] = relation_counts(rows)
                entry[f"{split}-candidate-pairs"] = sum(len(r["pairs"]) for r in rows)
        stats.append(entry)
    return stats
