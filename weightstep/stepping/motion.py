"""Where a step's warp starts: a block-matching motion estimate, or the previous frame's warp.

A warp fitted by gradient descent alone follows motions of about a pixel and misses larger ones:
the photometric error is not convex beyond the scale of the picture's texture. Overfitted video
codecs therefore guide motion learning with an explicit estimate (Cool-chic video starts its
motion from an optical-flow estimator). Here the estimate is block matching on the decoded
previous frame: for each node of the warp's G x G displacement grid, the integer displacement
within +-``radius`` pixels that minimises the squared luma error between the target and the
shifted previous frame, weighted by the node's bilinear tent (the pixels that node moves), then
refined to a fraction of a pixel by a parabola through its neighbours in each axis. Nodes whose
error does not drop by ``MIN_GAIN`` below the unmoved one (no motion, or no texture to tell)
stay at zero; motions below a pixel are left to the fit, where gradient descent finds them.

:func:`start_warp` offers the estimate and the previous warp (motion persists) and keeps the
one under which the network's own picture is closer to the target. Either is only a starting point: the
step's fit refines it and the step's coder quantises it; the decoder never sees this module.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from weightstep.stepping.warp import warp_count

__all__ = ["estimate_warp", "start_warp", "SEARCH_RADIUS"]

SEARCH_RADIUS = 6  # pixels each way: carphone moves 1-3 px a frame, bikes (320 wide) up to ~6
MIN_GAIN = 0.02  # a node moves only if that lowers its error by 2 % (flat regions stay put)
LUMA = (0.2126, 0.7152, 0.0722)  # BT.709 weights: the matching runs on luma


def _luma(frame: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(1, 3, H, W) or (3, H, W) RGB -> (H, W) float32 luma on ``device``."""
    rgb = frame.detach().to(device, torch.float32).reshape(-1, *frame.shape[-2:])[-3:]
    return sum(w * rgb[i] for i, w in enumerate(LUMA))


def _tents(size: int, grid: int, device: torch.device) -> torch.Tensor:
    """(grid, size) bilinear weights of each node over the pixels of one axis (nodes at both ends)."""
    if grid < 2:
        return torch.ones(1, size, device=device)
    position = torch.arange(size, dtype=torch.float32, device=device) * ((grid - 1) / max(size - 1, 1))
    nodes = torch.arange(grid, dtype=torch.float32, device=device)[:, None]
    return (1.0 - (position[None, :] - nodes).abs()).clamp(min=0.0)


def _refine(cost: np.ndarray, index: int) -> float:
    """Sub-pixel offset of a minimum at ``index`` of a 1-D cost (a parabola through 3 points)."""
    if index == 0 or index == cost.size - 1:
        return 0.0
    left, mid, right = cost[index - 1], cost[index], cost[index + 1]
    curvature = left - 2.0 * mid + right
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5)) if curvature > 0 else 0.0


def estimate_warp(previous: torch.Tensor, target: torch.Tensor, grid: int,
                  radius: int = SEARCH_RADIUS) -> np.ndarray:
    """Warp values (the layout of :func:`~weightstep.stepping.warp.displacement`, float64) that move
    ``previous`` onto ``target`` (both RGB frames of one size): node displacements for grid >= 1,
    a global translation (the affine part) for grid 0."""
    device = target.device  # the search runs where the frames are (a GPU when there is one), in float32
    prev, tgt = _luma(previous, device), _luma(target, device)
    height, width = tgt.shape
    r = int(radius)
    padded = F.pad(prev[None, None], (r, r, r, r), mode="replicate")[0, 0]
    nodes = max(int(grid), 1)
    wy, wx = _tents(height, nodes, device), _tents(width, nodes, device)
    side = 2 * r + 1
    cost = torch.empty(side, side, nodes, nodes, device=device)
    for iy in range(side):
        for ix in range(side):
            shifted = padded[iy:iy + height, ix:ix + width]  # previous at (x + ix - r, y + iy - r)
            cost[iy, ix] = wy @ (tgt - shifted).pow(2) @ wx.t()
    cost = cost.reshape(side * side, nodes, nodes).cpu().double().numpy()
    still = cost[r * side + r]
    best = cost.argmin(axis=0)
    out = np.zeros((2, nodes, nodes))
    for i in range(nodes):
        for j in range(nodes):
            k = int(best[i, j])
            if cost[k, i, j] >= (1.0 - MIN_GAIN) * still[i, j]:  # (also: the best is no motion, or no texture)
                continue
            iy, ix = divmod(k, side)
            surface = cost[:, i, j].reshape(side, side)
            out[0, i, j] = ix - r + _refine(surface[iy], ix)
            out[1, i, j] = iy - r + _refine(surface[:, ix], iy)
    values = np.zeros(warp_count(int(grid)))
    if grid >= 1:
        values[6:] = out.reshape(-1)
    else:
        values[4:6] = out[:, 0, 0]
    return values


def start_warp(previous: torch.Tensor, target: torch.Tensor, grid: int, last: np.ndarray | None,
               error: Callable[[np.ndarray], float]) -> tuple[np.ndarray, str]:
    """(values, 'estimate' or 'previous'): of the motion estimate on ``previous`` and the last warp
    (the identity when None), the one with the lower ``error`` (the caller's: the step's network
    rendered through that warp against ``target``)."""
    estimate = estimate_warp(previous, target, grid)
    last = np.zeros(warp_count(grid)) if last is None else np.asarray(last, np.float64)
    if not estimate.any() or np.array_equal(estimate, last):
        return last, "previous"
    return (estimate, "estimate") if error(estimate) < error(last) else (last, "previous")
