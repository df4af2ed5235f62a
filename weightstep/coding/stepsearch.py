"""Per-tensor quantisation steps chosen by distortion + lambda x real bits (C3-style, refined greedily).

:func:`search_steps` starts from the best *shared* relative step of
a search over shared candidates and then lets each tensor move its own relative
step along the same half-octave grid (2^(k/2)), one tensor at a time, keeping a move only when
``distortion + lam * bits`` of the whole network drops; two sweeps over the tensors. Bits are
always the real packed size (:func:`~weightstep.coding.tensorpack.pack_network`) and the distortion callback sees the exact
dequantised values a decoder gets, so the search optimises what the file will hold.

With ``per_channel``, a tensor with more than one output channel may have a step per channel
(two bytes each in the file) or one step: the shared search tries both layouts, and each sweep
offers every such tensor the other layout before moving its step.

Steps are snapped to the compact layout's 2^(k/8) grid before quantising, so what is searched
is exactly what is stored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from weightstep.coding.quantise import DEFAULT_CANDIDATES, QuantisedTensor, quantise_absolute, relative_steps
from weightstep.coding.tensorpack import pack_network, snap_steps

MAX_MOVES = 6  # half-octave moves of one tensor per sweep (a factor of 8 either way)


def quantise_snapped(tensor: torch.Tensor, rel_step: float, per_channel: bool, name: str) -> QuantisedTensor:
    """:func:`~weightstep.coding.quantise.quantise` with steps snapped to the compact layout's grid."""
    return quantise_absolute(tensor, snap_steps(relative_steps(tensor, rel_step, per_channel)), name)


@dataclass(frozen=True)
class StepsReport:
    """Outcome of :func:`search_steps`: the shared search, then each tensor's own relative step."""

    shared: list[tuple[float, int, float, float]]  # (relative step, bits, distortion, cost) of each shared try
    shared_best: int  # index of the best shared try
    rel_steps: dict[str, float]  # per tensor, after refinement
    bits: int  # real bits of the packed tensors at the chosen steps
    distortion: float
    cost: float  # distortion + lam * bits
    evaluations: int  # distortion evaluations in all
    per_channel: tuple[str, ...] = ()  # tensors whose steps are per output channel (the rest: one step each)

    @property
    def shared_rel_step(self) -> float:
        return self.shared[self.shared_best][0]

    def to_dict(self) -> dict:
        return {"shared_rel_step": self.shared_rel_step, "shared_cost": self.shared[self.shared_best][3],
                "rel_steps": self.rel_steps, "bits": self.bits, "distortion": self.distortion,
                "cost": self.cost, "evaluations": self.evaluations, "per_channel": list(self.per_channel)}


def search_steps(params: dict[str, torch.Tensor], distortion: Callable[[dict[str, torch.Tensor]], float],
                 lam: float, *, per_channel: bool, candidates: Sequence[float] = DEFAULT_CANDIDATES,
                 sweeps: int = 2) -> tuple[dict[str, QuantisedTensor], StepsReport]:
    """Quantise ``params`` with one relative step per tensor minimising ``distortion + lam * bits``.

    ``distortion`` receives the dequantised CPU float32 tensors under the names of ``params``;
    ``lam`` is per bit; bits are ``8 * len(pack_network(...))``. The shared search tries
    ``candidates`` (relative steps on the 2^(k/2) grid); ``sweeps=0`` keeps the best of them.
    """
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be finite and >= 0, got {lam!r}")
    names = list(params)
    cache: dict[tuple[str, int, bool], QuantisedTensor | None] = {}
    # per-channel steps cost two bytes a channel: each tensor that may have them (matrices with more than one
    # channel) also tries one step, and keeps whichever lowers D + lam R (carphone grid anchors: 84 of
    # 403-515 weight bytes were channel steps, and one step per tensor gave the same PSNR)
    both = {name: per_channel and params[name].dim() >= 2 and params[name].shape[0] > 1 for name in names}

    def tensor(name: str, k: int, channels: bool) -> QuantisedTensor | None:
        if (name, k, channels) not in cache:
            try:
                cache[(name, k, channels)] = quantise_snapped(params[name], 2.0 ** (k / 2), channels, name)
            except ValueError:  # too fine for the coder's support: not a candidate
                cache[(name, k, channels)] = None
        return cache[(name, k, channels)]

    def evaluate(ks: dict[str, int], channels: dict[str, bool]) -> tuple[float, int, float] | None:
        qs = [tensor(name, ks[name], channels[name]) for name in names]
        if any(q is None for q in qs):
            return None
        bits = 8 * len(pack_network(qs))
        d = float(distortion({q.name: q.dequantise() for q in qs}))
        if not math.isfinite(d):
            raise ValueError(f"distortion is not finite ({d!r})")
        return d + lam * bits, bits, d

    shared, best, exponents = [], None, {}
    layouts = [both] + ([dict.fromkeys(names, False)] if any(both.values()) else [])
    for c in candidates:
        k = round(2.0 * math.log2(c))
        for layout in layouts:
            result = evaluate(dict.fromkeys(names, k), layout)
            if result is None:
                continue
            shared.append((2.0 ** (k / 2), result[1], result[2], result[0]))
            if best is None or (result[0], result[1]) < (best[0], best[1]):
                best, exponents, channels, shared_best = result, dict.fromkeys(names, k), dict(layout), len(shared) - 1
    if best is None:
        raise ValueError("no candidate step can be coded")
    evaluations = len(shared)
    for _ in range(sweeps):
        improved = False
        for name in names:
            if both[name]:
                flipped = {**channels, name: not channels[name]}
                result = evaluate(exponents, flipped)
                evaluations += 1
                if result is not None and result[0] < best[0]:
                    channels, best, improved = flipped, result, True
            for direction in (1, -1):
                moved = 0
                while moved < MAX_MOVES:
                    trial = {**exponents, name: exponents[name] + direction}
                    result = evaluate(trial, channels)
                    evaluations += 1
                    if result is None or result[0] >= best[0]:
                        break
                    exponents, best, moved, improved = trial, result, moved + 1, True
                if moved:
                    break  # went up: no need to try down
        if not improved:
            break
    quantised = {name: cache[(name, exponents[name], channels[name])] for name in names}
    cost, bits, d = best
    report = StepsReport(shared=shared, shared_best=shared_best,
                         rel_steps={name: 2.0 ** (exponents[name] / 2) for name in names},
                         bits=bits, distortion=d, cost=cost, evaluations=evaluations,
                         per_channel=tuple(name for name in names if quantised[name].per_channel))
    return quantised, report
