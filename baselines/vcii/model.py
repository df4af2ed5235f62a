"""VCII's networks: a recurrent (ConvLSTM) progressive encoder, a binariser and decoder, and a U-Net context.

A B-frame between two decoded references is coded in ``iterations`` passes. Each pass the
encoder (input: left reference, the remaining residual, right reference, stacked) emits
``bits`` binary maps at 1/16 resolution; the decoder adds its output to the reconstruction
(which starts at mid-grey) and the residual shrinks. A U-Net runs on each reference; its
feature maps at 1/2, 1/4 and 1/8, warped by the motion between the references, are fused
into the encoder and decoder (how many levels: ``encoder_fuse`` / ``decoder_fuse``). One
model per hierarchy level (key-frame distances 6+6, 3+3, 1+2 in a GOP of 12), as the paper.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

STRIDE = 16


@dataclass(frozen=True)
class LevelArch:
    """One hierarchy level's network sizes (the paper's: width_divisor 1, shrink 2)."""

    bits: int = 16  # binary maps per iteration (the rate step)
    encoder_fuse: int = 1  # encoder layers that receive context features (1..3)
    decoder_fuse: int = 1  # decoder layers that receive context features (1..3)
    width_divisor: int = 1  # all encoder/decoder widths divided by this (1 = the paper's)
    shrink: int = 2  # U-Net widths divided by this (paper: 2)


@dataclass(frozen=True)
class VciiArch:
    # one model per hierarchy level (distances 6+6, 3+3, 1+2), sized as the release's train.sh levels 0, 1, 2
    levels: tuple[LevelArch, LevelArch, LevelArch] = (LevelArch(16, 1, 1), LevelArch(16, 2, 3), LevelArch(8, 1, 1))
    iterations: int = 10  # passes unrolled in training (coding may use fewer or more)

    def to_json(self) -> dict:
        return {"levels": [asdict(level) for level in self.levels], "iterations": self.iterations}

    @classmethod
    def from_json(cls, data: dict) -> VciiArch:
        from weightstep.errors import InputError

        try:
            levels = tuple(LevelArch(**level) for level in data["levels"])
            arch = cls(levels=levels, iterations=data["iterations"])
        except (KeyError, TypeError):
            raise InputError(f"VCII architecture record is malformed: {data!r}") from None
        ok = len(levels) == 3 and isinstance(arch.iterations, int) and 1 <= arch.iterations <= 64
        for level in levels:
            values = asdict(level).values()
            ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in values)
            ok = ok and 1 <= level.bits <= 128 and 1 <= level.encoder_fuse <= 3 and 1 <= level.decoder_fuse <= 3
            ok = ok and level.width_divisor in (1, 2, 4, 8, 16) and level.shrink in (1, 2, 4, 8, 16)
        if not ok:
            raise InputError(f"VCII architecture record out of range: {data!r}")
        return arch


def _scaled(levels: tuple[LevelArch, ...], divisor: int, shrink: int) -> tuple[LevelArch, ...]:
    return tuple(LevelArch(a.bits, a.encoder_fuse, a.decoder_fuse, divisor, shrink) for a in levels)


PRESETS = {
    "paper": VciiArch(),
    "small": VciiArch(levels=_scaled(VciiArch().levels, 4, 8), iterations=8),
    "tiny": VciiArch(levels=_scaled(VciiArch().levels, 16, 16), iterations=2),
}


class ConvLSTM(nn.Module):
    """LSTM cell with convolutions: gates = input_conv(x) + hidden_conv(h), no biases (as VCII)."""

    def __init__(self, inputs: int, hidden: int, stride: int, hidden_kernel: int):
        super().__init__()
        self.hidden = hidden
        self.stride = stride
        self.input_conv = nn.Conv2d(inputs, 4 * hidden, 3, stride=stride, padding=1, bias=False)
        self.hidden_conv = nn.Conv2d(hidden, 4 * hidden, hidden_kernel, padding=hidden_kernel // 2, bias=False)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None):
        gates_x = self.input_conv(x)
        if state is None:
            zeros = gates_x.new_zeros(gates_x.shape[0], self.hidden, *gates_x.shape[-2:])
            state = (zeros, zeros)
        h, c = state
        i, f, g, o = (gates_x + self.hidden_conv(h)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


def double_conv(a: int, b: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True),
                         nn.Conv2d(b, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True))


class ContextNet(nn.Module):
    """U-Net on a reference frame; returns its decoder features at 1/8, 1/4 and 1/2 resolution."""

    def __init__(self, shrink: int):
        super().__init__()
        w = [64 // shrink, 128 // shrink, 256 // shrink, 512 // shrink]
        self.inc = double_conv(3, w[0])
        self.downs = nn.ModuleList([double_conv(w[0], w[1]), double_conv(w[1], w[2]), double_conv(w[2], w[3]),
                                    double_conv(w[3], w[3])])
        self.ups = nn.ModuleList([double_conv(2 * w[3], w[2]),
                                  double_conv(2 * w[2], w[1]), double_conv(2 * w[1], w[0]),
                                  double_conv(2 * w[0], w[0])])  # the last is unused, as in VCII's U-Net

    @property
    def widths(self) -> tuple[int, int, int]:
        """Channels of the features at 1/8, 1/4, 1/2."""
        return self.ups[0][0].out_channels, self.ups[1][0].out_channels, self.ups[2][0].out_channels

    def _up(self, conv: nn.Module, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return conv(torch.cat([skip, x], dim=1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x1 = self.inc(x)
        x2 = self.downs[0](F.max_pool2d(x1, 2))
        x3 = self.downs[1](F.max_pool2d(x2, 2))
        x4 = self.downs[2](F.max_pool2d(x3, 2))
        x5 = self.downs[3](F.max_pool2d(x4, 2))
        out1 = self._up(self.ups[0], x5, x4)
        out2 = self._up(self.ups[1], out1, x3)
        out3 = self._up(self.ups[2], out2, x2)
        return [out1, out2, out3]


class ProgressiveEncoder(nn.Module):
    def __init__(self, arch: LevelArch, context: tuple[int, int, int]):
        super().__init__()
        d, (c1, c2, c3) = arch.width_divisor, context
        self.fuse = arch.encoder_fuse
        self.stem = nn.Conv2d(9, 64 // d, 3, stride=2, padding=1, bias=False)
        self.cells = nn.ModuleList([
            ConvLSTM(64 // d + 2 * c3, 256 // d, 2, 1),
            ConvLSTM(256 // d + (2 * c2 if self.fuse >= 2 else 0), 512 // d, 2, 1),
            ConvLSTM(512 // d + (2 * c1 if self.fuse >= 3 else 0), 512 // d, 2, 1)])

    def forward(self, x, states, ctx_left, ctx_right):
        x = torch.cat([self.stem(x), ctx_left[2], ctx_right[2]], dim=1)
        x, s0 = self.cells[0](x, states[0])
        if self.fuse >= 2:
            x = torch.cat([x, ctx_left[1], ctx_right[1]], dim=1)
        x, s1 = self.cells[1](x, states[1])
        if self.fuse >= 3:
            x = torch.cat([x, ctx_left[0], ctx_right[0]], dim=1)
        x, s2 = self.cells[2](x, states[2])
        return x, [s0, s1, s2]


class Binariser(nn.Module):
    """1x1 projection to ``bits`` maps, tanh, then a sign: stochastic (straight-through) in training."""

    def __init__(self, arch: LevelArch):
        super().__init__()
        self.project = nn.Conv2d(512 // arch.width_divisor, arch.bits, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.tanh(self.project(x))
        if self.training:
            b = torch.where(torch.rand_like(t) < (1 + t) / 2, 1.0, -1.0)
            return t + (b - t).detach()
        return torch.where(t >= 0, 1.0, -1.0)


class ProgressiveDecoder(nn.Module):
    def __init__(self, arch: LevelArch, context: tuple[int, int, int]):
        super().__init__()
        d, (c1, c2, c3) = arch.width_divisor, context
        self.fuse = arch.decoder_fuse
        self.stem = nn.Conv2d(arch.bits, 512 // d, 1, bias=False)
        self.cells = nn.ModuleList([
            ConvLSTM(512 // d, 512 // d, 1, 1),
            ConvLSTM(128 // d + (2 * c1 if self.fuse >= 3 else 0), 512 // d, 1, 1),
            ConvLSTM(128 // d + (2 * c2 if self.fuse >= 2 else 0), 256 // d, 1, 3),
            ConvLSTM(64 // d + 2 * c3, 128 // d, 1, 3)])
        self.head = nn.Conv2d(32 // d, 3, 1, bias=False)

    def forward(self, code, states, ctx_left, ctx_right):
        x, s0 = self.cells[0](self.stem(code), states[0])
        x = F.pixel_shuffle(x, 2)
        if self.fuse >= 3:
            x = torch.cat([x, ctx_left[0], ctx_right[0]], dim=1)
        x, s1 = self.cells[1](x, states[1])
        x = F.pixel_shuffle(x, 2)
        if self.fuse >= 2:
            x = torch.cat([x, ctx_left[1], ctx_right[1]], dim=1)
        x, s2 = self.cells[2](x, states[2])
        x = torch.cat([F.pixel_shuffle(x, 2), ctx_left[2], ctx_right[2]], dim=1)
        x, s3 = self.cells[3](x, states[3])
        return torch.tanh(self.head(F.pixel_shuffle(x, 2))) / 2, [s0, s1, s2, s3]


class LevelNet(nn.Module):
    def __init__(self, arch: LevelArch):
        super().__init__()
        self.arch = arch
        self.context = ContextNet(arch.shrink)
        self.encoder = ProgressiveEncoder(arch, self.context.widths)
        self.binarizer = Binariser(arch)
        self.decoder = ProgressiveDecoder(arch, self.context.widths)


class VciiNet(nn.Module):
    def __init__(self, arch: VciiArch):
        super().__init__()
        self.arch = arch
        self.levels = nn.ModuleList(LevelNet(level) for level in arch.levels)
