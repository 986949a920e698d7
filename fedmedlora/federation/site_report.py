"""What a site tells the server before round 1: label names and counts, as Flower records, and nothing else.

The server needs the label set (the head of an encoder, the checkpoints' labels) and per-site statistics for
`sites.json` (examples per split, entities or relations per type, sources). A site answers the server's QUERY with

- `site` (ConfigRecord): its name, how it holds data ("pool" partition or its "own" files), its partition-id
  (-1 if none) and `vocabulary`, the label names found in its rows;
- `counts` (MetricRecord): integers only, keyed `<split>-examples`, `<split>-entities/<type>`,
  `<split>-relations/<type>`, `<split>-candidate-pairs`, `sources/<dataset>`;
- `metrics`: the process figures every reply carries (process_stats.py).

No row, sentence, mention or file path is in it: a test checks the record holds only names and numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.app import ConfigRecord, MetricRecord

from ..data.sites import Site, site_statistics


def site_counts(site: Site, task: str, own: bool) -> dict[str, int]:
    """The site's statistics flattened to integer counts (an own-data site reports one source: itself)."""
    entry = site_statistics([site], task)[0]
    entry["sources"] = {site.name: sum(site.sources.values())} if own else entry["sources"]
    counts: dict[str, int] = {}
    for key, value in entry.items():
        if key in ("site", "name"):
            continue
        if isinstance(value, Mapping):
            counts.update({f"{key}/{sub}": int(n) for sub, n in value.items()})
        else:
            counts[key] = int(value)
    return counts


def site_records(site: Site, task: str, kind: str, partition_id: int, vocabulary: list[str]
                 ) -> tuple[ConfigRecord, MetricRecord]:
    own = kind == "own"
    description = ConfigRecord({"name": site.name, "kind": kind, "partition-id": int(partition_id),
                                "vocabulary": list(vocabulary)})
    return description, MetricRecord(site_counts(site, task, own))


def statistics_entry(index: int, description: Mapping[str, Any], counts: Mapping[str, Any], task: str
                     ) -> dict[str, Any]:
    """A `sites.json` entry (the shape data/sites.py's `site_statistics` gives) from a site's reply."""
    entry: dict[str, Any] = {"site": index, "name": str(description["name"]), "kind": str(description["kind"]),
                             "sources": {}}
    groups = {"ner": ("entities",), "re": ("relations",)}.get(task, ())
    for split in ("train", "val", "test"):  # a split without any entity or relation still lists its group
        entry.update({f"{split}-{group}": {} for group in groups})
    for key, value in sorted(counts.items()):
        if "/" in key:
            group, sub = key.split("/", 1)
            entry.setdefault(group, {})[sub] = int(value)
        else:
            entry[key] = int(value)
    return entry
