"""FedSA-LoRA (Guo et al., ICLR 2025, arXiv 2410.01463): only LoRA A is shared and averaged; each site keeps its own B.

A learns what the sites share, B what is particular to each. B never leaves a site: the ClientApp keeps it in its
`context.state` and loads it under each round's global A (site_adapter.py). So the numbers that matter are
personalised: every site evaluates global A + its own B on its own held-out split in Flower's evaluate phase, every
round (this strategy samples all sites for it), and the server pools their counts into `personalised` in
metrics.jsonl, beside the server's own evaluation of the global adapter (global A, initial B: what a site that never
trained would get). Each site also writes its personalised adapter where it runs, at the server's checkpoint rounds:
`<run.results-dir>/<run name>/sites/site<k>/peft_<round>/` on its own disk (the run folder itself in a simulation);
the server never holds a site's B.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message

from ..aggregation.shared_keys import aggregate_shared
from ..scoring.pooled_counts import pooled_f1
from ..settings import Settings
from .base import State, announce, metrics_of
from .fedavg import LoraFedAvg


class LoraFedSA(LoraFedAvg):
    keys = ()
    product = False
    key_scheme = "a-only"

    @classmethod
    def flower_arguments(cls, settings: Settings) -> dict[str, Any]:
        sites = settings.data.num_sites  # personalised evaluation needs every site, every round
        return {"fraction_evaluate": 1.0, "min_evaluate_nodes": sites}

    def combine(self, server_round: int, states: list[State], weights: np.ndarray) -> State:
        return aggregate_shared(self.global_state(), states, weights, self.key_scheme)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Any):
        config = ConfigRecord(dict(config))
        config["run-name"] = self.recorder.run_dir.name  # where sites write their personalised checkpoints
        return super().configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        metrics = super().aggregate_evaluate(server_round, replies)
        per_site = {str(int(m["site"])): m for m in (metrics_of(r) for r in replies if r.has_content())
                    if "site" in m}
        if per_site:
            pooled = pooled_f1(list(per_site.values()))
            self.recorder.round(server_round)["personalised"] = {"pooled": pooled, "sites": per_site}
            headline = ", ".join(f"{k} {v:.4f}" for k, v in pooled.items() if k.endswith("-f1"))
            announce(f"round {server_round}: personalised (global A + each site's B, {len(per_site)} sites): "
                     f"{headline}")
        return metrics
