"""Fitting and coding the anchor network: one frame as a quantised, entropy-coded INR.

Used by the weight-step codec for frame 0 (and for every GOP restart) and, on its own, as the
image mode (``--frames 1``). The closed loop lives here: the returned weights are the
dequantised ones a decoder reads, and the reconstruction is rendered from exactly those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from weightstep.codecs.netcoding import code_weights, mse, render, weights_of
from weightstep.coding.quantise import relative_steps
from weightstep.inr import FitConfig, StepOutput, fit, fit_image
from weightstep.inr.losses import psnr_from_mse

# Adam learning rates that worked for each network on carphone (benchmarks/inr_fit.py).
DEFAULT_LR = {"siren": 1e-3, "fourier": 1e-2, "dip": 5e-3}


@dataclass
class CodedNetwork:
    data: bytes  # the packed, entropy-coded weights (one container section)
    weights: dict[str, torch.Tensor]  # dequantised weights, exactly what the decoder gets
    frame: torch.Tensor  # (1,3,H,W) 8-bit-level reconstruction from those weights
    report: dict[str, Any]  # fit and quantisation facts for the Result's extra


def quantisation_aware_finetune(net: nn.Module, target: torch.Tensor, steps: int, rel_step: float,
                                per_channel: bool, lr: float, seed: int) -> None:
    """Fine-tune through a straight-through quantiser at the chosen relative step, in place.

    The absolute steps are fixed from the weights before fine-tuning (as the coder derives them).
    """
    if steps <= 0:
        return
    params = dict(net.named_parameters())
    steps_abs = {}
    for name, p in params.items():
        s = torch.from_numpy(relative_steps(p.detach().cpu(), rel_step, per_channel)).to(p.device)
        steps_abs[name] = s.reshape(-1, *([1] * (p.dim() - 1))) if s.numel() > 1 else s.reshape(())

    def quantised() -> dict[str, torch.Tensor]:
        return {name: p + (torch.round(p / steps_abs[name]) * steps_abs[name] - p).detach()
                for name, p in params.items()}

    def closure(_: int) -> StepOutput:
        pred = functional_call(net, quantised(), ())
        loss = torch.mean((pred - target) ** 2)
        return StepOutput(loss=loss, psnr=psnr_from_mse(loss.detach()))

    fit(list(params.values()), closure, FitConfig(steps=steps, lr=lr, warmup_fraction=0.0, seed=seed),
        label="quantisation-aware fine-tune")


def fit_and_code(net: nn.Module, target: torch.Tensor, fit_config: FitConfig | None, *, lam: float,
                 per_channel: bool, qat_steps: int, label: str) -> CodedNetwork:
    """Fit ``net`` to ``target`` (1,3,H,W) unless ``fit_config`` is None (weights already trained),
    then choose the quantisation step by distortion + lam * bpp and code the weights."""
    report = fit_image(net, target, fit_config, label=label) if fit_config is not None else None
    pixels = target.shape[-1] * target.shape[-2]
    target_cpu = target.detach().cpu()

    def distortion(weights: dict[str, torch.Tensor]) -> float:
        return mse(render(net, weights).cpu(), target_cpu)

    data, weights, search = code_weights(weights_of(net), distortion, lam, pixels, per_channel)
    if qat_steps > 0:
        lr = 0.1 * (fit_config.lr if fit_config is not None else DEFAULT_LR.get("siren"))
        quantisation_aware_finetune(net, target, qat_steps, search.chosen.rel_step, per_channel, lr,
                                    fit_config.seed if fit_config is not None else 0)
        data, weights, search = code_weights(weights_of(net), distortion, lam, pixels, per_channel,
                                             candidates=[search.chosen.rel_step])
    frame = render(net, weights)
    facts = {"coded_psnr": psnr_from_mse(mse(frame.cpu(), target_cpu)), "rel_step": search.chosen.rel_step,
             "weight_bytes": len(data), "parameters": sum(w.numel() for w in weights.values())}
    if report is not None:
        facts.update({"fit_steps": report.steps_done, "fit_seconds": report.seconds,
                      "fit_stopped_by": report.stopped_by, "fit_psnr": report.last_psnr})
    return CodedNetwork(data=data, weights=weights, frame=frame, report=facts)
