"""Adapter states on Flower's wire: numpy state <-> `ArrayRecord`, in the wire dtype, and the bytes it costs.

An adapter state is `dict[str, np.ndarray]` (PEFT checkpoint keys). The server keeps the global adapter in float32.
With `strategy.wire-dtype` float16 (the default) or float32 the values themselves travel, as numpy arrays; replies
are widened to float32 once, when they are screened, before any arithmetic.

With int8 or int4 a tensor travels blockwise-quantized (wire_quantization.py) as one Flower `Array` of our own
serialization type: `stype` names the format (`fedmedlora/absmax-int8-b64`), `data` is the float16 block absmax
values followed by the codes. One Array per tensor, no numpy header: the per-tensor overhead stays what Flower adds.
An all-zero tensor travels as empty data. What a quantized record means (an update relative to what) is the
caller's business: see strategies/base.py and client_app.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from .wire_quantization import Quantized, blocks, code_bytes, dequantize, quantize

WIRE_DTYPES = {"float16": np.float16, "float32": np.float32}
WIRE_NUMPY_DTYPES = {np.dtype(d) for d in WIRE_DTYPES.values()}
QUANTIZED_BITS = {"int8": 8, "int4": 4}
_STYPE = re.compile(r"^fedmedlora/absmax-int(?P<bits>[48])-b(?P<block>\d+)$")


def is_quantized(wire_dtype: str) -> bool:
    return wire_dtype in QUANTIZED_BITS


def quantized_stype(bits: int, block: int) -> str:
    return f"fedmedlora/absmax-int{bits}-b{block}"


def quantized_array(q: Quantized) -> Any:
    from flwr.app import Array

    data = b"" if not np.any(q.absmax) else q.absmax.astype("<f2").tobytes() + q.codes.tobytes()
    return Array(dtype=f"int{q.bits}", shape=tuple(int(s) for s in q.shape), stype=quantized_stype(q.bits, q.block),
                 data=data)


def quantized_from_array(array: Any) -> Quantized:
    """The `Quantized` an Array of our stype carries; ValueError naming what does not fit."""
    match = _STYPE.match(array.stype)
    if match is None:
        raise ValueError(f"serialization {array.stype!r} is not a fedmedlora quantized tensor")
    bits, block = int(match["bits"]), int(match["block"])
    shape = tuple(int(s) for s in array.shape)
    size = int(np.prod(shape, dtype=np.int64))
    count, nbytes = blocks(size, block), code_bytes(size, bits)
    data = array.data
    if len(data) == 0:
        return Quantized(shape, bits, block, np.zeros(count, np.float16), np.full(nbytes, 0 if bits == 8 else 0x88,
                                                                                    np.uint8))
    if len(data) != 2 * count + nbytes:
        raise ValueError(f"{len(data)} bytes for shape {shape} at {bits} bits, block {block}: expected "
                         f"{2 * count + nbytes}")
    absmax = np.frombuffer(data, dtype="<f2", count=count).astype(np.float16)
    codes = np.frombuffer(data, dtype=np.uint8, offset=2 * count).copy()
    return Quantized(shape, bits, block, absmax, codes)


def to_array_record(state: Mapping[str, np.ndarray], wire_dtype: str, block: int = 128) -> Any:
    """The state as Flower sends it: float arrays in the wire dtype, or quantized tensors (int8/int4, `block`)."""
    from flwr.app import Array, ArrayRecord

    if is_quantized(wire_dtype):
        bits = QUANTIZED_BITS[wire_dtype]
        return ArrayRecord({k: quantized_array(quantize(v, bits, block)) for k, v in state.items()})
    dtype = WIRE_DTYPES[wire_dtype]
    return ArrayRecord({k: Array(np.ascontiguousarray(v, dtype=dtype)) for k, v in state.items()})


def array_values(array: Any) -> np.ndarray:
    """An Array's values as numpy: a numpy array as sent (any dtype), a quantized tensor dequantized to float32."""
    if array.stype.startswith("fedmedlora/"):
        return dequantize(quantized_from_array(array))
    return array.numpy()


def from_array_record(record: Any) -> dict[str, np.ndarray]:
    """float32 copies of the arrays in an ArrayRecord (float16 widened, quantized tensors dequantized)."""
    return {k: np.asarray(array_values(a), dtype=np.float32) for k, a in record.items()}


def record_nbytes(record: Any) -> int:
    """Bytes of array data in an ArrayRecord, as Flower counts them (numpy's 128-byte header included)."""
    return sum(len(a.data) for a in record.values())


def record_wire_bytes(record: Any) -> dict[str, int]:
    """What the record costs on Flower's wire, split: `values` (the numbers themselves: elements, or block scales and
    codes), `numpy-headers` (np.save's header inside each numpy Array's data) and `flower-headers` (the object
    headers and metadata Flower 1.4x sends for the record, each Array and each 5 MB chunk of it). Identical objects
    count once, as Flower sends them once."""
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    objects = list(get_all_nested_objects(record).values())
    total = sum(len(obj.deflate()) for obj in objects)
    chunks = sum(len(obj.data) for obj in objects if type(obj).__name__ == "ArrayChunk")
    numpy_headers = sum(len(a.data) - int(np.prod(a.shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize
                        for a in objects if type(a).__name__ == "Array" and a.stype == "numpy.ndarray")
    return {"values": chunks - numpy_headers, "numpy-headers": numpy_headers, "flower-headers": total - chunks,
            "total": total}


def state_digest(state: Mapping[str, np.ndarray]) -> str:
    """A short fingerprint of a float32 state (keys, shapes, values): server and site check they hold the same
    initial adapter before either reads the other's updates relative to it."""
    import hashlib

    digest = hashlib.sha256()
    for key in sorted(state):
        array = np.ascontiguousarray(state[key], dtype=np.float32)
        digest.update(f"{key}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]
