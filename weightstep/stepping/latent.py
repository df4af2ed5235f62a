"""The ``latent`` update kind: an integer residual on a latent-grid network's latents.

A conventional P-frame is motion plus a residual; ``warp+latent`` is the same thing inside a
latent-grid network (:class:`~weightstep.inr.grid.GridNet`, the C3 / Cool-chic family): the warp
moves the previous frame's latent grids, and this kind adds an integer residual to each level,
entropy-coded under a zero-mean Laplace per level. The synthesis and the context model stay as
the anchor left them, so a step costs what the residual's integers cost.

Training (:class:`LatentUpdate`): the residual ``r_l`` of level ``l`` is a float tensor (zeros
at the start); the synthesis sees ``r_l + u`` (u ~ U(-0.5, 0.5), the noise proxy of rounding) and
the penalty is the bits of that sample under a Laplace(0, s_l) whose log-scale is trained too.
Coding (:func:`code_latent`): ``round(r_l)`` with a dead zone (|r| < t -> 0; t chosen by
D + lambda R with the real bytes among a few values, "send nothing" included), each level's
scale chosen from a 1/8-octave grid by the exact information content, then one ANS blob.

Frame layout (after the warp, when there is one)::

    L bytes   one per latent level (finest first): 0 = no residual on that level, k >= 1 = a
              residual coded under Laplace(0, 2^((k - 1) / 8 - 6))
    blob      :func:`weightstep.coding.latents.encode_chunks` of the non-zero levels' integers
              (finest first); absent when every level byte is 0

The level count and each level's size come from the network the decoder builds from the
config, never from the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from weightstep.coding.framing import ByteReader
from weightstep.coding.latents import ChunkDecoder, encode_chunks, ideal_bits
from weightstep.errors import BitstreamError
from weightstep.inr.latent_context import laplace_bits
from weightstep.stepping.kindcode import MAX_ABS_Q, Search, register_base

__all__ = ["LatentUpdate", "code_latent", "decode_latent", "scale_of", "THRESHOLDS"]

SCALE_OFFSET = -6.0  # log2 of the smallest scale (code 1): 1/64, a level that is all but zero
SCALE_DIVISIONS = 8  # scale codes are 1/8 octave apart (the context model's own grid)
THRESHOLDS = (0.5, 0.6, 0.75, 1.0)  # dead zones tried: 0.5 is plain rounding; larger ones drop small residuals
INIT_LOG_SCALE = math.log(0.25)  # the training Laplace starts narrow: most residuals should stay zero


def scale_of(code: int) -> float:
    """The Laplace scale of level code ``code`` (1..255)."""
    return 2.0 ** ((code - 1) / SCALE_DIVISIONS + SCALE_OFFSET)


class LatentUpdate(nn.Module):
    """Trainable residual on the latent tensors of ``base`` (name -> the decoded previous state).

    ``latent_names`` says which of ``base``'s tensors are latent grids; every other name gets a
    zero Δ. ``lr`` is the residuals' Adam rate (latents are integers: a rate near 0.05 moves a
    residual by a unit in a few dozen steps).
    """

    def __init__(self, base: Mapping[str, torch.Tensor], latent_names: Sequence[str], *, lr: float):
        super().__init__()
        self.names: tuple[str, ...] = register_base(self, base, lr, "LatentUpdate")
        self.latents = tuple(name for name in self.names if name in set(latent_names))
        if not self.latents:
            raise ValueError("the latent step kind needs a network with latent grids (inr=grid)")
        self.lr = float(lr)
        self.residuals = nn.ParameterList(nn.Parameter(torch.zeros_like(base[name])) for name in self.latents)
        self.log_scale = nn.Parameter(torch.full((len(self.latents),), INIT_LOG_SCALE,
                                                 device=base[self.latents[0]].device))
        self._sample: list[torch.Tensor] | None = None  # the last training sample (the penalty's input)

    def base(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"base_{i}") for i, name in enumerate(self.names)}

    def delta(self, train: bool = False, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """name -> Δ: the residual plus rounding noise when training, rounded otherwise; zeros elsewhere."""
        values = []
        for r in self.residuals:
            if train:
                noise = torch.rand(r.shape, generator=generator, device=r.device) - 0.5
                values.append(r + noise)
            else:
                values.append(torch.round(r))
        self._sample = values if train else None
        by_name = dict(zip(self.latents, values, strict=True))
        return {name: by_name[name] if name in by_name else torch.zeros_like(b) for name, b in self.base().items()}

    def penalty(self) -> torch.Tensor:
        """Bits of the last training sample under each level's Laplace(0, s_l) (a differentiable scalar)."""
        values = self._sample if self._sample is not None else [torch.round(r) for r in self.residuals]
        scales = torch.exp(self.log_scale.clamp(math.log(scale_of(1)), math.log(scale_of(255))))
        total = self.log_scale.new_zeros(())
        for level, value in enumerate(values):
            total = total + laplace_bits(value, torch.zeros_like(value), scales[level]).sum()
        return total

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.residuals), "lr": self.lr}, {"params": [self.log_scale], "lr": 0.05}]

    def open_count(self) -> int:
        """Residual integers that are not zero after rounding."""
        with torch.no_grad():
            return int(sum(int((torch.round(r) != 0).sum()) for r in self.residuals))

    def fitted(self) -> list[np.ndarray]:
        """The trained residuals (float64, CPU), one per latent level, finest first."""
        out = [r.detach().to("cpu", torch.float64).numpy() for r in self.residuals]
        for name, value in zip(self.latents, out, strict=True):
            if not np.isfinite(value).all():
                raise ValueError(f"the latent residual of {name!r} is not finite")
        return out


def _best_scale(q: np.ndarray) -> int:
    """The level code whose Laplace(0, s) gives ``q`` the fewest bits (q not all zero)."""
    flat = q.reshape(-1).astype(np.float64)
    lo, hi = int(flat.min()), int(flat.max())
    mean_abs = float(np.abs(flat).mean())
    guess = round((math.log2(max(mean_abs, 1e-3)) - SCALE_OFFSET) * SCALE_DIVISIONS) + 1
    best, best_bits = 1, math.inf
    for code in range(max(1, guess - 24), min(255, guess + 24) + 1):
        bits = ideal_bits(flat, np.zeros(flat.size), np.full(flat.size, scale_of(code)), min(lo, 0), max(hi, 0))
        if bits < best_bits:
            best, best_bits = code, bits
    return best


def _frame(levels: list[np.ndarray]) -> bytes:
    """Level codes + blob for integer residuals ``levels`` (finest first)."""
    codes, chunks = [], []
    for q in levels:
        if not q.any():
            codes.append(0)
            continue
        code = _best_scale(q)
        codes.append(code)
        flat = q.reshape(-1)
        chunks.append((flat, np.zeros(flat.size), np.full(flat.size, scale_of(code))))
    return bytes(codes) + (encode_chunks(chunks) if chunks else b"")


def code_latent(update: LatentUpdate, distortion: Callable[[dict[str, torch.Tensor]], float],
                lam_per_bit: float) -> tuple[bytes, dict[str, torch.Tensor], dict]:
    """Quantise and code ``update``: the dead zone by ``distortion(Δ) + lam_per_bit * bits``.

    ``distortion`` gets the decoder's Δ (float32 CPU, every name of the base). Returns (frame,
    that Δ, facts: bytes, changed integers, threshold, level codes, candidates).
    """
    fitted = update.fitted()
    shapes = {name: tuple(b.shape) for name, b in update.base().items()}
    search = Search(float(lam_per_bit), distortion)

    def build(threshold: float | None):
        levels = []
        for r in fitted:
            q = np.zeros(r.shape, np.int32) if threshold is None else np.where(np.abs(r) < threshold, 0.0, np.rint(r))
            if np.abs(q).max(initial=0) > MAX_ABS_Q:
                return None
            levels.append(np.asarray(q, np.int32))
        data = _frame(levels)
        return data, _delta(shapes, update.latents, levels), levels

    search.offer("nothing", lambda: build(None))
    for threshold in THRESHOLDS:
        search.offer(threshold, lambda t=threshold: build(t))
    cost, bits, dist, (data, delta, levels) = search.best
    facts = {"bytes": len(data), "changed": int(sum(int(np.count_nonzero(q)) for q in levels)),
             "threshold": search.best_key, "level_codes": list(data[:len(levels)]), "distortion": dist,
             "bits": bits, "cost": cost, "candidates": search.evaluated()}
    return data, delta, facts


def _delta(shapes: Mapping[str, tuple[int, ...]], latents: Sequence[str],
           levels: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
    by_name = dict(zip(latents, levels, strict=True))
    return {name: torch.from_numpy(np.asarray(by_name[name], np.float32).reshape(shape)) if name in by_name
            else torch.zeros(shape) for name, shape in shapes.items()}


def decode_latent(data: bytes, shapes: Sequence[tuple[str, tuple[int, ...]]],
                  latents: Sequence[str]) -> dict[str, torch.Tensor]:
    """The decoder's Δ (name -> float32 tensor, every name of ``shapes``) of a :func:`code_latent` frame."""
    shape_of = dict(shapes)
    missing = [name for name in latents if name not in shape_of]
    if not latents or missing:
        raise BitstreamError("latent step: the network has no latent grids to step")
    reader = ByteReader(bytes(data), "latent step")
    codes = list(reader.take(len(latents), "level codes"))
    blob = reader.rest()
    levels: list[np.ndarray] = []
    decoder = ChunkDecoder(blob) if any(codes) else None
    if decoder is None and blob:
        raise BitstreamError("latent step: data after an empty residual")
    for name, code in zip(latents, codes, strict=True):
        count = math.prod(shape_of[name])
        if code == 0:
            levels.append(np.zeros(count, np.int32))
            continue
        levels.append(decoder.decode(np.zeros(count), np.full(count, scale_of(code))))
    if decoder is not None:
        decoder.finish()
    return _delta(shape_of, latents, levels)
