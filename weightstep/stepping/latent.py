"""The ``latent`` update kind: an integer residual on a latent-grid network's latents.

A conventional P-frame is motion plus a residual; ``warp+latent`` is the same thing inside a
latent-grid network (:class:`~weightstep.inr.grid.GridNet`, the C3 / Cool-chic family): the warp
moves the previous frame's latent grids, and this kind adds an integer residual to each level,
entropy-coded under a zero-mean Laplace per level. The synthesis and the context model stay as
the anchor left them, so a step costs what the residual's integers cost.

Training (:class:`LatentUpdate`): the residual ``r_l`` of level ``l`` is a float tensor (zeros
at the start); the synthesis sees ``r_l + u`` (u ~ U(-0.5, 0.5), the noise proxy of rounding) and
the penalty is the bits of that sample under a Laplace(0, s_l) whose log-scale is trained too.
Coding (:func:`code_latent`): ``round(r_l)`` with a dead zone (|r| < t -> 0); t and the block
size are chosen by D + lambda R with the real bytes among a few values, "send nothing" included.
Each level is cut into B x B blocks and a flag per block says whether it codes anything, so an
all-zero block costs a fraction of a bit instead of ~0.3 bit per latent under one Laplace over
the whole level. Flags and the coded blocks' integers share one ANS stream (constriction):
flags under a Bernoulli per level, integers under a Laplace per level. Measured (carphone, 4
frames, lambda 1e-3, warp+latent, the same fitted residuals): steps of 1111, 730 and 690 bytes
against 1217, 781 and 729 with one Laplace per level (-6 to -9 %) at identical PSNR. Less than
hoped, because the residual is scattered, not clustered: its 1340 non-zero integers in frame 1
fall in 513 of 2123 4x4 blocks, so positions are not what a step pays for.

Frame layout (after the warp, when there is one)::

    L bytes   one per latent level (finest first): 0 = no residual on that level, k >= 1 = its
              coded blocks' integers are under Laplace(0, 2^((k - 1) / 8 - 6))
    -- only when some level byte is not 0:
    uint8     b: blocks are 2^b x 2^b latents (b in 2..4; edge blocks are cut by the level)
    P bytes   per coded level, in order: k in 1..255, P(a block is coded) = k / 256
    varint    -lo, then varint hi: the integers' support [lo, hi] (lo <= 0 <= hi, not both 0)
    words     ANS words: per coded level its block flags (raster order), then per coded level
              the integers of its coded blocks (block by block in raster order, each block's
              integers in raster order)

The level count and each level's size come from the network the decoder builds from the
config, never from the data. What the encoder never writes is refused: a coded block with no
non-zero integer, a coded level with no coded block, a block probability other than the flags'
own frequency, a support other than the integers' [min, max]. Streams of format 1 hold the
first layout (no block byte and flags; one Laplace blob of the coded levels), which
:func:`decode_latent` still reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import constriction
import numpy as np
import torch
from torch import nn

from weightstep.coding.entropy import SegmentReader, SegmentWriter
from weightstep.coding.framing import ByteReader, put_varint
from weightstep.coding.latents import ChunkDecoder, symbol_bits
from weightstep.errors import BitstreamError
from weightstep.inr.latent_context import laplace_bits
from weightstep.stepping.kindcode import MAX_ABS_Q, Search, register_base

__all__ = ["LatentUpdate", "code_latent", "decode_latent", "scale_of", "THRESHOLDS", "best_scale", "p_code",
           "bernoulli_model", "laplace_model"]

SCALE_OFFSET = -6.0  # log2 of the smallest scale (code 1): 1/64, a level that is all but zero
SCALE_DIVISIONS = 8  # scale codes are 1/8 octave apart (the context model's own grid)
THRESHOLDS = (0.5, 0.6, 0.75, 1.0)  # dead zones tried: 0.5 is plain rounding; larger ones drop small residuals
INIT_LOG_SCALE = math.log(0.25)  # the training Laplace starts narrow: most residuals should stay zero


def scale_of(code: int) -> float:
    """The Laplace scale of level code ``code`` (1..255)."""
    return 2.0 ** ((code - 1) / SCALE_DIVISIONS + SCALE_OFFSET)


class LatentUpdate(nn.Module):
    """Trainable residual on the latent tensors of ``base`` (name -> the decoded previous state).

    ``latent_names`` says which of ``base``'s tensors are latent grids; every other name gets a
    zero Δ. ``lr`` is the residuals' Adam rate (latents are integers: a rate near 0.05 moves a
    residual by a unit in a few dozen steps).
    """

    def __init__(self, base: Mapping[str, torch.Tensor], latent_names: Sequence[str], *, lr: float):
        super().__init__()
        self.names: tuple[str, ...] = register_base(self, base, lr, "LatentUpdate")
        self.latents = tuple(name for name in self.names if name in set(latent_names))
        if not self.latents:
            raise ValueError("the latent step kind needs a network with latent grids (inr=grid)")
        if any(math.prod(base[name].shape[:-2]) != 1 for name in self.latents):
            raise ValueError("the latent step kind codes latent grids of one plane each (N = C = 1)")
        self.lr = float(lr)
        self.residuals = nn.ParameterList(nn.Parameter(torch.zeros_like(base[name])) for name in self.latents)
        self.log_scale = nn.Parameter(torch.full((len(self.latents),), INIT_LOG_SCALE,
                                                 device=base[self.latents[0]].device))
        self._sample: list[torch.Tensor] | None = None  # the last training sample (the penalty's input)

    def base(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"base_{i}") for i, name in enumerate(self.names)}

    def delta(self, train: bool = False, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """name -> Δ: the residual plus rounding noise when training, rounded otherwise; zeros elsewhere."""
        values = []
        for r in self.residuals:
            if train:
                noise = torch.rand(r.shape, generator=generator, device=r.device) - 0.5
                values.append(r + noise)
            else:
                values.append(torch.round(r))
        self._sample = values if train else None
        by_name = dict(zip(self.latents, values, strict=True))
        return {name: by_name[name] if name in by_name else torch.zeros_like(b) for name, b in self.base().items()}

    def penalty(self) -> torch.Tensor:
        """Bits of the last training sample under each level's Laplace(0, s_l) (a differentiable scalar)."""
        values = self._sample if self._sample is not None else [torch.round(r) for r in self.residuals]
        scales = torch.exp(self.log_scale.clamp(math.log(scale_of(1)), math.log(scale_of(255))))
        total = self.log_scale.new_zeros(())
        for level, value in enumerate(values):
            total = total + laplace_bits(value, torch.zeros_like(value), scales[level]).sum()
        return total

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.residuals), "lr": self.lr}, {"params": [self.log_scale], "lr": 0.05}]

    def open_count(self) -> int:
        """Residual integers that are not zero after rounding."""
        with torch.no_grad():
            return int(sum(int((torch.round(r) != 0).sum()) for r in self.residuals))

    def fitted(self) -> list[np.ndarray]:
        """The trained residuals (float64, CPU), one per latent level, finest first."""
        out = [r.detach().to("cpu", torch.float64).numpy() for r in self.residuals]
        for name, value in zip(self.latents, out, strict=True):
            if not np.isfinite(value).all():
                raise ValueError(f"the latent residual of {name!r} is not finite")
        return out


def best_scale(values: np.ndarray, lo: int, hi: int) -> int:
    """The level code whose Laplace(0, s) on support [lo, hi] gives ``values`` the fewest bits."""
    symbols, counts = np.unique(values.reshape(-1).astype(np.int64), return_counts=True)
    mean_abs = float((np.abs(symbols) * counts).sum() / counts.sum())
    guess = min(255, max(1, round((math.log2(max(mean_abs, 1e-3)) - SCALE_OFFSET) * SCALE_DIVISIONS) + 1))
    codes = np.arange(max(1, guess - 24), min(255, guess + 24) + 1)
    # every candidate code against every distinct symbol at once: (codes, symbols) bits
    x = np.broadcast_to(symbols.astype(np.float64), (codes.size, symbols.size)).reshape(-1)
    scales = np.repeat([scale_of(int(code)) for code in codes], symbols.size)
    bits = symbol_bits(x, np.zeros_like(x), scales, lo, hi).reshape(codes.size, symbols.size) @ counts
    return int(codes[int(np.argmin(bits))])  # of equal ones, the smallest code


BLOCK_BITS = (2, 3, 4)  # block sides the layout allows (and the encoder tries): 4, 8, 16 latents
FIRST_BLOCK_BITS = 3  # the side the dead zone is chosen at (8 latents); 4 and 16 are then tried


def block_positions(shape: tuple[int, ...], bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions, starts) of a level cut into 2^bits-square blocks, in the coding order.

    ``positions``: the flat (C order) index of every latent, block by block in raster order and
    raster order inside each block (edge blocks are cut by the level's border); block ``j``'s
    latents are ``positions[starts[j]:starts[j + 1]]`` (``starts`` has one entry per block, plus
    the total at the end).
    """
    h, w = int(shape[-2]), int(shape[-1])
    side = 1 << int(bits)
    rows, cols = np.arange(h), np.arange(w)
    block = (rows[:, None] // side) * (-(-w // side)) + cols[None, :] // side
    flat = block.ravel()
    positions = np.argsort(flat, kind="stable")  # stable: raster order inside a block
    counts = np.bincount(flat, minlength=(-(-h // side)) * (-(-w // side)))
    return positions, np.concatenate([[0], np.cumsum(counts)])


def _flags(q: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(flag per block: it holds a non-zero integer, the flat positions of the coded blocks' latents in coding order)."""
    positions, starts = block_positions(q.shape, bits)
    nonzero = (q.reshape(-1)[positions] != 0).astype(np.int64)
    flags = np.add.reduceat(nonzero, starts[:-1]) > 0 if nonzero.size else np.zeros(0, bool)
    return flags, _coded_positions(positions, starts, flags)


def _coded_positions(positions: np.ndarray, starts: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """The flat positions of the flagged blocks' latents in coding order (encoder and decoder alike)."""
    return positions[np.repeat(flags, np.diff(starts))]


def p_code(flags: np.ndarray) -> int:
    return int(np.clip(round(256 * float(flags.mean())), 1, 255))


def bernoulli_model(code: int):
    return constriction.stream.model.Bernoulli(code / 256.0, perfect=False)


def laplace_model(lo: int, hi: int, code: int):
    return constriction.stream.model.QuantizedLaplace(lo, hi, 0.0, scale_of(code))


def _frame(levels: list[np.ndarray], bits: int) -> bytes:
    """The frame (module docstring) of integer residuals ``levels`` (finest first), blocks of 2^bits."""
    parts = [_flags(q, bits) if q.any() else None for q in levels]
    values = [q.reshape(-1)[part[1]] for q, part in zip(levels, parts, strict=True) if part is not None]
    if not values:
        return bytes(len(levels))
    lo, hi = min(0, *(int(v.min()) for v in values)), max(0, *(int(v.max()) for v in values))
    codes, coded, chunks = [], [], iter(values)
    for part in parts:
        if part is None:
            codes.append(0)
            continue
        chunk = next(chunks)
        codes.append(best_scale(chunk, lo, hi))
        coded.append((part[0], chunk, codes[-1]))
    head = bytearray(codes)
    head.append(bits)
    head += bytes(p_code(flags) for flags, _, _ in coded)
    put_varint(head, -lo)
    put_varint(head, hi)
    writer = SegmentWriter()
    for flags, _, _ in coded:
        writer.add(flags.astype(np.int32), bernoulli_model(p_code(flags)))
    for _, values, code in coded:
        writer.add(values.astype(np.int32), laplace_model(lo, hi, code))
    return bytes(head) + writer.finish()


def code_latent(update: LatentUpdate, distortion: Callable[[dict[str, torch.Tensor]], float],
                lam_per_bit: float) -> tuple[bytes, dict[str, torch.Tensor], dict]:
    """Quantise and code ``update``: dead zone and block size by ``distortion(Δ) + lam_per_bit * bits``.

    ``distortion`` gets the decoder's Δ (float32 CPU, every name of the base). Returns (frame,
    that Δ, facts: bytes, changed integers, threshold, block side, coded blocks, blocks, level
    codes, candidates).
    """
    fitted = update.fitted()
    shapes = {name: tuple(b.shape) for name, b in update.base().items()}
    search = Search(float(lam_per_bit), distortion)

    def build(threshold: float | None, bits: int = FIRST_BLOCK_BITS):
        levels = []
        for r in fitted:
            q = np.zeros(r.shape, np.int32) if threshold is None else np.where(np.abs(r) < threshold, 0.0, np.rint(r))
            if np.abs(q).max(initial=0) > MAX_ABS_Q:
                return None
            levels.append(np.asarray(q, np.int32))
        data = _frame(levels, bits)
        return data, _delta(shapes, update.latents, levels), (levels, bits)

    search.offer(("nothing",), lambda: build(None))
    for threshold in THRESHOLDS:
        search.offer((threshold, FIRST_BLOCK_BITS), lambda t=threshold: build(t))
    if search.best_key != ("nothing",):
        threshold = search.best_key[0]
        for bits in BLOCK_BITS:
            search.offer((threshold, bits), lambda b=bits: build(threshold, b))
    cost, bits_total, dist, (data, delta, (levels, block_bits)) = search.best
    key = search.best_key
    flags = [_flags(q, block_bits)[0] for q in levels if q.any()]
    facts = {"bytes": len(data), "changed": int(sum(int(np.count_nonzero(q)) for q in levels)),
             "threshold": key[0],
             "block": 1 << block_bits, "coded_blocks": int(sum(int(f.sum()) for f in flags)),
             "blocks": int(sum(f.size for f in flags)), "level_codes": list(data[:len(levels)]),
             "distortion": dist, "bits": bits_total, "cost": cost, "candidates": search.evaluated()}
    return data, delta, facts


def _delta(shapes: Mapping[str, tuple[int, ...]], latents: Sequence[str],
           levels: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
    by_name = dict(zip(latents, levels, strict=True))
    return {name: torch.from_numpy(np.asarray(by_name[name], np.float32).reshape(shape)) if name in by_name
            else torch.zeros(shape) for name, shape in shapes.items()}


def decode_latent(data: bytes, shapes: Sequence[tuple[str, tuple[int, ...]]],
                  latents: Sequence[str], *, blocks: bool = True) -> dict[str, torch.Tensor]:
    """The decoder's Δ (name -> float32 tensor, every name of ``shapes``) of a :func:`code_latent` frame.

    ``blocks`` False reads the first layout (streams of format 1): the level bytes, then every
    coded level's integers under its Laplace in one :func:`~weightstep.coding.latents.encode_chunks`
    blob, without block flags."""
    shape_of = dict(shapes)
    missing = [name for name in latents if name not in shape_of]
    if not latents or missing:
        raise BitstreamError("latent step: the network has no latent grids to step")
    if any(math.prod(shape_of[name][:-2]) != 1 for name in latents):
        raise BitstreamError("latent step: a latent grid of more than one plane")
    reader = ByteReader(bytes(data), "latent step")
    codes = list(reader.take(len(latents), "level codes"))
    levels = [np.zeros(math.prod(shape_of[name]), np.int32) for name in latents]
    if not any(codes):
        if reader.rest():
            raise BitstreamError("latent step: data after an empty residual")
        return _delta(shape_of, latents, levels)
    if not blocks:
        decoder = ChunkDecoder(reader.rest())
        for i, code in enumerate(codes):
            if code:
                levels[i] = decoder.decode(np.zeros(levels[i].size), np.full(levels[i].size, scale_of(code)))
        decoder.finish()
        return _delta(shape_of, latents, levels)
    bits = reader.take(1, "block size")[0]
    if bits not in BLOCK_BITS:
        raise BitstreamError(f"latent step: block size code {bits} is not one of {BLOCK_BITS}")
    coded = [i for i, code in enumerate(codes) if code]
    flag_codes = list(reader.take(len(coded), "block probabilities"))
    if 0 in flag_codes:
        raise BitstreamError("latent step: a block probability of 0")
    lo, hi = -reader.varint("support low"), reader.varint("support high")
    if lo < -MAX_ABS_Q or hi > MAX_ABS_Q or lo == hi:
        raise BitstreamError(f"latent step: support [{lo}, {hi}] out of range")
    low_seen, high_seen = 0, 0
    stream = SegmentReader(reader.rest(), "latent step")
    layout = []
    for i, flag_code in zip(coded, flag_codes, strict=True):
        positions, starts = block_positions(shape_of[latents[i]], bits)
        flags = stream.take(starts.size - 1, bernoulli_model(flag_code)).astype(bool)
        if not flags.any():
            raise BitstreamError(f"latent step: level {i} is coded but none of its blocks is")
        if p_code(flags) != flag_code:
            raise BitstreamError(f"latent step: level {i}'s block probability does not match its flags")
        layout.append((i, positions, starts, flags))
    for (i, positions, starts, flags) in layout:
        where = _coded_positions(positions, starts, flags)
        values = stream.take(where.size, laplace_model(lo, hi, codes[i]))
        sizes = np.diff(starts)[flags]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        nonzero = np.add.reduceat((values != 0).astype(np.int64), offsets)
        if not nonzero.all():
            raise BitstreamError(f"latent step: a coded block of level {i} holds no non-zero integer")
        levels[i][where] = values
        low_seen, high_seen = min(low_seen, int(values.min())), max(high_seen, int(values.max()))
    stream.finish()
    if (low_seen, high_seen) != (lo, hi):
        raise BitstreamError(f"latent step: the integers span [{low_seen}, {high_seen}], not the stated [{lo}, {hi}]")
    return _delta(shape_of, latents, levels)
