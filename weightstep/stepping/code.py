"""Coding ONE weight update with the real entropy coder (constriction, via ``weightstep.coding.entropy``).

Pipeline (encoder): ``WeightUpdate.coded_values()`` (raw ⊙ deterministic gate: exactly zero where a
gate is closed; DCT coefficients for ``'dct'``) -> :func:`quantise_update` (one uniform step for the
whole update) -> :func:`encode_update` -> bytes. Elements whose value quantises to 0 are "no change",
so the change map is exactly ``q != 0``. The encoder then steps its weights with
``apply_delta(base, q.delta())``; the decoder gets the same Δ from :func:`decode_update` through the
same :meth:`QuantisedUpdate.delta`, so both hold bit-identical weights (closed loop).

The step is ``2^(e/16)`` for an integer exponent e (a sixteenth of an octave, at most 2.2 % from
any requested step), so it costs one or two bytes instead of a float32.

Frame layout (one blob per update; tensors concatenated in the base network's parameter order,
each read flat in C order; the frame's end is known from its container section)::

    flags   uint8    bit 0: the update changes something (else the frame is this one byte)
                     bit 1: the change map is coded conditioned on the previous map
                     other bits zero
    e       varint   zigzag step exponent, |e| <= 1024
    -- kinds 'l0' and 'dct' only --
    len_a   varint   byte length of map blob A
    len_b   varint   (conditional only) byte length of map blob B
    A       encode_bits: the whole change map, or (conditional) its elements that did NOT change
                     in the previous update
    B       encode_bits: (conditional only) the elements that DID change in the previous update
    -- all kinds --
    values  encode_ints to the end: the non-zero integers in map order ('l0', 'dct'), or every
            element ('dense': no map)

Conditioning uses that gates which opened in the last step tend to open again: two Bernoulli
probabilities, p(change | changed before) and p(change | not changed before), each sent exactly by
its own ``encode_bits`` blob (count mode). The encoder codes both ways and keeps the cheaper one;
the decoder splits the positions the same way with the previous map it already holds.

Why one blob per frame: the entropy module's headers are 17 bytes per integer blob and 5 per map
blob, plus up to ~4 bytes of ANS flush each; per-tensor blobs would cost more than a sparse update's
content (10 tensors x 2 blobs x ~25 bytes vs ~100 bytes for 0.3 % of a 28k-parameter SIREN).
An all-zero update costs 1 byte.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from weightstep.coding.entropy import (
    MAX_COUNT,
    MAX_SUPPORT,
    decode_bits,
    decode_ints,
    encode_bits,
    encode_ints,
)
from weightstep.coding.framing import ByteReader, put_varint, unzigzag, zigzag
from weightstep.coding.quantise import (
    StepCandidate,
    StepSearchReport,
    quantise_absolute,
)
from weightstep.errors import BitstreamError
from weightstep.stepping.dct import from_coefficients
from weightstep.stepping.update import UPDATE_KINDS, apply_delta

__all__ = [
    "STEP_DIVISIONS",
    "MAX_EXPONENT",
    "UPDATE_CANDIDATES",
    "QuantisedUpdate",
    "UpdateStats",
    "step_from_exponent",
    "quantise_update",
    "choose_step",
    "encode_update",
    "decode_update",
    "apply_delta",
]

STEP_DIVISIONS = 16  # step = 2^(e / STEP_DIVISIONS)
MAX_EXPONENT = 64 * STEP_DIVISIONS  # steps in [2^-64, 2^64]
# Relative steps tried by choose_step: 2^-6 .. 2^1 times the std of the surviving values, half an
# octave apart (measured: 0.25-0.7 chosen at lam 1e-7..1e-6 per bit beside an MSE in [0, 1]).
UPDATE_CANDIDATES: tuple[float, ...] = tuple(2.0 ** (k / 2) for k in range(-12, 3))

_CHANGED, _CONDITIONAL = 0x01, 0x02
_MAX_ABS_Q = MAX_SUPPORT // 4  # the same margin below the coder's support cap as coding.quantise


def step_from_exponent(e: int) -> float:
    """The float32-exact step ``2^(e/16)`` (the value both encoder and decoder multiply by)."""
    if not -MAX_EXPONENT <= int(e) <= MAX_EXPONENT:
        raise ValueError(f"step exponent {e} outside [-{MAX_EXPONENT}, {MAX_EXPONENT}]")
    return float(np.float32(2.0 ** (int(e) / STEP_DIVISIONS)))


def _check_kind(kind: str) -> str:
    if kind not in UPDATE_KINDS:
        raise ValueError(f"unknown update kind {kind!r}; use one of {', '.join(UPDATE_KINDS)}")
    return kind


@dataclass(frozen=True, eq=False)
class QuantisedUpdate:
    """One quantised update: integers per tensor (0 = no change) and the shared step exponent."""

    kind: str
    exponent: int
    values: dict[str, np.ndarray]  # name -> int32 array of the tensor's shape, network order

    def __post_init__(self) -> None:
        _check_kind(self.kind)
        step_from_exponent(self.exponent)
        for name, v in self.values.items():
            if not isinstance(v, np.ndarray) or v.dtype != np.int32:
                raise ValueError(f"{name}: quantised values must be an int32 array")

    @property
    def step(self) -> float:
        return step_from_exponent(self.exponent)

    def maps(self) -> dict[str, np.ndarray]:
        """name -> boolean change map (``values != 0``)."""
        return {name: v != 0 for name, v in self.values.items()}

    def changed(self) -> int:
        return int(sum(np.count_nonzero(v) for v in self.values.values()))

    def delta(self) -> dict[str, torch.Tensor]:
        """name -> the float32 CPU Δ the decoder reconstructs (the encoder must use exactly this).

        ``q * step`` in float32; for 'dct' those coefficients go through the inverse DCT in float64
        on the CPU and are rounded to float32 once (see :mod:`weightstep.stepping.dct`).
        """
        step = np.float32(self.step)
        out = {}
        for name, v in self.values.items():
            scaled = np.asarray(v.astype(np.float32) * step, dtype=np.float32)  # 0-d stays an array
            if self.kind == "dct":
                with torch.no_grad():
                    coef = torch.from_numpy(scaled.astype(np.float64))
                    out[name] = from_coefficients(coef).to(torch.float32).contiguous()
            else:
                out[name] = torch.from_numpy(np.ascontiguousarray(scaled, dtype=np.float32))
        return out


@dataclass(frozen=True)
class UpdateStats:
    """Sizes of one coded update. ``header_bits`` = flags, step and blob lengths."""

    bytes: int
    map_bits: int
    value_bits: int
    header_bits: int
    changed: int
    total: int
    conditional: bool
    step: float

    def to_dict(self) -> dict:
        return dict(vars(self))


# ---------------------------------------------------------------- quantisation


def _to_numpy(t: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = t.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(t, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("cannot quantise an update with NaN or infinite entries")
    return x


def quantise_update(values: Mapping[str, torch.Tensor | np.ndarray], kind: str, step: float, *,
                    relative: bool = True) -> QuantisedUpdate:
    """Quantise the coded values of an update with one uniform step (rounded to the 2^(1/16) grid).

    ``relative``: ``step`` times the std of the non-zero values of all tensors (falling back to
    their mean absolute value); otherwise ``step`` is absolute. The step is raised where needed so
    that no integer exceeds the coder's support. Zeros (closed gates) stay zero.
    """
    _check_kind(kind)
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"step must be finite and > 0, got {step!r}")
    arrays = {name: _to_numpy(t) for name, t in values.items()}
    if sum(a.size for a in arrays.values()) > MAX_COUNT:
        raise ValueError(f"update has more than {MAX_COUNT} elements")
    nonzero = np.concatenate([a[a != 0].ravel() for a in arrays.values()] + [np.zeros(0)])
    if nonzero.size == 0:
        return QuantisedUpdate(kind, 0, {n: np.zeros(a.shape, np.int32) for n, a in arrays.items()})
    peak = float(np.max(np.abs(nonzero)))
    if peak > 2.0**64 * _MAX_ABS_Q:
        raise ValueError(f"update values up to {peak:g} are too large to code")
    absolute = float(step)
    if relative:
        std, mav = float(np.std(nonzero)), float(np.mean(np.abs(nonzero)))
        absolute *= std if std > 0 else mav
    e = round(STEP_DIVISIONS * math.log2(min(max(absolute, 2.0**-65), 2.0**65)))
    e = max(e, math.ceil(STEP_DIVISIONS * math.log2(peak / _MAX_ABS_Q)), -MAX_EXPONENT)
    while e <= MAX_EXPONENT and step_from_exponent(e) * _MAX_ABS_Q < peak:
        e += 1  # float32 rounding of the step at the support floor
    if e > MAX_EXPONENT:
        raise ValueError(f"step {absolute:g} (or the values' range) needs a step above 2^64")
    step32 = step_from_exponent(e)
    q = {name: quantise_absolute(a, step32, name).values for name, a in arrays.items()}
    return QuantisedUpdate(kind, e, q)


def choose_step(values: Mapping[str, torch.Tensor | np.ndarray], kind: str,
                distortion: Callable[[dict[str, torch.Tensor]], float], lam: float,
                candidates: Sequence[float] = UPDATE_CANDIDATES,
                previous_maps: Mapping[str, np.ndarray] | None = None) -> tuple[QuantisedUpdate, StepSearchReport]:
    """Pick the relative step minimising ``distortion(decoded Δ) + lam * real bits of the coded update``,
    or no change at all (relative step 0, one byte) when nothing pays.

    ``distortion`` receives the decoder's Δ (:meth:`QuantisedUpdate.delta`); it typically applies it
    with :func:`apply_delta` and measures the frame error. Bits are ``8 * len(encode_update(...))``
    with the same ``previous_maps`` the real coding will use. Candidates that round to the same
    step are tried once; ties go to fewer bits. Returns the chosen update and every candidate tried.
    """
    if not candidates:
        raise ValueError("choose_step needs at least one candidate step")
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be finite and >= 0, got {lam!r}")
    tried: list[StepCandidate] = []
    seen: set[int] = set()
    best: QuantisedUpdate | None = None
    best_i = 0
    nothing = QuantisedUpdate(kind, 0, {n: np.zeros(tuple(np.shape(v)), np.int32) for n, v in values.items()})
    for c in (0.0, *candidates):  # 0: send nothing (1 byte), which wins where no step pays
        q = nothing if c == 0.0 else quantise_update(values, kind, float(c))
        if c != 0.0 and q.exponent in seen or (c != 0.0 and q.changed() == 0):
            continue
        if c != 0.0:
            seen.add(q.exponent)
        bits = 8 * len(encode_update(q, previous_maps)[0])
        d = float(distortion(q.delta()))
        if not math.isfinite(d):
            raise ValueError(f"distortion is not finite ({d!r}) at relative step {c}")
        tried.append(StepCandidate(rel_step=float(c), bits=bits, distortion=d, cost=d + lam * bits))
        if best is None or (tried[-1].cost, tried[-1].bits) < (tried[best_i].cost, tried[best_i].bits):
            best, best_i = q, len(tried) - 1
    assert best is not None
    return best, StepSearchReport(lam=float(lam), per_channel=False, candidates=tried, best=best_i)


# ---------------------------------------------------------------- bitstream


def _framed_size(blobs: list[bytes]) -> int:
    """Bytes the blobs take in a frame, their length varints included."""
    size = 0
    for blob in blobs:
        head = bytearray()
        put_varint(head, len(blob))
        size += len(head) + len(blob)
    return size


def _flat_previous(previous_maps: Mapping[str, np.ndarray] | None,
                   shapes: Sequence[tuple[str, tuple[int, ...]]]) -> np.ndarray | None:
    if previous_maps is None:
        return None
    if list(previous_maps) != [name for name, _ in shapes]:
        raise ValueError("previous maps do not name the network's tensors in order")
    parts = []
    for name, shape in shapes:
        m = np.asarray(previous_maps[name])
        if m.dtype != bool or m.shape != shape:
            raise ValueError(f"previous map of {name!r} must be a bool array of shape {shape}")
        parts.append(m.ravel())
    return np.concatenate(parts)


def encode_update(update: QuantisedUpdate, previous_maps: Mapping[str, np.ndarray] | None = None
                  ) -> tuple[bytes, dict[str, np.ndarray], UpdateStats]:
    """Code one quantised update (layout in the module docstring).

    ``previous_maps``: the maps the previous update returned (name -> bool array), or None for
    the first update; ignored for 'dense'. Returns the frame, this update's maps (pass them to
    the next call) and its sizes.
    """
    shapes = [(name, tuple(v.shape)) for name, v in update.values.items()]
    maps = update.maps()
    total = sum(v.size for v in update.values.values())
    prev = _flat_previous(previous_maps, shapes)
    flat = np.concatenate([v.ravel() for v in update.values.values()]) if shapes else np.zeros(0, np.int32)
    changed = flat != 0
    n_changed = int(changed.sum())
    if n_changed == 0:
        stats = UpdateStats(1, 0, 0, 8, 0, total, False, update.step)
        return bytes([0]), maps, stats
    flags = _CHANGED
    head = bytearray()
    put_varint(head, zigzag(update.exponent))
    map_blobs: list[bytes] = []
    if update.kind == "dense":
        values_blob = encode_ints(flat)
    else:
        values_blob = encode_ints(flat[changed])
        map_blobs = [encode_bits(changed)]
        if prev is not None:
            conditional = [encode_bits(changed[~prev]), encode_bits(changed[prev])]
            if _framed_size(conditional) < _framed_size(map_blobs):
                flags |= _CONDITIONAL
                map_blobs = conditional
        for blob in map_blobs:
            put_varint(head, len(blob))
    frame = bytes([flags]) + bytes(head) + b"".join(map_blobs) + values_blob
    map_bits = 8 * sum(map(len, map_blobs))
    stats = UpdateStats(bytes=len(frame), map_bits=map_bits, value_bits=8 * len(values_blob),
                        header_bits=8 * (1 + len(head)), changed=n_changed, total=total,
                        conditional=bool(flags & _CONDITIONAL), step=update.step)
    return frame, maps, stats


def _check_shapes(base_shapes) -> list[tuple[str, tuple[int, ...]]]:
    items = base_shapes.items() if isinstance(base_shapes, Mapping) else base_shapes
    shapes = []
    for name, shape in items:
        shape = tuple(int(d) for d in shape)
        if len(shape) > 8 or any(d < 0 for d in shape):
            raise ValueError(f"shape {shape} of {name!r} is out of bounds")
        shapes.append((str(name), shape))
    if sum(math.prod(s) for _, s in shapes) > MAX_COUNT:
        raise ValueError(f"the network has more than {MAX_COUNT} parameters")
    return shapes


def decode_update(data: bytes, base_shapes: Mapping[str, Sequence[int]] | Sequence[tuple[str, Sequence[int]]],
                  previous_maps: Mapping[str, np.ndarray] | None, kind: str
                  ) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """Decode a frame of :func:`encode_update` into (name -> float32 CPU Δ, name -> bool change map).

    ``base_shapes``: the network's tensors (name, shape) in parameter order. ``previous_maps``:
    the maps the previous decode returned, or None for the first update. Every length is checked;
    anything inconsistent raises :class:`~weightstep.errors.BitstreamError`.
    """
    _check_kind(kind)
    shapes = _check_shapes(base_shapes)
    prev = _flat_previous(previous_maps, shapes)
    total = sum(math.prod(s) for _, s in shapes)
    r = ByteReader(bytes(data), "weight update")
    flags = r.take(1, "flags")[0]
    if flags & ~(_CHANGED | _CONDITIONAL):
        raise BitstreamError(f"weight update: unknown flags {flags:#04x}")
    if not flags & _CHANGED:
        if flags or r.pos != len(r.data):
            raise BitstreamError("weight update: data after an empty update")
        q = QuantisedUpdate(kind, 0, {n: np.zeros(s, np.int32) for n, s in shapes})
        return q.delta(), q.maps()
    if flags & _CONDITIONAL and (kind == "dense" or prev is None):
        raise BitstreamError("weight update: conditional map coding without a previous map")
    exponent = unzigzag(r.varint("step exponent"))
    if abs(exponent) > MAX_EXPONENT:
        raise BitstreamError(f"weight update: step exponent {exponent} out of range")
    if kind == "dense":
        flat = decode_ints(r.take(len(r.data) - r.pos, "values"), total)
        if not flat.any():
            raise BitstreamError("weight update: flagged as changed but every value is zero")
    else:
        lengths = [r.varint("map length") for _ in range(2 if flags & _CONDITIONAL else 1)]
        blobs = [r.take(n, "change map") for n in lengths]
        if flags & _CONDITIONAL:
            changed = np.zeros(total, dtype=bool)
            changed[~prev] = decode_bits(blobs[0], int((~prev).sum()))
            changed[prev] = decode_bits(blobs[1], int(prev.sum()))
        else:
            changed = decode_bits(blobs[0], total)
        n_changed = int(changed.sum())
        if n_changed == 0:
            raise BitstreamError("weight update: flagged as changed but the change map is empty")
        nonzero = decode_ints(r.take(len(r.data) - r.pos, "values"), n_changed)
        if not nonzero.all():
            raise BitstreamError("weight update: a changed element has the value 0")
        flat = np.zeros(total, dtype=np.int32)
        flat[changed] = nonzero
    values, offset = {}, 0
    for name, shape in shapes:
        size = math.prod(shape)
        values[name] = flat[offset:offset + size].reshape(shape).copy()
        offset += size
    q = QuantisedUpdate(kind, exponent, values)
    return q.delta(), q.maps()
