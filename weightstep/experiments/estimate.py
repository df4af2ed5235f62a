"""How long a plan will take: a per-codec cost model, calibrated by the timings of finished jobs.

This is an estimate, and the dry run says so. Each codec's cost is modelled as work units
(pixels x optimiser passes, or pixels x frames for conventional codecs) times seconds per unit.
The seconds per unit below were read off the committed quick run (88x72, 6 frames, 2 jobs at a
time on a 2-core AMD EPYC, one torch thread each) and the design handbook's step timings; they
are rough by a factor of two either way. When finished jobs are at hand (the run directory
being resumed, or earlier runs given with ``--timings``), each codec family's model is scaled by
the median of measured / modelled time over those jobs, which is what makes the estimate useful.

Nothing here runs a codec: the model reads only the built configs and the clips' geometry.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from weightstep.experiments.jobs import Job, Plan
from weightstep.experiments.specs import TODO

# Seconds per pixel of one conventional encode + decode (plus a fixed start-up cost per job).
_CONVENTIONAL = {"x264": 2e-7, "x265": 6e-7, "svtav1": 5e-7, "vp9": 3e-7}
_CONVENTIONAL_START_S = 0.05
_NEURAL_VC_S_PER_PIXEL = 3e-6  # DVC / VCII inference, encode + decode, per pixel and frame (a guess)
_UNKNOWN_S_PER_PIXEL = 1e-6  # a codec the model does not know: per pixel and frame
_QUANTISE_OVERHEAD = 1.2  # step searches, straight-through rounding phase, writing and decoding


def _step_cost(config: Mapping[str, Any], network: str) -> float:
    """Seconds per pixel of one optimiser step (forward and backward) of an anchor network."""
    if network == "siren" or network == "fourier":
        # quick run (88x72): 0.3e-6 + 1.25e-8 w d; one 10-frame carphone encode (176x144, w48 d3) on a
        # loaded machine took about twice that: the middle of the two
        return 0.5e-6 + 2.0e-8 * float(config.get("width", 96)) * float(config.get("depth", 4))
    if network == "dip":
        channels = float(config.get("dip_channels", 32))
        return 2.0e-6 + 1.0e-8 * channels ** 2 * float(config.get("dip_levels", 4)) / 3
    if network == "grid":
        return 1.0e-6
    return 1.0e-6


def family(codec: str, config: Mapping[str, Any] | None) -> str:
    """The cost model's group of a job: the codec, and for INR codecs the network it fits."""
    config = config or {}
    if codec in ("weightstep", "full-mlp") and config.get("inr"):
        return f"{codec}/{config['inr']}"
    return codec


def _epochs(config: Mapping[str, Any], default: int, default_prune: float) -> int:
    """Fitting epochs plus the fine-tune after pruning (only when pruning)."""
    epochs = int(config.get("epochs", default))
    if float(config.get("prune", default_prune)) > 0:
        epochs += int(config.get("finetune_epochs", 0))
    return epochs


def model_seconds(codec: str, config: Mapping[str, Any] | None, frames: int, width: int, height: int) -> float:
    """Modelled encode + decode seconds of one job (one torch thread, before calibration)."""
    config = config or {}
    pixels = float(width * height)
    if codec in _CONVENTIONAL:
        return _CONVENTIONAL_START_S + _CONVENTIONAL[codec] * pixels * frames
    if codec == "weightstep":
        network = str(config.get("inr", "grid"))
        anchor_steps = config.get("anchor_steps") or (2000 if network == "grid" else 800)
        gop = int(config.get("gop") or 0)
        anchors = math.ceil(frames / gop) if gop else 1
        steps = anchors * anchor_steps * _QUANTISE_OVERHEAD + (frames - anchors) * int(config.get("step_steps", 150))
        return steps * pixels * _step_cost(config, network)
    if codec == "full-mlp":
        per_pixel = 0.1e-6 + 1.0e-8 * float(config.get("width", 96)) * float(config.get("depth", 4))
        epochs = _epochs(config, 20, 0.0)
        return epochs * frames * pixels * per_pixel * _QUANTISE_OVERHEAD
    if codec == "full-cnn":
        per_pixel = 1.1e-6 + 0.6e-8 * float(config.get("dip_channels", 32)) ** 2
        epochs = _epochs(config, 150, 0.0)
        return epochs * frames * pixels * per_pixel * _QUANTISE_OVERHEAD
    if codec == "nerv":
        per_pixel = 1.1e-6 + 3.5e-10 * float(config.get("channels", 32)) ** 2
        epochs = _epochs(config, 300, 0.4)
        return epochs * frames * pixels * per_pixel
    if codec in ("dvc", "vcii"):
        return _NEURAL_VC_S_PER_PIXEL * pixels * frames
    return _UNKNOWN_S_PER_PIXEL * pixels * frames


def calibration(rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[float, int]]:
    """{family: (median measured / modelled time, jobs)} over finished jobs' stored results."""
    ratios: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        result = row.get("result") or {}
        if row.get("status") != "done" or not result.get("frames"):
            continue
        measured = float(result.get("encode_s") or 0) + float(result.get("decode_s") or 0)
        modelled = model_seconds(row["codec"], row.get("config"), int(result["frames"]), int(result["width"]),
                                 int(result["height"]))
        if measured > 0 and modelled > 0:
            ratios[family(row["codec"], row.get("config"))].append(measured / modelled)
    return {name: (statistics.median(values), len(values)) for name, values in ratios.items()}


@dataclass
class Estimate:
    """Seconds of job time the plan still needs, by technique, and where each figure comes from."""

    seconds: float = 0.0
    jobs: int = 0
    by_technique: dict[str, tuple[float, int]] = field(default_factory=dict)  # label -> (seconds, jobs)
    calibrated: dict[str, int] = field(default_factory=dict)  # family -> finished jobs it was scaled by
    modelled: set[str] = field(default_factory=set)  # families with no timing: the bare model

    def lines(self, workers: int = 1) -> list[str]:
        workers = max(1, workers)
        head = (f"estimate: {_duration(self.seconds)} of job time for the {self.jobs} jobs to run"
                + (f", about {_duration(self.seconds / workers)} wall with --jobs {workers}" if workers > 1 else "")
                + " (a cost model, not a measurement")
        if self.calibrated:
            head += "; scaled by the measured times of finished jobs: " + ", ".join(
                f"{name} ({n})" for name, n in sorted(self.calibrated.items()))
        if self.modelled:
            head += "; bare model for " + ", ".join(sorted(self.modelled))
        lines = [head + ")"]
        for label, (seconds, jobs) in sorted(self.by_technique.items(), key=lambda item: -item[1][0]):
            lines.append(f"  {label}: {_duration(seconds)} ({jobs} jobs)")
        return lines


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def estimate(plan: Plan, done_keys: set[str] | None = None, timing_rows: Iterable[Mapping[str, Any]] = (),
             threads_per_job: int = 1) -> Estimate:
    """The job time ``plan`` still needs (jobs in ``done_keys`` cost nothing).

    ``timing_rows``: finished job rows (the store's) whose measured times calibrate the model.
    ``threads_per_job``: torch threads each job will have; the model assumes one, and more
    threads are taken to help with a parallel efficiency of 70 %.
    """
    done_keys = done_keys or set()
    scale = calibration(timing_rows)
    videos = {v.identity: v for v in plan.videos}
    out = Estimate()
    speedup = 1.0 + 0.7 * (max(1, threads_per_job) - 1)
    for job in plan.jobs:
        if job.status != TODO or job.key in done_keys:
            continue
        video = videos.get(job.video)
        if video is None or not video.width:
            continue
        seconds = _job_seconds(job, video.frames or int(job.options.get("frames") or 1), video.width, video.height,
                               scale, out) / speedup
        out.seconds += seconds
        out.jobs += 1
        spent, count = out.by_technique.get(job.technique, (0.0, 0))
        out.by_technique[job.technique] = (spent + seconds, count + 1)
    return out


def job_weights(plan: Plan, jobs: Iterable[Job], timing_rows: Iterable[Mapping[str, Any]] = ()) -> list[float]:
    """Estimated seconds of each of ``jobs`` (at least a second each): the runner's progress weights."""
    scale = calibration(timing_rows)
    videos = {v.identity: v for v in plan.videos}
    scratch = Estimate()
    out = []
    for job in jobs:
        video = videos.get(job.video)
        if video is None or not video.width:
            out.append(1.0)
            continue
        frames = video.frames or int(job.options.get("frames") or 1)
        out.append(max(1.0, _job_seconds(job, frames, video.width, video.height, scale, scratch)))
    return out


def _job_seconds(job: Job, frames: int, width: int, height: int, scale: dict[str, tuple[float, int]],
                 out: Estimate) -> float:
    name = family(job.codec, job.config)
    seconds = model_seconds(job.codec, job.config, frames, width, height)
    if name in scale:
        ratio, count = scale[name]
        out.calibrated[name] = count
        return seconds * ratio
    out.modelled.add(name)
    return seconds


__all__ = ["Estimate", "calibration", "estimate", "family", "job_weights", "model_seconds"]
