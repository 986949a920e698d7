"""The counts the server holds for a node (training examples, training tokens), against which a reply's claimed
weight is capped (`strategy.weight-cap`).

One small interface, `SiteCounts.counts_for(node, claimed_site)`. The source, in simulation and deployment alike,
is `ReportedCounts`: what each node reported before round 1 (its QUERY reply, server_app.reported_counts), by node
id, since the server never reads a site's data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class UnknownCounts(LookupError):
    """The server holds no counts for this node; the message says why."""


class SiteCounts(Protocol):
    def counts_for(self, node: int, claimed_site: int | None) -> Mapping[str, float]:
        """The counts held for `node` ('num-examples', 'num-tokens'); raises UnknownCounts."""


class ReportedCounts:
    """Counts reported by the nodes themselves before training, by node id."""

    def __init__(self, counts: Mapping[int, Mapping[str, float]]):
        self.counts = {int(node): dict(c) for node, c in counts.items()}

    def counts_for(self, node: int, claimed_site: int | None) -> Mapping[str, float]:
        if node not in self.counts:
            raise UnknownCounts("the node reported no counts before round 1")
        return self.counts[node]
