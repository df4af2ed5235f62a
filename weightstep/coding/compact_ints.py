"""Integer blobs with a few-byte header, for the small arrays of a weight step.

:func:`~weightstep.coding.entropy.encode_ints` stores its model in 17 bytes (family, float32
location and scale, int32 bounds): nothing beside a network's weights, but a tenth of a low-rank
step of 100-200 bytes. The same family, location and scale fit here on grids the decoder rebuilds
exactly, in varints::

    family  uint8    1 Laplace, 2 Gaussian
    lo      varint   zigzag lowest integer
    span    varint   hi - lo (0: every value is lo, nothing follows)
    loc     varint   zigzag location in 1/16 units         (only when span > 0)
    scale   varint   zigzag log2(scale) in 1/16 octaves     (only when span > 0)
    words   uint32   constriction ANS words to the blob's end

About 5 bytes for a step's factors. The decoder checks every field before constriction runs, and
the decoded values must span [lo, hi] exactly (what the encoder writes).
"""

from __future__ import annotations

import math

import constriction
import numpy as np

from weightstep.coding.entropy import (
    GAUSSIAN,
    LAPLACE,
    MAX_SCALE,
    MAX_SUPPORT,
    MIN_SCALE,
    check_count,
    fit_model,
    int_model,
    payload_words,
    run_decoder,
    words_to_bytes,
)
from weightstep.coding.framing import ByteReader, put_varint, unzigzag, zigzag
from weightstep.errors import BitstreamError

__all__ = ["encode_compact_ints", "decode_compact_ints"]

GRID = 16  # location in 1/GRID units, scale in 1/GRID octaves
MAX_LOC_CODE = 1 << 30  # |location code| limit (its zigzag fits a 5-byte varint; steps' integers are far smaller)
SCALE_CODES = (int(math.log2(MIN_SCALE)) * GRID, int(math.log2(MAX_SCALE)) * GRID)


def _loc(code: int) -> float:
    return float(np.float32(code / GRID))


def _scale(code: int) -> float:
    return float(np.float32(2.0 ** (code / GRID)))


def encode_compact_ints(values: np.ndarray) -> bytes:
    """Code a non-empty integer array (flat, C order; |values| within int32, support at most
    ``MAX_SUPPORT``) with the header of the module docstring."""
    v = np.asarray(values)
    if v.dtype.kind not in "iu":
        raise ValueError(f"encode_compact_ints needs integers, got dtype {v.dtype}")
    v = v.ravel().astype(np.int64)
    if v.size == 0:
        raise ValueError("encode_compact_ints codes at least one value")
    lo, hi = int(v.min()), int(v.max())
    if lo < -(2**31) or hi > 2**31 - 1 or hi - lo + 1 > MAX_SUPPORT:
        raise ValueError(f"support [{lo}, {hi}] out of range; use a coarser step")
    family, loc, scale = (LAPLACE, 0.0, 1.0) if lo == hi else fit_model(v, lo, hi)
    out = bytearray([family])
    put_varint(out, zigzag(lo))
    put_varint(out, hi - lo)
    if lo == hi:
        return bytes(out)
    loc_code = int(round(loc * GRID))
    if abs(loc_code) > MAX_LOC_CODE:
        raise ValueError(f"location {loc} beyond the compact header's range")
    scale_code = int(np.clip(round(math.log2(scale) * GRID), *SCALE_CODES))
    put_varint(out, zigzag(loc_code))
    put_varint(out, zigzag(scale_code))
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(v.astype(np.int32), int_model(family, lo, hi, _loc(loc_code), _scale(scale_code)))
    return bytes(out) + words_to_bytes(coder.get_compressed())


def decode_compact_ints(data: bytes, count: int) -> np.ndarray:
    """Decode ``count`` (>= 1) int32 values from a :func:`encode_compact_ints` blob; anything
    malformed raises BitstreamError."""
    count = check_count(count)
    if count == 0:
        raise BitstreamError("compact integer blob: 0 values expected")
    r = ByteReader(bytes(data), "compact integer blob")
    family = r.take(1, "family")[0]
    if family not in (LAPLACE, GAUSSIAN):
        raise BitstreamError(f"compact integer blob: unknown model family {family}")
    lo = unzigzag(r.varint("low bound"))
    span = r.varint("span")
    if lo < -(2**31) or span + 1 > MAX_SUPPORT or lo + span > 2**31 - 1:
        raise BitstreamError(f"compact integer blob: invalid support [{lo}, {lo + span}]")
    if span == 0:
        if family != LAPLACE or r.rest():
            raise BitstreamError("compact integer blob: data after a constant array")
        return np.full(count, lo, dtype=np.int32)
    loc_code, scale_code = unzigzag(r.varint("location")), unzigzag(r.varint("scale"))
    if abs(loc_code) > MAX_LOC_CODE or not SCALE_CODES[0] <= scale_code <= SCALE_CODES[1]:
        raise BitstreamError(f"compact integer blob: invalid model codes {loc_code}, {scale_code}")
    payload = r.rest()
    words = payload_words(payload, 0, "compact integer blob")
    if words.size == 0:
        raise BitstreamError("compact integer blob: no payload after a non-constant header")
    hi = lo + span
    out = run_decoder(words, int_model(family, lo, hi, _loc(loc_code), _scale(scale_code)), count,
                       "compact integer blob")
    if int(out.min()) != lo or int(out.max()) != hi:
        raise BitstreamError("compact integer blob: corrupted payload (decoded values do not span the support)")
    return out
