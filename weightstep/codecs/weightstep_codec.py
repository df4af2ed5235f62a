"""The weight-step codec: an INR fitted to the anchor frame, then each frame as a weight update.

This module holds the codec's config, its container layout and the decoder. Frame 0 (and each
GOP restart) is an anchor network coded by :mod:`weightstep.codecs.anchor`; with one frame this
is the image mode of the proposal's anchor experiments.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from weightstep.codecs.anchor import DEFAULT_LR, fit_and_code
from weightstep.codecs.base import Codec, Encoded
from weightstep.codecs.netcoding import decode_weights, frames_to_numpy, parameter_shapes, render
from weightstep.coding.container import Container
from weightstep.config import param
from weightstep.device import device_label, resolve_device
from weightstep.errors import BitstreamError, ConfigError
from weightstep.inr import FitConfig, NetworkSpec, build_network
from weightstep.video import Video

ANCHOR = "ANCH"
FORMAT = 1  # layout of this codec's sections; bump when it changes


@dataclass(frozen=True)
class WeightStepConfig:
    inr: str = param("siren", "anchor network: SIREN, Fourier-feature MLP or DIP-style conv net",
                     choices=("siren", "fourier", "dip"))
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
    anchor_steps: int = param(800, "optimiser steps fitting the anchor frame", low=1, high=10**7)
    anchor_lr: float | None = param(None, "anchor Adam learning rate (none = the network kind's default)",
                                    low=0.0, high=1.0)
    loss: str = param("mse", "fitting loss: mse (what PSNR measures) or l1ssim (NeRV's mix)",
                      choices=("mse", "l1ssim"))
    time_budget: float | None = param(None, "wall-time budget in seconds for the anchor fit (equal-time "
                                      "comparisons); none = run all steps", low=0.0)
    q_lambda: float = param(1e-4, "rate weight of the quantisation step search: minimises "
                            "MSE + q_lambda * bpp with the real coded bits (C3 style)", low=0.0)
    per_channel: bool = param(True, "quantisation step per output channel (else one per tensor)")
    qat_steps: int = param(0, "quantisation-aware fine-tuning steps after the step is chosen", low=0, high=10**6)
    seed: int = param(0, "seed of the network's initialisation and fixed inputs (regenerated, never sent)",
                      low=0, high=2**31 - 1)
    device: str = param("auto", "where to fit: auto (CUDA when present), cpu or cuda")

    def network_spec(self) -> NetworkSpec:
        return NetworkSpec(kind=self.inr, width=self.width, depth=self.depth, fourier_sigma=self.fourier_sigma,
                           fourier_features=self.fourier_features, activation=self.activation,
                           dip_channels=self.dip_channels, dip_levels=self.dip_levels, dip_skips=self.dip_skips,
                           seed=self.seed)

    def anchor_fit(self) -> FitConfig:
        return FitConfig(steps=self.anchor_steps, lr=self.anchor_lr or DEFAULT_LR[self.inr], loss=self.loss,
                         time_budget_s=self.time_budget, seed=self.seed)


class WeightStepCodec(Codec):
    name = "weightstep"
    Config = WeightStepConfig
    suffix = ".wsv"
    summary = "anchor-frame INR (SIREN / Fourier MLP / DIP) plus sparse weight steps, constriction-coded"

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

    def _network(self, height: int, width: int):
        return build_network(self.config.network_spec(), height, width).to(self.device)

    def encode(self, video: Video) -> Encoded:
        cfg = self.config
        if video.frames > 1:
            raise ConfigError("weight steps are not available yet: encode one frame (--frames 1)")
        target = torch.from_numpy(video.rgb()[:1]).to(self.device)
        net = self._network(video.height, video.width)
        coded = fit_and_code(net, target, cfg.anchor_fit(), lam=cfg.q_lambda, per_channel=cfg.per_channel,
                             qat_steps=cfg.qat_steps, label=f"anchor {cfg.inr}")
        header = {"config": dataclasses.asdict(cfg), "width": video.width, "height": video.height,
                  "frames": video.frames, "fps": float(video.fps), "bit_depth": 8, "format": FORMAT,
                  "seeds": {"network": cfg.seed}}
        data = Container(codec=self.name, header=header, sections=[(ANCHOR, coded.data)]).to_bytes()
        self.reconstruction = coded.frame.cpu()
        per_frame = [8 * len(data)]
        return Encoded(data=data, per_frame_bits=per_frame, extra={"anchor": coded.report})

    def decode(self, data: bytes) -> Video:
        container = Container.from_bytes(data)
        header = container.header
        if container.codec != self.name or header.get("format") != FORMAT:
            raise BitstreamError(f"not a {self.name} stream of format {FORMAT}")
        width, height, frames = header["width"], header["height"], header["frames"]
        anchors = container.sections_tagged(ANCHOR)
        if len(anchors) != 1 or frames != 1:
            raise BitstreamError("the stream's sections do not match its frame count")
        net = self._network(height, width)
        weights = decode_weights(anchors[0], parameter_shapes(net))
        frame = render(net, weights)
        return Video(identity=f"decoded:{self.name}", fps=header["fps"], rgb_frames=frames_to_numpy(frame))
