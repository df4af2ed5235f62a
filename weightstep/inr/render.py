"""What a decoder shows: a network's output with given weights, as 8-bit-level RGB frames.

Every codec that codes a network (the anchor coder, the weight-step schedules, the
full-sequence baselines) measures exactly what its decoder writes, through these helpers.
They sit in ``inr`` so that ``stepping`` and ``codecs`` both import them from below.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

__all__ = ["parameter_shapes", "weights_of", "load_weights", "render", "to_8bit", "mse", "frames_to_numpy"]


def parameter_shapes(net: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """What the decoder expects, derived from the config-built network (never from the stream)."""
    return [(name, tuple(p.shape)) for name, p in net.named_parameters()]


def weights_of(net: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in net.named_parameters()}


def load_weights(net: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy ``weights`` (every parameter by name, on any device) into ``net``'s parameters in place."""
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            parameter.copy_(weights[name].to(parameter.device))


def render(net: nn.Module, weights: dict[str, torch.Tensor], *args) -> torch.Tensor:
    """Network output with ``weights`` (parameters, and any buffers named there) in place,
    clamped to [0, 1] and rounded to 8-bit levels."""
    with torch.no_grad():
        device = next(net.parameters()).device
        out = functional_call(net, {k: v.to(device) for k, v in weights.items()}, args)
        return to_8bit(out)


def to_8bit(frames: torch.Tensor) -> torch.Tensor:
    """What a decoder writes: clamp to [0, 1], round to 1/255 steps (float32)."""
    # nan_to_num: a damaged (CRC-valid) stream can make a network overflow; its pixels stay in [0, 1]
    return torch.round(torch.nan_to_num(frames, nan=0.0, posinf=1.0, neginf=0.0).clamp(0.0, 1.0) * 255.0) / 255.0


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.mean((a.float() - b.float()) ** 2))


def frames_to_numpy(frames: torch.Tensor) -> np.ndarray:
    """(T,3,H,W) float tensor in [0, 1] -> contiguous float32 numpy (for Video.rgb_frames)."""
    return np.ascontiguousarray(frames.detach().cpu().float().numpy())
