"""FedSA-LoRA (Guo et al., ICLR 2025, arXiv 2410.01463): only LoRA A is shared and averaged; each site keeps its own B.

A learns what the sites share, B what is particular to each. B never leaves a site: the ClientApp keeps it in its
`context.state` and loads it under each round's global A (site_adapter.py). So the numbers that matter are
personalised, and that is what the run's federated evaluation gives (federation/evaluation.py): each evaluated site
scores the global A with its own B on its own held-out split and sends counts, and the server pools them into
`server-eval` in metrics.jsonl. (Data the server holds, `data.server-datasets`, is scored with the global A and the
initial B: what a site that never trained would get.) Each site also writes its personalised adapter where it runs,
at the server's checkpoint rounds: `<run.results-dir>/<run name>/sites/site<k>/peft_<round>/` on its own disk (the
run folder itself in a simulation); the server never holds a site's B.
"""

from __future__ import annotations

import numpy as np

from ..aggregation.shared_keys import aggregate_shared
from .base import State
from .fedavg import LoraFedAvg


class LoraFedSA(LoraFedAvg):
    keys = ()
    product = False
    key_scheme = "a-only"

    def combine(self, server_round: int, states: list[State], weights: np.ndarray) -> State:
        return aggregate_shared(self.global_state(), states, weights, self.key_scheme)
