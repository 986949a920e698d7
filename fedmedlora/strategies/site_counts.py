"""The counts the server holds for a node (training examples, training tokens), against which a reply's claimed
weight is capped (`strategy.weight-cap`).

One small interface, `SiteCounts.counts_for(node, claimed_site)`, so either source plugs in:
- `PartitionCounts` (simulation): the server builds the same sites as the ClientApps from the same run config, so
  it knows each partition's counts. A node is bound to the site it claims first; a node claiming another site
  later, or a second node claiming a bound site, gets no counts (its reply is left out).
- `ReportedCounts` (deployment): the counts each node reported before round 1, by node id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol


class UnknownCounts(LookupError):
    """The server holds no counts for this node; the message says why."""


class SiteCounts(Protocol):
    def counts_for(self, node: int, claimed_site: int | None) -> Mapping[str, float]:
        """The counts held for `node` ('num-examples', 'num-tokens'); raises UnknownCounts."""


class PartitionCounts:
    """Counts of the simulation's partitions, computed on first use: `count(site, key)` gives one number."""

    def __init__(self, num_sites: int, count: Callable[[int, str], float]):
        self.num_sites = num_sites
        self._count = count
        self._cache: dict[tuple[int, str], float] = {}
        self._site_of: dict[int, int] = {}
        self._node_of: dict[int, int] = {}

    @classmethod
    def from_job(cls, job: Any) -> "PartitionCounts":
        """What the ClientApp reports for a site (client_app.train), computed the same way from the server's job."""

        def count(site: int, key: str) -> float:
            dataset = job.tokenized(site, "train")
            return float(len(dataset) if key == "num-examples" else job.task.count_tokens(dataset))

        return cls(len(job.sites), count)

    def counts_for(self, node: int, claimed_site: int | None) -> Mapping[str, float]:
        if claimed_site is None or not 0 <= claimed_site < self.num_sites:
            raise UnknownCounts(f"metric 'site' = {claimed_site!r} is not a site of this run (0 to "
                                f"{self.num_sites - 1})")
        bound_site = self._site_of.get(node)
        if bound_site is not None and bound_site != claimed_site:
            raise UnknownCounts(f"node claims site {claimed_site}, but played site {bound_site} before")
        bound_node = self._node_of.get(claimed_site)
        if bound_node is not None and bound_node != node:
            raise UnknownCounts(f"site {claimed_site} is played by node {bound_node}")
        self._site_of[node], self._node_of[claimed_site] = claimed_site, node
        return _LazyCounts(self, claimed_site)

    def count(self, site: int, key: str) -> float:
        if (site, key) not in self._cache:
            self._cache[(site, key)] = self._count(site, key)
        return self._cache[(site, key)]


class _LazyCounts(Mapping[str, float]):
    """A site's counts, each computed when first read (the token count needs the site's split tokenized)."""

    KEYS = ("num-examples", "num-tokens")

    def __init__(self, source: PartitionCounts, site: int):
        self.source, self.site = source, site

    def __getitem__(self, key: str) -> float:
        if key not in self.KEYS:
            raise KeyError(key)
        return self.source.count(self.site, key)

    def __iter__(self):
        return iter(self.KEYS)

    def __len__(self) -> int:
        return len(self.KEYS)


class ReportedCounts:
    """Counts reported by the nodes themselves before training, by node id."""

    def __init__(self, counts: Mapping[int, Mapping[str, float]]):
        self.counts = {int(node): dict(c) for node, c in counts.items()}

    def counts_for(self, node: int, claimed_site: int | None) -> Mapping[str, float]:
        if node not in self.counts:
            raise UnknownCounts("the node reported no counts before round 1")
        return self.counts[node]
