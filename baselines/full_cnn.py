"""``full-cnn``: one DIP-style conv net for the whole clip, fed a fixed noise tensor z_i per frame.

The proposal's section 4.1: "a fixed sequence of input tensors {z0, z1, ..., zN}, one z_i for
each of N video frames ... predefined before use". The network is the anchor
:class:`~weightstep.inr.dip.DipNet` (skip connections switchable with ``dip_skips``, the
section 4.2 ablation); its input for frame i is regenerated from ``seed`` by the decoder,
never sent:

- ``noise='independent'`` (the proposal's literal reading): z_i is its own draw,
  :func:`~weightstep.inr.dip.dip_noise` with stream ``2 + i`` (streams 0 and 1 are the
  DipNet's single-image noise and its initial weights);
- ``noise='smooth'``: z_i = cos(phi_i) a + sin(phi_i) b with two draws a, b and
  phi_i = (pi / 2) i / (T - 1): each z_i has the same distribution as one draw, and
  neighbouring frames get neighbouring inputs, so the network can share work between them.

Noise is drawn at the DipNet's padded size (multiples of 2^levels) and the output is cropped
to the frame's top-left H x W, as for the anchor net. A training step is a mini-batch of
``batch_frames`` frames (a seeded permutation per epoch); an epoch is ceil(T / batch_frames)
steps. Independent noise tensors are kept in memory up to 256 MiB for the clip (30 QCIF frames
take 93 MiB) and redrawn per batch beyond that, so memory stays bounded for long clips.

Measured (first 30 frames of sample:carphone, dip_channels 16, 40 s of training on a loaded
2-core CPU): independent noise 19.5 dB (300 steps), smooth noise 24.5 dB (393 steps), so
``smooth`` is the default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from baselines.fullseq import (
    LAMBDA_ALIASES,
    Batch,
    FullSequenceCodec,
    device_param,
    epochs_param,
    finetune_param,
    frame_sampler,
    lambda_param,
    lr_param,
    per_channel_param,
    prune_param,
    search_frames_param,
    seed_param,
    time_budget_param,
)
from weightstep.config import param
from weightstep.inr import DipNet, NetworkSpec, dip_noise
from weightstep.inr.losses import LOSSES
from weightstep.inr.spec import NOISE_KINDS, UPSAMPLE_MODES

NOISE_SCHEMES = ("independent", "smooth")
_FIRST_FRAME_STREAM = 2  # noise streams 0 and 1 of the seed belong to DipNet (its own z, its init)
NOISE_CACHE_BYTES = 256 * 2**20  # independent z_i of a clip up to this size are kept, not redrawn per batch


@dataclass(frozen=True)
class FullCnnConfig:
    dip_channels: int = param(16, "conv channels; with dip_levels it sets the model size", low=1, high=1024)
    dip_levels: int = param(4, "down/up-sampling stages (frames padded to multiples of 2^levels, output cropped)",
                            low=1, high=8)
    dip_skips: bool = param(True, "long skip connections (proposal section 4.2 ablation)")
    dip_skip_channels: int = param(4, "channels each skip carries (DIP paper: 4)", low=1, high=1024)
    noise_channels: int = param(32, "channels of each frame's fixed noise input z_i (DIP paper: 32)", low=1, high=1024)
    noise: str = param("smooth", "per-frame inputs: independent draws z_i, or smooth = cos/sin mix of two draws "
                       "(neighbouring frames get neighbouring inputs)", choices=NOISE_SCHEMES)
    noise_kind: str = param("normal", "noise distribution: N(0,1)*0.1 or uniform [0,0.1) (DIP paper)",
                            choices=NOISE_KINDS)
    upsample: str = param("bilinear", "decoder up-sampling", choices=UPSAMPLE_MODES)
    epochs: int = epochs_param(150)
    batch_frames: int = param(2, "frames per optimiser step", low=1, high=4096)
    time_budget: float | None = time_budget_param()
    lr: float = lr_param(5e-3)
    loss: str = param("mse", "fitting loss: mse (what PSNR measures) or l1ssim (NeRV's mix)", choices=LOSSES)
    ssim_alpha: float = param(0.7, "weight of L1 in l1ssim", low=0.0, high=1.0)
    prune: float = prune_param(0.0)
    finetune_epochs: int = finetune_param(20)
    aliases: ClassVar[dict[str, str]] = LAMBDA_ALIASES
    lam: float = lambda_param(1e-4)
    per_channel: bool = per_channel_param()
    search_frames: int = search_frames_param()
    seed: int = seed_param()
    device: str = device_param()

    def network_spec(self) -> NetworkSpec:
        return NetworkSpec(kind="dip", dip_channels=self.dip_channels, dip_levels=self.dip_levels,
                           dip_skips=self.dip_skips, dip_skip_channels=self.dip_skip_channels,
                           dip_noise_channels=self.noise_channels, dip_noise=self.noise_kind,
                           dip_upsample=self.upsample, seed=self.seed)


def frame_noise(index: int, frames: int, channels: int, height: int, width: int, seed: int, kind: str,
                scheme: str) -> torch.Tensor:
    """The fixed input z_index (1, channels, height, width) of a clip of ``frames`` frames."""
    if scheme == "independent":
        return dip_noise(channels, height, width, seed=seed, kind=kind, stream=_FIRST_FRAME_STREAM + index)
    base = torch.cat([dip_noise(channels, height, width, seed=seed, kind=kind, stream=_FIRST_FRAME_STREAM + k)
                      for k in (0, 1)])
    return _smooth_mix(base, [index], frames)


def _smooth_mix(base: torch.Tensor, indices: list[int], frames: int) -> torch.Tensor:
    """cos(phi_i) a + sin(phi_i) b for each index, with ``base`` = (2, C, H, W) holding a and b."""
    phi = [0.5 * math.pi * i / (frames - 1) if frames > 1 else 0.0 for i in indices]
    cos = torch.tensor([math.cos(p) for p in phi], dtype=torch.float32, device=base.device).view(-1, 1, 1, 1)
    sin = torch.tensor([math.sin(p) for p in phi], dtype=torch.float32, device=base.device).view(-1, 1, 1, 1)
    return cos * base[0:1] + sin * base[1:2]


class NoiseVideoNet(nn.Module):
    """``forward(frame_indices)`` -> (n, 3, H, W): the DipNet applied to each frame's own z_i."""

    def __init__(self, config: FullCnnConfig, frames: int, height: int, width: int):
        super().__init__()
        self.frames, self.height, self.width = int(frames), int(height), int(width)
        self.dip = DipNet(config.network_spec(), height, width)
        self.noise_args = (config.noise_channels, *self.dip.padded, config.seed, config.noise_kind, config.noise)
        channels, hp, wp, seed, kind, _ = self.noise_args
        if config.noise == "smooth":  # two draws serve every frame: keep them (small), mix per batch
            self.register_buffer("base", torch.cat([
                dip_noise(channels, hp, wp, seed=seed, kind=kind, stream=_FIRST_FRAME_STREAM + k) for k in (0, 1)]),
                persistent=False)
        elif self.frames * channels * hp * wp * 4 <= NOISE_CACHE_BYTES:  # keep every z_i rather than redraw
            self.register_buffer("cache", torch.cat([frame_noise(i, self.frames, *self.noise_args)
                                                     for i in range(self.frames)]), persistent=False)

    def inputs(self, frame_indices: torch.Tensor) -> torch.Tensor:
        indices = frame_indices.tolist()
        if hasattr(self, "base"):
            return _smooth_mix(self.base, indices, self.frames)
        if hasattr(self, "cache"):
            return self.cache[frame_indices.to(self.cache.device)]
        z = torch.cat([frame_noise(i, self.frames, *self.noise_args) for i in indices])
        return z.to(self.dip.head.weight.device)

    def forward(self, frame_indices: torch.Tensor) -> torch.Tensor:
        return self.dip(self.inputs(frame_indices))


class FullCnnCodec(FullSequenceCodec):
    name = "full-cnn"
    Config = FullCnnConfig
    summary = "full-sequence DIP-style conv net, one fixed noise input per frame, constriction-coded"
    FORMAT = 1
    STREAM_DEFAULTS = {
        1: {"dip_channels": 16, "dip_levels": 4, "dip_skips": True, "dip_skip_channels": 4, "noise_channels": 32,
            "noise": "smooth", "noise_kind": "normal", "upsample": "bilinear", "epochs": 150, "batch_frames": 2,
            "time_budget": None, "lr": 0.005, "loss": "mse", "ssim_alpha": 0.7, "prune": 0.0, "finetune_epochs": 20,
            "lam": 0.0001, "per_channel": True, "search_frames": 8, "seed": 0, "device": "auto"},
    }
    RENDER_GROUP = 4

    def network(self, config: FullCnnConfig, frames: int, height: int, width: int) -> nn.Module:
        return NoiseVideoNet(config, frames, height, width)

    def seeds(self) -> dict[str, int]:
        return {"network": int(self.config.seed), "noise": int(self.config.seed)}

    def batches(self, net: nn.Module, target: torch.Tensor, seed: int) -> tuple[int, Batch]:
        frames = target.shape[0]
        size = min(self.config.batch_frames, frames)
        draw = frame_sampler(frames, size, seed)

        def batch(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
            indices = draw().to(target.device)
            return model(indices), target[indices]

        return -(-frames // size), batch
