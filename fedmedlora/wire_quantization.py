"""Blockwise absmax quantization of adapter updates to 8 or 4 bits, and the client's error feedback.

Why: a LoRA update (client adapter minus the global it started from) is small and dense; 8 bits per value cut the
float32 payload by 4x, 4 bits by 8x. Each tensor is flattened and cut into blocks of `block` values; a block keeps
its largest magnitude (absmax, stored as float16) and each value becomes the nearest of the 2·qmax + 1 levels
-absmax..absmax (qmax = 127 at 8 bits, 7 at 4 bits). One outlier only coarsens its own block (QLoRA's blockwise
scheme, Dettmers et al. 2023). The error of one value is at most half a level: absmax / (2 qmax).

Error feedback (Seide et al. 2014; Karimireddy et al. 2019, EF-SGD): the client adds what the last quantization lost
(its residual) to the next update before quantizing it, and keeps the new loss. Nothing is lost for good: after T
rounds the sum of what was sent equals the sum of the updates minus the last residual only.

Pure numpy; the wire layer (wire.py) puts `Quantized` into Flower Arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QMAX = {8: 127, 4: 7}
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class Quantized:
    """One tensor at `bits` per value: float16 absmax per block, and the codes (int8, or two 4-bit codes a byte)."""

    shape: tuple[int, ...]
    bits: int
    block: int
    absmax: np.ndarray  # float16, one per block
    codes: np.ndarray  # uint8 bytes: int8 codes, or 4-bit codes + 8 packed low nibble first

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return int(self.absmax.nbytes + self.codes.nbytes)


def _check(bits: int, block: int) -> None:
    if bits not in QMAX:
        raise ValueError(f"bits must be 8 or 4, got {bits}")
    if block <= 0 or block % 2:
        raise ValueError(f"block must be a positive even number of values, got {block}")


def code_bytes(size: int, bits: int) -> int:
    return size if bits == 8 else (size + 1) // 2


def blocks(size: int, block: int) -> int:
    return -(-size // block)


def _absmax_up(values: np.ndarray) -> np.ndarray:
    """float16 absmax per block, rounded up, so no value lands beyond the top level."""
    half = values.astype(np.float16)
    low = half.astype(np.float32) < values
    half[low] = np.nextafter(half[low], np.float16(np.inf))
    return half


def quantize(x: np.ndarray, bits: int, block: int) -> Quantized:
    """`x` (any shape, finite, |x| <= 65504) to `bits` per value, blockwise over its flattened values."""
    _check(bits, block)
    array = np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(array)):
        raise ValueError("cannot quantize non-finite values")
    flat = array.reshape(-1)
    peak = float(np.max(np.abs(flat))) if flat.size else 0.0
    if peak > FLOAT16_MAX:
        raise ValueError(f"|value| {peak:g} exceeds the float16 range of the block scales ({FLOAT16_MAX:g})")
    count = blocks(flat.size, block)
    padded = np.zeros(count * block, dtype=np.float32)
    padded[:flat.size] = flat
    grid = padded.reshape(count, block)
    absmax = _absmax_up(np.max(np.abs(grid), axis=1))
    qmax = QMAX[bits]
    scale = absmax.astype(np.float32) / qmax
    safe = np.where(scale > 0, scale, 1.0)[:, None]
    codes = np.clip(np.rint(grid / safe), -qmax, qmax).astype(np.int8).reshape(-1)[:flat.size]
    if bits == 8:
        packed = codes.view(np.uint8).copy()
    else:
        nibbles = (codes + 8).astype(np.uint8)
        if nibbles.size % 2:
            nibbles = np.append(nibbles, np.uint8(8))  # a zero code pads the last byte
        packed = (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8)
    return Quantized(tuple(array.shape), bits, block, absmax, packed)


def dequantize(q: Quantized) -> np.ndarray:
    """The float32 tensor `q` stands for."""
    _check(q.bits, q.block)
    size = q.size
    if q.absmax.size != blocks(size, q.block) or q.codes.size != code_bytes(size, q.bits):
        raise ValueError(f"{q.absmax.size} block scales and {q.codes.size} code bytes do not fit shape {q.shape} at "
                         f"{q.bits} bits, block {q.block}")
    if q.bits == 8:
        codes = q.codes.view(np.int8).astype(np.float32)
    else:
        nibbles = np.empty(q.codes.size * 2, dtype=np.uint8)
        nibbles[0::2], nibbles[1::2] = q.codes & 0x0F, q.codes >> 4
        codes = nibbles[:size].astype(np.float32) - 8.0
    count = blocks(size, q.block)
    padded = np.zeros(count * q.block, dtype=np.float32)
    padded[:size] = codes
    scale = q.absmax.astype(np.float32) / QMAX[q.bits]
    return (padded.reshape(count, q.block) * scale[:, None]).reshape(-1)[:size].reshape(q.shape)


def error_bound(q: Quantized) -> np.ndarray:
    """The largest error of each value of `q` (half a level of its block), flat."""
    half_level = q.absmax.astype(np.float32) / (2 * QMAX[q.bits])
    return np.repeat(half_level, q.block)[:q.size]


def quantize_with_feedback(update: np.ndarray, residual: np.ndarray | None, bits: int, block: int
                           ) -> tuple[Quantized, np.ndarray]:
    """Quantize update + residual; return it and the new residual (what this quantization lost)."""
    target = np.asarray(update, dtype=np.float32)
    if residual is not None:
        target = target + np.asarray(residual, dtype=np.float32)
    q = quantize(target, bits, block)
    return q, target - dequantize(q)
