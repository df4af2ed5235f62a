"""Coding a step's warp: quantisation, the blob, prediction from the previous warp, the step search.

The field itself and the resampling it drives are in :mod:`weightstep.stepping.warp`.

Blob layout (one per step; ``n = 6 + 2 G^2`` values, G from the codec config)::

    flags   uint8    bit 0: the warp moves something (else the blob is this one byte)
                     bit 1 (streams from format 5): the integers are coded as their difference
                     from the prediction p = rint(previous decoded warp / step), the previous step's
                     warp in the same group of pictures (motion persists); the encoder writes
                     whichever layout is shorter
    e       varint   zigzag step exponent: step = 2^(e/4) pixels (float32), |e| <= 64
    s       uint8    Laplace scale of the integers: 2^(s/8 - 8)
    lo, hi  varint   zigzag support bounds of the integers (|v| <= 2^15)
    words   uint32   constriction ANS words to the blob's end (none when lo == hi)

The decoded integers (the differences plus p, when predicted) lie in [-2^15, 2^15]. Before
coding, the encoder moves the nodes' least-squares affine part into the six affine numbers
(:func:`affine_split`: the same field, so a pan is six numbers rather than every node).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import constriction
import numpy as np
import torch

from weightstep.coding.framing import ByteReader, put_varint, unzigzag, zigzag
from weightstep.errors import BitstreamError
from weightstep.stepping.kindcode import Search

__all__ = ["MAX_ABS", "MAX_EXPONENT", "STEP_EXPONENTS", "warp_count", "quantise_warp", "dequantise_warp",
           "predict_warp", "encode_warp", "decode_warp", "affine_split", "code_warp"]

MAX_ABS = 2**15  # largest integer a warp value may quantise to
MAX_EXPONENT = 64  # steps in [2^-16, 2^16] pixels
STEP_EXPONENTS = (-16, -14, -12, -10, -8, -6, -4)  # 1/16 .. 1/2 pixel, tried by code_warp


def warp_count(grid: int) -> int:
    """Numbers a warp with a ``grid`` x ``grid`` node lattice codes."""
    return 6 + 2 * grid * grid


def _step(e: int) -> float:
    if not -MAX_EXPONENT <= e <= MAX_EXPONENT:
        raise ValueError(f"warp step exponent {e} outside [-{MAX_EXPONENT}, {MAX_EXPONENT}]")
    return float(np.float32(2.0 ** (e / 4)))


def _split_matrix(grid: int, width: int, height: int) -> np.ndarray:
    """(G^2+3, G^2) matrix mapping one channel's nodes to (its least-squares affine numbers: x slope,
    y slope, shift; then the nodes less that affine part): what :func:`affine_split` applies."""
    radius = max(width, height) / 2.0
    nx = (np.arange(grid) * ((width - 1) / (grid - 1)) - (width - 1) / 2.0) / radius
    ny = (np.arange(grid) * ((height - 1) / (grid - 1)) - (height - 1) / 2.0) / radius
    design = np.stack([np.tile(nx, grid), np.repeat(ny, grid), np.ones(grid * grid)], axis=1)
    pinv = np.linalg.pinv(design)
    return np.concatenate([pinv, np.eye(grid * grid) - design @ pinv], axis=0)


def quantise_warp(values: np.ndarray | torch.Tensor, exponent: int) -> np.ndarray:
    """Integers of ``values`` at step 2^(exponent/4) pixels (clipped to the coder's range)."""
    x = np.asarray(values.detach().cpu().double() if isinstance(values, torch.Tensor) else values, np.float64)
    if not np.isfinite(x).all():
        raise ValueError("cannot quantise a warp with NaN or infinite values")
    return np.clip(np.rint(x / _step(exponent)), -MAX_ABS, MAX_ABS).astype(np.int32)


def dequantise_warp(q: np.ndarray, exponent: int) -> np.ndarray:
    return q.astype(np.float64) * _step(exponent)


def _scale(code: int) -> float:
    return 2.0 ** (code / 8.0 - 8.0)


def predict_warp(previous: np.ndarray, exponent: int) -> np.ndarray:
    """The integers a predicted warp at step exponent ``exponent`` adds its coded differences to:
    the previous decoded warp's values on this step (float64 division and rounding: the same on
    every machine): the previous warp quantised at that step."""
    return quantise_warp(np.asarray(previous, np.float64), exponent)


def encode_warp(q: np.ndarray, exponent: int, previous: np.ndarray | None = None) -> bytes:
    """The blob of one quantised warp (layout in the module docstring); with ``previous`` (the last
    decoded warp's values) the integers are coded as their difference from its prediction."""
    q = np.asarray(q, np.int32).reshape(-1)
    flags = 1
    if previous is not None:
        q = q - predict_warp(previous, exponent)
        flags = 3
    elif not q.any():
        return bytes([0])
    out = bytearray([flags])
    put_varint(out, zigzag(int(exponent)))
    spread = float(np.mean(np.abs(q)))
    code = int(np.clip(round(8.0 * (math.log2(max(spread, 2.0**-8)) + 8.0)), 0, 255))
    out.append(code)
    lo, hi = int(q.min()), int(q.max())
    if not -MAX_ABS <= lo <= hi <= MAX_ABS:
        raise ValueError(f"warp differences span [{lo}, {hi}], beyond +-{MAX_ABS}")
    put_varint(out, zigzag(lo))
    put_varint(out, zigzag(hi))
    if lo < hi:
        coder = constriction.stream.stack.AnsCoder()
        model = constriction.stream.model.QuantizedLaplace(lo, hi)
        coder.encode_reverse(q, model, np.zeros(q.size), np.full(q.size, _scale(code)))
        out += np.asarray(coder.get_compressed(), dtype=np.uint32).astype("<u4").tobytes()
    return bytes(out)


def decode_warp(data: bytes, grid: int, previous: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """(integers, exponent) of a warp blob; ``previous``: the last decoded warp's values where the
    stream may predict from it (format 5, not the first step of a group of pictures), else None and a
    predicted blob is refused. Raises BitstreamError on anything malformed."""
    n = warp_count(grid)
    r = ByteReader(bytes(data), "warp")
    flags = r.take(1, "flags")[0]
    if flags not in (0, 1, 3) or (flags == 3 and previous is None):
        raise BitstreamError(f"warp: unknown flags {flags:#x}" if flags not in (0, 1, 3)
                             else "warp: predicted from a warp this stream does not have")
    if previous is not None and np.asarray(previous).shape != (n,):
        raise ValueError(f"previous warp of shape {np.asarray(previous).shape}, expected ({n},)")
    if flags == 0:
        if r.rest():
            raise BitstreamError("warp: data after an identity warp")
        return np.zeros(n, np.int32), 0
    exponent = unzigzag(r.varint("step exponent"))
    if not -MAX_EXPONENT <= exponent <= MAX_EXPONENT:
        raise BitstreamError(f"warp: step exponent {exponent} out of range")
    code = r.take(1, "scale")[0]
    lo, hi = unzigzag(r.varint("low bound")), unzigzag(r.varint("high bound"))
    if not -MAX_ABS <= lo <= hi <= MAX_ABS:
        raise BitstreamError(f"warp: invalid support [{lo}, {hi}]")
    payload = r.rest()
    if lo == hi:
        if payload:
            raise BitstreamError("warp: payload after a constant support")
        q = np.full(n, lo, np.int32)
    else:
        if len(payload) % 4 or len(payload) > 4 * (n + 4):
            raise BitstreamError(f"warp: {len(payload)} payload bytes for {n} values")
        try:
            coder = constriction.stream.stack.AnsCoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
            model = constriction.stream.model.QuantizedLaplace(lo, hi)
            q = np.asarray(coder.decode(model, np.zeros(n), np.full(n, _scale(code))), np.int32)
        except Exception as exc:  # constriction raises on exhausted or corrupt data
            raise BitstreamError(f"warp: {exc}") from None
        if not coder.is_empty():
            raise BitstreamError("warp: data left after the last value")
    if flags == 3:
        q = q.astype(np.int64) + predict_warp(previous, exponent)
        if np.abs(q).max() > MAX_ABS:
            raise BitstreamError("warp: a predicted value beyond the warp's range")
        q = q.astype(np.int32)
    return q, exponent


def affine_split(values: np.ndarray | torch.Tensor, grid: int, width: int, height: int) -> np.ndarray:
    """The same displacement field with the nodes' least-squares affine part moved into the affine
    numbers: bilinear interpolation reproduces an affine field exactly, so only the split changes,
    and the nodes keep what the affine part cannot say (cheaper to code: a global pan costs 6
    numbers instead of every node)."""
    v = np.asarray(values.detach().cpu().double() if isinstance(values, torch.Tensor) else values, np.float64).copy()
    if grid < 2:
        return v
    split = _split_matrix(grid, width, height) @ v[6:].reshape(2, grid * grid).T  # (3 + G^2, 2)
    v[[0, 2]] += split[0]  # x slopes of dx, dy
    v[[1, 3]] += split[1]  # y slopes
    v[[4, 5]] += split[2]  # shifts
    v[6:] = split[3:].T.reshape(-1)
    return v


def code_warp(values: torch.Tensor | np.ndarray, distortion: Callable[[np.ndarray], float], lam_per_bit: float,
              exponents: Sequence[int] = STEP_EXPONENTS, previous: np.ndarray | None = None
              ) -> tuple[bytes, np.ndarray, dict]:
    """Pick the step minimising ``distortion(decoded values) + lam_per_bit * bits`` (the identity warp
    included); returns (blob, the decoded values, facts). ``exponents`` are tried in order (finest
    first) by :meth:`~weightstep.stepping.kindcode.Search.descend`, until the cost has risen twice
    in a row past the best of them (about unimodal along the step: the search stops near its
    minimum instead of rendering every step). With ``previous`` (the last decoded warp, where the
    stream predicts), each step's integers are coded directly or as differences from the
    prediction, whichever is shorter (the same decoded warp either way)."""
    search = Search(float(lam_per_bit), distortion)
    size = values.numel() if isinstance(values, torch.Tensor) else np.asarray(values).size

    def build(e: int | None) -> tuple[bytes, np.ndarray, int | None]:
        if e is None:
            return encode_warp(np.zeros(size, np.int32), 0), np.zeros(size), None
        q = quantise_warp(values, e)
        blob = encode_warp(q, e)
        if previous is not None:
            differences = q.astype(np.int64) - predict_warp(previous, e)
            if np.abs(differences).max() <= MAX_ABS:
                predicted = encode_warp(q, e, previous)
                blob = predicted if len(predicted) < len(blob) else blob
        return blob, dequantise_warp(q, e), e

    search.offer(("identity",), lambda: build(None))  # (the stop looks at the steps alone)
    search.descend(((e,), lambda e=e: build(e)) for e in exponents)
    blob, decoded, e = search.best[3]
    facts = {"warp_bytes": len(blob), "warp_step": None if e is None else _step(e),
             "warp_predicted": bool(blob[0] & 2), "warp_shift": [float(decoded[4]), float(decoded[5])]}
    return blob, decoded, facts
