"""Exact LoRA aggregation: average the updates B_i A_i, then refactor to rank r by truncated SVD.

Averaging A and B separately (`weighted.weighted_average`, Fed-MedLoRA) gives (sum w_i B_i)(sum w_i A_i), which is not the
average of the products sum w_i B_i A_i: the cross terms w_i w_k B_i A_k appear. `product_average_with_errors` computes the
exact average of the products and returns its best rank-r approximation (Eckart-Young), split as
B = U_r sqrt(S_r), A = sqrt(S_r) V_r^T. When the average has rank <= r (e.g. all clients share A) the result equals
it exactly; otherwise the discarded singular values are the truncation error, reported by
`product_average_with_errors`. Rank directions beyond the average's rank keep a zero B column and a non-zero A row
(see `product_average_pair`), so they remain trainable, as at LoRA's own initialisation.

No out x in matrix is formed: sum_i w_i B_i A_i = [sqrt(w_1) B_1 ... sqrt(w_K) B_K] [sqrt(w_1) A_1; ...; sqrt(w_K) A_K]
= Bc Ac (out x Kr times Kr x in). With thin QRs Bc = Qb Rb and Ac^T = Qa Ra, the product is Qb (Rb Ra^T) Qa^T,
so the SVD of the small core Rb Ra^T (at most Kr x Kr) gives the exact SVD of the average:
U = Qb Uc, V = Qa Vc. Cost O((out + in) (Kr)^2) instead of O(out in min(out, in)).

LoRA layers are found by key: `<prefix>.lora_A<suffix>` pairs with `<prefix>.lora_B<suffix>` (also
`lora_embedding_A/B`); A is r x in and B is out x r. Every other tensor (a task head, biases) is averaged plainly.
The LoRA scaling (lora_alpha / r) is the same for every client, so it factors out of the average.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from .weighted import State, normalised_weights, require_same_layout, weighted_average

_A_KEY = re.compile(r"^(?P<prefix>.*)\.lora_(?P<kind>embedding_)?A(?P<suffix>(\..*)?)$")


def lora_pairs(keys: Sequence[str]) -> list[tuple[str, str]]:
    """(A key, B key) for every LoRA layer among `keys`; raises if an A or a B has no partner."""
    key_set = set(keys)
    pairs: list[tuple[str, str]] = []
    for key in keys:
        match = _A_KEY.match(key)
        if match is None:
            continue
        kind = match["kind"] or ""
        b_key = f"{match['prefix']}.lora_{kind}B{match['suffix']}"
        if b_key not in key_set:
            raise ValueError(f"LoRA key {key!r} has no matching {b_key!r}")
        pairs.append((key, b_key))
    paired_b = {b for _, b in pairs}
    unpaired = [k for k in keys if re.search(r"\.lora_(embedding_)?B(\.|$)", k) and k not in paired_b]
    if unpaired:
        raise ValueError(f"LoRA B keys without a matching A: {unpaired[:3]}")
    return pairs


def product_average_pair(a_list: Sequence[np.ndarray], b_list: Sequence[np.ndarray],
                         weights: np.ndarray, rank: int | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Rank-r factors (B, A) of P = sum_i w_i B_i A_i for one LoRA layer, and the relative truncation error.

    r is `rank`, or the first client's rank; the clients' ranks may differ (heterogeneous ranks, FlexLoRA). The
    factors come in decreasing order of singular value, so their first k rows of A and columns of B are the best
    rank-k approximation of the average. `weights` must be non-negative. The error is ||P - B A||_F / ||P||_F (0 when P = 0 or rank(P) <= r).
    Directions beyond P's numerical rank get B column 0 and an A row along an unused right singular vector, scaled
    like the clients' A rows: the product is unchanged, and the rank stays trainable (B = A = 0 in a direction is a
    saddle that gradient descent never leaves, e.g. every direction when all B are zero at round 0).
    """
    a0, b0 = np.asarray(a_list[0]), np.asarray(b_list[0])
    for a, b in zip(a_list, b_list):
        if np.ndim(a) != 2 or np.ndim(b) != 2 or np.shape(b)[1] != np.shape(a)[0]:
            raise ValueError(f"LoRA factors must be A (r x in) and B (out x r), got A {np.shape(a)} and B "
                             f"{np.shape(b)}")
    rank = a0.shape[0] if rank is None else int(rank)
    roots = np.sqrt(weights)
    b_cat = np.concatenate([r * np.asarray(b, dtype=np.float64) for r, b in zip(roots, b_list)], axis=1)
    a_cat = np.concatenate([r * np.asarray(a, dtype=np.float64) for r, a in zip(roots, a_list)], axis=0)
    q_b, r_b = np.linalg.qr(b_cat)  # out x m, m x Kr (m = min(out, Kr))
    q_a, r_a = np.linalg.qr(a_cat.T)  # in x p, p x Kr (p = min(in, Kr))
    u_c, s, vt_c = np.linalg.svd(r_b @ r_a.T)  # full SVD of the m x p core: vt_c has p >= r rows when in >= r
    # numerical rank of P, as numpy.linalg.matrix_rank decides it
    tol = s[0] * max(b0.shape[0], a0.shape[1]) * np.finfo(np.float64).eps if s.size else 0.0
    kept = int(min(rank, np.count_nonzero(s > tol)))
    root_s = np.sqrt(s[:kept])
    b_new = np.zeros((b0.shape[0], rank), dtype=np.float64)
    a_new = np.zeros((rank, a0.shape[1]), dtype=np.float64)
    b_new[:, :kept] = (q_b @ u_c[:, :kept]) * root_s
    a_new[:kept, :] = root_s[:, None] * (vt_c[:kept, :] @ q_a.T)
    spare = min(rank, vt_c.shape[0])
    if spare > kept:
        row_scale = np.sqrt(np.mean([np.sum(np.asarray(a, dtype=np.float64) ** 2) / len(a) for a in a_list]))
        a_new[kept:spare, :] = row_scale * (vt_c[kept:spare, :] @ q_a.T)
    total = float(np.sum(s ** 2))
    error = float(np.sqrt(np.sum(s[kept:] ** 2) / total)) if total > 0.0 else 0.0
    return b_new.astype(np.float32), a_new.astype(np.float32), error


def product_average_with_errors(states: Sequence[Mapping[str, np.ndarray]],
                                weights: Sequence[float] | np.ndarray) -> tuple[State, dict[str, float]]:
    """Exact LoRA aggregation: rank-r SVD refactoring of the weighted average of B_i A_i (other tensors averaged),
    and, per LoRA layer (keyed by its A key), the relative Frobenius truncation error."""
    keys = require_same_layout(states)
    w = normalised_weights(weights, len(states))
    pairs = lora_pairs(keys)
    lora_keys = {k for pair in pairs for k in pair}
    plain = [k for k in keys if k not in lora_keys]
    out: State = {}
    if plain:
        out.update(weighted_average([{k: s[k] for k in plain} for s in states], w))
    errors: dict[str, float] = {}
    for a_key, b_key in pairs:
        b_new, a_new, errors[a_key] = product_average_pair(
            [s[a_key] for s in states], [s[b_key] for s in states], w)
        out[a_key], out[b_key] = a_new, b_new
    return {k: out[k] for k in keys}, errors

