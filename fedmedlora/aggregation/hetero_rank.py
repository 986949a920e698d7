"""Heterogeneous LoRA ranks (FlexLoRA, Bai et al., NeurIPS 2024, arXiv 2402.11505): sites train at their own rank;
the server averages in the product space and hands each site its rank's truncated SVD factors.

Each site k trains a rank-r_k adapter with LoRA scaling alpha·(r_k / R) / r_k = alpha / R (its lora_alpha is scaled
by r_k / R), so every rank direction carries the same scale as in the server's rank-R adapter and factors move between
ranks without rescaling. The server computes P = sum_k w_k B_k A_k per layer (exact; the clients' ranks may differ)
and keeps its best rank-R approximation, with singular values in decreasing order (`product_average_pair`). A site of
rank r then receives the first r columns of B and rows of A: the best rank-r approximation of the server's adapter
(Eckart-Young). No out x in matrix is formed. Tensors that are not LoRA factors (a task head) are averaged plainly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .lora_product import lora_pairs, product_average_pair
from .weighted import State, normalised_weights, weighted_average


def truncate(state: Mapping[str, np.ndarray], rank: int) -> State:
    """`state` at rank `rank`: the first `rank` rows of each A and columns of each B; other tensors as they are."""
    out: State = dict(state)
    for a_key, b_key in lora_pairs(list(state)):
        a, b = np.asarray(state[a_key]), np.asarray(state[b_key])
        if rank > a.shape[0]:
            raise ValueError(f"cannot truncate {a_key!r} of rank {a.shape[0]} to rank {rank}")
        out[a_key], out[b_key] = a[:rank], b[:, :rank]
    return out


def layout_at_rank(layout: Mapping[str, tuple[int, ...]], rank: int) -> dict[str, tuple[int, ...]]:
    """Shapes of a state of `layout` truncated to `rank`."""
    shaped = truncate({k: np.empty(v, dtype=np.float32) for k, v in layout.items()}, rank)
    return {k: tuple(v.shape) for k, v in shaped.items()}


def state_rank(state: Mapping[str, np.ndarray]) -> int:
    """The LoRA rank of a state (the rows of its A factors, which must agree)."""
    ranks = {np.shape(state[a])[0] for a, _ in lora_pairs(list(state))}
    if len(ranks) != 1:
        raise ValueError(f"a state's LoRA factors disagree on the rank: {sorted(ranks)}")
    return ranks.pop()


def hetero_rank_average(states: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float] | np.ndarray,
                        rank: int) -> tuple[State, dict[str, float]]:
    """The rank-`rank` factors of the weighted average of the clients' products (clients of any rank <= `rank`), other
    tensors averaged; and per LoRA layer the relative Frobenius error of the truncation to `rank`."""
    if not states:
        raise ValueError("no client states to aggregate")
    keys = list(states[0])
    for i, state in enumerate(states):
        if set(state) != set(keys):
            raise ValueError(f"client state {i} has different keys from state 0")
    w = normalised_weights(weights, len(states))
    pairs = lora_pairs(keys)
    factors = {k for pair in pairs for k in pair}
    out: State = {}
    plain = [k for k in keys if k not in factors]
    if plain:
        out.update(weighted_average([{k: s[k] for k in plain} for s in states], w))
    errors: dict[str, float] = {}
    for a_key, b_key in pairs:
        b, a, errors[a_key] = product_average_pair([s[a_key] for s in states], [s[b_key] for s in states], w, rank)
        out[a_key], out[b_key] = a, b
    return {k: out[k] for k in keys}, errors
