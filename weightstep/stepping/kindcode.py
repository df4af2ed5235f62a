"""Pieces shared by the coders of the factorised and modulation update kinds (:mod:`.lowrank`, :mod:`.film`).

- the network's tensor list as the caller gives it (a mapping or (name, shape) pairs, or tensors);
- zigzag step exponents on the 2^(e/16) grid of :mod:`weightstep.stepping.code`;
- bit-packed small fields (a tensor's rank, an on/off flag) with zero padding checked;
- a tiny rate-distortion search record: every candidate costs ``distortion + lam * 8 * bytes``.

Nothing here reads a length from the data without a bound: the field widths come from the
shapes the decoder already knows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from weightstep.coding.entropy import MAX_COUNT, MAX_SUPPORT
from weightstep.coding.framing import ByteReader, unzigzag, zigzag
from weightstep.errors import BitstreamError
from weightstep.stepping.code import MAX_EXPONENT, STEP_DIVISIONS, step_from_exponent

__all__ = ["MAX_ABS_Q", "NONZERO_BITS", "value_bits", "Shapes", "tensor_shapes", "zigzag", "unzigzag", "pack_fields", "unpack_fields",
           "exponent_near", "read_exponent", "quantise_to", "Search"]

MAX_ABS_Q = MAX_SUPPORT // 4  # largest |integer| written (the margin code.py keeps below the coder's cap)
_MAX_NDIM = 8
NONZERO_BITS = math.log2(2 * math.e)  # a Laplace-coded value |x| >> step costs about log2(|x| / step) + log2(2e)


def register_base(module: torch.nn.Module, base: Mapping[str, torch.Tensor], lr: float, what: str) -> tuple[str, ...]:
    """Check ``lr`` and ``base`` and keep the previous weights as frozen float32 buffers ``base_i``
    of ``module`` (network order); returns the names."""
    if not base:
        raise ValueError(f"{what} needs at least one base tensor")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be finite and > 0, got {lr!r}")
    for i, (name, tensor) in enumerate(base.items()):
        tensor = tensor.detach().to(torch.float32).clone()
        if not torch.isfinite(tensor).all():
            raise ValueError(f"base tensor {name!r} has non-finite entries")
        module.register_buffer(f"base_{i}", tensor)
    return tuple(base)


def value_bits(ratio: torch.Tensor) -> torch.Tensor:
    """Differentiable bits of values of magnitude ``ratio`` = |x| / step (element-wise, ratio >= 0).

    ``log2(1 + r) + log2(2e) (1 - exp(-r))``: 0 at 0, about log2(r) + 2.4 for large r (a
    Laplace-coded integer of that size, sign and model overhead included), and a finite slope at
    0 that pushes values which do little to exactly zero.
    """
    return torch.log2(1.0 + ratio) + NONZERO_BITS * (1.0 - torch.exp(-ratio))

Shapes = Mapping[str, Sequence[int]] | Sequence[tuple[str, Sequence[int]]]


def tensor_shapes(shapes: Shapes | Mapping[str, torch.Tensor]) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) pairs in order from a mapping or pairs of shapes (or of tensors); bounds checked.

    The shapes come from the caller, not the data, so a bad one is a ValueError.
    """
    items = shapes.items() if isinstance(shapes, Mapping) else shapes
    out: list[tuple[str, tuple[int, ...]]] = []
    for name, shape in items:
        if isinstance(shape, (torch.Tensor, np.ndarray)):
            shape = tuple(shape.shape)
        shape = tuple(int(d) for d in shape)
        if len(shape) > _MAX_NDIM or any(d < 0 for d in shape):
            raise ValueError(f"shape {shape} of {name!r} is out of bounds")
        out.append((str(name), shape))
    if len({name for name, _ in out}) != len(out):
        raise ValueError("tensor names repeat")
    if sum(math.prod(s) for _, s in out) > MAX_COUNT:
        raise ValueError(f"the network has more than {MAX_COUNT} parameters")
    return out


def read_exponent(r: ByteReader, what: str) -> int:
    e = unzigzag(r.varint(f"{what} exponent"))
    if abs(e) > MAX_EXPONENT:
        raise BitstreamError(f"{r.what}: {what} exponent {e} out of range")
    return e


def exponent_near(step: float) -> int:
    """The grid exponent whose step ``2^(e/16)`` is nearest ``step`` (clamped to the grid's range)."""
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"step must be finite and > 0, got {step!r}")
    e = round(STEP_DIVISIONS * math.log2(step))
    return max(-MAX_EXPONENT, min(MAX_EXPONENT, e))


def quantise_to(x: np.ndarray, exponent: int) -> np.ndarray | None:
    """``rint(x / step)`` as int32 (ties to even), or None when an integer would exceed ``MAX_ABS_Q``
    (or the exponent is off the grid)."""
    if abs(exponent) > MAX_EXPONENT:
        return None
    step = step_from_exponent(exponent)
    q = np.rint(np.asarray(x, dtype=np.float64) / step)
    if q.size and float(np.max(np.abs(q))) > MAX_ABS_Q:
        return None
    return q.astype(np.int32)


def pack_fields(fields: Sequence[tuple[int, int]]) -> bytes:
    """(value, width) pairs packed least significant bit first into whole bytes (padding zero)."""
    acc, nbits = 0, 0
    for value, width in fields:
        if not 0 <= value < (1 << width) or (width == 0 and value):
            raise ValueError(f"field value {value} does not fit {width} bits")
        acc |= value << nbits
        nbits += width
    return acc.to_bytes((nbits + 7) // 8, "little")


def unpack_fields(r: ByteReader, widths: Sequence[int], what: str) -> list[int]:
    """Inverse of :func:`pack_fields`; the padding bits must be zero."""
    nbits = sum(widths)
    acc = int.from_bytes(r.take((nbits + 7) // 8, what), "little")
    if acc >> nbits:
        raise BitstreamError(f"{r.what}: non-zero padding after the {what}")
    out = []
    for width in widths:
        out.append(acc & ((1 << width) - 1))
        acc >>= width
    return out


@dataclass
class Search:
    """Rate-distortion search bookkeeping: ``cost = distortion + lam * bits``; ties go to fewer bits.

    Every candidate's (cost, bits, distortion) is kept; only the best one's frame, Δ and payload.
    """

    lam: float
    distortion: Callable[[dict[str, torch.Tensor]], float]
    tried: dict = field(default_factory=dict)  # key -> (cost, bits, distortion), or None if invalid
    best_key: object = None
    best_payload: tuple | None = None  # (data, delta, payload) of best_key

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"lam_per_bit must be finite and >= 0, got {self.lam!r}")

    def offer(self, key, build: Callable[[], tuple[bytes, dict[str, torch.Tensor], object] | None]) -> float:
        """Evaluate candidate ``key`` once (``build`` -> (data, delta, payload) or None if invalid)."""
        if key in self.tried:
            entry = self.tried[key]
            return entry[0] if entry is not None else math.inf
        built = build()
        if built is None:
            self.tried[key] = None
            return math.inf
        data, delta, _ = built
        d = float(self.distortion(delta))
        if not math.isfinite(d):
            raise ValueError(f"distortion is not finite ({d!r})")
        bits = 8 * len(data)
        entry = (d + self.lam * bits, bits, d)
        self.tried[key] = entry
        if self.best_key is None or (entry[0], entry[1]) < self.tried[self.best_key][:2]:
            self.best_key, self.best_payload = key, built
        return entry[0]

    def descend(self, candidates: Iterable[tuple[object, Callable[[], tuple | None]]]) -> None:
        """Offer (key, build) pairs in order until the cost has risen twice in a row past the best of
        them. Along one step size D + lambda R is about unimodal, so a search stops near its minimum
        instead of rendering every step (the coders' renders were 0.3 s of a 2 s grid step)."""
        best, rises = math.inf, 0
        for key, build in candidates:
            cost = self.offer(key, build)
            if cost < best:
                best, rises = cost, 0
            elif math.isfinite(cost) or math.isfinite(best):  # (invalid candidates before any valid one: go on)
                rises += 1
                if rises == 2:
                    return

    @property
    def best(self) -> tuple[float, int, float, tuple]:
        """(cost, bits, distortion, (data, delta, payload)) of the best candidate."""
        return (*self.tried[self.best_key], self.best_payload)

    def evaluated(self) -> int:
        return sum(1 for entry in self.tried.values() if entry is not None)
