"""Screening of a client state before aggregation: whether it is usable, and if not, why.

A reply is rejected, with a readable reason, when it lacks expected keys, carries unexpected ones, has a tensor of
the wrong shape, a non-numeric tensor, or any NaN/Inf. Rejecting a client is better than letting one bad tensor
poison the global adapter (a single NaN spreads to every client through the average).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def _names(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def state_problem(state: Any, layout: Mapping[str, tuple[int, ...]]) -> str | None:
    """The first reason `state` cannot be aggregated against `layout`, or None if it can."""
    if not isinstance(state, Mapping):
        return f"not a mapping of tensors (got {type(state).__name__})"
    missing = [k for k in layout if k not in state]
    if missing:
        return f"missing {len(missing)} key(s): {_names(missing)}"
    extra = [k for k in state if k not in layout]
    if extra:
        return f"{len(extra)} unexpected key(s): {_names(extra)}"
    for key, expected in layout.items():
        array = np.asarray(state[key])
        if array.dtype.kind not in "fiu":
            return f"{key!r} is not a numeric tensor (dtype {array.dtype})"
        if array.shape != tuple(expected):
            return f"{key!r} has shape {array.shape}, expected {tuple(expected)}"
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            nans = int(np.isnan(array).sum())
            infs = int(np.isinf(array).sum())
            return f"{key!r} has non-finite values ({nans} NaN, {infs} Inf)"
    return None

