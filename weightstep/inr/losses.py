"""Reconstruction losses for fitting networks to frames in [0, 1], and PSNR from an MSE.

``'mse'`` is the plain mean squared error. ``'l1ssim'`` is NeRV's objective
``alpha * L1 + (1 - alpha) * (1 - SSIM)`` (alpha = 0.7 in NeRV), with SSIM from
``pytorch_msssim`` on data range 1. Its Gaussian window is shrunk for small frames: the
largest odd size <= min(11, H, W), so 32x32 test images and 17-pixel-high crops work.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim

from weightstep.errors import ConfigError

LOSSES = ("mse", "l1ssim")


def ssim_window(height: int, width: int, preferred: int = 11) -> int:
    """The largest odd window size <= min(preferred, height, width) (at least 1)."""
    size = max(1, min(preferred, height, width))
    return size if size % 2 == 1 else size - 1


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse",
                        alpha: float = 0.7) -> torch.Tensor:
    """Loss between ``pred`` and ``target``, both (N,3,H,W) in [0, 1]; a scalar tensor."""
    if pred.shape != target.shape:
        raise ConfigError(f"prediction shape {tuple(pred.shape)} does not match target {tuple(target.shape)}")
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "l1ssim":
        height, width = pred.shape[-2:]
        similarity = ssim(pred, target, data_range=1.0, size_average=True,
                          win_size=ssim_window(height, width))
        return alpha * F.l1_loss(pred, target) + (1.0 - alpha) * (1.0 - similarity)
    raise ConfigError(f"unknown loss {kind!r}; use one of {', '.join(LOSSES)}")


def psnr_from_mse(mse: float | torch.Tensor, peak: float = 1.0) -> float:
    """PSNR in dB for a mean squared error on signals with the given peak; inf for a zero MSE."""
    value = float(mse)
    if value <= 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / value)
