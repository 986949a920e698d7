"""FFA-LoRA (Sun et al., ICLR 2024, arXiv 2403.12313): every LoRA A stays frozen at the shared initial adapter; only B
(and a task head) is trained and sent, so averaging is exact and the adapter traffic halves.

Sites draw A from run.seed exactly as the server does (site_adapter.py checks the fingerprint), so A never travels,
not even in round 1. The rule is `aggregation/shared_keys.aggregate_shared` over B and the head.
"""

from __future__ import annotations

import numpy as np

from ..aggregation.shared_keys import aggregate_shared
from .base import State
from .fedavg import LoraFedAvg


class LoraFFA(LoraFedAvg):
    keys = ()
    product = False
    key_scheme = "b-only"

    def combine(self, server_round: int, states: list[State], weights: np.ndarray) -> State:
        return aggregate_shared(self.global_state(), states, weights, self.key_scheme)
