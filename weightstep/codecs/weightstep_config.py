"""The weight-step codec's settings: its config, the stream formats it writes and the defaults streams are read against.

:class:`WeightStepConfig` is what ``-p KEY=VALUE`` sets (each field says why it exists and what was measured);
the tables below it say which fields a stream carries (``ENCODER_ONLY`` never) and, per stream table version,
the defaults a stream's settings are written against. The codec itself is :mod:`weightstep.codecs.weightstep_codec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from weightstep.codecs.anchor import DEFAULT_LR, AnchorSettings
from weightstep.config import param
from weightstep.errors import ConfigError
from weightstep.inr import KINDS, FitConfig, NetworkSpec
from weightstep.stepping.schedule import StepSettings, joint_steps_for
from weightstep.stepping.step import (
    GATE_BITS,
    STEP_KINDS,
    split_kind,
)
from weightstep.stepping.update import UpdateSpec

ANCHOR = "ANCH"  # section of a full network (frame 0 of each GOP)
STEP = "STEP"  # section of one weight update
# Versions of this codec's streams, bumped when what a decoder does changes; a stream states the one
# it uses, and the decoder keeps reading the older ones. 1: every kind as first written; 2: the
# latent kinds' residual in blocks with skip flags (stepping/latent.py); 3: a grid network's coded
# renders upsample by matrices (every grid stream); 4: a step section carries a block-DCT residual
# after the step (``residual=dct``; stepping/residual.py); 5: a warp may be coded as its difference from
# the previous step's, and a warp step's low-rank values carry a 5-byte model header instead of 17
# (every stream of a warp kind; stepping/warp.py, coding/compact_ints.py). A stream whose network and step
# kind did not change keeps writing 1, so its files and the job keys of its results stay as they were.
FORMAT = 5
LATENT_BLOCKS = 2  # from format 2: latent steps code their residual in blocks (stepping/latent.py)
MATRIX_RENDER = 3  # from format 3: a grid network's renders upsample its latents by matrices (inr/grid.py)
RESIDUAL = 4  # format 4: a grid stream whose steps carry a block-DCT residual (stepping/residual.py)
WARP_PREDICTION = 5  # from format 5: a warp step may predict its warp from the previous one (stepping/warp.py)
# and codes its low-rank values with the compact integer header (coding/compact_ints.py)

# What the decoder never reads: how the encoder searched. Kept in the file's metadata, not its
# stream (weightstep/codecs/streamconfig.py); a test decodes streams whose encoder-only fields are
# all off their defaults.
ENCODER_ONLY = frozenset({"lam", "anchor_steps", "anchor_lr", "loss", "time_budget", "step_lambda_scale",
                          "anchor_lambda_scale", "anchor_starts", "anchor_grad_clip", "anchor_beta2", "step_guard",
                          "warp_lr",
                          "warp_init", "step_steps", "step_time_budget", "step_pixels", "update_lr", "gate_lr",
                          "latent_lr", "log_alpha_init", "step_patience", "frame_batch", "step_sweeps", "qat_steps",
                          "device"})
# Frozen defaults a stream's settings are written against (never edit a table once files exist;
# add the next number when a default changes).
STREAM_DEFAULTS: dict[int, dict[str, Any]] = {
    1: {"inr": "grid", "lam": 0.001, "width": 96, "depth": 4, "fourier_sigma": 10.0, "fourier_features": 128,
        "activation": "relu", "dip_channels": 32, "dip_levels": 4, "dip_skips": True, "grid_levels": 7,
        "grid_hidden": 16, "grid_context_hidden": 8, "anchor_steps": None, "anchor_lr": None, "loss": "mse",
        "time_budget": None, "update": "warp+lowrank", "step_lambda_scale": 0.5, "warp_grid": 8, "warp_lr": 0.05,
        "warp_init": "estimate", "schedule": "two-stage", "gop": "0", "step_steps": 150, "step_time_budget": None,
        "step_pixels": 0.25, "update_lr": None, "gate_lr": 0.05, "latent_lr": 0.05, "log_alpha_init": 0.0,
        "step_patience": 30, "frame_batch": 4, "per_channel": True, "step_sweeps": 2, "qat_steps": None,
        "seed": 0, "device": "auto"},
}
STREAM_DEFAULTS[2] = {**STREAM_DEFAULTS[1], "residual": "auto"}  # the step residual joined (on by default)
STREAM_DEFAULTS[3] = {**STREAM_DEFAULTS[2], "anchor_lambda_scale": 1.0}  # the anchor's own lambda scale joined
STREAM_DEFAULTS[4] = {**STREAM_DEFAULTS[3], "anchor_starts": 1}  # several anchor starts, the best kept, joined
STREAM_DEFAULTS[5] = {**STREAM_DEFAULTS[4], "anchor_grad_clip": None}  # the anchor fit's gradient clipping joined
STREAM_DEFAULTS[6] = {**STREAM_DEFAULTS[5], "anchor_beta2": None, "step_guard": None}  # Adam's beta2, the floor joined


START_SEED_STRIDE = 7919  # anchor start k > 0 initialises and fits with seed + k * this (apart from any --seed)
# Default straight-through phases after the fit, as a fraction of its steps: 1/5, and 1/10 for the grid,
# whose weight fine-tune was never kept at 2000 steps and whose rounding phase gave the same file at
# half the steps (carphone frame 0, lambda 1e-2 / 1e-3 / 3e-4: 1341 / 3977 / 5081 bytes at 400 steps,
# 1345 / 3977 / 5081 at 200, same PSNR; 8-9 s less encode).
QAT_DIVISOR = {"grid": 10}
# The anchor fit's gradient-norm clip where ``anchor_grad_clip`` is left at none: the grid's, measured on the first
# frames of carphone, bikes (320x136) and bigbuckbunny (320x180) at lambda 3e-3 and 1e-3 over seeds 0-2 (README, "Clipping the anchor's
# gradient"); the other networks' fits were never measured with it and stay unclipped.
GRAD_CLIP = {"grid": 0.02}
# The anchor fit's Adam beta2 where ``anchor_beta2`` is left at none (absent: PyTorch's 0.999). Empty until whole curves
# confirm what first frames showed for the grid at 0.98 (README, "Adam's memory in the anchor fit").
ADAM_BETA2: dict[str, float] = {}

# On a CPU, frames up to this many pixels (320x180) get the full default anchor steps; larger frames
# get proportionally fewer (each step costs time in proportion to the pixels), never below 1/8, so
# the default encode time grows far slower than the frame (measured: benchmarks/anchor_time.py). On
# a CUDA device every frame gets the full steps: the scaling is a CPU-time compromise, and the
# anchor is bound by its iterations (README, "Anchor networks as images").
FULL_STEPS_PIXELS = 320 * 180

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
                                     "default, grid 2000, others 800; on a CPU scaled down for frames above "
                                     "320x180 pixels in proportion to their area, to 1/8 at most: a 1080p grid "
                                     "anchor gets 250 there, 2000 on a CUDA device)", low=1, high=10**7)
    anchor_lr: float | None = param(None, "anchor Adam learning rate (none = the network kind's default)",
                                    low=0.0, high=1.0)
    loss: str = param("mse", "fitting loss: mse (what PSNR measures) or l1ssim (NeRV's mix)",
                      choices=("mse", "l1ssim"))
    time_budget: float | None = param(None, "wall-time budget in seconds for the anchor fit (equal-time "
                                      "comparisons); none = run all steps", low=0.0)
    update: str = param("warp+lowrank", "how each frame after the anchor is coded: warp+lowrank (the best "
                        "measured), a warp (affine + a coarse displacement grid) and a low-rank update of the warped "
                        "weights; warp alone; lowrank alone; film, a per-channel scale and shift of each layer; "
                        "latent, an integer residual on the grid's latents (inr=grid only); the proposal's l0 gates "
                        "on each weight's update, dct gates on the DCT coefficients of each tensor's update, dense "
                        "(the control); warp+X for every X. Bytes a step and PSNR on 30 carphone frames at lambda "
                        "1e-3 (grid anchor, step residual; README): warp 695 B 32.2 dB, warp+film 727 B 32.5 dB, "
                        "warp+lowrank 742 B 33.2 dB, warp+dct 762 B 32.7 dB, warp+l0 766 B 32.7 dB, film 1177 B "
                        "30.4 dB, lowrank 1191 B 32.4 dB, l0 1294 B 31.7 dB, dct 1296 B 31.6 dB, dense 4747 B 29.0 dB",
                        choices=STEP_KINDS)
    step_lambda_scale: float = param(0.5, "steps minimise D + scale * lambda * bpp: a step's quality persists "
                                     "into the frames that start from it, so its distortion weighs more than "
                                     "once (carphone, warp+l0, lambda 1e-3: 1.0 decayed 28.0 -> 25.8 dB over 9 steps, "
                                     "0.5 held 28.0-28.7 dB)", low=0.0, high=10.0)
    anchor_lambda_scale: float = param(1.0, "an anchor followed by steps is fitted and quantised at D + scale * "
                                       "lambda * bpp (its quality carries into every step of its group; an image, a "
                                       "one-frame group, is coded at lambda). 0.5 on the grid: BD-rate against "
                                       "x264-p -8 / -20 points on 30 frames of carphone / bikes over three seeds, "
                                       "+11.5 points over the core protocol's 8 clips (README)", low=1e-3, high=10.0)
    anchor_starts: int = param(1, "anchor fits from different initialisations at the start of each two-stage group; "
                               "the one whose anchor plus first step costs the least D + lambda R is coded (this "
                               "many anchor fits). 3 on 30 frames of carphone / bikes, three seeds: BD-rate against "
                               "x264 +7.3 / -2.4 points on average, 4 of 6 curves better, for 2.3x the encode time "
                               "(README)", low=1, high=16)
    anchor_grad_clip: float | None = param(None, "clip the global L2 norm of the anchor fit's gradient to this before "
                                           "each Adam step (0 = never; none = the network's default: 0.02 for the grid, "
                                           "none for the others). On the grid its first gradients are 40-50 times its "
                                           "median; clipped, the coded first frame's D + lambda R fell 9-15 % on carphone "
                                           "and bikes and 4-7 % on bigbuckbunny over three seeds, every fit lower (README)", low=0.0, high=1e3)
    anchor_beta2: float | None = param(None, "Adam's second-moment decay in the anchor's main fit (none = the "
                                       "network's default, 0.999 for every network). 0.98 on the grid lowered the "
                                       "coded first frame's D + lambda R by 8-18 % on average over three seeds of "
                                       "carphone, bikes and bigbuckbunny, every one of 18 fits lower; whole curves not "
                                       "yet measured, so the default stays (README)", low=0.0, high=0.99999)
    step_guard: float | None = param(None, "a two-stage step whose PSNR falls more than this many dB below its "
                                     "group's anchor is fitted again at half its lambda, at most twice: a step's "
                                     "choice is myopic, and what it gives up on its frame every later frame gives "
                                     "up too; none = never. Carphone 30 frames, seed 0, 1 dB: only lambda 1e-2 "
                                     "acted, both halvings failed on 24 of 29 steps, BD-rate +120.3 -> +129.2 %: "
                                     "not kept (README, \"A floor under the steps\")", low=0.0, high=100.0)
    warp_grid: int = param(8, "displacement nodes per side of a warp (2 x grid^2 numbers beside the 6 affine "
                           "ones): local motion for a few bytes. Carphone 176x144, 10 frames, warp+lowrank, lambda "
                           "1e-3: 4 gave 0.397 bpp at 29.82 dB, 8 0.365 bpp at 30.15 dB, 16 0.417 bpp at 30.46 dB",
                           low=0, high=32)
    warp_lr: float = param(0.05, "Adam lr of the warp's values, in pixels per step", low=0.0, high=10.0)
    warp_init: str = param("estimate", "where each warp's fit starts: estimate = a block-matching motion estimate "
                           "on the decoded previous frame or the previous warp, whichever the network renders the "
                           "target better with (bikes 10 frames, lambda 1e-3: -14 % bytes; carphone -4 % / +2 %); "
                           "previous = the previous warp (a fit then follows about a pixel a frame)",
                           choices=("estimate", "previous"))
    residual: str = param("auto", "dct: after each step, a block-DCT residual on the grid's finest latent level "
                          "(8x8 blocks, most skipped; fitted with the step under an L1 rate proxy, step size and "
                          "dead zone chosen by D + lambda R): local detail that a warp and a low-rank update "
                          "cannot add in one place (inr=grid, two-stage; carphone 30 frames at the defaults: -23.6 % "
                          "BD-rate against the step alone, and the picture holds); none = the step alone; auto = "
                          "dct where it applies", choices=("auto", "dct", "none"))
    schedule: str = param("two-stage", "two-stage: anchor, then each update in turn from the decoded weights; "
                          "single-stage: anchor and all updates fitted jointly", choices=("two-stage", "single-stage"))
    gop: str = param("0", "restart with a fresh anchor every gop frames (proposal §4.3 slices); 0 = one anchor; "
                     "auto = a fresh anchor wherever it costs less D + lambda R than the step (scene cuts, reveals)")
    step_steps: int = param(150, "optimiser steps per weight step (two-stage); single-stage runs about as "
                            "many frame evaluations in its joint fit", low=1, high=10**7)
    step_time_budget: float | None = param(None, "wall-time budget in seconds per weight step (two-stage) or "
                                           "for the joint fit (single-stage); none = run all steps", low=0.0)
    step_pixels: float = param(0.25, "share of the pixels each fit step of a weight step sees, drawn at random "
                               "(coordinate MLPs only: siren, fourier). SIREN 64x3 on carphone, warp+l0: 0.25 "
                               "fitted 3-6x faster for -0.1 dB and -3 % step bytes against 1.0", low=0.01, high=1.0)
    update_lr: float | None = param(None, "Adam lr of the update values (none = a fifth of the network kind's "
                                    "fitting rate: 2e-4 for SIREN weights, 6e-3 for grid latents)", low=0.0)
    gate_lr: float = param(0.05, "Adam lr of the gate logits: at the update's lr gates learn nothing", low=0.0)
    latent_lr: float = param(0.05, "Adam lr of a latent residual (update=latent, warp+latent): latents are "
                             "integers, so a residual must move by whole units within one step's fit", low=0.0)
    log_alpha_init: float = param(0.0, "gate logit of the first step (later steps start from the previous "
                                  "step's logits): 0 starts gates open so the fit finds what pays (measured: "
                                  "-3 left the gates closed and the picture frozen)", low=-20.0, high=20.0)
    step_patience: int | None = param(30, "stop a step's fit when D + lambda R has not improved for this many "
                                      "steps, judged after as many again (easy frames are cheap); none = always "
                                      "step_steps", low=1, high=10**6)
    frame_batch: int = param(4, "frames per step of the single-stage joint fit", low=1, high=4096)
    per_channel: bool = param(True, "let each tensor with several output channels keep a quantisation step per "
                              "channel where that lowers D + lambda R (two bytes a channel; else one step per "
                              "tensor); false: one step per tensor everywhere")
    step_sweeps: int = param(2, "sweeps of the per-tensor quantisation step refinement after the shared "
                             "search (0 = one relative step shared by all tensors)", low=0, high=10)
    qat_steps: int | None = param(None, "straight-through steps at the chosen quantisation (a rounding phase "
                                  "of the latents, then a weight fine-tune); none = a fifth of anchor_steps, a "
                                  "tenth for the grid (its few weights gain nothing from the longer fine-tune)",
                                  low=0, high=10**6)
    seed: int = param(0, "seed of the network's initialisation and fixed inputs (regenerated, never sent)",
                      low=0, high=2**31 - 1)
    device: str = param("auto", "where to fit: auto (CUDA when present), cpu or cuda")

    aliases: ClassVar[dict[str, str]] = {"lambda": "lam", "q_lambda": "lam"}  # -p lambda=... (a Python keyword)

    def __post_init__(self) -> None:
        if not (self.gop == "auto" or (self.gop.isdigit() and int(self.gop) <= 100000)):
            raise ConfigError(f"gop={self.gop!r} must be a frame count (0 = one anchor) or auto")
        if self.schedule == "single-stage" and self.update not in ("l0", "dct", "dense"):  # joint fit: WeightUpdate
            raise ConfigError(f"single-stage fits the proposal's update kinds (l0, dct, dense), not {self.update}")
        if self.update.endswith("latent") and self.inr != "grid":
            raise ConfigError(f"update={self.update} steps the latent grids of inr=grid, not inr={self.inr}")
        if self.residual == "dct" and (self.inr != "grid" or self.schedule != "two-stage"):
            raise ConfigError(f"residual={self.residual} adds to the finest latent grid in two-stage steps: it needs "
                              "inr=grid and schedule=two-stage")
        if self.schedule == "single-stage" and self.anchor_starts > 1:
            raise ConfigError("anchor_starts compares anchors by their first step: it needs schedule=two-stage")
        if self.schedule == "single-stage" and self.step_guard is not None:
            raise ConfigError("step_guard refits a step frame by frame: it needs schedule=two-stage")
        if self.schedule == "single-stage" and self.gop == "auto":
            raise ConfigError("gop=auto decides frame by frame: it needs schedule=two-stage")

    def unused_fields(self) -> frozenset[str]:
        """Fields this config never reads (another network's sizes, another step kind's rates).

        Job keys leave them out (``experiments.jobs``), so a run keeps its finished jobs when a
        default that does not apply to them changes or a field for another kind is added."""
        unused = set()
        if self.inr not in ("siren", "fourier"):
            unused |= {"width", "depth"}
        if self.inr != "fourier":
            unused |= {"fourier_sigma", "fourier_features", "activation"}
        if self.inr != "dip":
            unused |= {"dip_channels", "dip_levels", "dip_skips"}
        if self.inr != "grid":
            unused |= {"grid_levels", "grid_hidden", "grid_context_hidden"}
        warp, part = split_kind(self.update)
        if not warp:
            unused |= {"warp_grid", "warp_lr", "warp_init"}
        if part not in ("l0", "dct"):
            unused |= {"gate_lr", "log_alpha_init"}
        if part != "latent":
            unused.add("latent_lr")
        if self.inr != "grid" or self.schedule != "two-stage":
            unused.add("residual")
        if self.schedule == "two-stage":
            unused.add("frame_batch")
        else:
            unused.add("step_patience")
        return frozenset(unused)

    def neutral_fields(self) -> frozenset[str]:
        """Fields whose value makes the codec what it was before they existed (an anchor lambda scale of 1):
        job keys leave them out, as they leave out :meth:`unused_fields`, so adding a knob does not make a run
        measure its finished jobs again."""
        neutral = frozenset(name for name, value in (("anchor_lambda_scale", 1.0), ("anchor_starts", 1),
                                                     ("step_guard", None))
                            if getattr(self, name) == value)
        # an unclipped fit is the fit before the field existed; a grid left at none is clipped (GRAD_CLIP), a new codec
        neutral |= {"anchor_beta2"} if self.anchor_adam_beta2() == 0.999 else frozenset()  # Adam's own default
        return neutral | ({"anchor_grad_clip"} if self.anchor_clip() is None else frozenset())

    def residual_on(self) -> bool:
        """Whether steps carry a block-DCT residual: ``dct``, or ``auto`` on a two-stage grid."""
        return self.residual == "dct" or (self.residual == "auto" and self.inr == "grid"
                                          and self.schedule == "two-stage")

    def stream_format(self) -> int:
        """The stream version this config writes (see FORMAT): warp kinds the newest, the other
        grid streams the format of their last change, the other networks' streams 1 (nothing they
        write has changed since)."""
        return WARP_PREDICTION if split_kind(self.update)[0] else self._format_without_prediction()

    def _format_without_prediction(self) -> int:
        """What this config wrote before format 5 (and still writes without a warp)."""
        if self.inr == "grid":
            return RESIDUAL if self.residual_on() else MATRIX_RENDER
        return LATENT_BLOCKS if split_kind(self.update)[1] == "latent" else 1

    def readable_formats(self) -> tuple[int, ...]:
        """The stream versions a decoder takes for this config: what it writes, and what earlier
        builds wrote for it (format 1, and 2 for latent steps, 3 or 4 for grid streams)."""
        if self.residual_on():
            return tuple(sorted({RESIDUAL, self.stream_format()}))
        older = (1, LATENT_BLOCKS) if split_kind(self.update)[1] == "latent" else (1,)
        return tuple(sorted({*older, self._format_without_prediction(), self.stream_format()}))

    def gop_size(self) -> int:
        """Fixed restart period in frames (0: none; gop=auto restarts where it pays)."""
        return 0 if self.gop == "auto" else int(self.gop)

    def network_spec(self) -> NetworkSpec:
        return NetworkSpec(kind=self.inr, width=self.width, depth=self.depth, fourier_sigma=self.fourier_sigma,
                           fourier_features=self.fourier_features, activation=self.activation,
                           dip_channels=self.dip_channels, dip_levels=self.dip_levels, dip_skips=self.dip_skips,
                           grid_levels=self.grid_levels, grid_hidden=self.grid_hidden,
                           grid_context_hidden=self.grid_context_hidden, seed=self.seed)

    def steps(self, pixels: int | None = None, device: torch.device | str = "cpu") -> int:
        """Anchor fit steps: ``anchor_steps``, else the kind's default, scaled to a frame of ``pixels``
        when fitting on a CPU."""
        if self.anchor_steps:
            return self.anchor_steps
        base = 2000 if self.inr == "grid" else 800
        if pixels is None or pixels <= FULL_STEPS_PIXELS or torch.device(device).type == "cuda":
            return base
        return max(base // 8, round(base * FULL_STEPS_PIXELS / pixels))

    def lr(self) -> float:
        return self.anchor_lr or DEFAULT_LR[self.inr]

    def anchor_clip(self) -> float | None:
        """The anchor fit's gradient-norm clip: ``anchor_grad_clip``, the network's default where that is none,
        None where it is 0 (never)."""
        clip = GRAD_CLIP.get(self.inr) if self.anchor_grad_clip is None else self.anchor_grad_clip
        return clip or None

    def anchor_adam_beta2(self) -> float:
        """The anchor fit's Adam beta2: ``anchor_beta2``, or the network's default where that is none."""
        return ADAM_BETA2.get(self.inr, 0.999) if self.anchor_beta2 is None else self.anchor_beta2

    def step_lam(self) -> float:
        return self.lam * self.step_lambda_scale

    def step_lr(self) -> float:
        return self.update_lr if self.update_lr is not None else 0.2 * self.lr()

    def update_spec(self, pixels: int) -> UpdateSpec:
        """The gates' penalty is lambda / pixels x the expected bits (open gates x GATE_BITS, which the
        two-stage schedule replaces with the coder's own bits per open gate after each frame)."""
        part = split_kind(self.update)[1] or "dense"
        return UpdateSpec(kind=part, log_alpha_init=self.log_alpha_init, gate_lr=self.gate_lr, latent_lr=self.latent_lr,
                          update_lr=self.step_lr(), lam=self.step_lam() / pixels, gate_bits=GATE_BITS, seed=self.seed)

    def fused_adam(self) -> bool:
        """Whether this config's fits (anchor and steps) use Adam's fused kernel: the grid's, whose
        results were measured anew with stream format 3; the other networks keep the per-tensor
        Adam their measured results came from."""
        return self.inr == "grid"

    def step_settings(self, frames: int) -> StepSettings:
        fit_config = FitConfig(steps=self.step_steps, lr=self.step_lr(), time_budget_s=self.step_time_budget,
                               seed=self.seed, warmup_fraction=0.0, fused=self.fused_adam(),
                               patience=self.step_patience if self.schedule == "two-stage" else None)
        return StepSettings(fit=fit_config, lam=self.step_lam(), frame_batch=self.frame_batch,
                            joint_steps=joint_steps_for(frames, self.step_steps, self.frame_batch),
                            anchor_lr=0.1 * self.lr(), kind=self.update, warp_grid=self.warp_grid,
                            warp_lr=self.warp_lr, warp_init=self.warp_init, refresh="auto" if self.gop == "auto" else "fixed",
                            pixel_share=self.step_pixels, residual=self.residual_on(),
                            anchor_starts=self.anchor_starts, clip_lam=self.lam, guard_db=self.step_guard,
                            compact=self.stream_format() >= WARP_PREDICTION)

    def anchor_settings(self, fit_first: bool, pixels: int | None = None, device: torch.device | str = "cpu",
                        stepped: bool = True) -> AnchorSettings:
        """``stepped``: steps follow the anchor in its group (its lambda is then scaled: ``anchor_lambda_scale``)."""
        steps = self.steps(pixels, device)
        fused = self.fused_adam()
        fit_config = FitConfig(steps=steps, lr=self.lr(), loss=self.loss, time_budget_s=self.time_budget,
                               seed=self.seed, fused=fused, grad_clip=self.anchor_clip(),
                               adam_beta2=self.anchor_adam_beta2())
        qat = self.qat_steps if self.qat_steps is not None else steps // QAT_DIVISOR.get(self.inr, 5)
        return AnchorSettings(fit=fit_config if fit_first else None,
                              lam=self.lam * (self.anchor_lambda_scale if stepped else 1.0),
                              per_channel=self.per_channel,
                              qat_steps=qat, qat_lr=0.1 * self.lr(), seed=self.seed, loss=self.loss,
                              step_sweeps=self.step_sweeps, fused=fused)
