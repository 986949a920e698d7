"""Adapter states on Flower's wire: float and quantized records round-trip, quantized tensors are one Array each
with our own serialization type, malformed data is refused with the shape, and the byte accounting splits values
from headers."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from fedmedlora.wire import (from_array_record, quantized_from_array, record_nbytes, record_wire_bytes,
                             to_array_record)

STATE = {"x.lora_A.weight": np.linspace(-1, 1, 8 * 96, dtype=np.float32).reshape(8, 96),
         "x.lora_B.weight": np.zeros((96, 8), np.float32)}


@pytest.mark.parametrize("dtype,tol", [("float32", 0.0), ("float16", 5e-4), ("int8", 1 / 254), ("int4", 1 / 14)])
def test_round_trip(dtype: str, tol: float) -> None:
    back = from_array_record(to_array_record(STATE, dtype))
    assert list(back) == list(STATE)
    for key in STATE:
        assert back[key].dtype == np.float32 and back[key].shape == STATE[key].shape
        assert np.abs(back[key] - STATE[key]).max() <= tol + 1e-7


def test_quantized_layout_and_sizes() -> None:
    record = to_array_record(STATE, "int8", block=64)
    a = record["x.lora_A.weight"]
    assert (a.stype, a.dtype, tuple(a.shape)) == ("fedmedlora/absmax-int8-b64", "int8", (8, 96))
    assert len(a.data) == 12 * 2 + 768  # 12 float16 block scales, then one byte per value
    assert record["x.lora_B.weight"].data == b""  # an all-zero tensor costs no data
    int4 = to_array_record(STATE, "int4", block=128)["x.lora_A.weight"]
    assert len(int4.data) == 6 * 2 + 384
    sizes = record_wire_bytes(record)
    assert sizes["values"] == 792 and sizes["numpy-headers"] == 0
    assert 0 < sizes["flower-headers"] < 1000 and sizes["total"] == sum(
        sizes[k] for k in ("values", "numpy-headers", "flower-headers"))
    f32 = record_wire_bytes(to_array_record(STATE, "float32"))
    assert f32["values"] == 2 * 768 * 4 and f32["numpy-headers"] == 2 * 128
    assert record_nbytes(to_array_record(STATE, "float32")) == 2 * (768 * 4 + 128)


def test_malformed_quantized_data_is_refused() -> None:
    good = to_array_record(STATE, "int8", block=64)["x.lora_A.weight"]
    short = Array(dtype="int8", shape=(8, 96), stype=good.stype, data=good.data[:-1])
    with pytest.raises(ValueError, match=r"791 bytes for shape \(8, 96\) at 8 bits, block 64: expected 792"):
        quantized_from_array(short)
    with pytest.raises(ValueError, match="not a fedmedlora quantized tensor"):
        quantized_from_array(Array(dtype="int8", shape=(2,), stype="fedmedlora/other", data=b"ab"))
    with pytest.raises(ValueError):
        from_array_record(ArrayRecord({"k": short}))
