"""Coding a fitted network's weights: the shared path of every INR codec (weight-step and baselines).

A network is coded as its named parameters, in ``named_parameters()`` order, quantised with
one step per tensor chosen by distortion + lambda x the real coded bits
(:func:`weightstep.coding.stepsearch.search_steps`: the best shared step, then each tensor's
own, as the anchors are coded) and packed into one constriction stream
(:func:`weightstep.coding.tensorpack.pack_network`; the older per-tensor layout still decodes). Rendering turns
a network output into the 8-bit RGB frames a decoder would write, so the encoder measures
exactly what the decoder shows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from weightstep.coding.quantise import DEFAULT_CANDIDATES, QuantisedTensor
from weightstep.coding.stepsearch import StepsReport, search_steps
from weightstep.coding.tensorpack import pack_network, unpack_network
from weightstep.inr.render import frames_to_numpy, mse, parameter_shapes, render, to_8bit, weights_of

__all__ = ["code_weights", "decode_weights", "frames_to_numpy", "mse", "parameter_shapes", "render", "to_8bit",
           "weights_of"]  # the rendering helpers live in weightstep.inr.render; re-exported here


def code_weights(weights: dict[str, torch.Tensor], distortion: Callable[[dict[str, torch.Tensor]], float],
                 lam: float, pixels: int, per_channel: bool,
                 candidates: Sequence[float] = DEFAULT_CANDIDATES, sweeps: int = 2
                 ) -> tuple[bytes, dict[str, torch.Tensor], StepsReport]:
    """Quantise ``weights`` (steps by distortion + lam * bpp over ``pixels``; ``sweeps`` of the
    per-tensor refinement, 0 = one shared step), pack them, return (section bytes, the
    dequantised weights a decoder will see, the search report)."""
    cpu = {k: v.detach().cpu().float() for k, v in weights.items()}
    chosen, report = search_steps(cpu, distortion, lam / pixels, candidates=candidates, per_channel=per_channel,
                                  sweeps=sweeps)
    ordered = [chosen[name] for name in cpu]
    data = pack_network(ordered)
    return data, {q.name: q.dequantise() for q in ordered}, report


def decode_weights(data: bytes, shapes: list[tuple[str, tuple[int, ...]]]) -> dict[str, torch.Tensor]:
    """Section bytes -> dequantised weights, shapes checked against what the config implies."""
    tensors: list[QuantisedTensor] = unpack_network(data, shapes)
    return {q.name: q.dequantise() for q in tensors}
