"""The ``film`` update kind: a per-channel scale and shift of every layer's output, as a weight delta.

For a layer y = W x + b (linear or conv, output channels along dim 0 of W), the modulated output
s ⊙ y + t equals (s ⊙ W) x + (s ⊙ b + t), so the step is the weight delta

    ΔW = (s - 1) ⊙ W   (broadcast over dim 0),     Δb = (s - 1) ⊙ b + t,

and no network needs to change. A layer is every tensor named ``weight`` or ``*.weight`` with
two or more dims that is not in ``frozen`` (e.g. a latent-grid network's context model); its
bias is ``*.bias`` when that exists, is not frozen and has one value per output channel. A layer
without a bias gets the scale only. Every other tensor (latent grids, stand-alone 1-D tensors)
is untouched: Δ = 0.

Training (:class:`FilmUpdate`): a = s - 1 (init 0) and tau (init 0) per output channel, with
t = unit ⊙ tau, unit = max(RMS(b), RMS row norm of W): tau is the shift in units of the
layer's typical output, so one learning rate suits every layer and (s - 1) and tau cost alike in
:meth:`FilmUpdate.penalty`.

Coding (:func:`code_film`): the integers qa = rint(a / step_a) and qt = rint(t / step_t), with two
steps on the 2^(e/16) grid chosen by distortion(decoded Δ) + lam * 8 * bytes: a joint octave grid
relative to each group's std, then a coordinate search over each step (half-octave moves, or
dropping the group). Reconstruction (:func:`film_delta`, shared by encoder and decoder, CPU):
a = qa * step_a and t = qt * step_t exactly in float64; ΔW = float32(a ⊙ float64(W)),
Δb = float32(a ⊙ float64(b) + t): element-wise IEEE arithmetic, bit-identical everywhere, given the
same (decoded) base weights. The decoder therefore needs the base weights, not only their shapes.

Frame layout (one blob per frame)::

    flags   uint8    bit 0: the update changes something (else the frame is this one byte, = 0)
                     bit 1: scales coded; bit 2: shifts coded (bit 0 is set iff bit 1 or 2 is);
                     other bits zero
    e_a     varint   (bit 1 only) zigzag exponent of the scale step: step_a = 2^(e_a/16)
    e_t     varint   (bit 2 only) zigzag exponent of the shift step
    values  encode_ints to the end: (bit 1) qa of every layer's output channels, layers in network
            order; then (bit 2) qt of every layer that has a bias, in the same order

A coded group is never all zero. Counts come from the base's shapes only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from weightstep.coding.entropy import decode_ints, encode_ints
from weightstep.coding.framing import ByteReader, put_varint
from weightstep.errors import BitstreamError
from weightstep.stepping.code import STEP_DIVISIONS, step_from_exponent
from weightstep.stepping.kindcode import (
    MAX_ABS_Q,
    Search,
    exponent_near,
    quantise_to,
    read_exponent,
    register_base,
    tensor_shapes,
    value_bits,
    zigzag,
)

__all__ = ["FilmLayer", "film_layers", "FilmUpdate", "film_delta", "code_film", "decode_film"]

BITS_STEP = 2.0**-8  # penalty's step of (s - 1) and of tau: a 0.4 % gain change is about what a step resolves
OCTAVES = tuple(range(-6, 2))  # joint step grid: 2^-6 .. 2^1 times each group's std
_SCALES, _SHIFTS = 0x02, 0x04


@dataclass(frozen=True)
class FilmLayer:
    """One modulated layer: its weight (and bias) names and its number of output channels."""

    weight: str
    bias: str | None
    channels: int


def film_layers(shapes, frozen: frozenset[str] = frozenset()) -> list[FilmLayer]:
    """The modulated layers, in network order (rules in the module docstring)."""
    shape_list = tensor_shapes(shapes)
    by_name = dict(shape_list)
    layers = []
    for name, shape in shape_list:
        if name in frozen or len(shape) < 2 or math.prod(shape) == 0:
            continue
        if name == "weight":
            bias = "bias"
        elif name.endswith(".weight"):
            bias = name[: -len("weight")] + "bias"
        else:
            continue
        if bias in frozen or by_name.get(bias) != (shape[0],):
            bias = None
        layers.append(FilmLayer(name, bias, shape[0]))
    return layers


def _shift_unit(weight: torch.Tensor, bias: torch.Tensor | None) -> float:
    w = weight.detach().to("cpu", torch.float64).reshape(weight.shape[0], -1)
    unit = float(w.pow(2).sum(1).mean().sqrt())
    if bias is not None:
        unit = max(unit, float(bias.detach().to("cpu", torch.float64).pow(2).mean().sqrt()))
    return max(unit, 2.0**-20)


class FilmUpdate(nn.Module):
    """Trainable per-channel scale and shift of every layer of ``base`` (name -> decoded previous weights)."""

    def __init__(self, base: Mapping[str, torch.Tensor], *, lr: float, seed: int,
                 frozen: frozenset[str] = frozenset()):
        super().__init__()
        self.names: tuple[str, ...] = register_base(self, base, lr, "FilmUpdate")
        self.lr, self.seed = float(lr), int(seed)  # nothing is random: the seed is kept for the record
        self.frozen = frozenset(frozen)
        self.layers = film_layers([(n, tuple(t.shape)) for n, t in base.items()], self.frozen)
        scales, shifts, units = [], [], []
        for layer in self.layers:
            ref = base[layer.weight]
            scales.append(nn.Parameter(torch.zeros(layer.channels, device=ref.device)))
            if layer.bias is not None:
                shifts.append(nn.Parameter(torch.zeros(layer.channels, device=ref.device)))
            units.append(_shift_unit(ref, base[layer.bias] if layer.bias else None))
        self.scale_minus_one = nn.ParameterList(scales)  # a = s - 1 per layer
        self.tau = nn.ParameterList(shifts)  # t / unit, layers with a bias only
        self.units = tuple(units)

    def base(self) -> dict[str, torch.Tensor]:
        """name -> the frozen previous weights."""
        return {name: getattr(self, f"base_{i}") for i, name in enumerate(self.names)}

    def delta(self, train: bool = False, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """name -> Δ for every name (zeros where untouched); differentiable. ``train``/``generator`` unused."""
        base = self.base()
        out = {name: torch.zeros_like(b) for name, b in base.items()}
        shift_index = 0
        for i, layer in enumerate(self.layers):
            a = self.scale_minus_one[i]
            w = base[layer.weight]
            out[layer.weight] = a.reshape((-1,) + (1,) * (w.ndim - 1)) * w
            if layer.bias is not None:
                t = self.tau[shift_index] * self.units[i]
                shift_index += 1
                out[layer.bias] = a * base[layer.bias] + t
        return out

    def weights(self, train: bool = False, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """name -> base + Δ (differentiable in the scales and shifts)."""
        delta = self.delta(train, generator)
        return {name: b + delta[name] for name, b in self.base().items()}

    def penalty(self) -> torch.Tensor:
        """Differentiable estimate of the coded bits: value_bits(|v| / 2^-8) summed over every (s - 1) and tau.

        (:func:`~weightstep.stepping.kindcode.value_bits`: about log2(|v| / step) + 2.4 per value.)
        """
        total = self.base_0.new_zeros(())
        for p in list(self.scale_minus_one) + list(self.tau):
            total = total + value_bits(p.abs() / BITS_STEP).sum()
        return total

    def param_groups(self) -> list[dict]:
        """Scales (s - 1), then shifts (tau), each at ``lr``."""
        groups = []
        if len(self.scale_minus_one):
            groups.append({"params": list(self.scale_minus_one), "lr": self.lr})
        if len(self.tau):
            groups.append({"params": list(self.tau), "lr": self.lr})
        return groups

    def open_count(self) -> int:
        """Values the update codes: one scale per output channel, one shift per channel of a biased layer."""
        return sum(layer.channels * (2 if layer.bias else 1) for layer in self.layers)

    def fitted(self) -> tuple[np.ndarray, np.ndarray]:
        """(every s - 1, every shift t) as flat float64 arrays in coding order (detached)."""
        with torch.no_grad():
            a = [p.detach().to("cpu", torch.float64) for p in self.scale_minus_one]
            units = [u for layer, u in zip(self.layers, self.units, strict=True) if layer.bias]
            t = [p.detach().to("cpu", torch.float64) * u for p, u in zip(self.tau, units, strict=True)]
            out = tuple(torch.cat(x).numpy() if x else np.zeros(0) for x in (a, t))
        if not all(np.isfinite(x).all() for x in out):
            raise ValueError("the film update has non-finite entries")
        return out


def _base_arrays(base) -> dict[str, np.ndarray]:
    items = base.items() if isinstance(base, Mapping) else base
    out = {}
    for name, t in items:
        if not isinstance(t, (torch.Tensor, np.ndarray)):
            raise TypeError("film needs the base weights (name -> tensor), not only their shapes: "
                            "its delta is (s - 1) times the weights")
        t = t.detach().to("cpu", torch.float32).numpy() if isinstance(t, torch.Tensor) else np.asarray(t, np.float32)
        out[str(name)] = t
    return out


def film_delta(base: Mapping[str, np.ndarray], layers: list[FilmLayer], qa: np.ndarray | None, e_a: int,
               qt: np.ndarray | None, e_t: int) -> dict[str, torch.Tensor]:
    """The float32 CPU Δ of every name of ``base`` (float32 arrays) from the integers (encoder and decoder)."""
    a_all = qa.astype(np.float64) * step_from_exponent(e_a) if qa is not None else None
    t_all = qt.astype(np.float64) * step_from_exponent(e_t) if qt is not None else None
    out = {name: np.zeros(b.shape, np.float32) for name, b in base.items()}
    ia = it = 0
    for layer in layers:
        c = layer.channels
        a = a_all[ia:ia + c] if a_all is not None else np.zeros(c)
        ia += c
        w = base[layer.weight].astype(np.float64)
        out[layer.weight] = (a.reshape((-1,) + (1,) * (w.ndim - 1)) * w).astype(np.float32)
        if layer.bias is not None:
            t = t_all[it:it + c] if t_all is not None else np.zeros(c)
            it += c
            out[layer.bias] = (a * base[layer.bias].astype(np.float64) + t).astype(np.float32)
    for name, value in out.items():
        if not np.isfinite(value).all():
            raise ValueError(f"the update of {name!r} overflows float32")
    return {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in out.items()}


def _frame(qa: np.ndarray | None, e_a: int, qt: np.ndarray | None, e_t: int) -> bytes:
    flags = (_SCALES if qa is not None else 0) | (_SHIFTS if qt is not None else 0)
    if not flags:
        return bytes([0])
    head = bytearray([flags | 1])
    if qa is not None:
        put_varint(head, zigzag(e_a))
    if qt is not None:
        put_varint(head, zigzag(e_t))
    return bytes(head) + encode_ints(np.concatenate([q for q in (qa, qt) if q is not None]))


def decode_film(data: bytes, base, frozen: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """The Δ (float32 CPU, every name of ``base``) of a :func:`code_film` frame.

    ``base``: the decoded previous weights, name -> tensor (or (name, tensor) pairs), in network
    order: the shapes alone do not define a scale's delta. Damaged input raises BitstreamError.
    """
    arrays = _base_arrays(base)
    layers = film_layers([(n, a.shape) for n, a in arrays.items()], frozenset(frozen))
    n_scales = sum(layer.channels for layer in layers)
    n_shifts = sum(layer.channels for layer in layers if layer.bias)
    r = ByteReader(bytes(data), "film update")
    flags = r.take(1, "flags")[0]
    if flags & ~(1 | _SCALES | _SHIFTS) or bool(flags & 1) != bool(flags & (_SCALES | _SHIFTS)):
        raise BitstreamError(f"film update: invalid flags {flags:#04x}")
    if not flags:
        if r.pos != len(r.data):
            raise BitstreamError("film update: data after an empty update")
        return film_delta(arrays, layers, None, 0, None, 0)
    if (flags & _SCALES and not n_scales) or (flags & _SHIFTS and not n_shifts):
        raise BitstreamError("film update: codes values the network has no room for")
    e_a = read_exponent(r, "scale step") if flags & _SCALES else 0
    e_t = read_exponent(r, "shift step") if flags & _SHIFTS else 0
    count_a = n_scales if flags & _SCALES else 0
    flat = decode_ints(r.rest(), count_a + (n_shifts if flags & _SHIFTS else 0))
    if int(np.max(np.abs(flat.astype(np.int64)))) > MAX_ABS_Q:
        raise BitstreamError("film update: an integer is out of range")
    qa = flat[:count_a] if flags & _SCALES else None
    qt = flat[count_a:] if flags & _SHIFTS else None
    if any(q is not None and not q.any() for q in (qa, qt)):
        raise BitstreamError("film update: a coded group is all zero")
    try:
        return film_delta(arrays, layers, qa, e_a, qt, e_t)
    except ValueError as exc:
        raise BitstreamError(f"film update: {exc}") from None


def code_film(update: FilmUpdate, distortion: Callable[[dict[str, torch.Tensor]], float],
              lam_per_bit: float) -> tuple[bytes, dict[str, torch.Tensor], dict]:
    """Quantise and code ``update``, choosing both steps by distortion(decoded Δ) + lam_per_bit * bits.

    Returns (frame, the decoder's Δ, facts): bytes, changed (non-zero integers), values (integers
    coded), step (of the scales), shift_step, exponents, distortion, bits, cost, candidates.
    """
    arrays = _base_arrays(update.base())
    layers = update.layers
    a, t = update.fitted()
    search = Search(float(lam_per_bit), distortion)
    off = None  # an exponent of None drops the group

    def build(e_a: int | None, e_t: int | None):
        qa = quantise_to(a, e_a) if e_a is not None else None
        qt = quantise_to(t, e_t) if e_t is not None else None
        if (e_a is not None and qa is None) or (e_t is not None and qt is None):
            return None  # step too fine for the coder's support
        qa = qa if qa is not None and qa.any() else None
        qt = qt if qt is not None and qt.any() else None
        ea, et = (e_a if qa is not None else 0), (e_t if qt is not None else 0)
        return _frame(qa, ea, qt, et), film_delta(arrays, layers, qa, ea, qt, et), (qa, ea, qt, et)

    def reference(x: np.ndarray) -> int | None:
        x = x[x != 0]
        return exponent_near(float(np.std(x)) or float(np.mean(np.abs(x)))) if x.size else None

    ref_a, ref_t = reference(a), reference(t)
    search.offer((off, off), lambda: build(off, off))
    octave = STEP_DIVISIONS
    for j in OCTAVES:
        key = tuple(None if r is None else r + j * octave for r in (ref_a, ref_t))
        search.offer(key, lambda key=key: build(*key))
    for _ in range(8):  # coordinate search: half-octave moves of each step, or dropping a group
        start = search.best_key
        e_a, e_t = start
        moves = []
        for move in (-octave // 2, octave // 2):
            if e_a is not None:
                moves.append((e_a + move, e_t))
            if e_t is not None:
                moves.append((e_a, e_t + move))
        moves += [(off, e_t), (e_a, off)]
        for key in moves:
            search.offer(key, lambda key=key: build(*key))
        if search.best_key == start:
            break
    cost, bits, dist, (data, delta, (qa, ea, qt, et)) = search.best
    facts = {"bytes": len(data),
             "changed": sum(int(np.count_nonzero(q)) for q in (qa, qt) if q is not None),
             "values": sum(q.size for q in (qa, qt) if q is not None),
             "step": step_from_exponent(ea), "shift_step": step_from_exponent(et),
             "exponents": (ea, et), "scales": qa is not None, "shifts": qt is not None,
             "distortion": dist, "bits": bits, "cost": cost, "candidates": search.evaluated()}
    return data, delta, facts
