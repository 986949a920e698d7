"""The server's picture of the federation, asked of the sites before round 1: who is which site, the label set.

The ServerApp reads no site data. Instead it sends every connected SuperNode a QUERY message and each site answers
with its name, how it holds data, its label names and its counts (site_report.py). From the replies the roster

- places each site: index = its partition-id where the node config gives one, the rest in order of their names;
- agrees the label set: `data.labels` when given (a site reporting a label outside it stops the run, naming the
  site and the labels), else the union of what the sites report (the task's own order: sorted, "none" first
  for relations), which is what a pooled reading of the same rows gives;
- gives `sites.json` its entries, and every later message the `site-nodes` list (site order) and the `labels`.

Problems (a site that cannot read its data, two sites with one name or partition-id, too few sites) stop the run
here, before any model is loaded, with the site's own error message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from ..settings import ConfigError, Settings
from .site_report import statistics_entry


@dataclass
class SiteEntry:
    node: int
    index: int
    name: str
    kind: str
    partition_id: int
    vocabulary: list[str]
    statistics: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Roster:
    sites: list[SiteEntry]  # in site order
    vocabulary: list[str]

    @property
    def nodes(self) -> list[int]:
        return [site.node for site in self.sites]

    @property
    def all_pool(self) -> bool:
        """Every site is a partition of the bundled pool (a simulation, or a trial on public data)."""
        return all(site.kind == "pool" for site in self.sites)

    def index_of(self, node: int) -> int | None:
        return next((s.index for s in self.sites if s.node == node), None)

    def message_config(self) -> dict[str, Any]:
        """What every message to a site carries besides the round's own settings."""
        return {"site-nodes": [str(node) for node in self.nodes], "labels": list(self.vocabulary)}

    def statistics(self) -> list[dict[str, Any]]:
        return [site.statistics for site in self.sites]


def _first_lines(text: str, lines: int = 6) -> str:
    return "\n    ".join(text.strip().splitlines()[-lines:])


def query_sites(grid: Grid, node_ids: Iterable[int], timeout: float) -> list[Message]:
    """Each node's answer to the QUERY (describe your site)."""
    messages = [Message(RecordDict({"config": ConfigRecord({"describe": "site"})}), dst_node_id=node,
                        message_type=MessageType.QUERY) for node in node_ids]
    return list(grid.send_and_receive(messages, timeout=timeout))


def build_roster(settings: Settings, replies: list[Message], node_ids: list[int], union: Any) -> Roster:
    """The roster from the sites' replies; `union(list of vocabularies)` is the task's label-set union."""
    problems: list[str] = []
    answered = {int(m.metadata.src_node_id): m for m in replies}
    described: list[tuple[int, dict[str, Any], dict[str, Any], dict[str, Any]]] = []
    for node in node_ids:
        msg = answered.get(node)
        if msg is None:
            problems.append(f"SuperNode {node} did not describe its site within strategy.round-timeout")
        elif msg.has_error():
            problems.append(f"SuperNode {node} cannot serve its site:\n    {_first_lines(msg.error.reason)}")
        else:
            content = msg.content
            metrics = dict(content["metrics"]) if "metrics" in content else {}
            described.append((node, dict(content["site"]), dict(content["counts"]), metrics))
    wanted, needed = settings.data.num_sites, settings.strategy.min_replies
    if len(described) > wanted:
        problems.append(f"key 'data.num-sites' = {wanted}, but {len(described)} SuperNodes describe a site: start "
                        "exactly one SuperNode per site")
    elif not problems and len(described) < needed:
        problems.append(f"key 'data.num-sites' = {wanted}, but {len(described)} sites described themselves "
                        f"(strategy.min-replies = {needed} needed to start): start one SuperNode per site")
    if problems:
        raise ConfigError(problems, "federation")
    described.sort(key=lambda d: (d[1]["partition-id"] < 0, d[1]["partition-id"], d[1]["name"], d[0]))
    names = [d[1]["name"] for d in described]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"two sites are named {name!r}: give each SuperNode its own --node-config site-name")
    placed = [d[1]["partition-id"] for d in described if d[1]["partition-id"] >= 0]
    for pid in sorted({p for p in placed if placed.count(p) > 1}):
        problems.append(f"two SuperNodes have node config partition-id = {pid}")
    for pid in placed:
        if pid >= settings.data.num_sites:
            problems.append(f"node config partition-id = {pid}, but key 'data.num-sites' = {settings.data.num_sites}")
    free = iter(sorted(set(range(len(described))) - set(placed)))
    sites = []
    for node, description, counts, metrics in described:
        pid = int(description["partition-id"])
        index = pid if pid >= 0 else next(free, -1)
        vocabulary = [str(v) for v in description["vocabulary"]]
        sites.append(SiteEntry(node, index, str(description["name"]), str(description["kind"]), pid, vocabulary,
                               statistics_entry(index, description, counts, settings.data.task), metrics))
    sites.sort(key=lambda s: s.index)
    if settings.labels:
        vocabulary = settings.labels
        for site in sites:
            unknown = [label for label in site.vocabulary if label not in vocabulary]
            if unknown:
                problems.append(f"key 'data.labels' = {settings.data.labels!r}: site {site.name!r} has "
                                f"{', '.join(map(repr, unknown))} in its data")
    else:
        vocabulary = list(union([site.vocabulary for site in sites]))
    if problems:
        raise ConfigError(problems, "federation")
    return Roster(sites, vocabulary)
