"""One frame's weight step, whatever its kind: the trainable model, its coding and its decoding.

A step kind names an optional motion warp and an optional update of the weights:

- ``l0``, ``dct``, ``dense``: the proposal's updates (:class:`~weightstep.stepping.update.WeightUpdate`);
- ``warp``: only a warp of what the network sees (:mod:`weightstep.stepping.warp`);
- ``lowrank``: each matrix's update as a product of two thin factors (:mod:`.lowrank`);
- ``film``: a per-channel scale and shift of each layer, as a weight delta (:mod:`.film`);
- ``latent``: an integer residual on a latent-grid network's latents (:mod:`.latent`; inr=grid);
- ``warp+X`` for each of those: the warp, then the update on the warped weights, fitted together.

The *state* a step starts from is the decoded network of the previous frame: its parameters
plus the tensors a warp moves (coordinates, DIP noise: buffers; latent grids: parameters).
Frame t's state is ``warp_t(state_{t-1}) + delta_t``. (Measured against the alternative of
keeping the state in the anchor's coordinates, ``warp_{0->t}(anchor + sum of deltas)``, which
resamples every frame once from sharp maps instead of chaining resamplings: on carphone, 10
frames, lambda 1e-3, a warp alone decayed the same (26.97 -> 22.91 dB against 26.97 -> 22.94)
and warp+lowrank cost 9 % more bytes at equal PSNR; the chain stays.)

Section layout of a step with a warp: ``varint(len(W)) + W + U`` (W the warp blob, U the
update's frame from :func:`~weightstep.stepping.code.encode_update`; no U for ``warp``). Without
a warp the section is U alone (the proposal's layout, unchanged).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from weightstep.coding.framing import ByteReader, put_varint
from weightstep.errors import BitstreamError
from weightstep.inr import latent_names
from weightstep.inr.spec import WarpTarget
from weightstep.stepping.code import UpdateStats, choose_step, decode_update, encode_update
from weightstep.stepping.film import FilmUpdate, code_film, decode_film
from weightstep.stepping.latent import LatentUpdate, code_latent, decode_latent
from weightstep.stepping.lowrank import LowRankUpdate, code_lowrank, decode_lowrank
from weightstep.stepping.update import UpdateSpec, WeightUpdate, apply_delta
from weightstep.stepping.warp import WarpField, exact_warp, warp_targets
from weightstep.stepping.warp_code import affine_split, code_warp, decode_warp, dequantise_warp

__all__ = ["STEP_KINDS", "GATE_BITS", "split_kind", "StepMemory", "FrameStep", "code_frame_step", "decode_frame_step",
           "initial_state", "frozen_names", "code_update"]

UPDATE_PARTS = ("l0", "dct", "dense")  # the proposal's updates (WeightUpdate)
MODEL_PARTS = ("lowrank", "film", "latent")  # updates with their own module and coder
STEP_KINDS = (*UPDATE_PARTS, *MODEL_PARTS, "warp", *(f"warp+{part}" for part in UPDATE_PARTS + MODEL_PARTS))
GATE_BITS = 12.0  # first frame's estimate of an open gate's bits (later frames use the coder's last figure)


def split_kind(kind: str) -> tuple[bool, str | None]:
    """(has a warp, the update part or None)."""
    if kind not in STEP_KINDS:
        raise ValueError(f"unknown step kind {kind!r}; use one of {', '.join(STEP_KINDS)}")
    if kind == "warp":
        return True, None
    if kind.startswith("warp+"):
        return True, kind[len("warp+"):]
    return False, kind


def frozen_names(net: nn.Module) -> frozenset[str]:
    """Parameters a step never changes: the grid's latent context model (it shapes bits, not pixels)."""
    context = getattr(net, "context", None)
    return frozenset(f"context.{name}" for name, _ in context.named_parameters()) if context is not None else frozenset()


def initial_state(net: nn.Module, weights: Mapping[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """The anchor's state: its decoded weights plus, for warp kinds, the buffers a warp moves."""
    state = dict(weights)
    if split_kind(kind)[0]:
        buffers = dict(net.named_buffers())
        for target in warp_targets(net):
            if target.name not in state:
                state[target.name] = buffers[target.name].detach().clone()
    return state


@dataclass
class StepMemory:
    """What one coded step hands to the next on the encoder side."""

    maps: dict[str, np.ndarray] | None = None  # change maps of the last update (conditional map coding)
    logits: dict[str, torch.Tensor] | None = None  # gate logits of the last update (warm start)
    warp: np.ndarray | None = None  # where the next warp's fit starts: the last decoded warp (or a motion estimate)
    gate_bits: float = GATE_BITS  # what an open gate cost in the last coded update
    warp_coded: np.ndarray | None = None  # the last decoded warp of the group of pictures: what the next one predicts from
    facts: dict = field(default_factory=dict)


class FrameStep(nn.Module):
    """The trainable step of one frame from ``state`` (see the module docstring)."""

    def __init__(self, net: nn.Module, state: Mapping[str, torch.Tensor], spec: UpdateSpec, kind: str,
                 memory: StepMemory, *, warp_grid: int, width: int, height: int):
        super().__init__()
        self.kind = kind
        self.has_warp, self.part = split_kind(kind)
        self.width, self.height, self.warp_grid = int(width), int(height), int(warp_grid)
        self.param_names = tuple(name for name, _ in net.named_parameters())
        self.state = dict(state)
        self.targets: tuple[WarpTarget, ...] = warp_targets(net) if self.has_warp else ()
        device = next(iter(state.values())).device
        self.warp = WarpField(self.warp_grid, memory.warp, device=device) if self.has_warp else None
        self.update = None
        if self.part is not None:
            spec = dataclasses.replace(spec, kind=self.part, gate_bits=memory.gate_bits)
            base = {n: state[n] for n in self.param_names}
            frozen = frozen_names(net)
            if self.part == "lowrank":
                self.update = LowRankUpdate(base, lr=spec.update_lr, seed=spec.seed, frozen=frozen).to(device)
            elif self.part == "film":
                self.update = FilmUpdate(base, lr=spec.update_lr, seed=spec.seed, frozen=frozen).to(device)
            elif self.part == "latent":
                self.update = LatentUpdate(base, latent_names(net), lr=spec.latent_lr).to(device)
            else:
                self.update = WeightUpdate(base, spec).to(device)
            if memory.logits and isinstance(self.update, WeightUpdate):
                # gates that paid last frame start open; none starts below the first frame's logit
                self.update.warm_start(memory.logits, low=spec.log_alpha_init)

    def moved(self) -> dict[str, torch.Tensor]:
        """The state with the (unquantised) warp applied."""
        if self.warp is None:
            return dict(self.state)
        return {**self.state, **self.warp.apply(self.state, self.targets, self.width, self.height)}

    def weights(self, train: bool = False, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        out = self.moved()
        if self.update is not None:
            delta = self.update.delta(train, generator)
            out.update({name: out[name] + delta[name] for name in self.param_names})
        return out

    def penalty(self) -> torch.Tensor:
        """Expected bits of the update (the warp's few numbers are left to the coder's search)."""
        if self.update is None:
            return torch.zeros((), device=self.warp.values.device)
        return self.update.penalty()

    def param_groups(self, warp_lr: float) -> list[dict]:
        groups = self.update.param_groups() if self.update is not None else []
        if self.warp is not None:
            groups.append({"params": [self.warp.values], "lr": warp_lr})
        return groups

    def open_count(self) -> int:
        return self.update.open_count() if self.update is not None else 0


def code_update(values: Mapping[str, torch.Tensor], part: str, base: Mapping[str, torch.Tensor],
                distortion: Callable[[dict[str, torch.Tensor]], float], lam_per_bit: float,
                previous_maps: dict[str, np.ndarray] | None
                ) -> tuple[bytes, dict[str, torch.Tensor], dict[str, np.ndarray], UpdateStats, dict]:
    """Quantise and code the proposal's update (l0, dct, dense) of ``base``, its step chosen by
    ``distortion(new weights) + lam_per_bit * real bits``. Returns (frame, the decoder's new
    weights, change maps, sizes, facts)."""
    quantised, search = choose_step(values, part, lambda delta: distortion(apply_delta(base, delta)), lam_per_bit,
                                    previous_maps=previous_maps)
    data, maps, stats = encode_update(quantised, previous_maps)
    facts = {**stats.to_dict(), "rel_step": search.chosen.rel_step}
    return data, apply_delta(base, quantised.delta()), maps, stats, facts


def code_frame_step(step: FrameStep, distortion: Callable[[Mapping[str, torch.Tensor]], float], lam_per_bit: float,
                    memory: StepMemory, compact: bool = False) -> tuple[bytes, dict[str, torch.Tensor], StepMemory, dict]:
    """Quantise and code a fitted step: the warp's step by D + lambda R (with the fitted update on
    top), then the update's step against the decoded warped state. ``compact``: the layout of
    streams from format 5 (a warp may be coded against the previous one, low-rank values under the
    compact header). Returns (section, the decoder's new state, the memory for the next frame, facts)."""
    state = {k: v.detach() for k, v in step.state.items()}
    facts: dict = {}
    blob = b""
    if step.warp is not None:
        fitted = step.update.delta(False) if step.update is not None else {}
        fitted = {k: v.detach() for k, v in fitted.items()}

        moved_by: dict[bytes, dict[str, torch.Tensor]] = {}  # each candidate's warped state, computed once

        def warped(values: np.ndarray) -> dict[str, torch.Tensor]:
            key = np.asarray(values, np.float64).tobytes()
            if key not in moved_by:
                moved_by[key] = {**state, **_to(exact_warp(state, step.targets, values, step.width, step.height,
                                                           step.warp_grid), state)}
            return moved_by[key]

        def warp_distortion(values: np.ndarray) -> float:
            moved = warped(values)
            return distortion({**moved, **{n: moved[n] + fitted[n] for n in fitted}})

        split = affine_split(step.warp.values.detach(), step.warp_grid, step.width, step.height)
        blob, values, facts = code_warp(split, warp_distortion, lam_per_bit,
                                        previous=memory.warp_coded if compact else None)
        state = warped(values)
        decoded_warp = values
    else:
        decoded_warp = None
    maps, logits, gate_bits = memory.maps, memory.logits, memory.gate_bits
    data = b""
    if step.update is not None:
        base = {n: state[n] for n in step.param_names}
        state_now = state

        def with_params(params: dict[str, torch.Tensor]) -> float:
            return distortion({**state_now, **params})

        if step.part in MODEL_PARTS:
            coder = {"lowrank": code_lowrank, "film": code_film, "latent": code_latent}[step.part]
            # (a warp moves latents and inputs, never the layers film scales: its base stays the decoder's)
            options = {"compact": compact} if step.part == "lowrank" else {}
            data, delta, extra = coder(step.update, lambda d: with_params(apply_delta(base, d)), lam_per_bit,
                                       **options)
            state = {**state, **apply_delta(base, delta)}
            facts.update({k: v for k, v in extra.items() if k != "candidates"})
        else:
            data, params, maps, stats, extra = code_update(step.update.coded_values(), step.part, base,
                                                           with_params, lam_per_bit, memory.maps)
            state = {**state, **params}
            facts.update(extra)
            if stats.changed:
                gate_bits = float(np.clip((stats.map_bits + stats.value_bits) / stats.changed, 2.0, 64.0))
            logits = step.update.logits() if step.update.gated else None
    section = data
    if step.warp is not None:
        head = bytearray()
        put_varint(head, len(blob))
        section = bytes(head) + blob + data
    facts["bytes"] = len(section)
    new_memory = StepMemory(maps=maps, logits=logits, warp=decoded_warp, gate_bits=gate_bits, facts=facts,
                            warp_coded=decoded_warp)
    return section, state, new_memory, facts


def _to(tensors: Mapping[str, torch.Tensor], like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to(like[k].device) for k, v in tensors.items()}


def decode_frame_step(data: bytes, kind: str, state: Mapping[str, torch.Tensor],
                      shapes: Sequence[tuple[str, tuple[int, ...]]], targets: Sequence[WarpTarget],
                      maps: dict[str, np.ndarray] | None, *, warp_grid: int, width: int, height: int,
                      frozen: frozenset[str] = frozenset(), latents: Sequence[str] = (),
                      latent_blocks: bool = True, previous_warp: np.ndarray | None = None,
                      compact: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray] | None, np.ndarray | None]:
    """The decoder's side of :func:`code_frame_step`.

    ``latents`` names the latent grids (the ``latent`` kind steps those); ``latent_blocks`` False
    reads the latent kind's first layout (streams of format 1). ``previous_warp``: the last decoded
    warp of the group of pictures (None on its first step); ``compact``: the layout of streams from
    format 5 (a warp may be predicted from ``previous_warp``, low-rank values under the compact
    header; without it a predicted warp is refused). Returns (the
    new state, change maps for the next step, this step's decoded warp values or None)."""
    has_warp, part = split_kind(kind)
    state = dict(state)
    if has_warp:
        reader = ByteReader(bytes(data), "warp step")
        length = reader.varint("warp length")
        blob = reader.take(length, "warp blob")
        data = reader.rest()
        q, exponent = decode_warp(blob, warp_grid, previous_warp if compact else None)
        warp_values = dequantise_warp(q, exponent)
        state.update(_to(exact_warp(state, targets, warp_values, width, height, warp_grid), state))
        if part is None:
            if data:
                raise BitstreamError("warp step: data after the warp")
            return state, maps, warp_values
    else:
        warp_values = None
    names = [name for name, _ in shapes]
    base = {n: state[n] for n in names}
    if part == "lowrank":
        delta = decode_lowrank(data, shapes, frozen, compact=compact)
    elif part == "film":
        delta = decode_film(data, {n: v.detach().cpu() for n, v in base.items()}, frozen)
    elif part == "latent":
        delta = decode_latent(data, shapes, latents, blocks=latent_blocks)
    else:
        delta, maps = decode_update(data, shapes, maps, part)
    state.update(apply_delta(base, delta))
    return state, maps, warp_values
