"""Fed-MedLoRA+ (Fed-MedLoRA seed): clients weighted by their adapter's loss on a server-held validation set.

Each round the server scores every usable reply's adapter on the pooled validation set (`server_validation.py`)
and weights client k by softmax(-L_k / T) (`strategy.validation-weighting = "seed"`: the seed's
exp(1 - L_k) / sum_j exp(1 - L_j) at T = 1, data size ignored) or by n_k softmax(-L_k / T) ("size-weighted": the
paper's "data size x validation utility", n from `strategy.weight-by`). The weighted average then combines the
adapters as FedAvg does (`strategy.lora-aggregation`). A reply whose validation loss is not finite is excluded.
Per-client losses and weights are recorded in metrics.jsonl and printed every round.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from flwr.app import Message

from ..aggregation.validation_weights import softmax_weights
from ..aggregation.weighted import State
from .base import announce, client_label, client_weights, node_of
from .fedavg import LoraFedAvg

Scorer = Callable[[Mapping[str, np.ndarray]], float]


class LoraFedMedLoRAPlus(LoraFedAvg):
    scorer: Scorer
    validation_info: dict

    def setup_validation(self, scorer: Scorer, info: dict | None = None) -> None:
        """`scorer(state)` returns an adapter's validation loss (a `ServerValidation.loss` in a run)."""
        self.scorer = scorer
        self.validation_info = dict(info or {})

    def aggregation_weights(self, server_round: int, replies: list[Message], states: list[State]
                            ) -> tuple[list[int], Sequence[float]]:
        start = time.perf_counter()
        losses = [float(self.scorer(state)) for state in states]
        seconds = time.perf_counter() - start
        kept = []
        for i, (msg, loss) in enumerate(zip(replies, losses)):
            if math.isfinite(loss):
                kept.append(i)
            else:
                self.exclude(server_round, node_of(msg), f"validation loss is not finite ({loss})")
        strategy = self.settings.strategy
        size_weighted = strategy.validation_weighting == "size-weighted"
        sizes = client_weights([replies[i] for i in kept], self.weighted_by_key) if size_weighted else None
        weights = (softmax_weights([losses[i] for i in kept], strategy.temperature, sizes).tolist()
                   if kept else [])
        nodes = [str(node_of(replies[i])) for i in kept]
        self.recorder.round(server_round)["validation"] = {
            **self.validation_info,
            "weighting": strategy.validation_weighting,
            "temperature": strategy.temperature,
            "losses": {str(node_of(m)): loss for m, loss in zip(replies, losses)},
            "weights": dict(zip(nodes, weights)),
            "seconds": seconds,
        }
        if kept:
            announce(f"round {server_round} fed-medlora-plus: "
                     + ", ".join(f"{client_label(replies[i])} loss {losses[i]:.4f} weight {w:.3f}"
                                 for i, w in zip(kept, weights))
                     + f" ({strategy.validation_weighting}, T = {strategy.temperature:g}, {seconds:.1f} s)")
        return kept, weights
