"""``nerv``: NeRV (Chen et al., NeurIPS 2021) as a codec with a real bitstream.

The network (:mod:`baselines.nerv_model`): positional encoding of the normalised frame index
(b = 1.25, l = 80), an MLP stem, NeRV blocks (Conv3x3, PixelShuffle, GELU) whose up-scaling
factors are planned from the frame size (any size: the output is cropped to the frame's
top-left H x W, see :func:`~baselines.nerv_model.plan_upscale`), a 1x1 conv head.

Encoding follows the paper's pipeline: fit with alpha * L1 + (1 - alpha) * (1 - SSIM),
alpha = 0.7 (a step is a mini-batch of ``batch_frames`` frames; NeRV uses 1), then global
magnitude pruning of the kernels and a short fine-tune with the pruned weights held at zero,
then quantisation and entropy coding. Where NeRV quantises to a fixed bit width and reports
an estimated size, here the shared step search (MSE + lambda * bpp over the real coded
bits) picks the step and the rate is the bytes of a file that decodes; pruned weights cost
only their mask bits. The header carries the up-scaling plan, which the decoder re-derives
from the config and checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

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
from baselines.nerv_model import NervNet, UpscalePlan, plan_upscale
from weightstep.config import param
from weightstep.inr.losses import LOSSES


@dataclass(frozen=True)
class NervConfig:
    channels: int = param(32, "feature maps of the stem grid (C0); with the rest, sets the model size", low=1,
                          high=4096)
    reduction: float = param(2.0, "each block divides the maps by this (NeRV narrows as maps grow)", low=1.0,
                             high=16.0)
    min_channels: int = param(12, "lower bound on the maps of any block", low=1, high=4096)
    stem_hidden: int = param(64, "hidden width of the MLP stem", low=1, high=8192)
    stem_target: int = param(4, "short side of the stem grid the up-scaling plan aims for (NeRV 1080p: 9); "
                             "a smaller grid means a smaller stem layer and more up-scaling", low=1, high=1024)
    blocks: int = param(0, "NeRV blocks; 0 = chosen with the factors from the frame size", low=0, high=16)
    pe_base: float = param(1.25, "positional encoding base b (NeRV: 1.25)", low=1.0001, high=10.0)
    pe_levels: int = param(80, "positional encoding levels l (NeRV: 80; the input has 2l values)", low=1, high=512)
    epochs: int = epochs_param(300)
    batch_frames: int = param(1, "frames per optimiser step (NeRV: 1)", low=1, high=4096)
    time_budget: float | None = time_budget_param()
    lr: float = lr_param(2e-3)
    loss: str = param("l1ssim", "fitting loss: NeRV's alpha * L1 + (1 - alpha) * (1 - SSIM), or mse",
                      choices=LOSSES)
    ssim_alpha: float = param(0.7, "alpha of the loss (NeRV: 0.7)", low=0.0, high=1.0)
    prune: float = prune_param(0.4)
    finetune_epochs: int = finetune_param(30)
    aliases: ClassVar[dict[str, str]] = LAMBDA_ALIASES
    lam: float = lambda_param(1e-4)
    per_channel: bool = per_channel_param()
    search_frames: int = search_frames_param()
    seed: int = seed_param()
    device: str = device_param()

    def plan(self, height: int, width: int) -> UpscalePlan:
        return plan_upscale(height, width, blocks=self.blocks, stem_target=self.stem_target)


class NervCodec(FullSequenceCodec):
    name = "nerv"
    Config = NervConfig
    summary = "NeRV (frame index -> frame conv net), pruned, RD-quantised and constriction-coded"
    FORMAT = 1
    STREAM_DEFAULTS = {
        1: {"channels": 32, "reduction": 2.0, "min_channels": 12, "stem_hidden": 64, "stem_target": 4, "blocks": 0,
            "pe_base": 1.25, "pe_levels": 80, "epochs": 300, "batch_frames": 1, "time_budget": None, "lr": 0.002,
            "loss": "l1ssim", "ssim_alpha": 0.7, "prune": 0.4, "finetune_epochs": 30, "lam": 0.0001,
            "per_channel": True, "search_frames": 8, "seed": 0, "device": "auto"},
    }
    RENDER_GROUP = 4

    def network(self, config: NervConfig, frames: int, height: int, width: int) -> nn.Module:
        return NervNet(frames, config.plan(height, width), channels=config.channels, reduction=config.reduction,
                       min_channels=config.min_channels, stem_hidden=config.stem_hidden, pe_base=config.pe_base,
                       pe_levels=config.pe_levels, seed=config.seed)

    def header_extra(self, net: nn.Module) -> dict[str, Any]:
        return {"upscale": net.plan.to_json()}

    def batches(self, net: nn.Module, target: torch.Tensor, seed: int) -> tuple[int, Batch]:
        frames = target.shape[0]
        size = min(self.config.batch_frames, frames)
        draw = frame_sampler(frames, size, seed)

        def batch(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
            indices = draw()
            return model(indices), target[indices.to(target.device)]

        return -(-frames // size), batch
