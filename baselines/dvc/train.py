"""Training DVC: pairs of consecutive frames, loss = lambda * (MSE + 0.1 * MSE of the prediction) + bpp.

The reference is the previous source frame (the public re-implementation uses H.265-coded
references; with short CPU budgets the source frame keeps the sampling cheap). The second
distortion term keeps the flow and compensation networks learning while the residual
autoencoder is still poor (DVC trains those parts first, in stages).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from baselines.dvc.model import PRESETS, STRIDE, DvcArch, DvcNet
from weightstep.errors import ConfigError

PREDICTION_WEIGHT = 0.1


class DvcTrainer:
    kind = "dvc"
    frames_needed = 2
    stride = STRIDE

    def architecture(self, preset: str) -> dict:
        if preset not in PRESETS:
            raise ConfigError(f"DVC size preset {preset!r} is not one of {', '.join(PRESETS)}")
        return PRESETS[preset].to_json()

    def build(self, architecture: dict) -> DvcNet:
        return DvcNet(DvcArch.from_json(architecture))

    def loss(self, net: DvcNet, batch: torch.Tensor, lam: float, rng: np.random.Generator):
        reference, frame = batch[:, 0], batch[:, 1]
        out = net(frame, reference)
        mse = F.mse_loss(out["recon"], frame)
        loss = lam * (mse + PREDICTION_WEIGHT * F.mse_loss(out["prediction"], frame)) + out["bpp"]
        psnr = float(10 * torch.log10(1.0 / mse.detach().clamp_min(1e-10)))
        return loss, {"loss": float(loss.detach()), "bpp": float(out["bpp"].detach()), "psnr": psnr}
