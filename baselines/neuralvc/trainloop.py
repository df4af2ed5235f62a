"""The resumable training loop DVC and VCII share: Adam, RD loss with lambda, checkpoints, Rich progress.

A codec supplies a :class:`Trainer` (how to build its network and its loss on a batch of
frame runs); this module does the rest and writes our checkpoint records
(:mod:`baselines.neuralvc.checkpoint`): every ``checkpoint_every`` steps and at the end,
atomically. ``resume`` continues the checkpoint at the output path: same architecture and
lambda, its optimiser state and step count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from baselines.neuralvc.checkpoint import load_into, make_record, read_record, save_record
from baselines.neuralvc.data import TrainingData
from weightstep.device import resolve_device
from weightstep.errors import ConfigError, InputError
from weightstep.progress import make_progress


class Trainer(Protocol):
    kind: str  # checkpoint kind
    frames_needed: int  # consecutive frames per training sample (a trainer may set min_frames: shorter runs it accepts)
    stride: int  # crops must be a multiple of this

    def architecture(self, preset: str) -> dict: ...
    def build(self, architecture: dict) -> nn.Module: ...
    def loss(self, net: nn.Module, batch: torch.Tensor, lam: float,
             rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]: ...


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 2000  # total optimiser steps (a resumed run continues up to this count)
    lam: float = 256.0  # rate-distortion weight: loss = lambda * distortion + bpp (DVC's convention)
    preset: str = "small"  # network size preset of the codec (a new run only; a resumed run keeps its own)
    batch: int = 4  # frame runs per step
    crop: int = 128  # square crop side, a multiple of the network's stride
    lr: float = 1e-4  # Adam learning rate (DVC: 1e-4)
    checkpoint_every: int = 200  # steps between checkpoints (and at the end)
    seed: int = 0  # sampling and initialisation seed
    device: str = "auto"  # torch device
    max_frames: int = 100  # frames read per training clip at most (memory)
    minutes: float | None = None  # stop after this much wall time (and save), whatever the step count
    threads: int | None = None  # torch CPU threads (None: torch's default)


@dataclass
class TrainSummary:
    steps: int
    path: Path
    last: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    clips: int = 0

    def line(self) -> str:
        stats = ", ".join(f"{k} {v:.4g}" for k, v in self.last.items())
        return f"trained to step {self.steps} in {self.seconds:.0f} s on {self.clips} clip(s); {stats}; wrote {self.path}"


def _check(settings: TrainSettings, stride: int) -> None:
    if settings.steps < 1 or settings.batch < 1 or settings.checkpoint_every < 1:
        raise ConfigError("steps, batch and checkpoint-every must be at least 1")
    if settings.crop < stride or settings.crop % stride:
        raise ConfigError(f"crop {settings.crop} must be a positive multiple of {stride}")
    if not (settings.lam > 0 and math.isfinite(settings.lam)):
        raise ConfigError(f"lambda must be positive, got {settings.lam}")
    if not (settings.lr > 0):
        raise ConfigError(f"learning rate must be positive, got {settings.lr}")


def train(trainer: Trainer, inputs: list[str], out: str | Path, settings: TrainSettings, *, resume: bool = False,
          echo: Callable[[str], None] | None = None) -> TrainSummary:
    """Train ``trainer``'s network on ``inputs`` and write the checkpoint to ``out``."""
    _check(settings, trainer.stride)
    out = Path(out)
    if not out.parent.exists():
        raise InputError(f"{out.parent}: output directory does not exist")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = resolve_device(settings.device)
    record = None
    if resume:
        if not out.is_file():
            raise InputError(f"--resume: no checkpoint at {out} to continue")
        record = read_record(out, trainer.kind)
        trained_at = record.get("lambda")
        if getattr(trainer, "uses_lambda", True) and (not isinstance(trained_at, (int, float))
                                                      or float(trained_at) != float(settings.lam)):
            raise ConfigError(f"--resume: {out} was trained at lambda {record.get('lambda')}, not {settings.lam:g}")
    elif out.exists():
        raise InputError(f"{out} exists: give --resume to continue it, or another output path")
    architecture = record["architecture"] if record else trainer.architecture(settings.preset)
    data = TrainingData(inputs, frames_needed=trainer.frames_needed, crop=settings.crop, max_frames=settings.max_frames,
                        min_frames=getattr(trainer, "min_frames", None))
    torch.manual_seed(settings.seed)
    net = trainer.build(architecture)
    step = 0
    optimiser = torch.optim.Adam(net.parameters(), lr=settings.lr)
    if record:
        load_into(net, record["state_dict"], str(out))
        step = int(record["steps"])
        net.to(device)
        if record.get("optimizer"):
            optimiser.load_state_dict(record["optimizer"])
    net.to(device).train()
    seen = list(dict.fromkeys([*(record["data"] if record else []), *inputs]))
    rng = np.random.default_rng([settings.seed, step])
    summary = TrainSummary(steps=step, path=out, clips=len(data.sources))
    started = time.perf_counter()

    def save() -> None:
        lam = settings.lam if getattr(trainer, "uses_lambda", True) else None
        save_record(make_record(trainer.kind, architecture, net.state_dict(), lam=lam, steps=step, data=seen,
                                source="trained by weightstep train", optimizer=optimiser.state_dict(),
                                seed=settings.seed), out)

    averages: dict[str, float] = {}
    with make_progress(transient=False) as progress:
        task = progress.add_task(f"train {trainer.kind}", total=settings.steps, completed=step, status="")
        while step < settings.steps:
            batch = data.sample(rng, settings.batch).to(device)
            loss, stats = trainer.loss(net, batch, settings.lam, rng)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            optimiser.step()
            step += 1
            for key, value in stats.items():  # running means over ~50 steps
                averages[key] = value if key not in averages else 0.98 * averages[key] + 0.02 * value
            progress.update(task, completed=step,
                            status=" ".join(f"{k} {v:.3f}" for k, v in averages.items()))
            out_of_time = settings.minutes is not None and time.perf_counter() - started > 60 * settings.minutes
            if step % settings.checkpoint_every == 0 or step == settings.steps or out_of_time:
                save()
            if out_of_time:
                if echo:
                    echo(f"stopping at step {step}: the {settings.minutes:g}-minute limit is reached")
                break
    if not out.exists():
        save()
    summary.steps = step
    summary.last = averages
    summary.seconds = time.perf_counter() - started
    return summary
