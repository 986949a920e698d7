"""Adapter states on Flower's wire: numpy state <-> `ArrayRecord`, in the wire dtype, and the bytes it costs.

An adapter state is `dict[str, np.ndarray]` (PEFT checkpoint keys). The server keeps the global adapter in float32
and casts it to `strategy.wire-dtype` (float16 by default) once per round when sending; replies are widened to
float32 once, when they are screened, before any arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

WIRE_DTYPES = {"float16": np.float16, "float32": np.float32}
WIRE_NUMPY_DTYPES = {np.dtype(d) for d in WIRE_DTYPES.values()}


def to_array_record(state: Mapping[str, np.ndarray], wire_dtype: str) -> Any:
    from flwr.app import Array, ArrayRecord

    dtype = WIRE_DTYPES[wire_dtype]
    return ArrayRecord({k: Array(np.ascontiguousarray(v, dtype=dtype)) for k, v in state.items()})


def from_array_record(record: Any) -> dict[str, np.ndarray]:
    """float32 copies of the arrays in an ArrayRecord (float16 on the wire is widened before any arithmetic)."""
    return {k: np.asarray(a.numpy(), dtype=np.float32) for k, a in record.items()}


def record_nbytes(record: Any) -> int:
    """Bytes of array data in an ArrayRecord, as Flower counts them."""
    return sum(len(a.data) for a in record.values())
