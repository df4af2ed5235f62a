"""The one fitting loop: Adam, linear warm-up then cosine decay, a step or time budget, progress.

Every optimisation in weightstep runs through :func:`fit`: anchor networks, full-sequence
networks, and weight-step updates with their gates. The caller says what one step is with a
``closure(step) -> StepOutput`` that returns the loss (a full frame, a pixel batch, a batch
of frames, with any penalties already added); :func:`fit` does ``zero_grad``, ``backward``,
the learning-rate schedule and ``Adam.step``.

Learning rates: each param group may carry its own ``'lr'`` (e.g. gate logits at 0.05 next
to weight updates at 2e-4); groups without one use ``FitConfig.lr``. The schedule multiplies
every group's own base rate by the same factor (:func:`lr_factor`). The schedule is laid out
over ``steps``; a ``time_budget_s`` stop ends the run early wherever the schedule is.

Determinism: ``torch.manual_seed(config.seed)`` at the start (for closures that sample,
e.g. gates or pixel batches); on CPU two runs with the same inputs give identical weights.
A non-finite loss stops the run before that step's update (``stopped_by='non_finite'``).

The PSNR a closure reports is of the prediction it computed, i.e. before that step's update;
callers that need the quality of the final weights evaluate them after :func:`fit` returns.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn

from weightstep.config import param, validate
from weightstep.errors import ConfigError
from weightstep.inr.losses import LOSSES, psnr_from_mse, reconstruction_loss
from weightstep.progress import enabled as progress_enabled


@dataclass(frozen=True)
class FitConfig:
    """How long and how fast to fit, and against which loss."""

    steps: int = param(300, "optimiser steps; the lr schedule is laid out over them", low=1, high=10**8)
    time_budget_s: float | None = param(None, "optional wall-time stop in seconds (checked after each "
                                        "step; at least one step runs); none = run all steps", low=0.0)
    lr: float = param(1e-3, "Adam learning rate of param groups that do not carry their own", low=0.0)
    warmup_fraction: float = param(0.05, "fraction of steps with a linear lr warm-up (stabilises "
                                   "Adam's first steps, e.g. for SIREN)", low=0.0, high=1.0)
    final_lr_ratio: float = param(0.01, "cosine decay ends at lr * this on the last step", low=0.0, high=1.0)
    loss: str = param("mse", "mse (what PSNR measures) or l1ssim (NeRV's alpha*L1 + (1-alpha)*(1-SSIM))",
                      choices=LOSSES)
    ssim_alpha: float = param(0.7, "weight of L1 in l1ssim (NeRV: 0.7)", low=0.0, high=1.0)
    seed: int = param(0, "torch.manual_seed at the start, for closures that sample", low=0, high=2**31 - 1)
    log_every: int = param(25, "steps between history entries", low=1)
    fused: bool = param(False, "Adam's fused kernel: one op a step for all tensors instead of about ten per "
                        "tensor (a grid anchor step: 0.4 ms against 1.8 ms on a CPU); the same update up "
                        "to float rounding, so it is a choice per caller, not a silent default")
    grad_clip: float | None = param(None, "clip the global L2 norm of the gradient to this before each Adam step "
                                    "(Cool-chic clips at 0.1): keeps a grid fit's large first gradients out of Adam's "
                                    "second moment, which otherwise holds its steps down for hundreds of steps "
                                    "(README); none or 0 = no clipping", low=0.0)
    adam_beta2: float = param(0.999, "Adam's second-moment decay: its average of squared gradients spans about "
                              "1 / (1 - this) steps. 0.999 (PyTorch's default) lets a grid anchor's large early "
                              "gradients hold its steps down for a thousand steps; 0.99 forgets them in a hundred "
                              "(README)", low=0.0, high=0.99999)
    patience: int | None = param(None, "stop when a running mean of the loss (D + lambda R for weight steps) "
                                 "has not improved by 0.1 % for this many steps, judged from step `patience` "
                                 "on (a burn-in: see _Plateau), so easy frames are cheap; none = run every step",
                                 low=1, high=10**8)


@dataclass
class StepOutput:
    """What a closure returns for one step: the loss to minimise, optionally PSNR and extras."""

    loss: torch.Tensor
    psnr: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # shown on the progress bar and in history


@dataclass(frozen=True)
class HistoryPoint:
    step: int
    loss: float
    psnr: float | None
    extras: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FitReport:
    """What a fit did. ``stopped_by`` is ``'steps'``, ``'time_budget'``, ``'plateau'`` or ``'non_finite'``."""

    label: str
    steps_done: int
    seconds: float
    final_loss: float
    best_psnr: float | None
    last_psnr: float | None
    stopped_by: str
    history: tuple[HistoryPoint, ...]

    @property
    def ms_per_step(self) -> float:
        return 1000.0 * self.seconds / max(1, self.steps_done)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lr_factor(step: int, steps: int, warmup_fraction: float, final_lr_ratio: float) -> float:
    """Multiplier of the base lr at 0-based ``step`` of ``steps``.

    Warm-up: ``W = round(warmup_fraction * steps)`` steps rising linearly ``1/W, 2/W, ..., 1``;
    then a cosine from 1 (step W) down to ``final_lr_ratio`` (step ``steps - 1``).
    """
    warmup = int(round(warmup_fraction * steps))
    if step < warmup:
        return (step + 1) / warmup
    span = steps - 1 - warmup
    if span <= 0:
        return 1.0
    progress = min(1.0, (step - warmup) / span)
    return final_lr_ratio + (1.0 - final_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _normalise_groups(param_groups: Iterable[Any]) -> list[dict[str, Any]]:
    items = list(param_groups)
    if items and all(isinstance(item, dict) for item in items):
        groups = []
        for item in items:
            group = dict(item)
            group["params"] = list(group["params"])
            groups.append(group)
    elif items and all(isinstance(item, torch.Tensor) for item in items):
        groups = [{"params": items}]
    else:
        raise ConfigError("fit needs a non-empty list of tensors or of optimiser param-group dicts")
    if not any(group["params"] for group in groups):
        raise ConfigError("fit was given no parameters to optimise")
    return groups


def _format(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        value = value.detach().item() if value.numel() == 1 else value
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _as_float(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach().item())
    return value


class PlainProgress:
    """Progress as plain lines on stderr when it is not a terminal: the first after a few steps
    (with the projected total time, so a long fit never runs silently), then every ``every_s``."""

    def __init__(self, label: str, total: int, every_s: float = 10.0, first_after_s: float = 2.0):
        self.label, self.total, self.every_s = label, total, every_s
        self.next_at = first_after_s

    def update(self, done: int, elapsed: float, info: str) -> None:
        if elapsed < self.next_at and done < self.total:
            return
        self.next_at = elapsed + self.every_s
        eta = elapsed / done * (self.total - done)
        print(f"{self.label}: step {done}/{self.total}, {elapsed:.0f} s, ETA {eta:.0f} s ({info})",
              file=sys.stderr, flush=True)


class _Plateau:
    """Early stop: an exponential running mean of the loss (the loss of gated fits is noisy) that
    has not improved by ``tolerance`` (relative) for ``patience`` steps.

    The best mean is tracked from step ``patience`` on, not from the first step: a weight step starts
    with its updates at zero, so its first loss carries no rate term, and Adam's first steps move every
    free value (tens of thousands of residual coefficients, the low-rank factors) by about the learning
    rate at once, so D + lambda R rises several-fold before it falls. Judged from the first loss, a
    fit at a high lambda never improved on it and stopped after ``patience`` steps while its picture
    was still gaining (bikes at lambda 1e-2: 31 of 150 steps, 28.4 -> 32.4 dB and rising; with the
    burn-in the 30 frames cost 14 % less D + lambda R, README)."""

    def __init__(self, patience: int, tolerance: float = 1e-3, smoothing: float = 0.1):
        self.patience, self.tolerance, self.smoothing = patience, tolerance, smoothing
        self.mean: float | None = None
        self.best = math.inf
        self.best_step = 0

    def stalled(self, step: int, loss: float) -> bool:
        self.mean = loss if self.mean is None else self.mean + self.smoothing * (loss - self.mean)
        if step < self.patience:  # the burn-in (class docstring); the first step after it sets the best
            return False
        if self.mean < self.best - self.tolerance * abs(self.best) or self.best == math.inf:
            self.best, self.best_step = self.mean, step
        return step - self.best_step >= self.patience


def fit(param_groups: Iterable[Any], closure: Callable[[int], StepOutput], config: FitConfig, *,
        label: str = "fit", progress: bool = True) -> FitReport:
    """Minimise ``closure(step).loss`` over ``param_groups`` with Adam; see the module docstring.

    ``param_groups``: a list of tensors, or of torch param-group dicts (``'params'`` and
    optionally ``'lr'`` and other Adam options). ``progress``: a transient Rich bar on stderr
    with loss, PSNR, the closure's extras and the ETA when stderr is a terminal, else a plain
    line every few seconds (:class:`PlainProgress`); none when WEIGHTSTEP_PROGRESS=0.
    """
    validate(config)
    groups = _normalise_groups(param_groups)
    torch.manual_seed(config.seed)
    optimizer = torch.optim.Adam(groups, lr=config.lr, betas=(0.9, config.adam_beta2), fused=config.fused or None)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    # the tensors whose gradient norm is clipped (grad_clip none or 0: never), listed once, not every step
    clipped = [p for group in optimizer.param_groups for p in group["params"]] if config.grad_clip else []
    history: list[HistoryPoint] = []
    steps_done, final_loss, best_psnr, last_psnr = 0, math.nan, None, None
    stopped_by = "steps"
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    console = Console(stderr=True)
    wanted = progress and progress_enabled()
    progress = wanted and (console.is_terminal or console.is_jupyter)
    plain = PlainProgress(label, config.steps) if wanted and not progress else None  # logs get a line now and then
    bar = Progress(*columns, console=console, transient=True, disable=not progress)
    plateau = _Plateau(config.patience) if config.patience else None
    start = time.perf_counter()
    with bar:
        task = bar.add_task(label, total=config.steps, info="")
        for step in range(config.steps):
            factor = lr_factor(step, config.steps, config.warmup_fraction, config.final_lr_ratio)
            for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base * factor
            optimizer.zero_grad(set_to_none=True)
            out = closure(step)
            loss_value = float(out.loss.detach().item())
            if not math.isfinite(loss_value):
                stopped_by = "non_finite"
                final_loss = loss_value
                break
            out.loss.backward()
            if clipped:
                torch.nn.utils.clip_grad_norm_(clipped, config.grad_clip)
            optimizer.step()
            steps_done, final_loss = step + 1, loss_value
            if out.psnr is not None:
                last_psnr = float(out.psnr)
                best_psnr = last_psnr if best_psnr is None else max(best_psnr, last_psnr)
            over_time = config.time_budget_s is not None and time.perf_counter() - start >= config.time_budget_s
            if step % config.log_every == 0 or step == config.steps - 1 or over_time:
                extras = {key: _as_float(value) for key, value in out.extras.items()}
                history.append(HistoryPoint(step, loss_value, last_psnr if out.psnr is not None else None, extras))
            if progress or plain is not None:
                info = f"loss {loss_value:.4g}"
                if out.psnr is not None:
                    info += f"  {out.psnr:.2f} dB"
                info += "".join(f"  {key} {_format(value)}" for key, value in out.extras.items())
                if progress:
                    bar.update(task, advance=1, info=info)
                else:
                    plain.update(step + 1, time.perf_counter() - start, info)
            if over_time:
                stopped_by = "time_budget" if step < config.steps - 1 else "steps"
                break
            if plateau is not None and plateau.stalled(step, loss_value) and step < config.steps - 1:
                stopped_by = "plateau"
                history.append(HistoryPoint(step, loss_value, last_psnr if out.psnr is not None else None, {}))
                break
    seconds = time.perf_counter() - start
    return FitReport(label=label, steps_done=steps_done, seconds=seconds, final_loss=final_loss,
                     best_psnr=best_psnr, last_psnr=last_psnr, stopped_by=stopped_by, history=tuple(history))


def fit_image(model: nn.Module, target: torch.Tensor, config: FitConfig, *, label: str = "fit",
              progress: bool = True, param_groups: Iterable[Any] | None = None) -> FitReport:
    """Fit ``model()`` (a (1,3,H,W) frame) to ``target`` (1,3,H,W) in [0, 1] with ``config.loss``.

    PSNR is measured on the prediction clamped to [0, 1] (as pixels would be). ``param_groups``
    defaults to all trainable parameters of ``model``. The target is moved to the model's device.
    """
    parameters = [p for p in model.parameters() if p.requires_grad]
    device = parameters[0].device if parameters else torch.device("cpu")
    target = target.to(device=device, dtype=torch.float32)
    if target.dim() == 3:
        target = target.unsqueeze(0)

    def closure(step: int) -> StepOutput:
        pred = model()
        loss = reconstruction_loss(pred, target, config.loss, config.ssim_alpha)
        with torch.no_grad():
            mse = torch.mean((pred.clamp(0.0, 1.0) - target) ** 2)
        return StepOutput(loss=loss, psnr=psnr_from_mse(mse))

    groups = param_groups if param_groups is not None else parameters
    return fit(groups, closure, config, label=label, progress=progress)
