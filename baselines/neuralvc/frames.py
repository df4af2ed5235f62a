"""Frame tensors for the neural baselines: replication padding to the network's stride, cropping back, warping."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def padded_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """The smallest (H, W) at least as large whose sides are multiples of ``stride``."""
    return -(-height // stride) * stride, -(-width // stride) * stride


def pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Replicate the last row and column of (N,C,h,w) ``x`` out to (N,C,height,width)."""
    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x
    return F.pad(x, (0, width - w, 0, height - h), mode="replicate")


def crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return x[..., :height, :width]


def padding_note(height: int, width: int, stride: int) -> str | None:
    """What the Result says about padding (None when the frame already fits the stride)."""
    ph, pw = padded_size(height, width, stride)
    if (ph, pw) == (height, width):
        return None
    return (f"frames padded by edge replication from {width}x{height} to {pw}x{ph} (stride {stride}) "
            f"and cropped back after decoding")


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(3,H,W) or (N,3,H,W) float32 RGB in [0, 1] -> a float32 tensor with a batch axis."""
    t = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32))
    return t[None] if t.ndim == 3 else t


_GRIDS: dict[tuple, torch.Tensor] = {}


def _base_grid(n: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    key = (n, h, w, str(device), dtype)
    grid = _GRIDS.get(key)
    if grid is None:
        xs = torch.linspace(-1.0, 1.0, w, device=device, dtype=dtype).view(1, 1, w).expand(n, h, w)
        ys = torch.linspace(-1.0, 1.0, h, device=device, dtype=dtype).view(1, h, 1).expand(n, h, w)
        grid = torch.stack([xs, ys], dim=-1)
        if len(_GRIDS) > 32:
            _GRIDS.clear()
        _GRIDS[key] = grid
    return grid


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: output(p) = image(p + flow(p)), flow in pixels (x, y), bilinear, border replicated."""
    n, _, h, w = image.shape
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=flow.device, dtype=flow.dtype)
    grid = _base_grid(n, h, w, image.device, image.dtype) + flow.permute(0, 2, 3, 1) * scale
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)
