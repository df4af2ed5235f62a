"""Uniform scalar quantisation of network parameters, the rate-distortion step search, serialisation.

Steps
-----
A tensor is quantised with one step (``per_channel=False``) or one step per output channel,
i.e. per index along dim 0 (``per_channel=True``; tensors of fewer than 2 dimensions always
use one step). Steps are float32 and travel in the stream as float32; ``dequantise`` computes
``float32(q) * step`` in float32, so encoder and decoder agree bit for bit.

:func:`quantise` takes a *relative* step ``c``: the absolute step is ``c`` times the standard
deviation of the tensor (or of each channel), so one ``c`` suits tensors of any magnitude.
A tensor (channel) with zero spread falls back to its mean absolute value, then to 1.0; a
channel falls back to its tensor's spread. A step is enlarged where needed so that every
integer fits the entropy coder's support cap. :func:`quantise_absolute` takes explicit steps.

Step search (in the style of C3)
--------------------------------
:func:`search_step` tries each relative step of a log grid, shared by all tensors (a 1-D
search: cheap, standard, and it keeps relative precision equal across layers), and keeps the
one minimising ``distortion(dequantised) + lam * bits`` where ``bits`` is the REAL size of
``pack_tensors`` (entropy-coded integers, steps and framing), not an estimate.

Serialisation
-------------
``pack_tensors`` writes, per tensor, in the order given (LEB128 varints, little-endian)::

    count     varint   number of tensors (once, first)
    flags     uint8    bit 0: per-channel steps; other bits zero
    ndim, dims varints the shape, checked against what the decoder expects
    steps     float32  1 or shape[0] of them, each finite and > 0
    length    varint   byte length of the entropy blob
    blob      bytes    :func:`weightstep.coding.entropy.encode_ints` of the integers (C order)

Names are not stored: the decoder knows the network (names, order, shapes) from its config
and ``unpack_tensors`` refuses any stream that disagrees with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from weightstep.coding.entropy import MAX_COUNT, MAX_SUPPORT, decode_ints, encode_ints
from weightstep.coding.framing import ByteReader, put_varint
from weightstep.errors import BitstreamError

__all__ = [
    "QuantisedTensor",
    "DEFAULT_CANDIDATES",
    "relative_steps",
    "quantise",
    "quantise_absolute",
    "StepCandidate",
    "StepSearchReport",
    "search_step",
    "pack_tensors",
    "unpack_tensors",
]

# Relative steps tried by default: 2^-10 .. 2^-2 times the std, half an octave apart (17 values).
DEFAULT_CANDIDATES: tuple[float, ...] = tuple(2.0 ** (k / 2) for k in range(-20, -3))

_MAX_ABS_Q = MAX_SUPPORT // 4  # largest |integer| quantise() produces (margin below the coder's cap)
_MIN_STEP = float(np.finfo(np.float32).tiny)
_MAX_NDIM = 8
_FLAG_PER_CHANNEL = 1


@dataclass(frozen=True, eq=False)
class QuantisedTensor:
    """One quantised parameter tensor: ``values * step`` (step broadcast along dim 0)."""

    name: str
    shape: tuple[int, ...]
    step: np.ndarray  # float32, shape (1,) per tensor or (shape[0],) per output channel
    values: np.ndarray  # int32, shape ``shape``

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        step = np.ascontiguousarray(self.step, dtype=np.float32).reshape(-1)
        values = np.asarray(self.values, order="C")
        if values.dtype != np.int32:
            raise ValueError(f"{self.name}: values must be int32, got {values.dtype}")
        if values.shape != self.shape:
            raise ValueError(f"{self.name}: values shape {values.shape} != shape {self.shape}")
        if step.size != 1 and (len(self.shape) < 2 or step.size != self.shape[0]):
            raise ValueError(f"{self.name}: {step.size} steps for shape {self.shape} (need 1 or shape[0], ndim >= 2)")
        if not (np.isfinite(step).all() and (step > 0).all()):
            raise ValueError(f"{self.name}: steps must be finite and > 0")
        object.__setattr__(self, "step", step)
        object.__setattr__(self, "values", values)

    @property
    def per_channel(self) -> bool:
        """True when each output channel (index along dim 0) has its own step."""
        return self.step.size > 1

    def dequantise(self) -> torch.Tensor:
        """float32(q) * step in float32 (exact and identical on encoder and decoder)."""
        step = self.step if self.step.size == 1 else self.step.reshape((-1,) + (1,) * (len(self.shape) - 1))
        out = self.values.astype(np.float32) * step.astype(np.float32)
        return torch.from_numpy(np.asarray(out, dtype=np.float32, order="C").reshape(self.shape).copy())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantisedTensor):
            return NotImplemented
        return (self.name == other.name and self.shape == other.shape
                and np.array_equal(self.step, other.step) and np.array_equal(self.values, other.values))

    __hash__ = None  # type: ignore[assignment]


# ---------------------------------------------------------------- quantisation


def _as_numpy(tensor: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(tensor, torch.Tensor):
        tensor = tensor.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(tensor, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("cannot quantise a tensor with NaN or infinite entries")
    return x


def _spread(x: np.ndarray, axis: int | None) -> np.ndarray:
    """Standard deviation, falling back to the mean absolute value, then to 1.0."""
    std = np.std(x, axis=axis)
    mav = np.mean(np.abs(x), axis=axis)
    return np.where(std > 0, std, np.where(mav > 0, mav, 1.0))


def relative_steps(tensor: torch.Tensor | np.ndarray, rel_step: float, per_channel: bool = False) -> np.ndarray:
    """Absolute float32 steps for relative step ``rel_step``: 1 per tensor or shape[0] per channel."""
    if not (math.isfinite(rel_step) and rel_step > 0):
        raise ValueError(f"relative step must be finite and > 0, got {rel_step!r}")
    x = _as_numpy(tensor)
    if x.size == 0:
        return np.ones(1, dtype=np.float32)
    spread = _spread(x.ravel(), None)
    peak = np.max(np.abs(x))
    if per_channel and x.ndim >= 2 and x.shape[0] > 1:
        rows = x.reshape(x.shape[0], -1)
        std = np.std(rows, axis=1)
        spread = np.where(std > 0, std, spread)
        peak = np.max(np.abs(rows), axis=1)
    step = np.maximum(rel_step * np.atleast_1d(spread), np.atleast_1d(peak) / _MAX_ABS_Q)
    return np.maximum(step, _MIN_STEP).astype(np.float32)


def quantise_absolute(tensor: torch.Tensor | np.ndarray, steps: float | np.ndarray, name: str = "") -> QuantisedTensor:
    """Round ``tensor / step`` to the nearest integer (ties to even) with explicit absolute steps."""
    x = _as_numpy(tensor)
    step = np.asarray(steps, dtype=np.float32).reshape(-1)
    if step.size != 1 and (x.ndim < 2 or step.size != x.shape[0]):
        raise ValueError(f"{name}: {step.size} steps for shape {x.shape} (need 1 or shape[0], ndim >= 2)")
    if not (np.isfinite(step).all() and (step > 0).all()):
        raise ValueError(f"{name}: steps must be finite and > 0")
    if x.size > MAX_COUNT:
        raise ValueError(f"{name}: {x.size} entries exceed the coder's limit of {MAX_COUNT}")
    b = step.astype(np.float64).reshape((-1,) + (1,) * (x.ndim - 1)) if step.size > 1 else float(step[0])
    q = np.rint(x / b)
    if q.size and (q.max() - q.min() + 1 > MAX_SUPPORT):
        raise ValueError(f"{name}: step too fine, the integers span more than {MAX_SUPPORT} values")
    return QuantisedTensor(name=name, shape=x.shape, step=step, values=q.astype(np.int32))


def quantise(tensor: torch.Tensor | np.ndarray, step: float, per_channel: bool = False, name: str = "") -> QuantisedTensor:
    """Quantise with relative step ``step`` (times the tensor's, or each channel's, std)."""
    return quantise_absolute(tensor, relative_steps(tensor, step, per_channel), name)


# ---------------------------------------------------------------- step search


@dataclass(frozen=True)
class StepCandidate:
    """One point of the search: relative step, real coded bits, distortion, and D + lam * bits."""

    rel_step: float
    bits: int
    distortion: float
    cost: float


@dataclass(frozen=True)
class StepSearchReport:
    """Every candidate tried by :func:`search_step` and the index of the one kept."""

    lam: float
    per_channel: bool
    candidates: list[StepCandidate] = field(default_factory=list)
    best: int = 0

    @property
    def chosen(self) -> StepCandidate:
        return self.candidates[self.best]

    def to_dict(self) -> dict:
        return {"lam": self.lam, "per_channel": self.per_channel, "best": self.best,
                "candidates": [vars(c) for c in self.candidates]}


def search_step(
    params: dict[str, torch.Tensor],
    distortion: Callable[[dict[str, torch.Tensor]], float],
    lam: float,
    candidates: Sequence[float] = DEFAULT_CANDIDATES,
    per_channel: bool = False,
) -> tuple[dict[str, QuantisedTensor], StepSearchReport]:
    """Pick the shared relative step minimising ``distortion(dequantised) + lam * real bits``.

    ``distortion`` receives CPU float32 tensors (the exact decoder-side values) under the same
    names as ``params`` and returns a float (its units fix those of ``lam``: distortion per bit).
    Bits are ``8 * len(pack_tensors(...))``, the real size of the tensors in the stream.
    Ties go to the cheaper candidate.
    """
    if not candidates:
        raise ValueError("search_step needs at least one candidate step")
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be finite and >= 0, got {lam!r}")
    tried: list[StepCandidate] = []
    best_q: dict[str, QuantisedTensor] | None = None
    best_i = 0
    for c in candidates:
        q = {name: quantise(t, float(c), per_channel, name=name) for name, t in params.items()}
        bits = 8 * len(pack_tensors(list(q.values())))
        d = float(distortion({name: qt.dequantise() for name, qt in q.items()}))
        if not math.isfinite(d):
            raise ValueError(f"distortion is not finite ({d!r}) at relative step {c}")
        tried.append(StepCandidate(rel_step=float(c), bits=bits, distortion=d, cost=d + lam * bits))
        b = tried[best_i]
        if best_q is None or (tried[-1].cost, tried[-1].bits) < (b.cost, b.bits):
            best_q, best_i = q, len(tried) - 1
    assert best_q is not None
    return best_q, StepSearchReport(lam=float(lam), per_channel=per_channel, candidates=tried, best=best_i)


# ---------------------------------------------------------------- serialisation


def pack_tensors(tensors: Sequence[QuantisedTensor]) -> bytes:
    """Serialise quantised tensors in order (see the module docstring for the layout)."""
    out = bytearray()
    put_varint(out, len(tensors))
    for t in tensors:
        out.append(_FLAG_PER_CHANNEL if t.per_channel else 0)
        put_varint(out, len(t.shape))
        for d in t.shape:
            put_varint(out, d)
        out += t.step.astype("<f4").tobytes()
        blob = encode_ints(t.values)
        put_varint(out, len(blob))
        out += blob
    return bytes(out)


def _check_expected(expected: Sequence[tuple[str, Sequence[int]]]) -> list[tuple[str, tuple[int, ...]]]:
    checked = []
    for name, shape in expected:
        shape = tuple(int(d) for d in shape)
        if len(shape) > _MAX_NDIM or any(d < 0 for d in shape) or math.prod(shape) > MAX_COUNT:
            raise ValueError(f"expected shape {shape} of {name!r} is out of bounds")
        checked.append((str(name), shape))
    return checked


def read_flags(r: ByteReader, name: str) -> bool:
    """A tensor's flags byte (both tensor layouts): True for per-channel steps; unknown bits refused."""
    flags = r.take(1, f"flags of {name!r}")[0]
    if flags & ~_FLAG_PER_CHANNEL:
        raise BitstreamError(f"tensor stream: unknown flags {flags:#x} for {name!r}")
    return bool(flags & _FLAG_PER_CHANNEL)


def step_count(per_channel: bool, name: str, shape: tuple[int, ...]) -> int:
    """How many steps a tensor of ``shape`` stores: 1, or shape[0] (refused where it cannot be per channel)."""
    if not per_channel:
        return 1
    if len(shape) < 2 or shape[0] < 2:
        raise BitstreamError(f"tensor stream: per-channel steps on {name!r} of shape {shape}")
    return shape[0]


def unpack_tensors(data: bytes, expected: Sequence[tuple[str, Sequence[int]]]) -> list[QuantisedTensor]:
    """Read tensors written by :func:`pack_tensors`, checking count and shapes against ``expected``."""
    want = _check_expected(expected)
    r = ByteReader(bytes(data), "tensor stream")
    count = r.varint("tensor count")
    if count != len(want):
        raise BitstreamError(f"tensor stream: holds {count} tensors, the network has {len(want)}")
    tensors = []
    for name, shape in want:
        per_channel = read_flags(r, name)
        ndim = r.varint(f"rank of {name!r}")
        if ndim > _MAX_NDIM:
            raise BitstreamError(f"tensor stream: rank {ndim} of {name!r} is out of bounds")
        got = tuple(r.varint(f"shape of {name!r}") for _ in range(ndim))
        if got != shape:
            raise BitstreamError(f"tensor stream: {name!r} has shape {got}, the network expects {shape}")
        n_steps = step_count(per_channel, name, shape)
        step = np.frombuffer(r.take(4 * n_steps, f"steps of {name!r}"), dtype="<f4").astype(np.float32)
        if not (np.isfinite(step).all() and (step > 0).all()):
            raise BitstreamError(f"tensor stream: invalid step for {name!r}")
        blob = r.take(r.varint(f"length of {name!r}"), f"data of {name!r}")
        try:
            values = decode_ints(blob, math.prod(shape)).reshape(shape)
        except BitstreamError as exc:
            raise BitstreamError(f"tensor {name!r}: {exc}") from None
        tensors.append(QuantisedTensor(name=name, shape=shape, step=step, values=values))
    if r.pos != len(r.data):
        raise BitstreamError(f"tensor stream: {len(r.data) - r.pos} bytes after the last tensor")
    return tensors
