"""Per-frame MS-SSIM on RGB frames, through pytorch_msssim, for frames of any size.

pytorch_msssim's ``ms_ssim`` uses 5 scales and an 11-tap Gaussian window (sigma 1.5) and
requires the smaller frame side to exceed (11 - 1) * 2**4 = 160 pixels. Frames that large are
measured by exactly that function. Smaller frames are measured honestly but not identically
(see :func:`ms_ssim_setup`); the setup actually used is reported by that function, so a
report can state it. MS-SSIM of an RGB frame is the mean of its three channels' MS-SSIM.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytorch_msssim
import torch

from weightstep.errors import MetricError

# pytorch_msssim's own building blocks (the module is shadowed by the function of the same name).
_ssim_impl = importlib.import_module("pytorch_msssim.ssim")

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""Wang, Simoncelli and Bovik (2003) scale weights, finest scale first."""

WIN_SIZE = 11
WIN_SIGMA = 1.5
CHUNK_FRAMES = 8
"""Frames measured at a time: bounds the float32 temporaries (about 40 copies of a chunk)."""


def ms_ssim_setup(height: int, width: int) -> tuple[int, int]:
    """The (scales, win_size) used for frames of this size.

    Scale k (k = 1 for the full-resolution frame) sees the frame reduced by 2**(k-1), and a
    window must fit inside it: ``min(height, width) > (win_size - 1) * 2**(scales - 1)``.
    With win 11 that gives 5 scales from a smaller side of 161 pixels (pytorch_msssim's own
    rule), 4 from 81, 3 from 41, 2 from 21 and 1 (plain SSIM) from 11. Below 11 pixels a
    single scale is used with the largest odd window that fits (the Gaussian keeps sigma 1.5,
    truncated). Fewer scales drop the coarsest ones; the remaining standard weights are
    renormalised to sum to 1. A side below 3 pixels cannot be measured (MetricError).
    """
    side = min(int(height), int(width))
    if side < 3:
        raise MetricError(f"MS-SSIM: a {width}x{height} frame is too small (both sides need 3 pixels)")
    if side <= WIN_SIZE - 1:
        return 1, side if side % 2 else side - 1
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and side > (WIN_SIZE - 1) * 2 ** scales:
        scales += 1
    return scales, WIN_SIZE


def _reduced_ms_ssim(x: torch.Tensor, y: torch.Tensor, scales: int, win_size: int) -> torch.Tensor:
    """MS-SSIM with the first `scales` renormalised weights, built from pytorch_msssim's parts.

    Follows pytorch_msssim.ms_ssim step for step (contrast-structure terms and the final SSIM
    clipped at 0, 2x2 average pooling padded for odd sizes), without its 160-pixel check.
    """
    weights = x.new_tensor(MS_SSIM_WEIGHTS[:scales])
    weights = weights / weights.sum()
    win = _ssim_impl._fspecial_gauss_1d(win_size, WIN_SIGMA).repeat([x.shape[1], 1, 1, 1])
    terms = []
    for level in range(scales):
        ssim_per_channel, cs = _ssim_impl._ssim(x, y, data_range=1.0, win=win, size_average=False)
        if level < scales - 1:
            terms.append(torch.relu(cs))
            padding = [s % 2 for s in x.shape[2:]]
            x = torch.nn.functional.avg_pool2d(x, kernel_size=2, padding=padding)
            y = torch.nn.functional.avg_pool2d(y, kernel_size=2, padding=padding)
    terms.append(torch.relu(ssim_per_channel))
    stacked = torch.stack(terms, dim=0)  # (scale, batch, channel)
    return torch.prod(stacked ** weights.view(-1, 1, 1), dim=0).mean(dim=1)


def ms_ssim_rgb(ref: np.ndarray, dist: np.ndarray, chunk: int = CHUNK_FRAMES) -> np.ndarray:
    """Per-frame MS-SSIM of float RGB frames (T,3,H,W) in [0, 1], data_range 1.

    Frames are measured ``chunk`` at a time in float32 (within about 1e-6 of float64). The
    scales and window follow :func:`ms_ssim_setup`: the standard 5 scales and 11-tap window
    (pytorch_msssim.ms_ssim itself) when the smaller side exceeds 160 pixels, fewer scales or
    a smaller window below that, so values on small frames are not comparable with published
    5-scale figures. Negative SSIM or contrast-structure terms (possible under heavy
    distortion) are clipped to 0 by pytorch_msssim, and the result is clamped to [0, 1]; a
    clip's MS-SSIM is the mean of the returned array.
    """
    ref = np.asarray(ref)
    dist = np.asarray(dist)
    if ref.shape != dist.shape:
        raise MetricError(f"MS-SSIM: reference {ref.shape} and distorted {dist.shape} shapes differ")
    if ref.ndim != 4 or ref.shape[1] != 3 or ref.shape[0] == 0:
        raise MetricError(f"MS-SSIM: frames must have shape (T,3,H,W) with T > 0, got {ref.shape}")
    scales, win_size = ms_ssim_setup(ref.shape[2], ref.shape[3])
    standard = scales == len(MS_SSIM_WEIGHTS) and win_size == WIN_SIZE
    out = np.empty(ref.shape[0], dtype=np.float64)
    with torch.no_grad():
        for start in range(0, ref.shape[0], max(1, int(chunk))):
            stop = start + max(1, int(chunk))
            x = torch.from_numpy(np.ascontiguousarray(ref[start:stop], dtype=np.float32))
            y = torch.from_numpy(np.ascontiguousarray(dist[start:stop], dtype=np.float32))
            if standard:
                value = pytorch_msssim.ms_ssim(x, y, data_range=1.0, size_average=False,
                                               win_size=WIN_SIZE, win_sigma=WIN_SIGMA)
            else:
                value = _reduced_ms_ssim(x, y, scales, win_size)
            out[start:stop] = value.double().numpy()
    if not np.all(np.isfinite(out)):
        raise MetricError("MS-SSIM: a frame gave a non-finite value (NaN or inf in the input?)")
    return np.clip(out, 0.0, 1.0)
