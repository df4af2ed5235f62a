"""Fitting and coding the anchor network: one frame as a quantised, entropy-coded INR.

Used by the weight-step codec for frame 0 (and for every GOP restart) and, on its own, as the
image mode (``--frames 1``). Everything minimises one objective, ``D + lam * bpp`` (D the MSE
on [0, 1] RGB, bpp the coded bits of the whole anchor over the frame's pixels):

1. fit: the network's weights and, for latent-grid networks, the latents with annealed soft
   rounding plus uniform noise standing in for rounding (:mod:`weightstep.inr.softround`; fits
   shorter than ``SOFT_MIN_STEPS`` use plain additive noise) and their bits under the context
   model in the loss;
2. a straight-through rounding phase at a tenth of the learning rate (recovers what the
   proxy misses), kept only if it lowers D + lam * R with rounded latents;
3. quantisation steps: one shared relative step, then each tensor's own
   (:func:`weightstep.coding.stepsearch.search_steps`), by D + lam x the real coded bits
   (latent bits under the quantised context model included);
4. quantisation-aware fine-tune at exactly those absolute steps (straight-through), then the
   same steps quantise the result, so the file keeps what the fine-tune reached; kept only if
   it lowers D + lam * R.

The closed loop lives here: the returned weights are the dequantised ones a decoder reads,
and the reconstruction is rendered from exactly those.

Section layout: networks without latents write the packed weights
(:func:`weightstep.coding.tensorpack.pack_network`; older files' per-tensor layout still decodes); networks with latents write
``varint(len(weights)) + weights + latents`` (:mod:`weightstep.codecs.latentcoding`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from weightstep.codecs.latentcoding import decode_latents, encode_latents, latent_bits, latent_inputs
from weightstep.coding.coded_network import CodedNetwork
from weightstep.coding.framing import ByteReader, put_varint
from weightstep.coding.quantise import QuantisedTensor, quantise_absolute
from weightstep.coding.stepsearch import search_steps
from weightstep.coding.tensorpack import pack_network, unpack_network
from weightstep.inr import FitConfig, StepOutput, fit, latent_names
from weightstep.inr.losses import psnr_from_mse, reconstruction_loss
from weightstep.inr.render import load_weights, mse, parameter_shapes, render, weights_of
from weightstep.inr.softround import latent_proxy, temperature

# Soft rounding needs steps to anneal: measured on carphone (benchmarks/anchor_rd.py, README) it gave
# +1.6 dB at equal rate over additive noise at 2000 steps, the same BD-rate at 800, and on the rd pins'
# 44x36 clip at 150 steps 0.8 dB less; shorter fits keep the noise proxy.
SOFT_MIN_STEPS = 800
# Adam learning rates that worked for each network on carphone (benchmarks/anchor_rd.py).
DEFAULT_LR = {"siren": 1e-3, "fourier": 1e-2, "dip": 5e-3, "grid": 3e-2}


@dataclass(frozen=True)
class AnchorSettings:
    """How an anchor is fitted and coded (built from a codec config)."""

    fit: FitConfig | None  # the main fit; None when the weights are trained already (single-stage)
    lam: float  # minimise D + lam * bpp (D: MSE on [0, 1] RGB)
    per_channel: bool  # quantisation step per output channel
    qat_steps: int  # latent rounding phase and weight fine-tune steps at the chosen quantisation
    qat_lr: float  # learning rate of both (a tenth of the network kind's fitting rate)
    seed: int = 0  # torch seed of the straight-through phases (the codec's seed, whatever the network)
    loss: str = "mse"  # reconstruction loss of the straight-through phases (the codec's)
    step_sweeps: int = 2  # per-tensor step refinement sweeps (0 = one shared step, as before)
    latent_mode: str = "soft"  # the main fit's latent proxy: soft (annealed; from SOFT_MIN_STEPS) or noise
    fused: bool = False  # Adam's fused kernel in the straight-through phases (the main fit's is in ``fit``)


def _ste(value: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    return value + (torch.round(value / step) * step - value).detach()


def _step_tensor(q: QuantisedTensor, like: torch.Tensor) -> torch.Tensor:
    step = torch.from_numpy(q.step).to(like.device)
    return step.reshape(-1, *([1] * (like.dim() - 1))) if step.numel() > 1 else step.reshape(())


def _train(net: nn.Module, target: torch.Tensor, config: FitConfig, lam_bit: float, *, latent_mode: str,
           weight_steps: dict[str, torch.Tensor] | None = None, label: str) -> Any:
    """One run of the fitting loop on D + lam_bit * latent bits.

    ``latent_mode`` for the latents, if any: 'soft' (annealed soft rounding plus uniform noise,
    :func:`~weightstep.inr.softround.latent_proxy`; the temperature follows the step count),
    'noise' (additive U(-0.5, 0.5)) or 'round' (straight-through). ``weight_steps``: absolute steps to fake-quantise the named weights with
    (straight-through); those tensors are trained, and only those plus the latents.

    With 'round' the loss is what the decoder will see (rounded latents, their real bits under
    the context model), so the parameters of the lowest loss seen are restored at the end:
    straight-through steps can raise that loss (measured: a carphone grid after 5000 fit steps
    went from 33.0 dB at 1.07 bpp to 29.6 dB at 1.34 bpp within 380 rounded steps).
    """
    params = dict(net.named_parameters())
    best: dict[str, Any] = {"loss": math.inf, "params": None}
    latents = latent_names(net)
    pixels = target.shape[-1] * target.shape[-2]
    trained = [p for name, p in params.items() if weight_steps is None or name in weight_steps or name in latents]

    def closure(index: int) -> StepOutput:
        p = dict(params)
        if weight_steps:
            p.update({name: _ste(p[name], step) for name, step in weight_steps.items()})
        extras = {}
        bits = None
        if latents:
            rate_view = dict(p)
            # every level at once (one flat tensor, then views): a few ops a step instead of a few per level
            flat = torch.cat([p[name].reshape(-1) for name in latents])
            if latent_mode == "soft":
                seen, rated = latent_proxy(flat, temperature(index, config.steps))
            else:
                seen = rated = (flat + (torch.rand_like(flat) - 0.5) if latent_mode == "noise"
                                else _ste(flat, 1.0) if latent_mode == "round" else flat)
            sizes = [p[name].numel() for name in latents]
            for name, a, b in zip(latents, seen.split(sizes), rated.split(sizes), strict=True):
                p[name], rate_view[name] = a.view_as(p[name]), b.view_as(p[name])
            bits = net.latent_bits(rate_view)
            extras["bpp"] = bits.detach() / pixels
        pred = functional_call(net, p, ())
        loss = reconstruction_loss(pred, target, config.loss, config.ssim_alpha)
        with torch.no_grad():
            err = torch.mean((pred.clamp(0.0, 1.0) - target) ** 2)
        if bits is not None:
            loss = loss + lam_bit * bits
        if latent_mode == "round" and float(loss.detach()) < best["loss"]:
            best["loss"], best["params"] = float(loss.detach()), weights_of(net)
        return StepOutput(loss=loss, psnr=psnr_from_mse(err), extras=extras)

    report = fit(trained, closure, config, label=label)
    if best["params"] is not None:
        load_weights(net, best["params"])
    return report


def _weights(net: nn.Module, quantised: dict[str, QuantisedTensor], latents: dict[str, torch.Tensor]) -> dict:
    """Decoder-side tensors in ``named_parameters()`` order."""
    return {name: latents[name] if name in latents else quantised[name].dequantise()
            for name, _ in net.named_parameters()}


def _cost(net: nn.Module, weights: dict[str, torch.Tensor], target_cpu: torch.Tensor, lam_bit: float,
          weight_bits: int, known: dict[bytes, float] | None = None) -> tuple[float, float]:
    """(D + lam_bit * all bits, latent bits) of decoder-side ``weights``. ``known``: latent bits
    already computed, by :func:`latent_inputs` (a search that moves one tensor at a time mostly
    leaves them as they were)."""
    bits = 0.0
    if latent_names(net):
        key = latent_inputs(net, weights) if known is not None else None
        if key is None or key not in known:
            bits = latent_bits(net, weights)
            if key is not None:
                known[key] = bits
        else:
            bits = known[key]
    return mse(render(net, weights).cpu(), target_cpu) + lam_bit * (weight_bits + bits), bits


def fit_only(net: nn.Module, target: torch.Tensor, settings: AnchorSettings, *, label: str) -> float | None:
    """The fit phase of :func:`fit_and_code` alone (the same latent proxy, their bits in the loss);
    returns the fit's last PSNR. For schedules that train the anchor further before coding it."""
    if settings.fit is None:
        return None
    pixels = target.shape[-1] * target.shape[-2]
    mode = settings.latent_mode if settings.fit.steps >= SOFT_MIN_STEPS else "noise"
    report = _train(net, target, settings.fit, settings.lam / pixels, latent_mode=mode, label=label)
    return report.last_psnr


def _rounded_cost(net: nn.Module, target_cpu: torch.Tensor, lam_bit: float) -> float:
    """D + lam_bit * latent bits with the latents rounded and the weights as they are (unquantised)."""
    latents = latent_names(net)
    weights = {name: torch.round(p.detach()).cpu() if name in latents else p.detach().cpu()
               for name, p in net.named_parameters()}
    return _cost(net, weights, target_cpu, lam_bit, 0)[0]


def fit_and_code(net: nn.Module, target: torch.Tensor, settings: AnchorSettings, *, label: str) -> CodedNetwork:
    """Fit ``net`` to ``target`` (1,3,H,W) (unless ``settings.fit`` is None), then quantise and code it."""
    pixels = target.shape[-1] * target.shape[-2]
    lam_bit = settings.lam / pixels
    target_cpu = target.detach().cpu()
    latents = latent_names(net)
    facts: dict[str, Any] = {}
    if settings.fit is not None:
        mode = settings.latent_mode if settings.fit.steps >= SOFT_MIN_STEPS else "noise"
        report = _train(net, target, settings.fit, lam_bit, latent_mode=mode, label=label)
        facts["latent_proxy"] = mode
        facts.update({"fit_steps": report.steps_done, "fit_seconds": report.seconds,
                      "fit_stopped_by": report.stopped_by})
    qat = FitConfig(steps=max(1, settings.qat_steps), lr=settings.qat_lr, warmup_fraction=0.0,
                    seed=settings.seed, loss=settings.loss, fused=settings.fused)
    if latents and settings.qat_steps > 0:
        before, saved = _rounded_cost(net, target_cpu, lam_bit), weights_of(net)
        report = _train(net, target, qat, lam_bit, latent_mode="round", label=f"{label}: rounded latents")
        facts["round_seconds"] = report.seconds
        facts["round_kept"] = _rounded_cost(net, target_cpu, lam_bit) < before
        if not facts["round_kept"]:  # the rounding phase did not pay (it may not, after soft rounding)
            load_weights(net, saved)
    params = dict(net.named_parameters())
    rounded = {name: torch.round(params[name].detach()).cpu() for name in latents}
    floats = {name: p.detach().cpu() for name, p in params.items() if name not in latents}
    facts["fit_psnr"] = psnr_from_mse(mse(render(net, {**floats, **rounded}).cpu(), target_cpu))

    known_bits: dict[bytes, float] = {}

    def objective(dequantised: dict[str, torch.Tensor]) -> float:  # D + lam * latent bits; the search adds the weights'
        return _cost(net, {**dequantised, **rounded}, target_cpu, lam_bit, 0, known_bits)[0]

    quantised, steps = search_steps(floats, objective, lam_bit, per_channel=settings.per_channel,
                                    sweeps=settings.step_sweeps)
    cost = steps.cost
    if settings.qat_steps > 0:
        saved = weights_of(net)
        weight_steps = {name: _step_tensor(q, params[name]) for name, q in quantised.items()}
        report = _train(net, target, qat, lam_bit, latent_mode="round", weight_steps=weight_steps,
                        label=f"{label}: quantisation-aware fine-tune")
        tuned = {name: quantise_absolute(params[name].detach().cpu(), q.step, name=name)
                 for name, q in quantised.items()}
        tuned_latents = {name: torch.round(params[name].detach()).cpu() for name in latents}
        bits = 8 * len(pack_network(list(tuned.values())))
        tuned_cost = _cost(net, _weights(net, tuned, tuned_latents), target_cpu, lam_bit, bits)[0]
        facts["qat_seconds"] = report.seconds
        if tuned_cost < cost:
            quantised, rounded, cost = tuned, tuned_latents, tuned_cost
        else:  # the fine-tune did not pay: back to the searched weights
            load_weights(net, saved)
        facts["qat_kept"] = tuned_cost < steps.cost
    weights = _weights(net, quantised, rounded)
    blob = pack_network([quantised[name] for name in quantised])
    data = blob
    if latents:
        latent_blob = encode_latents(net, weights)
        head = bytearray()
        put_varint(head, len(blob))
        data = bytes(head) + blob + latent_blob
        facts.update({"latent_bytes": len(latent_blob), "latent_ideal_bytes": latent_bits(net, weights) / 8,
                      "latents": sum(rounded[name].numel() for name in latents)})
    frame = render(net, weights)
    facts.update({"coded_psnr": psnr_from_mse(mse(frame.cpu(), target_cpu)), "weight_bytes": len(blob),
                  "parameters": sum(q.values.size for q in quantised.values()),
                  "rel_steps": steps.rel_steps, "shared_rel_step": steps.shared_rel_step,
                  "step_search_evaluations": steps.evaluations, "per_channel_steps": list(steps.per_channel)})
    facts["fit_to_coded_db"] = facts["fit_psnr"] - facts["coded_psnr"]
    return CodedNetwork(data=data, weights={k: v.to(target.device) for k, v in weights.items()}, frame=frame,
                        report=facts)


def decode_anchor(data: bytes, net: nn.Module) -> dict[str, torch.Tensor]:
    """An anchor section -> the decoder-side weights of ``net`` (built from the stream's config)."""
    latents = latent_names(net)
    shapes = [(name, shape) for name, shape in parameter_shapes(net) if name not in latents]
    if not latents:
        tensors = unpack_network(data, shapes)
        return {q.name: q.dequantise() for q in tensors}
    reader = ByteReader(bytes(data), "anchor section")
    blob = reader.take(reader.varint("weights length"), "weights")
    weights = {q.name: q.dequantise() for q in unpack_network(blob, shapes)}
    decoded = decode_latents(net, weights, data[reader.pos:])
    return {name: decoded[name] if name in decoded else weights[name] for name, _ in net.named_parameters()}
