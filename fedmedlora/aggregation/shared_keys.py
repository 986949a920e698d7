"""Aggregation when only some adapter tensors travel (FFA-LoRA, FedSA-LoRA): average the shared tensors, keep the rest.

FFA-LoRA (Sun et al., ICLR 2024) freezes every LoRA A at the shared initial value; only B (and a task head) is trained
and sent. With one A for all sites, averaging B is the exact average of the updates: sum_i w_i B_i A = (sum_i w_i B_i) A.
FedSA-LoRA (Guo et al., ICLR 2025) shares A and averages it; each site keeps its B. The server's adapter then holds
the averaged A and the initial B (zeros: the server never sees a site's B).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .key_roles import SHARED, key_role
from .weighted import State, weighted_average


def aggregate_shared(global_state: Mapping[str, np.ndarray], states: Sequence[Mapping[str, np.ndarray]],
                     weights: Sequence[float] | np.ndarray, scheme: str) -> State:
    """The new global adapter: the weighted average of the clients' shared tensors (each client state holds exactly
    those), every other tensor of `global_state` unchanged; keys in `global_state`'s order."""
    shared = [k for k in global_state if key_role(k, scheme) == SHARED]
    for i, state in enumerate(states):
        if set(state) != set(shared):
            extra, missing = sorted(set(state) - set(shared)), sorted(set(shared) - set(state))
            raise ValueError(f"client state {i} must hold exactly the shared tensors of scheme {scheme!r}: "
                             f"missing {missing[:3]}, unexpected {extra[:3]}")
    averaged = weighted_average([{k: s[k] for k in shared} for s in states], weights)
    return {k: averaged[k] if k in averaged else np.asarray(v, dtype=np.float32) for k, v in global_state.items()}
