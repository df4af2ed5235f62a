"""Coding a fitted network's weights: the shared path of every INR codec (weight-step and baselines).

A network is coded as its named parameters, in ``named_parameters()`` order, quantised with
the rate-distortion step search of :mod:`weightstep.coding.quantise` (distortion + lambda x
the real coded bits, C3 style) and packed with the constriction entropy coder. Rendering turns
a network output into the 8-bit RGB frames a decoder would write, so the encoder measures
exactly what the decoder shows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from weightstep.coding.quantise import (
    DEFAULT_CANDIDATES,
    QuantisedTensor,
    StepSearchReport,
    pack_tensors,
    search_step,
    unpack_tensors,
)


def parameter_shapes(net: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """What the decoder expects, derived from the config-built network (never from the stream)."""
    return [(name, tuple(p.shape)) for name, p in net.named_parameters()]


def weights_of(net: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in net.named_parameters()}


def render(net: nn.Module, weights: dict[str, torch.Tensor], *args) -> torch.Tensor:
    """Network output with ``weights`` in place, clamped to [0, 1] and rounded to 8-bit levels."""
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


def code_weights(weights: dict[str, torch.Tensor], distortion: Callable[[dict[str, torch.Tensor]], float],
                 lam: float, pixels: int, per_channel: bool,
                 candidates: Sequence[float] = DEFAULT_CANDIDATES) -> tuple[bytes, dict[str, torch.Tensor], StepSearchReport]:
    """Quantise ``weights`` (step by distortion + lam * bpp over ``pixels``), pack them, return
    (section bytes, the dequantised weights a decoder will see, the search report)."""
    cpu = {k: v.detach().cpu().float() for k, v in weights.items()}
    chosen, report = search_step(cpu, distortion, lam / pixels, candidates=candidates, per_channel=per_channel)
    ordered = [chosen[name] for name in cpu]
    data = pack_tensors(ordered)
    return data, {q.name: q.dequantise() for q in ordered}, report


def decode_weights(data: bytes, shapes: list[tuple[str, tuple[int, ...]]]) -> dict[str, torch.Tensor]:
    """Section bytes -> dequantised weights, shapes checked against what the config implies."""
    tensors: list[QuantisedTensor] = unpack_tensors(data, shapes)
    return {q.name: q.dequantise() for q in tensors}


def frames_to_numpy(frames: torch.Tensor) -> np.ndarray:
    """(T,3,H,W) float tensor in [0, 1] -> contiguous float32 numpy (for Video.rgb_frames)."""
    return np.ascontiguousarray(frames.detach().cpu().float().numpy())
