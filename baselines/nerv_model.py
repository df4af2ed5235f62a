"""The NeRV network (Chen et al., NeurIPS 2021) and its up-scaling plan for any frame size.

Written from the paper, not from its code::

    t = i / (T - 1)                               normalised frame index in [0, 1]
    Gamma(t) = (sin(b^0 pi t), cos(b^0 pi t), ..., sin(b^(l-1) pi t), cos(b^(l-1) pi t))
                                                  b = 1.25, l = 80: 160 values
    stem:   Linear(2l, hidden) + GELU, Linear(hidden, C0 * h0 * w0) + GELU, reshaped (C0, h0, w0)
    blocks: for each factor s_k: Conv3x3(C_k -> C_(k+1) * s_k^2), PixelShuffle(s_k), GELU
    head:   Conv1x1(C_last -> 3), sigmoid, crop to H x W

Channels: C_(k+1) = max(min_channels, round(C_k / reduction)) (NeRV narrows the maps as they
grow). The embedding is computed in float64 on the CPU and then cast to float32: the
highest frequencies (1.25^79 pi, about 1.4e8) need the precision, and it makes the input
identical on every device. No normalisation layers (their statistics would be state to
send and would make a frame depend on its batch). Initial weights: He-uniform for layers
followed by GELU, U(-sqrt(3/fan_in), sqrt(3/fan_in)) for the head, zero biases, from a
``torch.Generator`` seeded from the config.

Up-scaling plan (:func:`plan_upscale`): one factor sequence (s_1, ..., s_n), each from
{2, 3, 4, 5}, serves both axes; with P = prod(s_k) the stem grid is h0 = ceil(H / P),
w0 = ceil(W / P), so the network's output, h0 P x w0 P, covers the frame. The output is
CROPPED to its top-left H x W: the last (h0 P - H) rows and (w0 P - W) columns are computed
but never shown or trained. The plan minimises the cropped share of the output plus a
quarter of |log2(min(h0, w0) / stem_target)| (the stem grid's short side near a target:
NeRV's own 1080p plan, 5-3-2-2-2 on a 9x16 grid, is the plan for 1920x1080 with target 9).
``blocks=0`` lets it choose the number of blocks, using the prime factors (2, 3, 5) of P in
decreasing order, as NeRV does; ``blocks=n`` uses n factors from {2, 3, 4, 5}, in
decreasing order. Ties go to the smaller P. Examples (target 4): 176x144 -> 3-3-2-2 on 4x5,
output 144x180 cropped to 144x176.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn

from weightstep.errors import ConfigError
from weightstep.inr.siren import init_generator, uniform_

FACTORS = (2, 3, 4, 5)
_PRIMES = (5, 3, 2)
_MAX_AUTO_BLOCKS = 16


@dataclass(frozen=True)
class UpscalePlan:
    """Stem grid and up-scaling factors for a frame of height x width."""

    height: int
    width: int
    factors: tuple[int, ...]
    stem_height: int
    stem_width: int

    @property
    def scale(self) -> int:
        return math.prod(self.factors)

    @property
    def out_height(self) -> int:
        return self.stem_height * self.scale

    @property
    def out_width(self) -> int:
        return self.stem_width * self.scale

    @property
    def cropped(self) -> tuple[int, int]:
        """(rows, columns) of the network's output cut off at the bottom and right."""
        return self.out_height - self.height, self.out_width - self.width

    @property
    def waste(self) -> float:
        """Share of the output that is cropped away (0 when the plan fits exactly)."""
        return self.out_height * self.out_width / (self.height * self.width) - 1.0

    def to_json(self) -> dict:
        return {"factors": list(self.factors), "stem": [self.stem_height, self.stem_width]}


def _smooth_numbers(limit: int) -> list[int]:
    """All 5-smooth numbers 2..limit (products of 2, 3 and 5)."""
    out = []
    for a in range(int(math.log2(limit)) + 1):
        for b in range(int(math.log(limit, 3)) + 2):
            for c in range(int(math.log(limit, 5)) + 2):
                value = 2**a * 3**b * 5**c
                if 2 <= value <= limit:
                    out.append(value)
    return sorted(set(out))


def _prime_factors(value: int) -> tuple[int, ...]:
    out = []
    for p in _PRIMES:
        while value % p == 0:
            out.append(p)
            value //= p
    return tuple(out)


def plan_upscale(height: int, width: int, *, blocks: int = 0, stem_target: int = 4,
                 factors: tuple[int, ...] = FACTORS) -> UpscalePlan:
    """The up-scaling plan for a ``height`` x ``width`` frame (see the module docstring)."""
    height, width = int(height), int(width)
    if height < 1 or width < 1:
        raise ConfigError(f"frame size {width}x{height} is not at least 1x1")
    if blocks < 0 or stem_target < 1:
        raise ConfigError(f"blocks={blocks} must be >= 0 and stem_target={stem_target} >= 1")
    if blocks == 0:
        limit = 2 * max(height, width)
        candidates = [f for f in (_prime_factors(p) for p in _smooth_numbers(limit)) if len(f) <= _MAX_AUTO_BLOCKS]
    else:
        candidates = [tuple(sorted(c, reverse=True))
                      for c in itertools.combinations_with_replacement(sorted(set(factors)), blocks)]
    best: tuple[float, int, UpscalePlan] | None = None
    for sequence in candidates:
        scale = math.prod(sequence)
        plan = UpscalePlan(height, width, tuple(sequence), -(-height // scale), -(-width // scale))
        short = min(plan.stem_height, plan.stem_width)
        score = plan.waste + 0.25 * abs(math.log2(short / stem_target))
        if best is None or (score, scale) < best[:2]:
            best = (score, scale, plan)
    assert best is not None
    return best[2]


def channel_plan(channels: int, reduction: float, min_channels: int, blocks: int) -> list[int]:
    """Feature maps entering each block and leaving the last: C_0 .. C_n."""
    widths = [int(channels)]
    for _ in range(blocks):
        widths.append(max(int(min_channels), int(round(widths[-1] / reduction))))
    return widths


def positional_encoding(t: torch.Tensor, base: float, levels: int) -> torch.Tensor:
    """NeRV's Gamma(t): (n,) times in [0, 1] -> (n, 2 * levels) float32, interleaved sin, cos.

    Computed in float64 on the CPU (see the module docstring).
    """
    t = t.detach().to("cpu", torch.float64).reshape(-1, 1)
    freqs = (float(base) ** torch.arange(int(levels), dtype=torch.float64, device="cpu")) * math.pi
    angles = t * freqs
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=2).reshape(t.shape[0], -1).to(torch.float32)


class NervBlock(nn.Module):
    """Conv3x3 to ``cout * s^2`` maps, PixelShuffle(s), GELU: s-times larger, ``cout`` maps."""

    def __init__(self, cin: int, cout: int, factor: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout * factor * factor, 3, padding=1)
        self.shuffle = nn.PixelShuffle(factor)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))


class NervNet(nn.Module):
    """``forward(frame_indices)`` -> (n, 3, H, W) frames of a clip of ``frames`` frames."""

    def __init__(self, frames: int, plan: UpscalePlan, *, channels: int, reduction: float, min_channels: int,
                 stem_hidden: int, pe_base: float, pe_levels: int, seed: int):
        super().__init__()
        self.frames, self.height, self.width = int(frames), plan.height, plan.width
        self.plan = plan
        self.pe_base, self.pe_levels = float(pe_base), int(pe_levels)
        self.widths = channel_plan(channels, reduction, min_channels, len(plan.factors))
        cells = plan.stem_height * plan.stem_width
        self.stem = nn.Sequential(nn.Linear(2 * self.pe_levels, stem_hidden), nn.GELU(),
                                  nn.Linear(stem_hidden, self.widths[0] * cells), nn.GELU())
        self.blocks = nn.ModuleList(NervBlock(cin, cout, s) for cin, cout, s in
                                    zip(self.widths[:-1], self.widths[1:], plan.factors, strict=True))
        self.head = nn.Conv2d(self.widths[-1], 3, 1)
        generator = init_generator(seed, stream=1)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                fan_in = module.weight[0].numel()
                gain = 1.0 if module is self.head else 2.0
                uniform_(module.weight, math.sqrt(3.0 * gain / fan_in), generator)
                nn.init.zeros_(module.bias)

    def times(self, frame_indices: torch.Tensor) -> torch.Tensor:
        """Normalised frame indices i / (T - 1) in [0, 1] (0 for a one-frame clip), float64."""
        index = frame_indices.detach().to("cpu", torch.float64)
        return index / (self.frames - 1) if self.frames > 1 else torch.zeros_like(index)

    def forward(self, frame_indices: torch.Tensor) -> torch.Tensor:
        device = self.head.weight.device
        embedded = positional_encoding(self.times(frame_indices), self.pe_base, self.pe_levels).to(device)
        x = self.stem(embedded).view(-1, self.widths[0], self.plan.stem_height, self.plan.stem_width)
        for block in self.blocks:
            x = block(x)
        return torch.sigmoid(self.head(x))[..., : self.height, : self.width]

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
