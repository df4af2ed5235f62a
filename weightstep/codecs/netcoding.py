"""Coding a fitted network's weights: the shared path of every INR codec (weight-step and baselines).

A network is coded as its named parameters, in ``named_parameters()`` order, quantised with
the rate-distortion step search of :mod:`weightstep.coding.quantise` (distortion + lambda x
the real coded bits, C3 style) and packed with the constriction entropy coder. Rendering turns
a network output into the 8-bit RGB frames a decoder would write, so the encoder measures
exactly what the decoder shows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from weightstep.coding.quantise import (
    DEFAULT_CANDIDATES,
    QuantisedTensor,
    StepSearchReport,
    pack_tensors,
    search_step,
    unpack_tensors,
)
from weightstep.inr.render import frames_to_numpy, mse, parameter_shapes, render, to_8bit, weights_of

__all__ = ["code_weights", "decode_weights", "frames_to_numpy", "mse", "parameter_shapes", "render", "to_8bit",
           "weights_of"]  # the rendering helpers live in weightstep.inr.render; re-exported here


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
