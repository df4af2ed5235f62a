"""Motion context of VCII without side information: block motion between the two decoded references.

VCII warps its U-Net features with motion. Here the motion is measured by block matching
between the two *decoded* references, which the decoder has too, so it costs no bits and
both sides compute the same field. Linear motion is assumed: a block of the right reference
found displaced by m in the left one sits, in a frame at fraction a of the way from left to
right, a*m from its left position and -(1-a)*m from its right one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from baselines.neuralvc.frames import warp


def block_motion(left: torch.Tensor, right: torch.Tensor, block: int = 8, radius: int = 8) -> torch.Tensor:
    """(N,2,H,W) pixel motion m with left(p + m) ~ right(p), constant per ``block`` x ``block`` block.

    Exhaustive search of integer shifts in [-radius, radius] at half resolution (steps of 2
    pixels) by mean absolute luma difference; ties go to the smaller motion.
    """
    n, _, h, w = right.shape
    half_left = F.avg_pool2d(left.mean(1, keepdim=True), 2)
    half_right = F.avg_pool2d(right.mean(1, keepdim=True), 2)
    r, b = max(radius // 2, 0), max(block // 2, 1)
    padded = F.pad(half_left, (r, r, r, r), mode="replicate")
    hh, ww = half_right.shape[-2:]
    costs, shifts = [], []
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            moved = padded[..., r + dy:r + dy + hh, r + dx:r + dx + ww]
            cost = F.avg_pool2d((moved - half_right).abs(), b, ceil_mode=True)
            costs.append(cost + 1e-4 * (abs(dx) + abs(dy)))
            shifts.append((2 * dx, 2 * dy))
    best = torch.stack(costs, dim=0).argmin(dim=0)  # (N,1,h/b,w/b)
    table = torch.tensor(shifts, dtype=left.dtype, device=left.device)  # (K,2)
    field = table[best[:, 0]].permute(0, 3, 1, 2)  # (N,2,h/b,w/b)
    field = field.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)
    return field[..., :h, :w].contiguous()


def warp_features(features: list[torch.Tensor], flow: torch.Tensor) -> list[torch.Tensor]:
    """Warp feature maps at 1/8, 1/4, 1/2 of the frame with a full-resolution pixel flow."""
    out = []
    for feature, scale in zip(features, (8, 4, 2), strict=True):
        out.append(warp(feature, F.avg_pool2d(flow, scale) / scale))
    return out
