"""Compact packing of a whole network's quantised tensors: one ANS stream, a few bytes per tensor.

The per-tensor layout of :func:`weightstep.coding.quantise.pack_tensors` spends about 25 bytes
of framing on every tensor (shape, float32 steps, a 17-byte entropy header, its own ANS flush):
nothing for a 50k-parameter MLP, a third of the file for a 434-parameter grid synthesis at a
low rate. This layout (written by every codec from format 1.1 on; the old one still decodes)::

    0x00          marker: a tensor count of zero never starts the old layout
    count         varint  number of tensors (checked against the network)
    per tensor:   flags   uint8   bit 0: per-channel steps
                  steps   int16[] 1 or shape[0] codes c: step = 2^(c / 8)
                  loc     int8    Laplace location of the integers, in 1/8
                  scale   uint8   Laplace scale 2^((s - 64) / 8)
    lo, hi        int32   support of all integers
    words         uint32  one constriction AnsCoder stream: every tensor's integers in order,
                          each under its own quantised Laplace (tails folded into lo and hi)

Shapes are not stored: the decoder knows them from the config and the count is checked.
Steps lie on a 2^(1/8) grid (:func:`snap_steps`), so they cost two bytes and are exact.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence

import constriction
import numpy as np

from weightstep.coding.entropy import MAX_COUNT, MAX_SUPPORT
from weightstep.coding.framing import ByteReader, put_varint
from weightstep.coding.latents import ideal_bits
from weightstep.coding.quantise import QuantisedTensor, read_flags, step_count, unpack_tensors
from weightstep.errors import BitstreamError

MARKER = 0
_FLAG_PER_CHANNEL = 1
_STEP_DENOM = 8.0  # steps are 2^(code / 8)
_SCALE_OFFSET = 64  # scale code s: 2^((s - 64) / 8), from 2^-8 to 2^23.9
_SUPPORT = struct.Struct("<ii")


def snap_steps(steps: np.ndarray) -> np.ndarray:
    """Round positive steps to the nearest 2^(k/8) (float32), the grid this layout stores exactly."""
    codes = np.clip(np.round(np.log2(np.asarray(steps, dtype=np.float64)) * _STEP_DENOM), -32768, 32767)
    return np.exp2(codes / _STEP_DENOM).astype(np.float32)


def _step_codes(step: np.ndarray, name: str) -> np.ndarray:
    codes = np.round(np.log2(step.astype(np.float64)) * _STEP_DENOM)
    if not np.array_equal(snap_steps(step), step) or np.abs(codes).max() > 32767:
        raise ValueError(f"{name}: steps are not on the 2^(k/8) grid (use snap_steps)")
    return codes.astype("<i2")


def _laplace_codes(values: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """(loc code, scale code) minimising the tensor's information content (a small search).

    Memoised on a digest of the values: a step search packs the same network again and again with
    one tensor changed, and this search was most of a pack's time (13 information contents per
    tensor). The memo holds digests and results only, never the values, whatever the tensors' size."""
    flat = np.ascontiguousarray(values.reshape(-1), dtype=np.int64)
    key = (hashlib.sha256(flat.tobytes()).digest(), int(lo), int(hi))
    codes = _CODES_SEEN.get(key)
    if codes is None:
        if len(_CODES_SEEN) >= _CODES_KEPT:
            _CODES_SEEN.clear()
        codes = _CODES_SEEN[key] = _search_laplace_codes(flat, lo, hi)
    return codes


_CODES_KEPT = 4096
_CODES_SEEN: dict[tuple[bytes, int, int], tuple[int, int]] = {}


def _search_laplace_codes(values: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    x = values.astype(np.float64)
    if x.size == 0:
        return 0, _SCALE_OFFSET
    loc = int(np.clip(np.round(np.median(x) * 8.0), -128, 127))
    centre = np.log2(max(np.mean(np.abs(x - loc / 8.0)), 2.0**-8))
    best = None
    for s in range(int(round(centre * 8)) - 6, int(round(centre * 8)) + 7):
        code = int(np.clip(s + _SCALE_OFFSET, 0, 255))
        bits = ideal_bits(x, np.full(x.size, loc / 8.0), np.full(x.size, _scale(code)), lo, hi)
        if best is None or bits < best[0]:
            best = (bits, code)
    return loc, best[1]


def _scale(code: int) -> float:
    return float(2.0 ** ((code - _SCALE_OFFSET) / 8.0))


def pack_network(tensors: Sequence[QuantisedTensor]) -> bytes:
    """Serialise quantised tensors (steps on the 2^(k/8) grid) in the compact layout."""
    out = bytearray([MARKER])
    put_varint(out, len(tensors))
    values = [t.values.reshape(-1) for t in tensors]
    flat = np.concatenate(values) if values else np.zeros(0, np.int32)
    lo, hi = (int(flat.min()), int(flat.max())) if flat.size else (0, 0)
    if hi - lo + 1 > MAX_SUPPORT:
        raise ValueError(f"support [{lo}, {hi}] is wider than {MAX_SUPPORT} symbols; use a coarser step")
    means, scales = [], []
    for t, v in zip(tensors, values, strict=True):
        out.append(_FLAG_PER_CHANNEL if t.per_channel else 0)
        out += _step_codes(t.step, t.name).tobytes()
        loc, scale = _laplace_codes(v, lo, hi)
        out += struct.pack("<bB", loc, scale)
        means.append(np.full(v.size, loc / 8.0))
        scales.append(np.full(v.size, _scale(scale)))
    out += _SUPPORT.pack(lo, hi)
    if lo < hi:
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(flat.astype(np.int32), constriction.stream.model.QuantizedLaplace(lo, hi),
                             np.concatenate(means), np.concatenate(scales))
        out += np.asarray(coder.get_compressed(), dtype=np.uint32).astype("<u4").tobytes()
    return bytes(out)


def unpack_network(data: bytes, expected: Sequence[tuple[str, Sequence[int]]]) -> list[QuantisedTensor]:
    """Read either layout (compact, or the per-tensor one of older files), checked against ``expected``."""
    data = bytes(data)
    if not data or data[0] != MARKER:
        return unpack_tensors(data, expected)
    want = [(str(name), tuple(int(d) for d in shape)) for name, shape in expected]
    if any(math.prod(shape) > MAX_COUNT or len(shape) > 8 for _, shape in want):
        raise ValueError("expected shapes are out of bounds")
    total = sum(math.prod(shape) for _, shape in want)
    if total > MAX_COUNT:
        raise BitstreamError(f"tensor stream: {total} values exceed the coder's limit")
    r = ByteReader(data, "tensor stream")
    r.take(1, "marker")
    count = r.varint("tensor count")
    if count != len(want):
        raise BitstreamError(f"tensor stream: holds {count} tensors, the network has {len(want)}")
    heads = []
    for name, shape in want:
        n_steps = step_count(read_flags(r, name), name, shape)
        codes = np.frombuffer(r.take(2 * n_steps, f"steps of {name!r}"), dtype="<i2").astype(np.float64)
        loc, scale = struct.unpack("<bB", r.take(2, f"model of {name!r}"))
        with np.errstate(over="ignore"):
            steps = np.exp2(codes / _STEP_DENOM).astype(np.float32)
        if not (np.isfinite(steps).all() and (steps > 0).all()):  # a damaged step code (found by fuzzing)
            raise BitstreamError(f"tensor stream: step of {name!r} out of range")
        heads.append((name, shape, steps, loc / 8.0, _scale(scale)))
    lo, hi = _SUPPORT.unpack(r.take(_SUPPORT.size, "support"))
    if hi < lo or hi - lo + 1 > MAX_SUPPORT:
        raise BitstreamError(f"tensor stream: invalid support [{lo}, {hi}]")
    words = r.take(len(data) - r.pos, "words")
    if len(words) % 4 or (lo == hi and words):
        raise BitstreamError("tensor stream: payload does not match its support")
    if lo == hi:
        flat = np.full(total, lo, dtype=np.int32)
    else:
        means = np.concatenate([np.full(math.prod(shape), loc) for _, shape, _, loc, _ in heads])
        scales = np.concatenate([np.full(math.prod(shape), scale) for _, shape, _, _, scale in heads])
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))
        try:
            flat = np.asarray(coder.decode(constriction.stream.model.QuantizedLaplace(lo, hi), means, scales),
                              dtype=np.int32)
        except Exception as exc:  # constriction raises on exhausted or corrupt data
            raise BitstreamError(f"tensor stream: {exc}") from None
        if not coder.is_empty():
            raise BitstreamError("tensor stream: data left after the last tensor")
    tensors, at = [], 0
    for name, shape, step, _, _ in heads:
        size = math.prod(shape)
        tensors.append(QuantisedTensor(name=name, shape=shape, step=step,
                                       values=flat[at:at + size].reshape(shape)))
        at += size
    return tensors
