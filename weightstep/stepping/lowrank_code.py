"""Coding a :class:`~weightstep.stepping.lowrank.LowRankUpdate`: ranks and step by D + lam R, and the bytes.

Which tensors get what (:func:`plan_tensors`, the same on encoder and decoder):

- names in ``frozen`` (e.g. a latent-grid network's context model, which never changes the
  picture) and empty tensors: no update, nothing coded;
- a tensor is viewed as a matrix (m, n) after dropping leading size-1 dims: m = the first
  remaining dim (output channels), n = the product of the rest. So a linear (out, in) stays
  (out, in), a conv (out, in, kh, kw) is (out, in*kh*kw), and a latent plane (1, 1, H, W) is
  (H, W) (a low-rank image update rather than a useless 1-row matrix);
- matrices with min(m, n) >= 2 and m + n < m * n: ΔW = U V with U (m x r), V (r x n);
- everything else (biases, scalars, 1-D parameters, 2x2 and 1-row matrices): a dense update,
  which the coder switches on or off per tensor. Biases are kept (not left fixed) because they
  are a few values per layer and carry the cheapest changes there are: a bias shift of the
  output layer is a per-channel brightness change of the whole frame, one of a SIREN's first
  layer a shift of its sines' phases (a translation).

Coding (:func:`code_lowrank`): the fitted ΔW of each matrix is factorised by SVD, ΔW = P S Q^T, and
truncated to rank k with *balanced* factors U = P_k S_k^(1/2), V = S_k^(1/2) Q_k^T (then every coded
value moves ΔW equally, so one uniform step fits all of them). U is quantised, V is re-fitted by
least squares to the quantised U and quantised, and rank components whose quantised column or row
is all zero are dropped. Ranks come from {0, 1, 2, 4, ..., max_rank}: first one shared rank for all
matrices times a grid of steps (with every dense tensor on), then half an octave either way, then
a greedy per-tensor pass over the ranks (and the on/off of each dense tensor), then a quarter
octave either way; every candidate costs distortion(decoded Δ) + lam * 8 * its bytes, and the
empty update (1 byte) is always a candidate.

Reconstruction (:func:`lowrank_delta`, shared by encoder and decoder): ΔW = float32((qU @ qV) * step²)
with the integer product taken exactly in int64 (|q| <= 2^18, rank <= 127), the scaling in float64
and one rounding to float32; dense tensors float32(q * step). No BLAS, so bit-identical everywhere.

Frame layout (one blob per frame)::

    head    uint8    bit 0: the update changes something (else the frame is this one byte, = 0)
                     bits 1-7: R, the largest rank coded in this frame (0 when only dense tensors)
    fields  bits     per coded tensor in network order, least significant bit first, zero padded to
                     a byte: a matrix's rank k in bit_length(min(R, min(m, n))) bits; a dense
                     tensor's on/off in 1 bit
    e       varint   zigzag step exponent: step = 2^(e/16), |e| <= 1024
    values  encode_ints to the end (encode_compact_ints, a 5-byte model instead of 17, in the
            warp steps of streams from format 5): per tensor in order, U (m x k, C order) then
            V (k x n), or the dense tensor's values (flat, C order) when on

An all-zero update is the single byte 0. The decoder derives every count from the shapes and the
fields (each rank at most min(R, m, n) <= 127; R at most the largest min(m, n)), so no size in the
data is trusted; the largest allocation is the network's own size. A frame that codes an all-zero
rank component or dense tensor, or whose R is not its largest rank, is refused (the encoder never
writes one).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from weightstep.coding.compact_ints import decode_compact_ints, encode_compact_ints
from weightstep.coding.entropy import MAX_COUNT, decode_ints, encode_ints
from weightstep.coding.framing import ByteReader, put_varint
from weightstep.errors import BitstreamError
from weightstep.stepping.code import STEP_DIVISIONS, step_from_exponent
from weightstep.stepping.kindcode import (
    MAX_ABS_Q,
    Search,
    Shapes,
    exponent_near,
    pack_fields,
    quantise_to,
    read_exponent,
    tensor_shapes,
    unpack_fields,
    zigzag,
)

__all__ = ["MAX_RANK", "TensorPlan", "plan_tensors", "rank_levels", "lowrank_delta", "code_lowrank",
           "decode_lowrank"]

MAX_RANK = 127  # R lives in 7 bits of the head byte
# Step grid: whole octaves from 2^-6 to 2^1 times the std of the coded values, then half and
# quarter octaves around the best (the l0/dct coder settles at 0.25-0.7; factors need the same range).
OCTAVES = tuple(range(-6, 2))

@dataclass(frozen=True)
class TensorPlan:
    """How one tensor is updated: a factorised (rows x cols) matrix, or dense when ``full_rank`` is 0."""

    name: str
    shape: tuple[int, ...]
    rows: int
    cols: int
    full_rank: int  # min(rows, cols) for a factorised matrix; 0 for a dense tensor

    @property
    def factorised(self) -> bool:
        return self.full_rank > 0


def plan_tensors(shapes: Shapes, frozen: frozenset[str] = frozenset()) -> list[TensorPlan]:
    """The coded tensors in network order (see the module docstring for the rules)."""
    plans = []
    for name, shape in tensor_shapes(shapes):
        size = math.prod(shape)
        if name in frozen or size == 0:
            continue
        dims = list(shape)
        while len(dims) > 1 and dims[0] == 1:
            dims.pop(0)
        m, n = (dims[0], size // dims[0]) if len(dims) >= 2 else (1, size)
        if min(m, n) >= 2 and m + n < m * n:
            plans.append(TensorPlan(name, shape, m, n, min(m, n)))
        else:
            plans.append(TensorPlan(name, shape, 1, size, 0))
    return plans


def rank_levels(max_rank: int) -> tuple[int, ...]:
    """Ranks the coder tries: 0, 1, 2, 4, ... below ``max_rank``, and ``max_rank``."""
    levels = {0, int(max_rank)}
    k = 1
    while k < max_rank:
        levels.add(k)
        k *= 2
    return tuple(sorted(levels))


# ---------------------------------------------------------------- reconstruction and bytes

# plan name -> (qU int32 (m, k), qV int32 (k, n)) for a factorised matrix, or int32 (size,) for a dense tensor
Coded = dict[str, tuple[np.ndarray, np.ndarray] | np.ndarray]


def lowrank_delta(shapes: Shapes, plans: list[TensorPlan], exponent: int, coded: Coded) -> dict[str, torch.Tensor]:
    """The float32 CPU Δ of every name from the integers (the encoder and decoder both call this)."""
    step = step_from_exponent(exponent)
    out = {}
    by_name = {plan.name: plan for plan in plans}
    for name, shape in tensor_shapes(shapes):
        item = coded.get(name)
        if item is None:
            out[name] = torch.zeros(shape, dtype=torch.float32)
            continue
        if by_name[name].factorised:
            qu, qv = item
            product = qu.astype(np.int64) @ qv.astype(np.int64)  # exact: |q| <= 2^18, k <= 127
            value = product.astype(np.float64) * (step * step)  # step * step is exact in float64
        else:
            value = item.astype(np.float64) * step
        value = value.astype(np.float32).reshape(shape)
        if not np.isfinite(value).all():
            raise ValueError(f"the update of {name!r} overflows float32")
        out[name] = torch.from_numpy(np.ascontiguousarray(value))
    return out


def _frame(plans: list[TensorPlan], exponent: int, coded: Coded, compact: bool = False) -> bytes:
    if not coded:
        return bytes([0])
    ranks = {name: item[0].shape[1] for name, item in coded.items() if isinstance(item, tuple)}
    top = max(ranks.values(), default=0)
    fields, values = [], []
    for plan in plans:
        item = coded.get(plan.name)
        if plan.factorised:
            k = ranks.get(plan.name, 0)
            fields.append((k, min(top, plan.full_rank).bit_length()))
            if k:
                values += [item[0].ravel(), item[1].ravel()]
        else:
            fields.append((int(item is not None), 1))
            if item is not None:
                values.append(item.ravel())
    head = bytearray([1 | (top << 1)]) + pack_fields(fields)
    put_varint(head, zigzag(exponent))
    return bytes(head) + (encode_compact_ints if compact else encode_ints)(np.concatenate(values))


def decode_lowrank(data: bytes, shapes: Shapes, frozen: frozenset[str] = frozenset(),
                   compact: bool = False) -> dict[str, torch.Tensor]:
    """The Δ (float32 CPU, every name in ``shapes``) of a :func:`code_lowrank` frame (``compact``: its
    values in the compact integer layout, as ``code_lowrank(..., compact=True)`` writes).

    ``shapes``: name -> shape, or (name, shape) pairs, in network order; ``frozen`` as given to the
    update. Anything damaged, foreign or out of bounds raises BitstreamError before any allocation
    larger than the network itself.
    """
    shape_list = tensor_shapes(shapes)
    plans = plan_tensors(shape_list, frozenset(frozen))
    r = ByteReader(bytes(data), "lowrank update")
    head = r.take(1, "head")[0]
    if not head & 1:
        if head or r.pos != len(r.data):
            raise BitstreamError("lowrank update: data after an empty update")
        return lowrank_delta(shape_list, plans, 0, {})
    top = head >> 1
    if top > max((p.full_rank for p in plans), default=0):
        raise BitstreamError(f"lowrank update: rank {top} exceeds every matrix")
    widths = [min(top, p.full_rank).bit_length() if p.factorised else 1 for p in plans]
    fields = unpack_fields(r, widths, "rank fields")
    count, layout = 0, []
    for plan, k in zip(plans, fields, strict=True):
        if plan.factorised and k > min(top, plan.full_rank):
            raise BitstreamError(f"lowrank update: rank {k} of {plan.name!r} out of range")
        size = k * (plan.rows + plan.cols) if plan.factorised else k * plan.cols
        layout.append((plan, k, size))
        count += size
    if count == 0:
        raise BitstreamError("lowrank update: flagged as changed but codes nothing")
    if top and max(k for p, k in zip(plans, fields, strict=True) if p.factorised) != top:
        raise BitstreamError("lowrank update: the largest rank does not match the head")
    if count > MAX_COUNT:
        raise BitstreamError(f"lowrank update: {count} values exceed the coder's limit")
    exponent = read_exponent(r, "step")
    flat = (decode_compact_ints if compact else decode_ints)(r.rest(), count)
    if flat.size and int(np.max(np.abs(flat.astype(np.int64)))) > MAX_ABS_Q:
        raise BitstreamError("lowrank update: an integer is out of range")
    coded: Coded = {}
    offset = 0
    for plan, k, size in layout:
        if not k:
            continue
        chunk = flat[offset:offset + size]
        offset += size
        if plan.factorised:
            qu = chunk[:plan.rows * k].reshape(plan.rows, k)
            qv = chunk[plan.rows * k:].reshape(k, plan.cols)
            if not (qu.any(axis=0).all() and qv.any(axis=1).all()):
                raise BitstreamError(f"lowrank update: an empty rank component in {plan.name!r}")
            coded[plan.name] = (qu, qv)
        else:
            if not chunk.any():
                raise BitstreamError(f"lowrank update: {plan.name!r} is switched on but all zero")
            coded[plan.name] = chunk
    try:
        return lowrank_delta(shape_list, plans, exponent, coded)
    except ValueError as exc:
        raise BitstreamError(f"lowrank update: {exc}") from None


# ---------------------------------------------------------------- encoder


def _quantise_plan(plan: TensorPlan, rank: int, exponent: int, fitted: np.ndarray, svd) -> object:
    """The integers of one tensor at ``rank`` (on/off for dense) and ``exponent``; None = nothing; False = overflow."""
    if rank == 0:
        return None
    step = step_from_exponent(exponent)
    if not plan.factorised:
        q = quantise_to(fitted, exponent)
        return False if q is None else (q if q.any() else None)
    p, s, qt = svd
    k = min(rank, int(np.count_nonzero(s > 0)))
    if k == 0:
        return None
    root = np.sqrt(s[:k])
    qu = quantise_to(p[:, :k] * root, exponent)
    if qu is None:
        return False
    qu = qu[:, qu.any(axis=0)]
    if qu.shape[1] == 0:
        return None
    v = np.linalg.lstsq(qu.astype(np.float64) * step, fitted, rcond=None)[0]  # best V for the quantised U
    qv = quantise_to(v, exponent)
    if qv is None:
        return False
    keep = qv.any(axis=1)
    qu, qv = qu[:, keep], qv[keep]
    if qv.shape[0] == 0:
        return None
    return (np.ascontiguousarray(qu), np.ascontiguousarray(qv))


def code_lowrank(update, distortion: Callable[[dict[str, torch.Tensor]], float],
                 lam_per_bit: float, *, greedy: bool = True, compact: bool = False
                 ) -> tuple[bytes, dict[str, torch.Tensor], dict]:
    """Quantise and code ``update`` (a LowRankUpdate), choosing ranks and step by distortion(decoded Δ) + lam_per_bit * bits.

    ``distortion`` gets the decoder's Δ (float32 CPU, every name). Returns (frame, that Δ, facts):
    bytes, changed (non-zero integers), values (integers coded), step, exponent, rank (the largest),
    ranks (name -> rank, or 0/1 for a dense tensor), distortion, bits, cost, candidates (evaluated).
    ``greedy`` adds the per-tensor pass over ranks after the shared-rank search; ``compact`` writes
    the values with :func:`~weightstep.coding.compact_ints.encode_compact_ints` (warp steps of format 5).
    """
    shapes = [(name, tuple(b.shape)) for name, b in update.base().items()]
    plans = update.plans
    fitted = update.fitted()
    svds = {p.name: np.linalg.svd(fitted[p.name], full_matrices=False) for p in plans if p.factorised}
    search = Search(float(lam_per_bit), distortion)

    def build(ranks: tuple[int, ...], exponent: int):
        coded: Coded = {}
        for plan, rank in zip(plans, ranks, strict=True):
            item = _quantise_plan(plan, rank, exponent, fitted[plan.name], svds.get(plan.name))
            if item is False:
                return None
            if item is not None:
                coded[plan.name] = item
        exponent = exponent if coded else 0
        return (_frame(plans, exponent, coded, compact), lowrank_delta(shapes, plans, exponent, coded),
                (exponent, coded))

    levels = rank_levels(update.max_rank)
    empty = tuple(0 for _ in plans)
    search.offer(("empty",), lambda: build(empty, 0))
    # reference step: the std of every value coded at full rank (balanced factors and dense values)
    parts = []
    for p in plans:
        if p.factorised:
            u, s, vt = svds[p.name]
            parts += [u * np.sqrt(s)[None, :], np.sqrt(s)[:, None] * vt]
        else:
            parts.append(fitted[p.name])
    spread = np.concatenate([a.ravel() for a in parts]) if parts else np.zeros(0)
    spread = spread[spread != 0]
    if spread.size:
        e_ref = exponent_near(float(np.std(spread)) or float(np.mean(np.abs(spread))))
        octave = STEP_DIVISIONS

        def shared(k: int) -> tuple[int, ...]:
            return tuple(min(k, p.full_rank) if p.factorised else 1 for p in plans)

        for k in levels[1:]:
            for j in OCTAVES:
                search.offer((shared(k), e_ref + j * octave), lambda k=k, j=j: build(shared(k), e_ref + j * octave))
        if search.best_key != ("empty",):
            ranks, e = search.best_key
            for delta_e in (-octave // 2, octave // 2):
                search.offer((ranks, e + delta_e), lambda r=ranks, e2=e + delta_e: build(r, e2))
            ranks, e = search.best_key
            if greedy:
                for i, plan in enumerate(plans):
                    options = [k for k in levels if k <= plan.full_rank] if plan.factorised else [0, 1]
                    for k in options:
                        trial = search.best_key[0][:i] + (k,) + search.best_key[0][i + 1:]
                        search.offer((trial, e), lambda t=trial: build(t, e))
            ranks, e = search.best_key
            for delta_e in (-octave // 4, octave // 4):
                search.offer((ranks, e + delta_e), lambda r=ranks, e2=e + delta_e: build(r, e2))
    cost, bits, dist, (data, delta, (exponent, coded)) = search.best
    ranks_out = {p.name: (coded[p.name][0].shape[1] if p.factorised else 1) if p.name in coded else 0
                 for p in plans}
    n_values = sum(a.size for item in coded.values() for a in (item if isinstance(item, tuple) else (item,)))
    changed = sum(int(np.count_nonzero(a)) for item in coded.values()
                  for a in (item if isinstance(item, tuple) else (item,)))
    facts = {"bytes": len(data), "changed": changed, "values": n_values, "step": step_from_exponent(exponent),
             "exponent": exponent, "rank": max([ranks_out[p.name] for p in plans if p.factorised], default=0),
             "ranks": ranks_out, "distortion": dist, "bits": bits, "cost": cost,
             "candidates": search.evaluated()}
    return data, delta, facts
