"""FedAvg over the LoRA adapters (Fed-MedLoRA), weighted by examples or training tokens.

`strategy.lora-aggregation` picks how a LoRA layer is combined: `factors` averages A and B separately (the seeds'
rule); `product` averages the updates B·A and refactors them to rank r by truncated SVD (the exact average, see
`aggregation/lora_product.py`). Other tensors (a token classifier's head) are averaged plainly either way.
Fed-MedLoRA+ (`fed_medlora_plus.py`) reuses this class with other client weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from flwr.app import MetricRecord
from flwr.serverapp.strategy import FedAvg

from ..aggregation.lora_product import product_average_with_errors
from ..aggregation.weighted import normalised_weights, weighted_average
from .base import LoraStrategyMixin, Reply, State


class LoraFedAvg(LoraStrategyMixin, FedAvg):
    """Weighted average in float64 of float32 client adapters (Flower's own FedAvg averages in the wire dtype)."""

    keys = ("strategy.lora-aggregation",)
    product = True

    def aggregate_replies(self, server_round: int, replies: list[Reply]) -> tuple[State | None, MetricRecord | None]:
        kept, weights = self.aggregation_weights(server_round, replies)
        if not self.enough_replies(server_round, len(kept)):
            return None, None
        replies = [replies[i] for i in kept]
        normalised = normalised_weights(weights, len(replies))
        self.recorder.round(server_round)["weights"] = {str(r.node): float(w) for r, w in zip(replies, normalised)}
        return self.combine(server_round, [r.state for r in replies], normalised), self.client_metrics(replies)

    def aggregation_weights(self, server_round: int, replies: list[Reply]) -> tuple[list[int], Sequence[float]]:
        """(indices of the replies to aggregate, their weights): here every reply, weighted by the weight metric;
        under site-level DP every site counts once (the noise is calibrated to a uniform mean's sensitivity)."""
        if self.settings.privacy.dp == "site":
            return list(range(len(replies))), [1.0] * len(replies)
        return list(range(len(replies))), [float(r.metrics[self.weighted_by_key]) for r in replies]

    def combine(self, server_round: int, states: list[State], weights: np.ndarray) -> State:
        if self.settings.strategy.lora_aggregation == "factors":
            return weighted_average(states, weights)
        aggregate, errors = product_average_with_errors(states, weights)
        values = list(errors.values())
        self.recorder.round(server_round)["lora-product"] = {
            "layers": len(values),
            "max-truncation-error": max(values, default=0.0),
            "mean-truncation-error": float(np.mean(values)) if values else 0.0,
        }
        return aggregate
