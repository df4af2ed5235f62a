"""What the full-sequence INR baselines share: training schedule, pruning, coding, container, decoding.

A full-sequence codec fits ONE network to a whole clip (``full-mlp``, ``full-cnn``, ``nerv``).
Each subclass supplies the network (a module whose ``forward(frame_indices)`` returns those
frames, (n, 3, H, W)), how one training step draws its mini-batch, and its config; this
module runs the rest the same way for all of them:

1. fit with the one fitting loop (:func:`weightstep.inr.fit`) for ``epochs`` epochs or a
   ``time_budget`` (see :func:`plan_steps`), Rich progress with PSNR;
2. optionally prune (global magnitude, :mod:`baselines.prune`) and fine-tune with the
   pruned weights held at zero for ``finetune_epochs``;
3. quantise with the shared rate-distortion step search (MSE + ``lambda`` * bpp, bpp over
   the whole clip) and entropy-code with constriction (:func:`baselines.prune.code_network`);
4. render every frame from exactly the dequantised weights (closed loop: ``reconstruction``)
   and write the checked container (header: config, geometry, seeds; one ``NETW`` section).

The decoder rebuilds the network from the header's config (fixed inputs from seeds, never
sent), reads the weights with every shape checked, and renders all frames with the same
frame grouping as the encoder, so on the same machine it reproduces the encoder's frames
bit for bit.

Rate: the network is shared by all frames, so no frame has bits of its own; ``per_frame``
bits are ``None`` and the rate is the container's elementary stream (its header and the one
section; the file's metadata with the full settings is not counted: weightstep/coding/container.py).

Epochs and steps: an epoch shows the network every pixel of the clip once (in mini-batches
of pixels or of frames, per codec). With ``time_budget`` the learning-rate schedule is laid
out over the number of steps that fit in the budget (timed on probe steps, see
:func:`plan_steps`) so the cosine decay finishes instead of being cut off at a high rate;
the fit loop's own wall-time stop stays as the hard limit. The Result's extra records the
steps planned and done. With pruning, the fine-tune gets the budget's share of its epochs
among all epochs, but at least 10 % (``epochs`` may be a large cap under a budget); it runs
on what the fit left over.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from baselines.prune import apply_masks_, code_network, decode_network, global_magnitude_masks, prunable_names
from weightstep.codecs import budget
from weightstep.codecs.base import Codec, Encoded
from weightstep.codecs.netcoding import frames_to_numpy, mse, parameter_shapes, render
from weightstep.codecs.streamconfig import full_config, stream_config
from weightstep.coding.container import FORMAT_VERSION, Container
from weightstep.config import build, param
from weightstep.device import device_label, resolve_device, stream_device
from weightstep.errors import BitstreamError, ConfigError
from weightstep.inr import FitConfig, FitReport, StepOutput, fit
from weightstep.inr.losses import psnr_from_mse, reconstruction_loss
from weightstep.video import Video

SECTION = "NETW"
LARGE_RENDER = 1 << 22  # pixels (all frames) from which rendering shows a progress bar
FINETUNE_MIN_SHARE = 0.1  # of a time budget kept for the fine-tune after pruning, however many epochs may fit

# A training batch: a callable that, given the network, returns (prediction, target).
Batch = Callable[[nn.Module], tuple[torch.Tensor, torch.Tensor]]


# ---------------------------------------------------------------- shared config fields
# Each config declares these with its own defaults; the texts are the same everywhere.


def epochs_param(default: int) -> Any:
    return param(default, "training epochs (an epoch shows every pixel of the clip once); with "
                 "time_budget, the most epochs to run", low=1, high=10**6)


def time_budget_param() -> Any:
    return param(None, "wall-time budget in seconds for all training (fit + pruning fine-tune), for "
                 "equal-time comparisons; the lr schedule is fitted to it; none = run all epochs", low=0.0)


def lr_param(default: float) -> Any:
    return param(default, "Adam learning rate (warm-up, then cosine decay to 1 %)", low=0.0, high=1.0)


def prune_param(default: float) -> Any:
    return param(default, "fraction of kernel weights removed by global magnitude pruning after the fit "
                 "(pruned weights cost mask bits only); 0 = no pruning", low=0.0, high=0.99)


def finetune_param(default: int) -> Any:
    return param(default, "epochs of fine-tuning after pruning, pruned weights held at zero", low=0, high=10**6)


LAMBDA_ALIASES = {"lambda": "lam", "q_lambda": "lam"}  # -p lambda=... (a Python keyword); q_lambda: old name


def lambda_param(default: float) -> Any:
    return param(default, "lambda, the one rate-distortion knob of every INR codec: the quantisation step "
                 "search minimises MSE (on [0,1] RGB) + lambda * bpp with the real coded bits; about 1e-4 is "
                 "a high rate, 1e-3 mid, 1e-2 low (alias: lambda; q_lambda, its old name, is accepted)",
                 low=0.0, high=1e3)


def per_channel_param() -> Any:
    return param(True, "let unpruned kernels keep a quantisation step per output channel where that lowers "
                 "D + lambda R (else one per tensor); false: one step per tensor everywhere")


def search_frames_param() -> Any:
    return param(8, "frames (evenly spaced) on which the step search measures distortion; 0 = all",
                 low=0, high=100_000)


def seed_param() -> Any:
    return param(0, "seed of initial weights, batch order and fixed inputs (regenerated, never sent)",
                 low=0, high=2**31 - 1)


def device_param() -> Any:
    return param("auto", "where to fit and decode: auto (CUDA when present), cpu or cuda")


# ---------------------------------------------------------------- schedule


def frame_sampler(frames: int, batch_frames: int, seed: int) -> Callable[[], torch.Tensor]:
    """Successive mini-batches of frame indices: each epoch a seeded permutation, cut into
    batches of ``batch_frames`` (the last one of an epoch may be smaller)."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    queue: list[torch.Tensor] = []

    def draw() -> torch.Tensor:
        if not queue:
            queue.extend(torch.randperm(frames, generator=generator).split(batch_frames))
        return queue.pop(0)

    return draw


def steps_for(epochs: float, steps_per_epoch: int) -> int:
    return max(1, int(math.ceil(epochs * steps_per_epoch)))


def plan_steps(max_steps: int, budget_s: float | None, probe: Callable[[], None]) -> int:
    """Steps to lay the lr schedule over: ``max_steps``, or as many as fit in ``budget_s``.

    ``probe()`` runs one forward and backward pass. One call warms up; then calls are timed
    one by one, at least 3 and at most 7, while they take under 3 % of the budget, and the
    median is the step time (robust to a load spike on a shared machine). 15 % of the budget
    is kept back for the optimiser's updates and the progress bar; a run that the fit loop's
    hard stop still cuts short ends near the bottom of the cosine anyway.
    """
    if budget_s is None:
        return max_steps
    probe()
    times: list[float] = []
    while len(times) < 3 or (len(times) < 7 and sum(times) < 0.03 * budget_s):
        start = time.perf_counter()
        probe()
        times.append(time.perf_counter() - start)
    seconds = max(float(np.median(times)), 1e-6)
    return int(max(1, min(max_steps, math.floor(0.85 * budget_s / seconds))))


def evenly_spaced(frames: int, count: int) -> list[int]:
    """``count`` frame indices spread over ``frames`` (all of them when count is 0 or too big)."""
    if count <= 0 or count >= frames:
        return list(range(frames))
    return sorted({int(round(x)) for x in np.linspace(0, frames - 1, count)})


# ---------------------------------------------------------------- the codec


class FullSequenceCodec(Codec):
    """Base of the full-sequence baselines; subclasses set name, Config, FORMAT and the hooks."""

    container = FORMAT_VERSION  # part of describe(): results of another container version stop matching
    suffix = ".wsv"
    FORMAT: ClassVar[int] = 1  # layout of this codec's header and section; bump when it changes
    # The settings a decoder never reads (left out of the stream; weightstep/codecs/streamconfig.py)
    # and the frozen defaults a stream's settings are written against (add a table, never edit one).
    ENCODER_ONLY: ClassVar[frozenset[str]] = frozenset({"epochs", "batch", "batch_frames", "time_budget", "lr",
                                                         "finetune_epochs", "lam", "search_frames", "loss",
                                                         "ssim_alpha", "device"})
    STREAM_DEFAULTS: ClassVar[dict[int, dict[str, Any]]] = {}
    RENDER_GROUP: ClassVar[int] = 4  # frames rendered per forward pass, the same in encoder and decoder

    def __init__(self, config: Any | None = None):
        super().__init__(config)
        self.device = resolve_device(self.config.device)
        self.reconstruction: torch.Tensor | None = None  # the encoder's closed-loop frames (T,3,H,W), CPU

    # -- hooks ---------------------------------------------------------------------------------
    def network(self, config: Any, frames: int, height: int, width: int) -> nn.Module:
        """The float32 network for this geometry on CPU; ``forward(indices)`` -> (n,3,H,W)."""
        raise NotImplementedError

    def batches(self, net: nn.Module, target: torch.Tensor, seed: int) -> tuple[int, Batch]:
        """(steps per epoch, a stateful batch function) for fitting ``net`` to ``target`` (T,3,H,W)."""
        raise NotImplementedError

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return reconstruction_loss(pred, target, getattr(self.config, "loss", "mse"),
                                   getattr(self.config, "ssim_alpha", 0.7))

    def header_extra(self, net: nn.Module) -> dict[str, Any]:
        """Facts the decoder re-derives and checks (e.g. NeRV's up-scaling plan)."""
        return {}

    def seeds(self) -> dict[str, int]:
        return {"network": int(self.config.seed)}

    def learning_rate(self) -> float:
        return float(self.config.lr)

    # -- plumbing ------------------------------------------------------------------------------
    def device_label(self) -> str:
        return device_label(self.device)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["format"] = self.FORMAT
        return info

    def render_frames(self, net: nn.Module, weights: dict[str, torch.Tensor],
                      indices: list[int] | None = None) -> torch.Tensor:
        """8-bit-level frames (n,3,H,W) on CPU from ``weights``, ``RENDER_GROUP`` frames at a time."""
        order = list(range(net.frames)) if indices is None else list(indices)
        device = next(net.parameters()).device
        parts = []
        starts = range(0, len(order), self.RENDER_GROUP)
        if len(order) * net.height * net.width >= LARGE_RENDER:  # a bar when rendering takes a while
            from weightstep.progress import track

            starts = track(starts, f"{self.name}: rendering {len(order)} frames", total=len(starts))
        for start in starts:
            group = torch.tensor(order[start:start + self.RENDER_GROUP], dtype=torch.long, device=device)
            parts.append(render(net, weights, group).cpu())
        return torch.cat(parts, dim=0)

    def _fit(self, net: nn.Module, target: torch.Tensor, epochs: int, budget: float | None, lr: float,
             seed: int, label: str, masks: dict[str, torch.Tensor] | None = None) -> tuple[FitReport, int, int]:
        params = dict(net.named_parameters())
        per_epoch, probe_batch = self.batches(net, target, seed)
        _, batch = self.batches(net, target, seed)

        def probe() -> None:
            pred, tgt = probe_batch(net)
            self.loss(pred, tgt).backward()
            net.zero_grad(set_to_none=True)

        steps = plan_steps(steps_for(epochs, per_epoch), budget, probe)

        def closure(_: int) -> StepOutput:
            if masks:
                apply_masks_(params, masks)  # pruned weights stay exactly zero in every forward pass
            pred, tgt = batch(net)
            loss = self.loss(pred, tgt)
            with torch.no_grad():
                error = torch.mean((pred.clamp(0.0, 1.0) - tgt) ** 2)
            return StepOutput(loss=loss, psnr=psnr_from_mse(error))

        config = FitConfig(steps=steps, lr=lr, time_budget_s=budget, seed=seed, log_every=max(1, steps // 20))
        report = fit(list(params.values()), closure, config, label=label)
        if masks:
            apply_masks_(params, masks)
        return report, steps, per_epoch

    # -- encode --------------------------------------------------------------------------------
    def encode(self, video: Video) -> Encoded:
        cfg = self.config
        frames, height, width = video.frames, video.height, video.width
        target = torch.from_numpy(video.rgb()).to(self.device)
        net = self.network(cfg, frames, height, width).to(self.device)
        started = time.perf_counter()
        prune = float(getattr(cfg, "prune", 0.0))
        finetune = int(getattr(cfg, "finetune_epochs", 0)) if prune > 0 else 0
        fit_budget = None
        if cfg.time_budget is not None:
            share = max(finetune / (cfg.epochs + finetune), FINETUNE_MIN_SHARE) if finetune else 0.0
            fit_budget = cfg.time_budget * (1.0 - share)
        lr = self.learning_rate()
        report, planned, per_epoch = self._fit(net, target, cfg.epochs, fit_budget, lr, cfg.seed, f"{self.name} fit")
        facts: dict[str, Any] = {"fit": _fit_facts(report, planned, per_epoch), "lr": lr,
                                 "parameters": sum(p.numel() for p in net.parameters())}
        masks = None
        if prune > 0:
            names = prunable_names(parameter_shapes(net))
            masks = global_magnitude_masks(dict(net.named_parameters()), prune, names)
            apply_masks_(dict(net.named_parameters()), masks)
            kept = sum(int(m.sum()) for m in masks.values())
            total = sum(m.numel() for m in masks.values())
            facts["prune"] = {"ratio": prune, "prunable": total, "pruned": total - kept}
            if finetune > 0:
                budget = None
                if cfg.time_budget is not None:
                    budget = max(0.0, cfg.time_budget - (time.perf_counter() - started))
                report, planned, per_epoch = self._fit(net, target, finetune, budget, lr, cfg.seed + 1,
                                                       f"{self.name} fine-tune", masks=masks)
                facts["finetune"] = _fit_facts(report, planned, per_epoch)
        facts["train_seconds"] = time.perf_counter() - started

        # quantise and code: distortion measured on evenly spaced frames, rate over the whole clip
        probe_frames = evenly_spaced(frames, cfg.search_frames)
        probe_target = target[probe_frames].cpu()

        def distortion(weights: dict[str, torch.Tensor]) -> float:
            return mse(self.render_frames(net, weights, probe_frames), probe_target)

        trained = {name: p.detach() for name, p in net.named_parameters()}
        section, weights, coding = code_network(trained, distortion, cfg.lam, frames * height * width,
                                                cfg.per_channel, masks=masks)
        frames_out = self.render_frames(net, weights)
        self.reconstruction = frames_out
        coded_mse = mse(frames_out, target.cpu())
        facts.update({"coding": coding, "weight_bytes": len(section), "coded_psnr_clip": psnr_from_mse(coded_mse)})
        carried, table = stream_config(cfg, self.STREAM_DEFAULTS, self.ENCODER_ONLY)
        header = {"config": carried, "defaults": table, "width": width, "height": height, "frames": frames,
                  "fps": float(video.fps), "bit_depth": 8, "format": self.FORMAT}
        meta = {"config": dataclasses.asdict(cfg), "seeds": self.seeds(), "encoded_on": stream_device(self.device),
                **self.header_extra(net)}
        container = Container(codec=self.name, header=header, sections=[(SECTION, section)], meta=meta)
        data, payload = container.write()
        facts.update(self.header_extra(net))
        return Encoded(data=data, payload_bytes=payload, per_frame_bits=[None] * frames, extra=facts)

    # -- decode --------------------------------------------------------------------------------
    def decode(self, data: bytes) -> Video:
        container = Container.from_bytes(data)
        header = container.header
        if container.codec != self.name or header.get("format") != self.FORMAT:
            raise BitstreamError(f"not a {self.name} stream of format {self.FORMAT}")
        try:
            stored = {k: v for k, v in full_config(header, self.STREAM_DEFAULTS, self.name).items()
                      if k != "device"}
            cfg = build(self.Config, {**stored, "device": self.config.device}, where=f"{self.name} stream header")
        except (ConfigError, TypeError, AttributeError) as exc:
            raise BitstreamError(f"{self.name} stream: invalid config in the header ({exc})") from None
        frames, height, width = header["frames"], header["height"], header["width"]
        section = container.section(SECTION)

        def build_network() -> nn.Module:
            try:
                return self.network(cfg, frames, height, width)
            except ConfigError as exc:
                raise BitstreamError(f"{self.name} stream: cannot build its network ({exc})") from None

        def one_group(net: nn.Module) -> torch.Tensor:  # one rendering call, as render_frames makes them
            count = min(self.RENDER_GROUP, frames)
            return net(torch.arange(count, dtype=torch.long, device="cpu"))

        budget.check_network(f"{self.name} stream", build_network, frames=frames, height=height, width=width,
                             run=one_group, read_weights=lambda meta: decode_network(
                                 section, parameter_shapes(meta), prunable_names(parameter_shapes(meta))))
        net = build_network().to(self.device)
        recorded = {**container.meta, **header}  # version 1 kept these facts in the header
        for key, value in self.header_extra(net).items():
            if key in recorded and recorded[key] != value:  # a check only: a file without them still decodes
                raise BitstreamError(f"{self.name} stream: header {key!r} is {recorded[key]!r}, "
                                     f"its config implies {value!r}")
        shapes = parameter_shapes(net)
        masked = prunable_names(shapes)
        weights = decode_network(section, shapes, masked)
        if not all(bool(torch.isfinite(w).all()) for w in weights.values()):
            raise BitstreamError(f"{self.name} stream: weights that are not finite numbers")
        out = self.render_frames(net, weights)
        return Video(identity=f"decoded:{self.name}", fps=header["fps"], rgb_frames=frames_to_numpy(out))


def _fit_facts(report: FitReport, planned: int, steps_per_epoch: int) -> dict[str, Any]:
    return {"steps": report.steps_done, "planned_steps": planned, "epochs": report.steps_done / steps_per_epoch,
            "seconds": report.seconds, "stopped_by": report.stopped_by,
            "last_batch_psnr": report.last_psnr, "ms_per_step": report.ms_per_step}
