"""Entropy coding of VCII's binary codes with constriction under an adaptive binary model.

Each pass of each B-frame emits ``bits`` binary maps. A bit is coded under Bernoulli(p) where
p adapts: it is the Krichevsky-Trofimov estimate (ones + 1/2) / (seen + 1) of the bits
already coded in the same context, the context being (hierarchy level, pass, map, the bit at
the same place in the previous pass). Counts start afresh in every GOP_ section, are updated
after each map of a pass, and are the same on both sides, so the decoder can rebuild every
probability before it reads the map. All passes of all B-frames of a section share one
ANS stream. The model's estimate is the information content under those probabilities.
"""

from __future__ import annotations

import constriction
import numpy as np
import torch

from baselines.vcii.model import LevelNet
from baselines.vcii.progressive import contexts, progressive
from weightstep.coding.entropy import SegmentReader, SegmentWriter

_BERNOULLI = constriction.stream.model.Bernoulli(perfect=False)
_P_MIN = 1e-4


class AdaptiveBits:
    """Counts per (level, pass, map, previous-pass bit); see the module docstring."""

    def __init__(self, iterations: int, max_bits: int = 128):
        self.ones = np.zeros((3, iterations, max_bits, 2), dtype=np.int64)
        self.seen = np.zeros((3, iterations, max_bits, 2), dtype=np.int64)

    def probabilities(self, level: int, it: int, previous: np.ndarray) -> np.ndarray:
        maps = np.arange(previous.shape[0])[:, None]
        p = (self.ones[level, it, maps, previous] + 0.5) / (self.seen[level, it, maps, previous] + 1.0)
        return np.clip(p, _P_MIN, 1.0 - _P_MIN).ravel()

    def update(self, level: int, it: int, previous: np.ndarray, bits: np.ndarray) -> None:
        maps = np.broadcast_to(np.arange(previous.shape[0])[:, None], previous.shape)
        np.add.at(self.seen[level, it], (maps.ravel(), previous.ravel()), 1)
        np.add.at(self.ones[level, it], (maps.ravel(), previous.ravel()), bits.ravel())


def _to_bits(code: torch.Tensor) -> np.ndarray:
    """(1, bits, h, w) of +-1 -> (bits, h*w) of 0/1."""
    return (code[0] > 0).to("cpu", torch.int64).numpy().reshape(code.shape[1], -1)


@torch.no_grad()
def encode_b(net: LevelNet, level: int, frame, left, right, fraction: float, iterations: int, block: int,
             radius: int, writer: SegmentWriter, model: AdaptiveBits) -> tuple[torch.Tensor, float]:
    """Code one B-frame; returns its reconstruction (the decoder's, exactly) and the model's estimated bits."""
    ctx = contexts(net, left, right, fraction, block, radius)
    # the decoder sees exactly these +-1 codes and runs the same decoder cells on them
    recons, codes, _ = progressive(net, left, right, ctx, iterations, frame=frame)
    estimate = 0.0
    previous = np.zeros_like(_to_bits(codes[0]))
    for it, code in enumerate(codes):
        bits = _to_bits(code)
        p = model.probabilities(level, it, previous)
        flat = bits.ravel()
        estimate += float(-(np.log2(np.where(flat == 1, p, 1.0 - p))).sum())
        writer.add(flat, _BERNOULLI, p)
        model.update(level, it, previous, bits)
        previous = bits
    return recons[-1].clamp(0.0, 1.0), estimate


@torch.no_grad()
def decode_b(net: LevelNet, level: int, left, right, fraction: float, iterations: int, block: int, radius: int,
             reader: SegmentReader, model: AdaptiveBits) -> torch.Tensor:
    n_bits = net.arch.bits
    h, w = left.shape[-2] // 16, left.shape[-1] // 16
    ctx = contexts(net, left, right, fraction, block, radius)
    previous = np.zeros((n_bits, h * w), dtype=np.int64)
    codes = []
    for it in range(iterations):
        p = model.probabilities(level, it, previous)
        bits = reader.take(p.size, _BERNOULLI, p).astype(np.int64).reshape(n_bits, h * w)
        model.update(level, it, previous, bits)
        previous = bits
        codes.append(torch.from_numpy(np.where(bits > 0, 1.0, -1.0).astype(np.float32))
                     .view(1, n_bits, h, w).to(left.device))
    recons, _, _ = progressive(net, left, right, ctx, iterations, codes=lambda it: codes[it])
    return recons[-1].clamp(0.0, 1.0)
