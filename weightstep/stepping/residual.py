"""A block-DCT residual on a latent grid's finest level: local detail inside a weight step.

A step's warp moves the grid network's latents and its low-rank update changes them along a few
separable directions; neither can add a detail in one place of the frame without paying for it
across the whole frame. A conventional P-frame adds such detail as a transformed residual in
blocks, most of them skipped. ``residual=dct`` does the same inside the network: the finest latent
level (one latent per pixel, ``latents.0``) gets an additive map coded as 8 x 8 DCT coefficients,
fitted together with the step and coded after it, so what a frame adds stays where it belongs.

Fitting (:class:`BlockResidual`): the coefficients are free parameters (zeros at the start) and the
step's penalty gains ``BITS_PER_UNIT * sum |c|`` bits, an L1 stand-in for their rate that drives most
of them to zero. Measured on carphone (10 frames, an 800-step anchor, lambda 3e-3, the residual
fitted on top of a coded step): ``BITS_PER_UNIT`` 11.5 lowered the step's D + lambda R by the most,
against 5.8 and 17 (README, weight stepping section).

Coding (:func:`code_residual`): the coefficients are divided by a step ``q``, rounded (with a dead
zone), and coded block by block; ``q``, the dead zone and "no residual" are chosen by D + lambda R
with the real bytes. Frame layout::

    uint8     e: 0 = no residual (nothing follows); else q = 2^((e - 128) / 8)
    uint8     p: P(a block is coded) = p / 256 (1..255), the flags' own frequency
    6 bytes   per band of the block's frequencies (u + v in {0}, {1}, {2}, {3, 4}, {5..7}, {8..14}):
              0 = zero in every coded block (not coded), k >= 1 = Laplace(0, scale_of(k))
    varint    -lo, then varint hi: the integers' support [lo, hi] (lo <= 0 <= hi, not both 0)
    words     ANS words (constriction): a flag per block in raster order, then per coded block its
              coefficients band by band (u + v, then u, ascending)

The map a decoder adds is ``C^T Q C`` per block (C the orthonormal 8-point DCT-II, Q the dequantised
coefficients), cropped to the level, computed in float32 on the CPU by encoder and decoder alike.
The block count comes from the frame size the decoder already knows, never from the data; what the
encoder never writes is refused (a coded block with no non-zero coefficient, a band code for a band
that is all zero, a block probability other than the flags' frequency, a support other than the
integers' [min, max]).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from weightstep.coding.entropy import SegmentReader, SegmentWriter
from weightstep.coding.framing import ByteReader, put_varint
from weightstep.errors import BitstreamError
from weightstep.stepping.dct import dct_matrix
from weightstep.stepping.kindcode import MAX_ABS_Q, Search
from weightstep.stepping.latent import bernoulli_model, best_scale, laplace_model, p_code

__all__ = ["BLOCK", "BITS_PER_UNIT", "BlockResidual", "code_residual", "decode_residual", "residual_map", "step_of"]

BLOCK = 8  # block side: the usual transform size of a conventional codec at these resolutions
BITS_PER_UNIT = 11.5  # the fit's bits per unit of |coefficient| (measured best of 5.8, 11.5, 17; module docstring)
LR = 0.025  # Adam lr of the coefficients (typical fitted magnitudes 0.3-1 latent unit)
BAND_EDGES = (0, 1, 2, 3, 5, 8, 15)  # band b holds the frequencies with u + v in [BAND_EDGES[b], BAND_EDGES[b + 1])
STEP_CODES = tuple(range(96, 129, 4))  # q = 1/16 .. 1 in half octaves: what the coder tries (coarse first, Search.descend)
DEAD_ZONES = (0.5, 0.65)  # |c / q| below this rounds to 0: plain rounding, and one that drops more


def step_of(code: int) -> float:
    """The quantisation step of step code ``code`` (1..255)."""
    return 2.0 ** ((code - 128) / 8.0)


def _band_order() -> tuple[np.ndarray, np.ndarray]:
    """(flat index u * 8 + v of the 64 frequencies in coding order, the band of each)."""
    pairs = sorted((u + v, u, v) for u in range(BLOCK) for v in range(BLOCK))
    order = np.array([u * BLOCK + v for _, u, v in pairs])
    band = np.searchsorted(np.array(BAND_EDGES), np.array([d for d, _, _ in pairs]), side="right") - 1
    return order, band


ORDER, BAND = _band_order()
BANDS = len(BAND_EDGES) - 1


def grid_blocks(height: int, width: int) -> tuple[int, int]:
    """(block rows, block columns) covering a (height, width) level."""
    return -(-int(height) // BLOCK), -(-int(width) // BLOCK)


def residual_map(coefficients: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(1, 1, height, width): the spatial map of (rows, cols, 8, 8) DCT coefficients (differentiable)."""
    c = dct_matrix(BLOCK, coefficients.dtype, coefficients.device)
    blocks = c.t() @ coefficients @ c
    rows, cols = coefficients.shape[:2]
    spatial = blocks.permute(0, 2, 1, 3).reshape(rows * BLOCK, cols * BLOCK)
    return spatial[:height, :width].reshape(1, 1, height, width)


class BlockResidual(nn.Module):
    """Trainable DCT coefficients of a residual on a (height, width) latent level."""

    def __init__(self, height: int, width: int):
        super().__init__()
        self.height, self.width = int(height), int(width)
        self.coefficients = nn.Parameter(torch.zeros(*grid_blocks(height, width), BLOCK, BLOCK))

    def delta(self) -> torch.Tensor:
        return residual_map(self.coefficients, self.height, self.width)

    def penalty(self) -> torch.Tensor:
        """The L1 stand-in for the residual's bits."""
        return BITS_PER_UNIT * self.coefficients.abs().sum()

    def param_groups(self) -> list[dict]:
        return [{"params": [self.coefficients], "lr": LR}]

    def fitted(self) -> np.ndarray:
        return self.coefficients.detach().cpu().numpy().astype(np.float64)


def _frame(q: np.ndarray, code: int) -> bytes:
    """The frame of integer coefficients ``q`` (rows, cols, 8, 8; some non-zero) at step code ``code``."""
    flat = q.reshape(-1, BLOCK * BLOCK)[:, ORDER]
    flags = flat.any(axis=1)
    coded = flat[flags]
    lo, hi = min(0, int(coded.min())), max(0, int(coded.max()))
    flag_code = p_code(flags)
    head = bytearray([code, flag_code])
    bands = []
    for b in range(BANDS):
        values = coded[:, BAND == b]
        bands.append((values, best_scale(values, lo, hi)) if values.any() else (None, 0))
        head.append(bands[-1][1])
    put_varint(head, -lo)
    put_varint(head, hi)
    writer = SegmentWriter()
    writer.add(flags.astype(np.int32), bernoulli_model(flag_code))
    for values, scale in bands:  # band by band over all coded blocks: each band one Laplace
        if values is not None:
            writer.add(values.reshape(-1).astype(np.int32), laplace_model(lo, hi, scale))
    return bytes(head) + writer.finish()


def code_residual(fitted: np.ndarray, height: int, width: int, distortion: Callable[[torch.Tensor | None], float],
                  lam_per_bit: float) -> tuple[bytes, torch.Tensor | None, dict]:
    """Quantise and code the fitted coefficients of a (height, width) level: step and dead zone by
    ``distortion(map) + lam_per_bit * bits`` with the real bytes, "no residual" included.

    ``distortion`` gets the decoder's map ((1, 1, height, width) float32 CPU) or None (no residual).
    Returns (frame, that map or None, facts).
    """
    if tuple(fitted.shape) != (*grid_blocks(height, width), BLOCK, BLOCK):
        raise ValueError(f"residual coefficients of shape {fitted.shape} do not cover a {width}x{height} level")
    search = Search(float(lam_per_bit), distortion)

    def build(code: int | None, zone: float = 0.5):
        if code is None:
            return bytes(1), None, None
        ratio = fitted / step_of(code)
        q = np.where(np.abs(ratio) < zone, 0.0, np.rint(ratio)).astype(np.int64)
        if np.abs(q).max(initial=0) > MAX_ABS_Q or not q.any():  # all zero: the same as "nothing", offered first
            return None
        data = _frame(q, code)
        values = torch.from_numpy((q * step_of(code)).astype(np.float32))
        return data, residual_map(values, height, width), q

    search.offer(("nothing",), lambda: build(None))
    for zone in DEAD_ZONES:
        search.descend(((code, zone), lambda c=code, z=zone: build(c, z)) for code in STEP_CODES[::-1])
    cost, bits, dist, (data, delta, q) = search.best
    facts = {"residual_bytes": len(data), "residual_step": step_of(data[0]) if data[0] else None,
             "residual_nonzero": int(np.count_nonzero(q)) if q is not None else 0,
             "residual_blocks": int(q.reshape(-1, BLOCK * BLOCK).any(axis=1).sum()) if q is not None else 0}
    return data, delta, facts


def decode_residual(data: bytes, height: int, width: int) -> torch.Tensor | None:
    """The decoder's map ((1, 1, height, width) float32) of a :func:`code_residual` frame, or None."""
    reader = ByteReader(bytes(data), "residual")
    code = reader.take(1, "step code")[0]
    if code == 0:
        if reader.rest():
            raise BitstreamError("residual: data after an empty residual")
        return None
    rows, cols = grid_blocks(height, width)
    flag_code = reader.take(1, "block probability")[0]
    if flag_code == 0:
        raise BitstreamError("residual: a block probability of 0")
    scales = list(reader.take(BANDS, "band scales"))
    if not any(scales):
        raise BitstreamError("residual: every band is empty")
    lo, hi = -reader.varint("support low"), reader.varint("support high")
    if lo < -MAX_ABS_Q or hi > MAX_ABS_Q or lo == hi:
        raise BitstreamError(f"residual: support [{lo}, {hi}] out of range")
    stream = SegmentReader(reader.rest(), "residual")
    flags = stream.take(rows * cols, bernoulli_model(flag_code)).astype(bool)
    if not flags.any() or p_code(flags) != flag_code:
        raise BitstreamError("residual: the block flags do not match their stated probability")
    coded = np.zeros((int(flags.sum()), BLOCK * BLOCK), np.int64)
    for b, scale in enumerate(scales):
        if scale:
            values = stream.take(coded.shape[0] * int((BAND == b).sum()), laplace_model(lo, hi, scale))
            coded[:, BAND == b] = values.reshape(coded.shape[0], -1)
            if not values.any():
                raise BitstreamError(f"residual: band {b} is coded but all zero")
    stream.finish()
    if not coded.any(axis=1).all():
        raise BitstreamError("residual: a coded block holds no non-zero coefficient")
    if (min(0, int(coded.min())), max(0, int(coded.max()))) != (lo, hi):
        raise BitstreamError(f"residual: the coefficients do not span the stated [{lo}, {hi}]")
    full = np.zeros((rows * cols, BLOCK * BLOCK), np.int64)
    natural = np.zeros_like(coded)
    natural[:, ORDER] = coded
    full[flags] = natural
    values = torch.from_numpy((full.reshape(rows, cols, BLOCK, BLOCK) * step_of(code)).astype(np.float32))
    return residual_map(values, height, width)
