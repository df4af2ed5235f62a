"""Training VCII: each step codes the middle of a run of frames from its two ends with one level's model.

A level is drawn per step (distances 6+6, 3+3 or 1+2, as the paper's three models; on clips
shorter than 13 frames, e.g. Vimeo-90k septuplets, the widest distances that fit); the loss
is the sum over the unrolled passes of the mean absolute residual left after each pass (the
paper's objective). References are source frames. The rate is set by the number of passes,
not by lambda, so VCII checkpoints record no lambda.
"""

from __future__ import annotations

import numpy as np
import torch

from baselines.vcii.model import PRESETS, STRIDE, VciiArch, VciiNet
from baselines.vcii.progressive import contexts, progressive
from weightstep.errors import ConfigError

DISTANCES = ((6, 6), (3, 3), (1, 2))


class VciiTrainer:
    kind = "vcii"
    frames_needed = 13
    min_frames = 4  # Vimeo-90k septuplets: the wider levels then use the widest distances that fit
    stride = STRIDE
    uses_lambda = False

    def architecture(self, preset: str) -> dict:
        if preset not in PRESETS:
            raise ConfigError(f"VCII size preset {preset!r} is not one of {', '.join(PRESETS)}")
        return PRESETS[preset].to_json()

    def build(self, architecture: dict) -> VciiNet:
        return VciiNet(VciiArch.from_json(architecture))

    def loss(self, net: VciiNet, batch: torch.Tensor, lam: float, rng: np.random.Generator):
        level = int(rng.integers(3))
        d1, d2 = DISTANCES[level]
        span = batch.shape[1] - 1
        if d1 + d2 > span:  # a short run: keep the level's symmetry at the largest distances that fit
            d1, d2 = (span // 2, span - span // 2) if level < 2 else (1, min(2, span - 1))
        start = int(rng.integers(batch.shape[1] - d1 - d2))
        left, frame, right = batch[:, start], batch[:, start + d1], batch[:, start + d1 + d2]
        model = net.levels[level]
        ctx = contexts(model, left, right, d1 / (d1 + d2), 8, 8)
        recons, _, losses = progressive(model, left, right, ctx, net.arch.iterations, frame=frame)
        loss = torch.stack(losses).sum()
        mse = torch.mean((recons[-1].clamp(0, 1) - frame) ** 2).detach()
        raw_bpp = net.arch.iterations * model.arch.bits / 256.0  # codes before entropy coding
        psnr = float(10 * torch.log10(1 / mse.clamp_min(1e-10)))
        return loss, {"loss": float(loss.detach()), "raw_bpp": raw_bpp, "psnr": psnr}
