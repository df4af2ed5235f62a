"""Colour conversion between Y'CbCr 4:2:0 planes (limited range, 8 or 10 bit) and RGB in [0, 1].

BT.709 is the default matrix, BT.601 selectable. Chroma is upsampled bilinearly (centre
aligned) for RGB, and downsampled by a 2x2 mean when RGB is turned back into 4:2:0.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MATRICES = {"bt709": (0.2126, 0.0722), "bt601": (0.299, 0.114)}


def _coefficients(matrix: str) -> tuple[float, float, float]:
    try:
        kr, kb = MATRICES[matrix]
    except KeyError:
        raise ValueError(f"unknown colour matrix {matrix!r}; use one of {', '.join(MATRICES)}") from None
    return kr, 1.0 - kr - kb, kb


def yuv420_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, bit_depth: int = 8,
                  matrix: str = "bt709") -> np.ndarray:
    """Planes (T,H,W), (T,H/2,W/2) x2 of integers -> float32 RGB (T,3,H,W) clipped to [0, 1]."""
    kr, kg, kb = _coefficients(matrix)
    scale = float(1 << (bit_depth - 8))
    luma = (torch.from_numpy(y.astype(np.float32)) - 16.0 * scale) / (219.0 * scale)
    chroma = torch.from_numpy(np.stack([u, v], axis=1).astype(np.float32))
    chroma = (chroma - 128.0 * scale) / (224.0 * scale)
    chroma = F.interpolate(chroma, size=y.shape[1:], mode="bilinear", align_corners=False)
    pb, pr = chroma[:, 0], chroma[:, 1]
    r = luma + 2.0 * (1.0 - kr) * pr
    b = luma + 2.0 * (1.0 - kb) * pb
    g = (luma - kr * r - kb * b) / kg
    return torch.stack([r, g, b], dim=1).clamp_(0.0, 1.0).numpy()


def rgb_to_yuv420(rgb: np.ndarray, bit_depth: int = 8, matrix: str = "bt709"):
    """Float RGB (T,3,H,W) in [0, 1] -> integer planes Y (T,H,W), U and V (T,H/2,W/2)."""
    kr, kg, kb = _coefficients(matrix)
    t, _, h, w = rgb.shape
    if h % 2 or w % 2:
        raise ValueError(f"4:2:0 needs an even width and height, got {w}x{h}")
    r, g, b = (rgb[:, i].astype(np.float64) for i in range(3))
    luma = kr * r + kg * g + kb * b
    pb = (b - luma) / (2.0 * (1.0 - kb))
    pr = (r - luma) / (2.0 * (1.0 - kr))

    def half(p: np.ndarray) -> np.ndarray:
        return p.reshape(t, h // 2, 2, w // 2, 2).mean(axis=(2, 4))

    scale = float(1 << (bit_depth - 8))
    top = (1 << bit_depth) - 1
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    y_q = np.clip(np.rint((16.0 + 219.0 * luma) * scale), 0, top).astype(dtype)
    u_q = np.clip(np.rint((128.0 + 224.0 * half(pb)) * scale), 0, top).astype(dtype)
    v_q = np.clip(np.rint((128.0 + 224.0 * half(pr)) * scale), 0, top).astype(dtype)
    return y_q, u_q, v_q
