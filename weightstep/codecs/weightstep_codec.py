"""The weight-step codec: an INR fitted to the anchor frame, then each frame as a weight update.

This module holds the codec's container layout, its encoder loop over groups of pictures and the decoder;
its settings live in :mod:`weightstep.codecs.weightstep_config`. Frame 0 (and each GOP restart) is an anchor
network coded by :mod:`weightstep.codecs.anchor`; with one frame this is the image mode of the proposal's
anchor experiments.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch

from weightstep.codecs import budget
from weightstep.codecs.anchor import decode_anchor, fit_and_code, fit_only
from weightstep.codecs.base import Codec, Encoded
from weightstep.codecs.netcoding import frames_to_numpy, parameter_shapes, render
from weightstep.codecs.streamconfig import full_config, stream_config
from weightstep.codecs.weightstep_config import (
    ANCHOR,
    ENCODER_ONLY,
    FORMAT,
    LATENT_BLOCKS,
    MATRIX_RENDER,
    RESIDUAL,
    START_SEED_STRIDE,
    STEP,
    STREAM_DEFAULTS,
    WARP_PREDICTION,
    WeightStepConfig,
)
from weightstep.coding.container import FORMAT_VERSION, Container, section_size
from weightstep.coding.framing import ByteReader
from weightstep.device import device_label, resolve_device, stream_device
from weightstep.errors import BitstreamError, ConfigError
from weightstep.inr import build_network, latent_names
from weightstep.inr.render import load_weights
from weightstep.stepping.residual import decode_residual
from weightstep.stepping.schedule import SCHEDULES
from weightstep.stepping.step import (
    decode_frame_step,
    frozen_names,
    initial_state,
    split_kind,
)
from weightstep.stepping.warp import warp_targets
from weightstep.video import Video


class WeightStepCodec(Codec):
    container = FORMAT_VERSION  # part of describe(): results of another container version stop matching
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
        info["format"] = self.config.stream_format()
        return info

    def _network(self, height: int, width: int, device: torch.device | None = None, *,
                 stream_format: int | None = None):
        # MLPs render RENDER_CHUNK pixels per pass, in the encoder and the decoder alike (bounded memory)
        net = build_network(self.config.network_spec(), height, width, chunk_size=budget.RENDER_CHUNK)
        if hasattr(net, "matrix_render"):  # how coded renders upsample: as the stream's format says
            net.matrix_render = (stream_format or self.config.stream_format()) >= MATRIX_RENDER
        return net if device is None else net.to(device)

    def _code_anchor(self, net, target: torch.Tensor, fit_first: bool, *, stepped: bool = True, start: int = 0):
        """``start`` > 0: a fresh initialisation of the network's parameters (its fixed inputs, which the decoder
        regenerates from the codec's seed, stay as they are) and its own fit seed, for ``anchor_starts``."""
        cfg = self.config
        pixels = target.shape[-1] * target.shape[-2]
        settings = cfg.anchor_settings(fit_first, pixels, target.device, stepped)
        if start and fit_first:
            seed = cfg.seed + START_SEED_STRIDE * start
            fresh = dict(build_network(dataclasses.replace(cfg.network_spec(), seed=seed), *target.shape[-2:])
                         .named_parameters())
            load_weights(net, fresh)
            settings = dataclasses.replace(settings, fit=dataclasses.replace(settings.fit, seed=seed), seed=seed)
        return fit_and_code(net, target, settings, label=f"anchor {cfg.inr}" + (f" (start {start + 1})" if start else ""))

    def _fit_anchor(self, net, target: torch.Tensor, *, stepped: bool = True) -> float | None:
        cfg = self.config
        pixels = target.shape[-1] * target.shape[-2]
        return fit_only(net, target, cfg.anchor_settings(True, pixels, target.device, stepped),
                        label=f"anchor {cfg.inr} (warm start)")

    def gops(self, frames: int) -> list[tuple[int, int]]:
        """(start, count) of each group of pictures: one anchor and its weight steps.

        Each fresh anchor's fit starts from the previous anchor's fitted weights (a warm start the
        decoder does not need to know about: every anchor is coded in full)."""
        size = self.config.gop_size() or frames
        return [(start, min(size, frames - start)) for start in range(0, frames, size)]

    def encode(self, video: Video) -> Encoded:
        cfg = self.config
        frames = torch.from_numpy(video.rgb()).to(self.device)
        net = self._network(video.height, video.width, self.device)
        schedule = SCHEDULES[cfg.schedule]
        coded = []
        for index, (start, count) in enumerate(self.gops(video.frames)):
            label = f"GOP {index + 1}: " if cfg.gop_size() else ""
            stepped = count > 1  # an image (a one-frame group) is coded at the codec's lambda
            extra = ({"fit_anchor": functools.partial(self._fit_anchor, stepped=stepped)}
                     if cfg.schedule == "single-stage" else {})
            coded += schedule(net, frames[start:start + count], cfg.update_spec(video.width * video.height),
                              cfg.step_settings(count), functools.partial(self._code_anchor, stepped=stepped),
                              label=label, **extra)
        carried, table = stream_config(cfg, STREAM_DEFAULTS, ENCODER_ONLY)
        header = {"config": carried, "defaults": table, "width": video.width, "height": video.height,
                  "frames": video.frames, "fps": float(video.fps), "bit_depth": 8, "format": cfg.stream_format()}
        meta = {"config": dataclasses.asdict(cfg), "seeds": {"network": cfg.seed},
                "encoded_on": stream_device(self.device)}
        sections = [(ANCHOR if c.kind == "anchor" else STEP, c.data) for c in coded]
        container = Container(codec=self.name, header=header, sections=sections, meta=meta)
        data, payload = container.write()
        self.reconstruction = torch.cat([c.frame.cpu() for c in coded])
        per_frame = [8 * section_size(c.data) for c in coded]
        per_frame[0] += 8 * payload - sum(per_frame)  # the stream's header goes with the first frame
        steps = [c.facts for c in coded if c.kind == "step"]
        extra = {"anchors": [c.facts for c in coded if c.kind == "anchor"], "anchor": coded[0].facts,
                 "steps": steps, "changed_weights": [c.facts.get("changed", None) for c in coded]}
        return Encoded(data=data, payload_bytes=payload, per_frame_bits=per_frame, extra=extra)

    def decode(self, data: bytes) -> Video:
        container = Container.from_bytes(data)
        header = container.header
        if container.codec != self.name or header.get("format") not in range(1, FORMAT + 1):
            raise BitstreamError(f"not a {self.name} stream of format 1 to {FORMAT}")
        from weightstep.config import build

        try:  # the file's own config decides how to decode, as in FullSequenceCodec; the device stays ours
            stored = {k: v for k, v in full_config(header, STREAM_DEFAULTS, self.name).items() if k != "device"}
            stored.setdefault("residual", "none")  # streams written before the setting had no residual
            cfg = build(WeightStepConfig, {**stored, "device": self.config.device}, where=f"{self.name} stream header")
        except (ConfigError, TypeError, AttributeError) as exc:
            raise BitstreamError(f"{self.name} stream: invalid config in the header ({exc})") from None
        if cfg != self.config:
            return type(self)(cfg).decode(data)
        stream_format = header["format"]
        if stream_format not in cfg.readable_formats():
            raise BitstreamError(f"{self.name} stream: format {stream_format} does not fit inr={cfg.inr}, "
                                 f"update={cfg.update}")
        width, height, frames = header["width"], header["height"], header["frames"]
        tags = [tag for tag, _ in container.sections]
        expected = [ANCHOR if t - start == 0 else STEP for start, count in self.gops(frames)
                    for t in range(start, start + count)]
        if cfg.gop == "auto":  # an anchor first, then each frame a step or a fresh anchor
            auto_ok = len(tags) == frames and tags[:1] == [ANCHOR] and set(tags) <= {ANCHOR, STEP}
            expected = tags if auto_ok else expected
        if tags != expected:
            raise BitstreamError(f"the stream's {len(tags)} sections do not match its {frames} frames")
        budget.check_network(f"{self.name} stream", lambda: self._network(height, width), frames=frames,
                             height=height, width=width,
                             read_weights=lambda meta: None if latent_names(meta)  # latents need a real net
                             else decode_anchor(container.sections[0][1], meta))
        net = self._network(height, width, self.device, stream_format=stream_format)
        shapes = parameter_shapes(net)
        targets = warp_targets(net) if split_kind(cfg.update)[0] else ()
        frozen = frozen_names(net)
        with_residual = stream_format >= RESIDUAL and cfg.residual_on()  # (format 4 was written only with it)
        compact = stream_format >= WARP_PREDICTION
        finest = latent_names(net)[0] if with_residual else ""
        out, state, maps, warp = [], None, None, None
        for tag, section in container.sections:
            if tag == ANCHOR:
                weights, maps, warp = decode_anchor(section, net), None, None
                state = initial_state(net, {k: v.to(self.device) for k, v in weights.items()}, cfg.update)
            else:
                residual = None
                if with_residual:
                    reader = ByteReader(section, "step section")
                    step_data = reader.take(reader.varint("step length"), "step")
                    residual, section = decode_residual(reader.rest(), height, width), step_data
                state, maps, warp = decode_frame_step(
                    section, cfg.update, state, shapes, targets, maps, warp_grid=cfg.warp_grid, width=width,
                    height=height, frozen=frozen, latents=latent_names(net),
                    latent_blocks=stream_format >= LATENT_BLOCKS, previous_warp=warp, compact=compact)
                if residual is not None:
                    state = {**state, finest: state[finest] + residual.to(state[finest].device)}
            out.append(render(net, state).cpu())
        return Video(identity=f"decoded:{self.name}", fps=header["fps"],
                     rgb_frames=frames_to_numpy(torch.cat(out)))
