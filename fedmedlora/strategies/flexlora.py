"""FlexLoRA (Bai et al., NeurIPS 2024, arXiv 2402.11505): each site trains at its own LoRA rank; the server averages
the products B_k A_k (exact, whatever the ranks) and keeps the best rank-R approximation (R = lora.r); each site is
sent its rank's truncated SVD factors (aggregation/hetero_rank.py).

A site's rank comes from `lora.site-ranks` (simulation) or its node config `lora-rank` (deployment); it says its rank
in every reply (`lora-rank`), which is how the server learns what to send it next. A node the server has not heard
from yet is sent the rank-R adapter and keeps its best rank-r part itself (the same factors, a larger message once).
The ranks heard are part of the run's per-round state, so a resumed run sends what an unbroken one would.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import ArrayRecord, MetricRecord

from ..aggregation.hetero_rank import hetero_rank_average, layout_at_rank, truncate
from .base import Reply, State
from .fedavg import LoraFedAvg


class LoraFlexLoRA(LoraFedAvg):
    keys = ("lora.site-ranks",)
    product = False
    site_ranks = True  # sites train at their own rank and report it

    def setup(self, job: Any) -> dict[str, Any]:
        self.node_ranks: dict[int, int] = {}
        self._by_rank: dict[int, tuple[ArrayRecord, ArrayRecord]] = {}
        return {"server-rank": self.settings.lora.r, "site-ranks": self.settings.site_ranks or "all at lora.r"}

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        # the ranks sites reported: a resumed run sends each site its rank's factors, as an unbroken run does
        return {}, {"node-ranks": {str(node): rank for node, rank in self.node_ranks.items()}}

    def load_state(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        self.node_ranks = {int(node): int(rank) for node, rank in info.get("node-ranks", {}).items()}

    def reply_rank(self, metrics: dict[str, Any]) -> int:
        rank = metrics.get("lora-rank")
        top = self.settings.lora.r
        if isinstance(rank, bool) or not isinstance(rank, (int, float)) or rank != int(rank) or not 0 < rank <= top:
            raise ValueError(f"metric 'lora-rank' missing or not a rank in 1..lora.r = {top}: {rank!r}")
        return int(rank)

    def reply_layout(self, metrics: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        return layout_at_rank(self.global_keys, self.reply_rank(metrics))

    def reply_base(self, metrics: dict[str, Any]) -> State:
        return truncate(self.global_state(), self.reply_rank(metrics))

    def node_rank(self, node: int) -> int | None:
        return getattr(self, "node_ranks", {}).get(node)

    def wire_record_for(self, node: int, arrays: ArrayRecord) -> ArrayRecord:
        rank = self.node_rank(node) or self.settings.lora.r
        if rank == self.settings.lora.r:
            return self.wire_record(arrays)
        cached = self._by_rank.get(rank)
        if cached is None or cached[0] is not arrays:
            cached = (arrays, self.encode_global(from_record_at_rank(arrays, rank), rank))
            self._by_rank[rank] = cached
        return cached[1]

    def aggregate_replies(self, server_round: int, replies: list[Reply]) -> tuple[State | None, MetricRecord | None]:
        for reply in replies:
            self.node_ranks[reply.node] = self.reply_rank(reply.metrics)
        self.recorder.round(server_round)["site-ranks"] = {reply.label: self.node_ranks[reply.node]
                                                           for reply in replies}
        return super().aggregate_replies(server_round, replies)

    def combine(self, server_round: int, states: list[State], weights: np.ndarray) -> State:
        aggregate, errors = hetero_rank_average(states, weights, self.settings.lora.r)
        values = list(errors.values())
        self.recorder.round(server_round)["lora-product"] = {
            "layers": len(values), "max-truncation-error": max(values, default=0.0),
            "mean-truncation-error": float(np.mean(values)) if values else 0.0}
        return aggregate


def from_record_at_rank(arrays: ArrayRecord, rank: int) -> State:
    from ..wire import from_array_record

    return truncate(from_array_record(arrays), rank)
