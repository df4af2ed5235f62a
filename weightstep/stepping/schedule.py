"""Two-stage and single-stage weight stepping over one group of pictures (an anchor and its steps).

Both schedules end in the same closed-loop coding: frame t's update is quantised and coded
against the *decoded* weights of frame t-1, and the next frame starts from what the decoder
will hold, so encoder and decoder never drift apart.

- two-stage: fit and code the anchor on frame 0; then, frame by frame, fit a gated update
  starting from the decoded previous weights (:class:`WeightUpdate`), and code it.
- single-stage: fit the anchor weights and every update jointly on mini-batches of frames
  (theta_t = theta_0 + sum of the updates up to t), then code the anchor and, frame by frame,
  the residual from the decoded previous weights to the jointly trained theta_t, restricted to
  the elements (or DCT coefficients) whose gates the joint training opened.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from weightstep.coding.coded_network import CodedNetwork
from weightstep.coding.framing import put_varint
from weightstep.inr import FitConfig, StepOutput, fit, latent_names
from weightstep.inr.losses import psnr_from_mse
from weightstep.inr.render import load_weights, mse, render, weights_of
from weightstep.progress import make_progress
from weightstep.stepping.dct import to_coefficients
from weightstep.stepping.motion import start_warp
from weightstep.stepping.residual import BlockResidual, code_residual
from weightstep.stepping.step import (
    FrameStep,
    StepMemory,
    code_frame_step,
    code_update,
    initial_state,
    split_kind,
)
from weightstep.stepping.update import UpdateSpec, WeightUpdate, forward_with
from weightstep.stepping.warp import warp_state, warp_targets

# (network, target frame (1,3,H,W), fit first?) -> the coded anchor
AnchorCoder = Callable[[nn.Module, torch.Tensor, bool], CodedNetwork]


@dataclass
class CodedFrame:
    """One frame's section: an anchor (full network) or a weight step."""

    kind: str  # "anchor" or "step"
    data: bytes
    frame: torch.Tensor  # (1,3,H,W) reconstruction at 8-bit levels, from the decoded weights
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepSettings:
    """What the schedules need beyond the update parametrisation (built from the codec config)."""

    fit: FitConfig  # per-frame fit of an update (two-stage) or the joint fit's schedule (single-stage)
    lam: float  # the codec's lambda: the update's quantisation step search minimises MSE + lam * bpp
    frame_batch: int  # frames per joint step (single-stage)
    joint_steps: int  # optimiser steps of the joint fit (single-stage)
    anchor_lr: float  # learning rate of theta_0 in the joint fit (single-stage)
    kind: str = "l0"  # the step kind (stepping.step.STEP_KINDS): an update, a warp, or both
    warp_grid: int = 8  # displacement nodes per side of a warp (the codec config's default)
    warp_lr: float = 0.05  # Adam lr of the warp's values (pixels)
    warp_init: str = "estimate"  # a warp starts from a motion estimate when it beats the previous warp (motion.py)
    refresh: str = "fixed"  # "auto": a fresh anchor replaces a step whenever it costs less D + lam R
    pixel_share: float = 1.0  # share of the pixels each fit step of a coordinate MLP sees (random subsets)
    residual: bool = False  # a block-DCT residual on the finest latent level after each step (grid; residual.py)
    compact: bool = False  # format-5 steps: warps predicted from the previous one, compact low-rank headers (step.py)
    anchor_starts: int = 1  # two-stage: anchors fitted from this many initialisations; the cheapest start is kept
    clip_lam: float | None = None  # the codec's lambda (``lam`` is the steps'), which judges the starts; None: lam
    guard_db: float | None = None  # a step this many dB below its group's anchor is fitted again at half the lambda
    guard_tries: int = 2  # at most this many halvings per step (each a whole step fit)


def _frame_cost(frame: torch.Tensor, data: bytes, target: torch.Tensor, lam: float) -> float:
    """MSE + lam * bpp of one coded frame (``data`` its section) against ``target``."""
    pixels = target.shape[-1] * target.shape[-2]
    return mse(frame.cpu(), target.detach().cpu()) + lam * 8 * len(data) / pixels


def _anchor_cost(anchor: CodedNetwork, target: torch.Tensor, lam: float) -> float:
    return _frame_cost(anchor.frame, anchor.data, target, lam)


def two_stage(net: nn.Module, frames: torch.Tensor, spec: UpdateSpec, settings: StepSettings,
              code_anchor: AnchorCoder, label: str = "") -> list[CodedFrame]:
    """Anchor on ``frames[0]``, then one fitted and coded step per following frame.

    Each step starts from the decoder's state of the previous frame, its gate logits from the
    previous step's (warm start) and its warp from a motion estimate on the decoded previous
    frame or the previous warp, whichever renders the target better (``warp_init='estimate'``;
    'previous': the previous warp, motion persists); its fit
    stops early when D + lam R stops improving. With ``refresh='auto'``, a step whose D + lam R
    exceeds that of the last anchor triggers a fresh anchor fit on the same frame, and the
    cheaper of the two is coded.
    """
    stepper = _Stepper(net, frames, spec, settings)
    if settings.anchor_starts > 1:
        anchor, first = _best_start(net, frames, settings, code_anchor, stepper)
    else:
        anchor, first = code_anchor(net, frames[:1], True), None
    coded = [CodedFrame("anchor", anchor.data, anchor.frame, anchor.report)]
    anchor_cost = _anchor_cost(anchor, frames[:1], settings.lam)
    floor = _psnr(anchor.frame, frames[:1])  # the quality a guarded step holds (within guard_db)
    state, memory = initial_state(net, anchor.weights, settings.kind), StepMemory()
    previous = anchor.frame  # the decoder's last frame: where a motion estimate starts
    with make_progress() as progress:
        task = progress.add_task(f"{label}weight steps", total=frames.shape[0] - 1, status="")
        for t in range(1, frames.shape[0]):
            target = frames[t:t + 1]
            if t == 1 and first is not None:  # the chosen start's first step, coded already
                data, new_state, new_memory, facts, frame, cost = first
            else:
                data, new_state, new_memory, facts, frame, cost = stepper.step(t, state, memory, previous)
            if settings.guard_db is not None:
                data, new_state, new_memory, facts, frame, cost = _guard(
                    stepper, t, state, memory, previous, (data, new_state, new_memory, facts, frame, cost),
                    floor - settings.guard_db, settings.guard_tries)
            if settings.refresh == "auto" and cost > anchor_cost:
                fresh = code_anchor(net, target, True)
                fresh_cost = _anchor_cost(fresh, target, settings.lam)
                facts["refresh_tried"] = True
                if fresh_cost < cost:
                    fresh.report.update({"replaced_step_bytes": len(data), "replaced_step_psnr": facts["psnr"]})
                    coded.append(CodedFrame("anchor", fresh.data, fresh.frame, fresh.report))
                    state, memory, anchor_cost = initial_state(net, fresh.weights, settings.kind), StepMemory(), fresh_cost
                    floor = _psnr(fresh.frame, target)
                    previous = fresh.frame
                    progress.update(task, advance=1, status=f"frame {t}: fresh anchor")
                    continue
            state, memory, previous = new_state, new_memory, frame
            coded.append(CodedFrame("step", data, frame, facts))
            progress.update(task, advance=1, status=f"frame {t}: {facts['psnr']:.2f} dB, {len(data)} B")
    return coded


def _psnr(frame: torch.Tensor, target: torch.Tensor) -> float:
    return psnr_from_mse(mse(frame.cpu(), target.detach().cpu()))


def _guard(stepper: _Stepper, t: int, state: dict[str, torch.Tensor], memory: StepMemory, previous: torch.Tensor,
           coded: tuple, floor: float, tries: int) -> tuple:
    """A step whose PSNR falls below ``floor`` is fitted again from the same start at half its lambda, up to
    ``tries`` times; the first that reaches the floor, or the last, is kept (its facts record the lambda
    scale and what the guard replaced). Built to test whether the steps' slide is a myopic lambda; measured, it
    is not (at a quarter of the lambda the steps stay as cheap), so the codec leaves it off (README, "A floor
    under the steps")."""
    scale, tried, seconds = 1.0, [], 0.0
    while coded[3]["psnr"] < floor and len(tried) < tries:
        tried.append((len(coded[0]), round(coded[3]["psnr"], 3)))
        seconds += coded[3].get("step_seconds", 0.0)
        scale /= 2
        coded = stepper.step(t, state, memory, previous, lam_scale=scale)
    if tried:  # the frame's encode time includes the steps it replaced
        coded[3].update({"guard_scale": scale, "guard_replaced": tried,
                         "step_seconds": coded[3].get("step_seconds", 0.0) + seconds})
    return coded


def _best_start(net: nn.Module, frames: torch.Tensor, settings: StepSettings, code_anchor: AnchorCoder,
                stepper: _Stepper) -> tuple[CodedNetwork, tuple | None]:
    """Code the anchor from ``settings.anchor_starts`` initialisations (start 0: the network as it is) and keep the
    one whose anchor plus first step costs the least MSE + lambda bpp summed over the two frames, at the codec's
    lambda (an anchor's image cost alone ranks starts worse: README); its fitted parameters are left in ``net``.
    Returns (that anchor, its first step as :meth:`_Stepper.step` returned it, or None for a one-frame clip)."""
    lam = settings.clip_lam if settings.clip_lam is not None else settings.lam
    best = None
    costs = []
    for start in range(settings.anchor_starts):
        anchor = code_anchor(net, frames[:1], True, start=start)
        cost = _anchor_cost(anchor, frames[:1], lam)
        first = None
        if frames.shape[0] > 1:
            first = stepper.step(1, initial_state(net, anchor.weights, settings.kind), StepMemory(), anchor.frame)
            cost += _frame_cost(first[4], first[0], frames[1:2], lam)
        costs.append(cost)
        if best is None or cost < best[0]:
            best = (cost, start, anchor, first, weights_of(net))
    cost, start, anchor, first, fitted = best
    load_weights(net, fitted)  # later anchors of the clip (gop=auto) warm-start from the kept one's fit
    anchor.report.update({"start": start, "start_costs": costs})
    return anchor, first


class _Stepper:
    """Fits and codes one frame's step from a given decoded state (what :func:`two_stage` repeats)."""

    def __init__(self, net: nn.Module, frames: torch.Tensor, spec: UpdateSpec, settings: StepSettings):
        self.net, self.frames, self.settings = net, frames, settings
        self.device = frames.device
        self.height, self.width = frames.shape[-2:]
        self.lam_per_bit = settings.lam / (self.height * self.width)
        self.spec = dataclasses.replace(spec, lam=self.lam_per_bit)
        mlp = any(target.kind == "coords" for target in getattr(net, "warp_targets", tuple)())
        share = settings.pixel_share
        self.subset = int(round(share * self.height * self.width)) if mlp and share < 1.0 else 0
        self.picker = torch.Generator().manual_seed(spec.seed)
        self.estimate = split_kind(settings.kind)[0] and settings.warp_init == "estimate"
        self.moving = warp_targets(net) if self.estimate else ()
        self.finest = latent_names(net)[0] if settings.residual else ""

    def step(self, t: int, state: dict[str, torch.Tensor], memory: StepMemory, previous: torch.Tensor,
             lam_scale: float = 1.0) -> tuple[bytes, dict[str, torch.Tensor], StepMemory, dict[str, Any], torch.Tensor, float]:
        """Frame ``t``'s step from ``state`` (``previous``: the frame it renders, where a motion estimate
        starts), fitted and coded at ``lam_scale`` x the steps' lambda: (section, the decoder's new state,
        memory for the next step, facts, the decoded frame, its D + lam R at the steps' own lambda)."""
        net, settings, device = self.net, self.settings, self.device
        spec = self.spec if lam_scale == 1.0 else dataclasses.replace(self.spec, lam=self.spec.lam * lam_scale)
        lam_per_bit = self.lam_per_bit * lam_scale
        height, width, subset, picker, finest = self.height, self.width, self.subset, self.picker, self.finest
        started = time.perf_counter()
        target = self.frames[t:t + 1]
        target_cpu = target.detach().cpu()
        flat_target = target[0].reshape(3, -1).t()
        current = {k: v.to(device) for k, v in state.items()}
        warp_start = None
        if self.estimate:
            def warped_error(values) -> float:
                with torch.no_grad():
                    shift = torch.as_tensor(values, dtype=torch.float32, device=device)
                    moved = warp_state(current, self.moving, shift, width, height, settings.warp_grid, exact=False)
                    return float(torch.mean((forward_with(net, {**current, **moved}) - target) ** 2))

            values, warp_start = start_warp(previous, target, settings.warp_grid, memory.warp, warped_error)
            memory = dataclasses.replace(memory, warp=values)
        step = FrameStep(net, current, spec, settings.kind, memory,
                         warp_grid=settings.warp_grid, width=width, height=height).to(device)
        generator = torch.Generator(device=device).manual_seed(spec.seed + t)
        residual = BlockResidual(height, width).to(device) if settings.residual else None

        def closure(_: int) -> StepOutput:
            weights = step.weights(train=True, generator=generator)
            penalty = step.penalty()
            if residual is not None:
                weights[finest] = weights[finest] + residual.delta()
                penalty = penalty + residual.penalty()
            if subset:  # a coordinate MLP on a random share of the pixels: a cheaper, noisier step
                pixels = torch.randperm(height * width, generator=picker)[:subset].to(device)
                pred = torch.func.functional_call(net, weights, (pixels,))
                err = torch.mean((pred - flat_target[pixels]) ** 2)
            else:
                err = torch.mean((forward_with(net, weights) - target) ** 2)
            loss = err + spec.lam * penalty
            return StepOutput(loss=loss, psnr=psnr_from_mse(err.detach()), extras={"open": step.open_count()})

        groups = step.param_groups(settings.warp_lr) + (residual.param_groups() if residual is not None else [])
        report = fit(groups, closure, settings.fit, label=f"frame {t}")

        def distortion(weights) -> float:
            return mse(render(net, weights).cpu(), target_cpu)

        data, new_state, memory, facts = code_frame_step(step, distortion, lam_per_bit, memory,
                                                         compact=settings.compact)
        if residual is not None:
            data, new_state = _add_residual(finest, residual, new_state, data, distortion, lam_per_bit, facts)
        frame = render(net, new_state)
        step_mse = mse(frame.cpu(), target_cpu)
        facts.update({"psnr": psnr_from_mse(step_mse), "fit_steps": report.steps_done,
                      "fit_seconds": report.seconds, "stopped_by": report.stopped_by,
                      "open_gates": step.open_count(), "step_seconds": time.perf_counter() - started})
        if warp_start is not None:
            facts["warp_start"] = warp_start
        return data, new_state, memory, facts, frame, step_mse + self.lam_per_bit * 8 * len(data)


def _add_residual(finest: str, residual: BlockResidual, state: dict[str, torch.Tensor], data: bytes,
                  distortion: Callable[[dict[str, torch.Tensor]], float], lam_per_bit: float,
                  facts: dict[str, Any]) -> tuple[bytes, dict[str, torch.Tensor]]:
    """Code the fitted residual on top of the decoded step: (``varint(len(step)) + step + residual``,
    the state with the decoder's residual added to the finest latent level, ``finest``)."""
    level = state[finest]

    def with_map(delta: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return state if delta is None else {**state, finest: level + delta.to(level.device)}

    blob, delta, residual_facts = code_residual(residual.fitted(), residual.height, residual.width,
                                                lambda delta: distortion(with_map(delta)), lam_per_bit)
    facts.update(residual_facts)
    head = bytearray()
    put_varint(head, len(data))
    return bytes(head) + data + blob, with_map(delta)


def _gate_masks(update: WeightUpdate) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        if not update.gated:
            return {name: torch.ones_like(b, dtype=torch.bool) for name, b in update.base().items()}
        return {name: gate.open_mask() for name, gate in zip(update.names, update.gates, strict=True)}


def _code_step(net: nn.Module, values: dict[str, torch.Tensor], base: dict[str, torch.Tensor],
               target: torch.Tensor, kind: str, settings: StepSettings,
               previous_maps: dict[str, np.ndarray] | None) -> tuple[CodedFrame, dict, dict[str, np.ndarray]]:
    """Quantise and code ``values`` as the update from ``base``; returns the frame, new weights, maps."""
    target_cpu = target.detach().cpu()
    pixels = target.shape[-1] * target.shape[-2]
    data, weights, maps, _, facts = code_update(values, kind, base,
                                                lambda w: mse(render(net, w).cpu(), target_cpu),
                                                settings.lam / pixels, previous_maps)
    frame = render(net, weights)
    facts["psnr"] = psnr_from_mse(mse(frame.cpu(), target_cpu))
    return CodedFrame("step", data, frame, facts), weights, maps


def single_stage(net: nn.Module, frames: torch.Tensor, spec: UpdateSpec, settings: StepSettings,
                 code_anchor: AnchorCoder, label: str = "",
                 fit_anchor: Callable[[nn.Module, torch.Tensor], float | None] | None = None) -> list[CodedFrame]:
    """Fit theta_0 and all updates jointly, then code them closed-loop (see the module docstring).

    theta_0 starts from a fit of frame 0 (``fit_anchor``: fitted once, not coded; without it the
    anchor coder fits and its coding is discarded). Each joint step trains a window of
    ``frame_batch`` consecutive frames: the updates before the window enter as constants, so
    memory grows with the batch, not with the clip.
    """
    if split_kind(settings.kind) != (False, spec.kind):
        raise ValueError(f"single-stage codes the proposal's update kinds (l0, dct, dense), not {settings.kind!r}")
    count = frames.shape[0]
    device = frames.device
    if fit_anchor is not None:
        warm_psnr = fit_anchor(net, frames[:1])
    else:
        warm_psnr = code_anchor(net, frames[:1], True).report.get("fit_psnr")
    anchor_params = dict(net.named_parameters())
    zeros = {name: torch.zeros_like(p) for name, p in anchor_params.items()}
    updates = [WeightUpdate(zeros, spec).to(device) for _ in range(count - 1)]
    generator = torch.Generator(device=device).manual_seed(spec.seed)
    picker = torch.Generator().manual_seed(spec.seed)
    batch = min(settings.frame_batch, count)

    def add_deltas(weights: dict[str, torch.Tensor], deltas: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        for delta in deltas:  # in frame order, so every frame's sum is the same floats however it is reached
            weights = {name: weights[name] + delta[name] for name in weights}
        return weights

    def closure(_: int) -> StepOutput:
        start = int(torch.randint(0, count - batch + 1, (1,), generator=picker))
        with torch.no_grad():  # the updates before the window: constants of this step
            before = [u.delta(train=False) for u in updates[:max(start - 1, 0)]]
        live = [u.delta(train=True, generator=generator) for u in updates[max(start - 1, 0):start + batch - 1]]
        deltas = before + live
        errors, weights, summed = [], dict(anchor_params), 0
        for t in range(start, start + batch):  # frame t's weights: the anchor plus deltas[:t], summed once
            weights, summed = add_deltas(weights, deltas[summed:t]), t
            errors.append(torch.mean((forward_with(net, weights) - frames[t:t + 1]) ** 2))
        err = torch.stack(errors).mean()
        penalty = torch.stack([u.penalty() for u in updates]).sum() if updates else torch.zeros((), device=device)
        # err is a mean over frames, so the bits are too: lambda x bits / (pixels x frames) is the clip's bpp term
        return StepOutput(loss=err + spec.lam * penalty / count, psnr=psnr_from_mse(err.detach()))

    groups = [{"params": list(anchor_params.values()), "lr": settings.anchor_lr}]
    for update in updates:
        groups.extend(update.param_groups())
    joint = dataclasses.replace(settings.fit, steps=settings.joint_steps)
    fit(groups, closure, joint, label=f"{label}joint fit of {count} frames")

    with torch.no_grad():
        target = {name: p.detach().clone() for name, p in anchor_params.items()}  # theta_0, before it is coded
    anchor = code_anchor(net, frames[:1], False)  # codes theta_0 as trained jointly
    anchor.report["warm_start_psnr"] = warm_psnr
    coded = [CodedFrame("anchor", anchor.data, anchor.frame, anchor.report)]
    weights, maps = anchor.weights, None
    for t in range(1, count):
        with torch.no_grad():  # frame t's jointly trained weights, one update at a time (not the clip's at once)
            target = add_deltas(target, [updates[t - 1].delta(train=False)])
            mask = _gate_masks(updates[t - 1])
        residual = {name: (target[name] - weights[name].to(device)) for name in weights}
        if spec.kind == "dct":
            values = {name: to_coefficients(r.double()).float() * mask[name] for name, r in residual.items()}
        else:
            values = {name: r * mask[name] for name, r in residual.items()}
        step, weights, maps = _code_step(net, values, {k: v.to(device) for k, v in weights.items()},
                                         frames[t:t + 1], spec.kind, settings, maps)
        step.facts["open_gates"] = int(sum(int(m.sum()) for m in mask.values()))
        coded.append(step)
    return coded


SCHEDULES = {"two-stage": two_stage, "single-stage": single_stage}


def joint_steps_for(frames: int, step_steps: int, frame_batch: int) -> int:
    """Joint iterations giving about as many frame evaluations as two-stage's per-frame fits."""
    return max(1, math.ceil(step_steps * max(frames - 1, 1) / max(frame_batch, 1)))
