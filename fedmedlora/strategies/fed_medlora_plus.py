"""Fed-MedLoRA+ (Fed-MedLoRA seed): clients weighted by their adapter's loss on a server-held validation set.

Each round the server scores every usable reply's adapter on a validation set it holds (`server_validation.py`:
`data.server-datasets`, or in a simulation over the bundled pool the sites' pooled val splits)
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
from typing import Any

import numpy as np

from ..aggregation.validation_weights import softmax_weights
from ..settings import Settings
from .base import Reply, announce
from .fedavg import LoraFedAvg

Scorer = Callable[[Mapping[str, np.ndarray]], float]


class LoraFedMedLoRAPlus(LoraFedAvg):
    keys = ("strategy.lora-aggregation", "strategy.validation-weighting", "strategy.temperature",
            "strategy.validation-loss", "strategy.validation-max-examples")
    needs_validation_set = True
    scorer: Scorer
    validation_info: dict

    @classmethod
    def settings_problems(cls, settings: Settings) -> list[str]:
        if not settings.server_datasets and settings.data.val_fraction <= 0:
            return [f"key 'data.val-fraction' = {settings.data.val_fraction}: strategy.name = 'fed-medlora-plus' "
                    "scores clients on a validation set the server holds: name it in data.server-datasets, or (a "
                    "simulation over the bundled pool) set data.val-fraction > 0 to pool the sites' val splits"]
        return []

    def setup(self, job: Any) -> dict[str, Any]:
        from .server_validation import ServerValidation

        if job is None:
            raise ValueError("strategy 'fed-medlora-plus' needs the job (server validation set, resident model)")
        validation = ServerValidation(job)
        self.setup_validation(validation.loss, validation.describe())
        return {"validation-set": validation.describe()}

    def setup_validation(self, scorer: Scorer, info: dict | None = None) -> None:
        """`scorer(state)` returns an adapter's validation loss (a `ServerValidation.loss` in a run)."""
        self.scorer = scorer
        self.validation_info = dict(info or {})

    def aggregation_weights(self, server_round: int, replies: list[Reply]) -> tuple[list[int], Sequence[float]]:
        start = time.perf_counter()
        losses = [float(self.scorer(r.state)) for r in replies]
        seconds = time.perf_counter() - start
        kept = []
        for i, (reply, loss) in enumerate(zip(replies, losses)):
            if math.isfinite(loss):
                kept.append(i)
            else:
                self.exclude(server_round, reply.node, f"validation loss is not finite ({loss})")
        strategy = self.settings.strategy
        size_weighted = strategy.validation_weighting == "size-weighted"
        sizes = [float(replies[i].metrics[self.weighted_by_key]) for i in kept] if size_weighted else None
        weights = (softmax_weights([losses[i] for i in kept], strategy.temperature, sizes).tolist()
                   if kept else [])
        nodes = [str(replies[i].node) for i in kept]
        self.recorder.round(server_round)["validation"] = {
            **self.validation_info,
            "weighting": strategy.validation_weighting,
            "temperature": strategy.temperature,
            "losses": {str(r.node): loss for r, loss in zip(replies, losses)},
            "weights": dict(zip(nodes, weights)),
            "seconds": seconds,
        }
        if kept:
            announce(f"round {server_round} fed-medlora-plus: "
                     + ", ".join(f"{replies[i].label} loss {losses[i]:.4f} weight {w:.3f}"
                                 for i, w in zip(kept, weights))
                     + f" ({strategy.validation_weighting}, T = {strategy.temperature:g}, {seconds:.1f} s)")
        return kept, weights
