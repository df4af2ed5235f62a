"""Integer latents under per-symbol quantised Laplace models (constriction), coded in chunks.

A context model gives each latent its own (mu, scale), and the decoder can only compute the
parameters of one chunk (a pass over a grid) after decoding the chunks before it. The encoder
therefore collects every chunk in decoding order and codes them in one reversed ANS pass; the
decoder pops chunk after chunk. Blob layout (little-endian)::

    lo, hi   int32   the symbol support [lo, hi], both inclusive (the data's min and max)
    words    uint32  constriction AnsCoder words (none when every symbol is lo == hi)

Parameters reach the coder as float64 arrays; callers round them to a coarse grid first
(:func:`weightstep.inr.latent_context.round_params`) so that encoder and decoder agree.
"""

from __future__ import annotations

import struct

import constriction
import numpy as np

from weightstep.coding.entropy import MAX_SUPPORT
from weightstep.errors import BitstreamError

_HEADER = struct.Struct("<ii")
HEADER_BYTES = _HEADER.size


def _model(lo: int, hi: int):
    return constriction.stream.model.QuantizedLaplace(lo, hi)


def _check_params(mu: np.ndarray, scale: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    mu = np.ascontiguousarray(mu, dtype=np.float64).reshape(-1)
    scale = np.ascontiguousarray(scale, dtype=np.float64).reshape(-1)
    if mu.size != count or scale.size != count:
        raise ValueError(f"{mu.size} locations and {scale.size} scales for {count} symbols")
    if not (np.isfinite(mu).all() and np.isfinite(scale).all() and (scale > 0).all()):
        raise ValueError("Laplace parameters must be finite with positive scales")
    return mu, scale


def ideal_bits(symbols: np.ndarray, mu: np.ndarray, scale: np.ndarray, lo: int, hi: int) -> float:
    """Information content in bits of ``symbols`` under the quantised Laplaces, tails folded into lo/hi."""
    return float(symbol_bits(symbols, mu, scale, lo, hi).sum())


def symbol_bits(symbols: np.ndarray, mu: np.ndarray, scale: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """:func:`ideal_bits` of each symbol (float64, flat)."""
    x = np.asarray(symbols, dtype=np.float64).reshape(-1)
    mu, scale = _check_params(mu, scale, x.size)

    def cdf(t: np.ndarray) -> np.ndarray:
        z = (t - mu) / scale
        return np.where(z < 0, 0.5 * np.exp(np.minimum(z, 0.0)), 1.0 - 0.5 * np.exp(-np.maximum(z, 0.0)))

    upper = np.where(x >= hi, 1.0, cdf(x + 0.5))
    lower = np.where(x <= lo, 0.0, cdf(x - 0.5))
    mass = np.maximum(upper - lower, 2.0**-24)
    return -np.log2(mass)


def encode_chunks(chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> bytes:
    """Code ``[(symbols, mu, scale), ...]`` (decoding order) into one blob."""
    if not chunks:
        return _HEADER.pack(0, 0)
    symbols = np.concatenate([np.asarray(s).reshape(-1) for s, _, _ in chunks])
    if symbols.size and not np.array_equal(symbols, np.rint(symbols)):
        raise ValueError("latents to code must be integers")
    symbols = symbols.astype(np.int64)
    lo, hi = (int(symbols.min()), int(symbols.max())) if symbols.size else (0, 0)
    if hi - lo + 1 > MAX_SUPPORT or lo < -(2**31) or hi > 2**31 - 1:
        raise ValueError(f"latent support [{lo}, {hi}] is too wide to code")
    header = _HEADER.pack(lo, hi)
    if lo == hi:
        return header
    mu = np.concatenate([_check_params(m, s, np.asarray(x).size)[0] for x, m, s in chunks])
    scale = np.concatenate([_check_params(m, s, np.asarray(x).size)[1] for x, m, s in chunks])
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols.astype(np.int32), _model(lo, hi), mu, scale)
    return header + np.asarray(coder.get_compressed(), dtype=np.uint32).astype("<u4").tobytes()


class ChunkDecoder:
    """Decodes the chunks of one blob in order; :meth:`finish` checks that nothing is left over."""

    def __init__(self, data: bytes):
        data = bytes(data)
        if len(data) < HEADER_BYTES:
            raise BitstreamError("latent blob: shorter than its header")
        self.lo, self.hi = _HEADER.unpack_from(data)
        if self.hi < self.lo or self.hi - self.lo + 1 > MAX_SUPPORT:
            raise BitstreamError(f"latent blob: invalid support [{self.lo}, {self.hi}]")
        payload = data[HEADER_BYTES:]
        if len(payload) % 4:
            raise BitstreamError("latent blob: payload is not a whole number of 32-bit words")
        if self.lo == self.hi and payload:
            raise BitstreamError("latent blob: payload after a constant support")
        self.constant = self.lo == self.hi
        self.coder = None if self.constant else constriction.stream.stack.AnsCoder(
            np.frombuffer(payload, dtype="<u4").astype(np.uint32))
        self.model = None if self.constant else _model(self.lo, self.hi)

    def decode(self, mu: np.ndarray, scale: np.ndarray) -> np.ndarray:
        mu = np.ascontiguousarray(mu, dtype=np.float64).reshape(-1)
        mu, scale = _check_params(mu, scale, mu.size)
        if self.constant:
            return np.full(mu.size, self.lo, dtype=np.int32)
        try:
            return np.asarray(self.coder.decode(self.model, mu, scale), dtype=np.int32)
        except Exception as exc:  # constriction raises on exhausted or corrupt data
            raise BitstreamError(f"latent blob: {exc}") from None

    def finish(self) -> None:
        if self.coder is not None and not self.coder.is_empty():
            raise BitstreamError("latent blob: data left after the last latent")
