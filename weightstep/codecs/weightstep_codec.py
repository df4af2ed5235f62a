"""The weight-step codec: an INR fitted to the anchor frame, then each frame as a weight update.

This module holds the codec's config, its container layout and the decoder. Frame 0 (and each
GOP restart) is an anchor network coded by :mod:`weightstep.codecs.anchor`; with one frame this
is the image mode of the proposal's anchor experiments.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from weightstep.codecs import budget
from weightstep.codecs.anchor import DEFAULT_LR, AnchorSettings, decode_anchor, fit_and_code
from weightstep.codecs.base import Codec, Encoded
from weightstep.codecs.netcoding import frames_to_numpy, parameter_shapes, render
from weightstep.coding.container import Container
from weightstep.config import param
from weightstep.device import device_label, resolve_device, stream_device
from weightstep.errors import BitstreamError
from weightstep.inr import KINDS, FitConfig, NetworkSpec, build_network, latent_names
from weightstep.stepping.code import decode_update
from weightstep.stepping.schedule import SCHEDULES, StepSettings, joint_steps_for
from weightstep.stepping.update import UpdateSpec, apply_delta
from weightstep.video import Video

ANCHOR = "ANCH"  # section of a full network (frame 0 of each GOP)
STEP = "STEP"  # section of one weight update
SECTION_FRAMING = 12  # tag, length and CRC32 of each container section
FORMAT = 1  # layout of this codec's sections; bump when it changes


# Frames up to this many pixels (320x180) get the full default anchor steps; larger frames get
# proportionally fewer (each step costs time in proportion to the pixels), never below 1/8, so
# the default encode time grows far slower than the frame (measured: benchmarks/anchor_time.py).
FULL_STEPS_PIXELS = 320 * 180
GATE_BITS = 12.0  # bits an open gate costs (position + value), turning lambda into the gates' penalty


@dataclass(frozen=True)
class WeightStepConfig:
    inr: str = param("grid", "anchor network: latent grids + tiny synthesis (C3 / Cool-chic family, the best "
                     "measured), SIREN, Fourier-feature MLP or DIP-style conv net (the proposal's)",
                     choices=KINDS)
    lam: float = param(1e-3, "lambda, the one rate-distortion knob: every fit, quantisation step and update "
                       "minimises MSE (on [0,1] RGB) + lambda * bpp. About 1e-4 is a high rate, 1e-3 mid, "
                       "1e-2 low (alias: lambda; q_lambda, its old name, is accepted)", low=0.0, high=1e3)
    width: int = param(96, "MLP hidden width; with depth it sets the model size (96x4 SIREN = 28.5k params)",
                       low=4, high=4096)
    depth: int = param(4, "MLP hidden layers", low=1, high=32)
    fourier_sigma: float = param(10.0, "std of the Fourier feature matrix (Tancik et al.): the frequency band",
                                 low=1e-3, high=1e3)
    fourier_features: int = param(128, "number of Fourier frequencies (features are twice this)", low=1, high=8192)
    activation: str = param("relu", "Fourier MLP activation", choices=("relu", "gelu"))
    dip_channels: int = param(32, "DIP conv channels; with dip_levels it sets the model size", low=1, high=1024)
    dip_levels: int = param(4, "DIP down/up-sampling stages", low=1, high=8)
    dip_skips: bool = param(True, "DIP long skip connections (proposal §4.2 ablation)")
    grid_levels: int = param(7, "latent grids from full resolution down to 1/2^(levels-1) (grid)", low=1, high=12)
    grid_hidden: int = param(16, "hidden channels of the grid synthesis; its weights are sent with each anchor",
                             low=1, high=256)
    grid_context_hidden: int = param(8, "hidden width of the grid latents' context model (sent too)",
                                     low=1, high=64)
    anchor_steps: int | None = param(None, "optimiser steps fitting the anchor frame (none = the network's "
                                     "default, grid 2000, others 800, scaled down for frames above 320x180 "
                                     "pixels in proportion to their area, to 1/8 at most: a 1080p grid anchor "
                                     "gets 250)", low=1, high=10**7)
    anchor_lr: float | None = param(None, "anchor Adam learning rate (none = the network kind's default)",
                                    low=0.0, high=1.0)
    loss: str = param("mse", "fitting loss: mse (what PSNR measures) or l1ssim (NeRV's mix)",
                      choices=("mse", "l1ssim"))
    time_budget: float | None = param(None, "wall-time budget in seconds for the anchor fit (equal-time "
                                      "comparisons); none = run all steps", low=0.0)
    update: str = param("l0", "how each frame after the anchor is coded: l0 gates on each weight's update, "
                        "dct gates on the DCT coefficients of each tensor's update, dense (the control)",
                        choices=("l0", "dct", "dense"))
    schedule: str = param("two-stage", "two-stage: anchor, then each update in turn from the decoded weights; "
                          "single-stage: anchor and all updates fitted jointly", choices=("two-stage", "single-stage"))
    gop: int = param(0, "restart with a fresh anchor every gop frames (proposal §4.3 slices); 0 = one anchor",
                     low=0, high=100000)
    step_steps: int = param(150, "optimiser steps per weight step (two-stage); single-stage runs about as "
                            "many frame evaluations in its joint fit", low=1, high=10**7)
    step_time_budget: float | None = param(None, "wall-time budget in seconds per weight step (two-stage) or "
                                           "for the joint fit (single-stage); none = run all steps", low=0.0)
    update_lr: float = param(2e-4, "Adam lr of the update values (weights are O(0.1), steps O(1e-3))", low=0.0)
    gate_lr: float = param(0.05, "Adam lr of the gate logits: at the update's lr gates learn nothing", low=0.0)
    log_alpha_init: float = param(-3.0, "initial gate logit: gates start closed at test time", low=-20.0, high=20.0)
    frame_batch: int = param(4, "frames per step of the single-stage joint fit", low=1, high=4096)
    per_channel: bool = param(True, "quantisation step per output channel (else one per tensor)")
    step_sweeps: int = param(2, "sweeps of the per-tensor quantisation step refinement after the shared "
                             "search (0 = one relative step shared by all tensors)", low=0, high=10)
    qat_steps: int | None = param(None, "straight-through steps at the chosen quantisation (a rounding phase "
                                  "of the latents, then a weight fine-tune); none = a fifth of anchor_steps",
                                  low=0, high=10**6)
    seed: int = param(0, "seed of the network's initialisation and fixed inputs (regenerated, never sent)",
                      low=0, high=2**31 - 1)
    device: str = param("auto", "where to fit: auto (CUDA when present), cpu or cuda")

    aliases: ClassVar[dict[str, str]] = {"lambda": "lam", "q_lambda": "lam"}  # -p lambda=... (a Python keyword)

    def network_spec(self) -> NetworkSpec:
        return NetworkSpec(kind=self.inr, width=self.width, depth=self.depth, fourier_sigma=self.fourier_sigma,
                           fourier_features=self.fourier_features, activation=self.activation,
                           dip_channels=self.dip_channels, dip_levels=self.dip_levels, dip_skips=self.dip_skips,
                           grid_levels=self.grid_levels, grid_hidden=self.grid_hidden,
                           grid_context_hidden=self.grid_context_hidden, seed=self.seed)

    def steps(self, pixels: int | None = None) -> int:
        """Anchor fit steps: ``anchor_steps``, else the kind's default scaled to a frame of ``pixels``."""
        if self.anchor_steps:
            return self.anchor_steps
        base = 2000 if self.inr == "grid" else 800
        if pixels is None or pixels <= FULL_STEPS_PIXELS:
            return base
        return max(base // 8, round(base * FULL_STEPS_PIXELS / pixels))

    def lr(self) -> float:
        return self.anchor_lr or DEFAULT_LR[self.inr]

    def update_spec(self, pixels: int) -> UpdateSpec:
        """The gates' penalty per expected open gate is lambda x GATE_BITS / pixels (bits -> bpp)."""
        return UpdateSpec(kind=self.update, log_alpha_init=self.log_alpha_init, gate_lr=self.gate_lr,
                          update_lr=self.update_lr, lam=self.lam * GATE_BITS / pixels, seed=self.seed)

    def step_settings(self, frames: int) -> StepSettings:
        fit_config = FitConfig(steps=self.step_steps, lr=self.update_lr, time_budget_s=self.step_time_budget,
                               seed=self.seed, warmup_fraction=0.0)
        return StepSettings(fit=fit_config, lam=self.lam, frame_batch=self.frame_batch,
                            joint_steps=joint_steps_for(frames, self.step_steps, self.frame_batch),
                            anchor_lr=0.1 * self.lr())

    def anchor_settings(self, fit_first: bool, pixels: int | None = None) -> AnchorSettings:
        steps = self.steps(pixels)
        fit_config = FitConfig(steps=steps, lr=self.lr(), loss=self.loss, time_budget_s=self.time_budget,
                               seed=self.seed)
        qat = self.qat_steps if self.qat_steps is not None else steps // 5
        return AnchorSettings(fit=fit_config if fit_first else None, lam=self.lam, per_channel=self.per_channel,
                              qat_steps=qat, qat_lr=0.1 * self.lr(), seed=self.seed, loss=self.loss,
                              step_sweeps=self.step_sweeps)


class WeightStepCodec(Codec):
    name = "weightstep"
    Config = WeightStepConfig
    suffix = ".wsv"
    summary = "anchor-frame INR (latent grid / SIREN / Fourier MLP / DIP) plus sparse weight steps, constriction-coded"

    def __init__(self, config: WeightStepConfig | None = None):
        super().__init__(config)
        self.device = resolve_device(self.config.device)
        self.reconstruction: torch.Tensor | None = None  # the encoder's closed-loop output, for checks

    def device_label(self) -> str:
        return device_label(self.device)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["format"] = FORMAT
        return info

    def _network(self, height: int, width: int, device: torch.device | None = None):
        # MLPs render RENDER_CHUNK pixels per pass, in the encoder and the decoder alike (bounded memory)
        net = build_network(self.config.network_spec(), height, width, chunk_size=budget.RENDER_CHUNK)
        return net if device is None else net.to(device)

    def _code_anchor(self, net, target: torch.Tensor, fit_first: bool):
        cfg = self.config
        pixels = target.shape[-1] * target.shape[-2]
        return fit_and_code(net, target, cfg.anchor_settings(fit_first, pixels), label=f"anchor {cfg.inr}")

    def gops(self, frames: int) -> list[tuple[int, int]]:
        """(start, count) of each group of pictures: one anchor and its weight steps.

        Each fresh anchor's fit starts from the previous anchor's fitted weights (a warm start the
        decoder does not need to know about: every anchor is coded in full)."""
        size = self.config.gop or frames
        return [(start, min(size, frames - start)) for start in range(0, frames, size)]

    def encode(self, video: Video) -> Encoded:
        cfg = self.config
        frames = torch.from_numpy(video.rgb()).to(self.device)
        net = self._network(video.height, video.width, self.device)
        schedule = SCHEDULES[cfg.schedule]
        coded = []
        for index, (start, count) in enumerate(self.gops(video.frames)):
            label = f"GOP {index + 1}: " if cfg.gop else ""
            coded += schedule(net, frames[start:start + count], cfg.update_spec(video.width * video.height),
                              cfg.step_settings(count),
                              self._code_anchor, label=label)
        header = {"config": dataclasses.asdict(cfg), "width": video.width, "height": video.height,
                  "frames": video.frames, "fps": float(video.fps), "bit_depth": 8, "format": FORMAT,
                  "seeds": {"network": cfg.seed}, "encoded_on": stream_device(self.device)}
        sections = [(ANCHOR if c.kind == "anchor" else STEP, c.data) for c in coded]
        data = Container(codec=self.name, header=header, sections=sections).to_bytes()
        self.reconstruction = torch.cat([c.frame.cpu() for c in coded])
        per_frame = [8 * (len(c.data) + SECTION_FRAMING) for c in coded]
        per_frame[0] += 8 * len(data) - sum(per_frame)  # the container header goes with the first frame
        steps = [c.facts for c in coded if c.kind == "step"]
        extra = {"anchors": [c.facts for c in coded if c.kind == "anchor"], "anchor": coded[0].facts,
                 "steps": steps, "changed_weights": [c.facts.get("changed", None) for c in coded]}
        return Encoded(data=data, per_frame_bits=per_frame, extra=extra)

    def decode(self, data: bytes) -> Video:
        container = Container.from_bytes(data)
        header = container.header
        if container.codec != self.name or header.get("format") != FORMAT:
            raise BitstreamError(f"not a {self.name} stream of format {FORMAT}")
        from weightstep.config import build
        from weightstep.errors import ConfigError

        try:  # the file's own config decides how to decode, as in FullSequenceCodec; the device stays ours
            stored = {k: v for k, v in header["config"].items() if k != "device"}
            cfg = build(WeightStepConfig, {**stored, "device": self.config.device}, where=f"{self.name} stream header")
        except (ConfigError, TypeError, AttributeError) as exc:
            raise BitstreamError(f"{self.name} stream: invalid config in the header ({exc})") from None
        if cfg != self.config:
            return type(self)(cfg).decode(data)
        width, height, frames = header["width"], header["height"], header["frames"]
        tags = [tag for tag, _ in container.sections]
        expected = [ANCHOR if t - start == 0 else STEP for start, count in self.gops(frames)
                    for t in range(start, start + count)]
        if tags != expected:
            raise BitstreamError(f"the stream's {len(tags)} sections do not match its {frames} frames")
        budget.check_network(f"{self.name} stream", lambda: self._network(height, width), frames=frames,
                             height=height, width=width,
                             read_weights=lambda meta: None if latent_names(meta)  # latents need a real net
                             else decode_anchor(container.sections[0][1], meta))
        net = self._network(height, width, self.device)
        shapes = parameter_shapes(net)
        out, weights, maps = [], None, None
        for tag, section in container.sections:
            if tag == ANCHOR:
                weights, maps = decode_anchor(section, net), None
                weights = {k: v.to(self.device) for k, v in weights.items()}
            else:
                delta, maps = decode_update(section, shapes, maps, self.config.update)
                weights = apply_delta(weights, delta)
            out.append(render(net, weights).cpu())
        return Video(identity=f"decoded:{self.name}", fps=header["fps"],
                     rgb_frames=frames_to_numpy(torch.cat(out)))
