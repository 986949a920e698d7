"""How far one client can move the aggregate: its weight and the norm of its update, bounded before aggregation.

A poisoning client claiming `num-examples = 10**9` with its update scaled by 10**4 owns a weighted average. Two
bounds stop it: the claimed weight is capped at what the server knows of that site (a site may claim less than its
count, never more), and the update norm ||w_client - w_global|| is bounded by k times the median norm of the round,
a statistic a minority of clients cannot move (robust from three replies: with two, the median is their mean).
Norms are taken over every tensor of the adapter at once, in float64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

State = dict[str, np.ndarray]


def capped_weight(claimed: float, known: float) -> float:
    """The weight a reply gets: its claim, at most the count the server holds for its site."""
    if not (np.isfinite(known) and known > 0):
        raise ValueError(f"known count must be a positive number, got {known!r}")
    return float(min(claimed, known))


def update_norm(state: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    """||state - reference|| over all tensors (the L2 norm of the flattened update), in float64."""
    total = 0.0
    for key, ref in reference.items():
        diff = np.asarray(state[key], dtype=np.float64) - np.asarray(ref, dtype=np.float64)
        total += float(np.dot(diff.ravel(), diff.ravel()))
    return float(np.sqrt(total))


def scale_update(state: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], factor: float) -> State:
    """reference + factor * (state - reference): the update shrunk (factor < 1) around the reference, float32."""
    return {key: (np.asarray(ref, np.float64) + factor * (np.asarray(state[key], np.float64)
                                                         - np.asarray(ref, np.float64))).astype(np.float32)
            for key, ref in reference.items()}


class NormDecision(NamedTuple):
    norm: float
    bound: float
    factor: float  # 1.0: within the bound; < 1: the factor that brings the update onto the bound


def bound_norms(norms: Sequence[float], k: float) -> list[NormDecision]:
    """Per update: its norm, the bound k x median(norms), and the factor that clips it to the bound."""
    if k <= 0:
        raise ValueError(f"k must be > 0, got {k}")
    if not norms:
        return []
    bound = k * float(np.median(np.asarray(norms, dtype=np.float64)))
    return [NormDecision(n, bound, 1.0 if n <= bound or n == 0 else bound / n) for n in norms]


def clip_to_bound(norms: Sequence[float], bound: float) -> list[NormDecision]:
    """Per update: the factor that clips it to a fixed bound (differential privacy's clipping norm)."""
    if bound <= 0:
        raise ValueError(f"bound must be > 0, got {bound}")
    return [NormDecision(n, bound, 1.0 if n <= bound else bound / n) for n in norms]


# Unit roundoff of the wire dtypes: a value stored in it is off by at most this fraction of itself.
_UNIT_ROUNDOFF = {"float16": 2.0 ** -11, "float32": 2.0 ** -24}


def rounding_slack(state: Mapping[str, np.ndarray], bound: float, wire_dtype: str) -> float:
    """How far past `bound` an update clipped exactly to it can measure after the clipped adapter is stored in the
    wire dtype: each stored value is off by at most u x |value| (u: unit roundoff), so the update is off by at most
    u x ||adapter||, doubled for the client's own rounding while it clipped."""
    norm = float(np.sqrt(sum(float(np.sum(np.square(np.asarray(v, np.float64)))) for v in state.values())))
    return 2.0 * _UNIT_ROUNDOFF[wire_dtype] * (norm + bound)
