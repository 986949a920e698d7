"""Blockwise absmax quantization (8 and 4 bits) and error feedback: hand-computed codes, the error bound, and the
running sum that error feedback keeps exact up to the last residual."""

from __future__ import annotations

import numpy as np
import pytest

from fedmedlora.wire_quantization import dequantize, error_bound, quantize, quantize_with_feedback


def test_eight_bit_codes_by_hand() -> None:
    # one block of 4: absmax 2.0 -> level 2/127; 1.0 -> 63.5 rounds to 64 (even), -2.0 -> -127, 0.01 -> 0.635 -> 1
    q = quantize(np.array([1.0, -2.0, 0.01, 0.0], np.float32), bits=8, block=4)
    assert q.absmax.tolist() == [2.0]
    assert q.codes.view(np.int8).tolist() == [64, -127, 1, 0]
    np.testing.assert_allclose(dequantize(q), [64 * 2 / 127, -2.0, 2 / 127, 0.0], rtol=1e-6)


def test_four_bit_codes_are_packed_two_a_byte() -> None:
    # absmax 7 -> levels are the integers -7..7; codes + 8 packed low nibble first; an odd count pads with code 0
    q = quantize(np.array([7.0, -7.0, 3.2, 0.0, -1.6], np.float32), bits=4, block=6)
    assert q.codes.tolist() == [(15 | (1 << 4)), (11 | (8 << 4)), (6 | (8 << 4))]
    np.testing.assert_array_equal(dequantize(q), [7.0, -7.0, 3.0, 0.0, -2.0])


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("block", [64, 128])
def test_round_trip_error_is_within_half_a_level(bits: int, block: int) -> None:
    rng = np.random.default_rng(bits + block)
    x = (rng.standard_t(3, size=(37, 29)) * 1e-3).astype(np.float32)  # heavy tails: outliers in some blocks
    q = quantize(x, bits, block)
    err = np.abs(dequantize(q) - x).reshape(-1)
    assert np.all(err <= error_bound(q) * (1 + 1e-5) + 1e-12)
    assert q.absmax.size == -(-x.size // block) and dequantize(q).shape == x.shape
    # the bound is tight enough to matter: 4 bits is ~18x coarser than 8 bits
    assert error_bound(q).max() <= np.abs(x).max() / (2 * {8: 127, 4: 7}[bits]) * 1.001


def test_blocks_isolate_an_outlier() -> None:
    x = np.full(128, 1e-3, np.float32)
    x[0] = 10.0
    q = quantize(x, 8, 64)
    back = dequantize(q)
    assert np.allclose(back[64:], 1e-3, rtol=1e-2)  # the second block keeps its small values
    assert np.all(back[1:64] == 0.0)  # the outlier's block flattens them


def test_zero_and_bad_input() -> None:
    q = quantize(np.zeros((3, 5), np.float32), 4, 64)
    assert not q.absmax.any() and np.all(dequantize(q) == 0)
    with pytest.raises(ValueError, match="non-finite"):
        quantize(np.array([np.nan], np.float32), 8, 64)
    with pytest.raises(ValueError, match="float16 range"):
        quantize(np.array([1e6], np.float32), 8, 64)
    with pytest.raises(ValueError, match="8 or 4"):
        quantize(np.ones(4, np.float32), 2, 64)


@pytest.mark.parametrize("bits", [8, 4])
def test_error_feedback_keeps_the_running_sum_exact_up_to_the_last_residual(bits: int) -> None:
    rng = np.random.default_rng(bits)
    residual = None
    sent_total = np.zeros((16, 48), np.float64)
    update_total = np.zeros((16, 48), np.float64)
    for _ in range(20):
        update = (rng.normal(size=(16, 48)) * 1e-3).astype(np.float32)
        q, residual = quantize_with_feedback(update, residual, bits, 64)
        sent_total += dequantize(q)
        update_total += update
    np.testing.assert_allclose(sent_total + residual, update_total, atol=1e-8)
    # without feedback the errors add up; with it the gap is one residual, bounded by one quantization error
    assert np.abs(residual).max() <= np.abs(update_total).max()


def test_without_feedback_the_bias_accumulates() -> None:
    # a constant update smaller than half a level of its block is lost every round without feedback
    update = np.full(64, 1e-4, np.float32)
    update[0] = 1.0
    plain = sum(dequantize(quantize(update, 4, 64)) for _ in range(50))
    residual, fed = None, np.zeros(64)
    for _ in range(50):
        q, residual = quantize_with_feedback(update, residual, 4, 64)
        fed = fed + dequantize(q)
    assert plain[1] == 0.0  # 50 rounds of 1e-4 never sent
    assert fed[1] == pytest.approx(50 * 1e-4, abs=1.0 / 7)  # sent, up to one level of the block
