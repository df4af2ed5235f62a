"""Entropy coding of integer tensors and binary maps with constriction (never a hand-written coder).

Integer blobs (``encode_ints`` / ``decode_ints``)
------------------------------------------------
A blob is self-describing: a 17-byte little-endian header, then the ANS words
(``constriction.stream.stack.AnsCoder``, uint32, little-endian)::

    family  uint8    0 = empty array, 1 = quantised Laplace, 2 = quantised Gaussian
    loc     float32  location of the continuous density before quantisation
    scale   float32  Laplace scale b, or Gaussian standard deviation
    lo, hi  int32    the symbol support [lo, hi] (both inclusive)
    words   uint32[] nothing when lo == hi (every symbol is lo) or the array is empty

The model is constriction's ``QuantizedLaplace`` / ``QuantizedGaussian`` on [lo, hi]: the
density integrated over unit bins [k - 0.5, k + 0.5], with both tails folded into the end
symbols lo and hi (measured: constriction 0.5 does this, although its docstring speaks of
renormalising); constriction then gives every symbol at least 2^-24 of probability. The
encoder fits both families (location from the data, scale by a small search on the exact
information content) and keeps the cheaper; loc and scale are rounded to float32 *before*
the coder sees them, so encoder and decoder use bit-identical parameters.

The symbol count is not stored: the decoder knows it from the network's shapes and passes
it in (at most ``MAX_COUNT``). Every header field is validated before constriction is
called, the payload must be used up exactly, the decoded values must span [lo, hi] exactly
(the encoder's support is the data's min and max), and any constriction error becomes
``BitstreamError``. The count cannot be bounded by the payload length: an ANS coder that
starts empty codes a trailing run of the symbol ``lo`` for free, so a short payload may
legitimately hold many symbols.

Binary maps (``encode_bits`` / ``decode_bits``)
-----------------------------------------------
A 5-byte header and ANS words under a fixed Bernoulli model::

    mode  uint8    3 = "count": p(1) = n_ones / count (exact, derived on both sides)
                   4 = "fixed": p(1) given by the caller, stored as float32
    arg   uint32 (n_ones) or float32 (p)

In "count" mode a map of all zeros or all ones costs the header only, and the decoded map is
checked to hold exactly n_ones ones. Coding with p = k/n is within the header of the best
any fixed-probability code can do for that map (n·H(k/n) bits plus ANS's ~64-bit flush).
"""

from __future__ import annotations

import math
import struct
import zlib

import constriction
import numpy as np
from scipy.special import log_ndtr

from weightstep.errors import BitstreamError

__all__ = [
    "EMPTY",
    "LAPLACE",
    "GAUSSIAN",
    "MAX_SUPPORT",
    "MAX_COUNT",
    "MIN_SCALE",
    "MAX_SCALE",
    "INT_HEADER_BYTES",
    "BITS_HEADER_BYTES",
    "encode_ints",
    "decode_ints",
    "ideal_bits",
    "coded_bits",
    "encode_bits",
    "decode_bits",
    "fit_model",
    "int_model",
    "words_to_bytes",
    "payload_words",
    "run_decoder",
    "check_count",
    "bernoulli_ideal_bits",
    "SegmentWriter",
    "SegmentReader",
]

EMPTY, LAPLACE, GAUSSIAN = 0, 1, 2  # family ids of integer blobs
_BITS_COUNT, _BITS_FIXED = 3, 4  # mode ids of binary-map blobs (distinct from the families on purpose)

MAX_SUPPORT = 1 << 20  # widest support hi - lo + 1; constriction needs < 2^24, the leak costs W / 2^24
MAX_COUNT = 1 << 28  # most symbols in one blob (1 GiB of int32): guards the decoder's allocation
MIN_SCALE = 2.0**-7  # scale floor (exact in float32); below it a symbol off the mode costs > 24 bits anyway
MAX_SCALE = 2.0**24  # scale ceiling: wider than any support we allow
_MAX_ABS_LOC = 2.0**31  # a stored location outside this cannot come from our encoder

_INT_HEADER = struct.Struct("<Bffii")
_BITS_HEADER_COUNT = struct.Struct("<BI")
_BITS_HEADER_FIXED = struct.Struct("<Bf")
INT_HEADER_BYTES = _INT_HEADER.size  # 17
BITS_HEADER_BYTES = _BITS_HEADER_COUNT.size  # 5

_PRECISION = 24  # constriction's default probability precision for AnsCoder models
_LEAK = 2.0**-_PRECISION
_LOG_HALF = math.log(0.5)
_MIN_P = 2.0**-20  # Bernoulli probability clamp, so that log2 stays finite on either symbol


# ---------------------------------------------------------------- model arithmetic (numpy)


def _log_cdf(family: int, z: np.ndarray) -> np.ndarray:
    """Natural log of the standardised CDF at z (accurate far into the left tail)."""
    if family == LAPLACE:
        with np.errstate(over="ignore"):
            right = np.log1p(-0.5 * np.exp(-np.maximum(z, 0.0)))
        return np.where(z <= 0.0, _LOG_HALF + np.minimum(z, 0.0), right)
    return log_ndtr(z)


def _log_mass(family: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """log P(u < Z <= v) for standardised Z, stable in both tails (the densities are symmetric)."""
    flip = (u + v) > 0.0  # bin mostly right of the mode: mirror it to the left tail
    a = np.where(flip, -v, u)
    b = np.where(flip, -u, v)
    la, lb = _log_cdf(family, a), _log_cdf(family, b)
    with np.errstate(divide="ignore"):
        return lb + np.log1p(-np.exp(np.minimum(la - lb, 0.0)))


def _log2_pmf(family: int, loc: float, scale: float | np.ndarray, lo: int, hi: int, symbols: np.ndarray,
              leaky: bool) -> np.ndarray:
    """log2 of constriction's model probability of each symbol (``leaky`` adds its 2^-24 floor).

    ``scale`` may be an array that broadcasts against ``symbols`` (many scales at once).
    """
    k = symbols.astype(np.float64)
    left = np.where(k <= lo, -np.inf, k - 0.5)  # the tails fold into the end symbols
    right = np.where(k >= hi, np.inf, k + 0.5)
    log_p = _log_mass(family, (left - loc) / scale, (right - loc) / scale)
    if leaky:
        width = hi - lo + 1
        log_p = np.logaddexp(log_p + math.log1p(-width * _LEAK), math.log(_LEAK))
    return log_p / math.log(2.0)


def _check_family(family: int) -> None:
    if family not in (LAPLACE, GAUSSIAN):
        raise ValueError(f"unknown model family {family!r} (expected LAPLACE={LAPLACE} or GAUSSIAN={GAUSSIAN})")


def ideal_bits(values: np.ndarray, family: int, loc: float, scale: float, lo: int, hi: int,
               *, leaky: bool = True) -> float:
    """Information content -sum log2 p(v) of ``values`` under the quantised model on [lo, hi].

    With ``leaky`` (default) p includes constriction's 2^-24 floor per symbol, so this is the
    exact information content of the model the coder implements; the coded size exceeds it
    only by the 24-bit rounding of probabilities and the ANS flush (up to 64 bits).
    ``leaky=False`` gives the bare binned density (infinite cost for far-tail symbols).
    """
    _check_family(family)
    v = np.asarray(values).ravel()
    if v.size == 0:
        return 0.0
    if int(v.min()) < lo or int(v.max()) > hi:
        raise ValueError("values outside the support [lo, hi]")
    if lo == hi:
        return 0.0
    syms, counts = _histogram(v, lo, hi)
    log2_p = _log2_pmf(family, float(loc), float(scale), lo, hi, syms, leaky=leaky)
    return float(-(counts * log2_p).sum())


def _histogram(v: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct symbols of ``v`` and how often each occurs (v within [lo, hi])."""
    if hi - lo + 1 <= 4 * v.size + 1024:
        counts = np.bincount((v.astype(np.int64) - lo), minlength=hi - lo + 1)
        syms = np.nonzero(counts)[0]
        return syms + lo, counts[syms]
    return np.unique(v, return_counts=True)


# ---------------------------------------------------------------- fitting the model


def _f32(x: float) -> float:
    """Round to float32 and back: the exact value the stream carries."""
    return float(np.float32(x))


def fit_model(v: np.ndarray, lo: int, hi: int) -> tuple[int, float, float]:
    """Pick family, loc and scale (all already float32-exact) minimising the coded size."""
    syms, counts = _histogram(v, lo, hi)
    x = v.astype(np.float64)
    best: tuple[float, int, float, float] | None = None
    for family in (LAPLACE, GAUSSIAN):
        if family == LAPLACE:
            loc = float(np.median(x))
            scale0 = float(np.mean(np.abs(x - loc)))
        else:
            loc = float(np.mean(x))
            scale0 = float(np.std(x))
        loc = _f32(min(max(loc, lo), hi))

        def search(log2_scales: np.ndarray, family: int = family, loc: float = loc) -> tuple[float, float, float]:
            """(bits, scale, log2 scale) of the cheapest of the given scales (all evaluated at once)."""
            scales = np.float32(np.clip(2.0**log2_scales, MIN_SCALE, MAX_SCALE)).astype(np.float64)
            rows = max(1, (1 << 20) // syms.size)  # bound the temporaries to ~1M entries
            bits = np.concatenate([
                -(counts * _log2_pmf(family, loc, scales[i:i + rows, None], lo, hi, syms, leaky=True)).sum(axis=1)
                for i in range(0, scales.size, rows)])
            i = int(np.argmin(bits))
            return float(bits[i]), float(scales[i]), float(log2_scales[i])

        # coarse quarter-octave grid around the moment estimate, then a sixteenth-octave refinement
        centre = math.log2(min(max(scale0, MIN_SCALE), MAX_SCALE))
        _, _, coarse = search(centre + np.arange(-12, 9) / 4)
        bits, scale, _ = search(coarse + np.arange(-3, 4) / 16)
        if best is None or bits < best[0]:
            best = (bits, family, loc, scale)
    assert best is not None
    return best[1], best[2], best[3]


def int_model(family: int, lo: int, hi: int, loc: float, scale: float):
    """constriction's quantised Laplace or Gaussian (``family``) on the integers [lo, hi]."""
    m = constriction.stream.model
    if family == LAPLACE:
        return m.QuantizedLaplace(lo, hi, loc, scale)
    return m.QuantizedGaussian(lo, hi, loc, scale)


def _bernoulli(p: float):
    """constriction's Bernoulli model, with the non-legacy ("perfect=False") quantisation."""
    return constriction.stream.model.Bernoulli(p, perfect=False)


def words_to_bytes(words: np.ndarray) -> bytes:
    """ANS words as the stream stores them: little-endian uint32."""
    return np.asarray(words, dtype=np.uint32).astype("<u4").tobytes()


# ---------------------------------------------------------------- integer blobs


def encode_ints(values: np.ndarray) -> bytes:
    """Code an integer array (any shape, read flat in C order) into a self-describing blob.

    Raises ValueError for non-integer input, values outside int32, or a support wider than
    ``MAX_SUPPORT`` (quantise more coarsely instead).
    """
    v = np.asarray(values)
    if v.dtype.kind not in "iub":
        raise ValueError(f"encode_ints needs integers, got dtype {v.dtype}")
    v = v.ravel()
    if v.size == 0:
        return _INT_HEADER.pack(EMPTY, 0.0, 0.0, 0, 0)
    if v.size > MAX_COUNT:
        raise ValueError(f"{v.size} symbols exceed the per-blob limit of {MAX_COUNT}")
    lo, hi = int(v.min()), int(v.max())
    if lo < -(2**31) or hi > 2**31 - 1:
        raise ValueError("values outside the int32 range")
    if hi - lo + 1 > MAX_SUPPORT:
        raise ValueError(f"support [{lo}, {hi}] is wider than {MAX_SUPPORT} symbols; use a coarser step")
    if lo == hi:
        return _INT_HEADER.pack(LAPLACE, float(lo), 1.0, lo, hi)
    family, loc, scale = fit_model(v, lo, hi)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(v.astype(np.int32), int_model(family, lo, hi, loc, scale))
    return _INT_HEADER.pack(family, loc, scale, lo, hi) + words_to_bytes(coder.get_compressed())


def model_of(blob: bytes) -> tuple[int, float, float, int, int]:
    """(family, loc, scale, lo, hi) stored in a blob's header, e.g. for :func:`ideal_bits`."""
    if len(blob) < INT_HEADER_BYTES:
        raise BitstreamError("entropy blob: shorter than its header")
    family, loc, scale, lo, hi = _INT_HEADER.unpack_from(blob)
    return int(family), float(loc), float(scale), int(lo), int(hi)


def check_count(count: int) -> int:
    """``count`` as an int in [0, MAX_COUNT]: what a decoder may allocate; TypeError or ValueError otherwise."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
        raise TypeError("count must be an int")
    count = int(count)
    if count < 0 or count > MAX_COUNT:
        raise ValueError(f"count {count} outside [0, {MAX_COUNT}]")
    return count


def payload_words(data: bytes, offset: int, what: str) -> np.ndarray:
    """The ANS words of ``data`` from ``offset`` to its end; BitstreamError (naming ``what``) if they
    are not a whole number of words."""
    payload = memoryview(data)[offset:]
    if len(payload) % 4:
        raise BitstreamError(f"{what}: payload of {len(payload)} bytes is not a whole number of words")
    return np.frombuffer(payload, dtype="<u4").astype(np.uint32)


def run_decoder(words: np.ndarray, model, count: int, what: str) -> np.ndarray:
    """Pop ``count`` symbols; the payload must be used up exactly. Any failure -> BitstreamError."""
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        out = coder.decode(model, count)
        empty = coder.is_empty()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # constriction raises ValueError, or pyo3's PanicException (a BaseException)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BitstreamError(f"{what}: corrupted payload ({reason})") from None
    if not empty:
        raise BitstreamError(f"{what}: corrupted payload (data left over after {count} symbols)")
    return np.asarray(out, dtype=np.int32)


def decode_ints(data: bytes, count: int) -> np.ndarray:
    """Decode ``count`` int32 symbols (a flat array) from a blob written by :func:`encode_ints`."""
    count = check_count(count)
    data = bytes(data)
    if len(data) < INT_HEADER_BYTES:
        raise BitstreamError(f"integer blob truncated: {len(data)} bytes, header needs {INT_HEADER_BYTES}")
    family, loc, scale, lo, hi = _INT_HEADER.unpack_from(data)
    if family == EMPTY:
        if count != 0 or len(data) != INT_HEADER_BYTES or (loc, scale, lo, hi) != (0.0, 0.0, 0, 0):
            raise BitstreamError(f"integer blob: empty-array header but {count} symbols expected")
        return np.zeros(0, dtype=np.int32)
    if family not in (LAPLACE, GAUSSIAN):
        raise BitstreamError(f"integer blob: unknown model family {family}")
    if count == 0:
        raise BitstreamError("integer blob: holds symbols but 0 were expected")
    if not lo <= hi or hi - lo + 1 > MAX_SUPPORT:
        raise BitstreamError(f"integer blob: invalid support [{lo}, {hi}]")
    if lo == hi:
        if len(data) != INT_HEADER_BYTES:
            raise BitstreamError("integer blob: data after a constant-array header")
        return np.full(count, lo, dtype=np.int32)
    if not (math.isfinite(loc) and abs(loc) <= _MAX_ABS_LOC and math.isfinite(scale)
            and _f32(MIN_SCALE) <= scale <= MAX_SCALE):
        raise BitstreamError(f"integer blob: invalid model parameters loc={loc!r} scale={scale!r}")
    words = payload_words(data, INT_HEADER_BYTES, "integer blob")
    if words.size == 0:  # the encoder coded hi > lo at least once, so its ANS state is not empty
        raise BitstreamError("integer blob: no payload after a non-constant header")
    out = run_decoder(words, int_model(family, lo, hi, loc, scale), count, "integer blob")
    if int(out.min()) != lo or int(out.max()) != hi:  # the encoder's support is the data's [min, max]
        raise BitstreamError("integer blob: corrupted payload (decoded values do not span the support)")
    return out


def coded_bits(values: np.ndarray) -> int:
    """The real size in bits of ``encode_ints(values)``, header included."""
    return 8 * len(encode_ints(values))


# ---------------------------------------------------------------- binary maps


def _count_p(ones: int, count: int) -> float:
    return min(max(ones / count, _MIN_P), 1.0 - _MIN_P)


def bernoulli_ideal_bits(mask: np.ndarray, p: float | None = None) -> float:
    """Information content of a binary map under Bernoulli(p); p=None uses the map's own frequency."""
    m = np.asarray(mask, dtype=bool).ravel()
    if m.size == 0:
        return 0.0
    ones = int(m.sum())
    if p is None:
        if ones in (0, m.size):
            return 0.0
        p = ones / m.size
    p = min(max(float(p), _MIN_P), 1.0 - _MIN_P)
    return float(-(ones * math.log2(p) + (m.size - ones) * math.log2(1.0 - p)))


def encode_bits(mask: np.ndarray, p: float | None = None) -> bytes:
    """Code a boolean map (read flat in C order) under a fixed Bernoulli model.

    ``p=None``: p(1) is the map's own frequency, sent exactly as the count of ones.
    ``p`` given: that probability of a one (in [0, 1]), sent as float32.
    """
    m = np.asarray(mask)
    if m.dtype != bool:
        if m.size and not np.isin(m, (0, 1)).all():
            raise ValueError("encode_bits needs a boolean (or 0/1) map")
        m = m.astype(bool)
    m = m.ravel()
    if m.size > MAX_COUNT:
        raise ValueError(f"{m.size} bits exceed the per-blob limit of {MAX_COUNT}")
    ones = int(m.sum())
    if p is None:
        header = _BITS_HEADER_COUNT.pack(_BITS_COUNT, ones)
        if ones in (0, m.size):
            return header
        prob = _count_p(ones, m.size)
    else:
        if not (0.0 <= float(p) <= 1.0):
            raise ValueError(f"p must lie in [0, 1], got {p!r}")
        prob32 = _f32(float(p))
        header = _BITS_HEADER_FIXED.pack(_BITS_FIXED, prob32)
        if m.size == 0:
            return header
        prob = min(max(prob32, _MIN_P), 1.0 - _MIN_P)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(m.astype(np.int32), _bernoulli(prob))
    return header + words_to_bytes(coder.get_compressed())


def decode_bits(data: bytes, count: int) -> np.ndarray:
    """Decode a flat boolean map of ``count`` entries written by :func:`encode_bits`."""
    count = check_count(count)
    data = bytes(data)
    if len(data) < BITS_HEADER_BYTES:
        raise BitstreamError(f"bit-map blob truncated: {len(data)} bytes, header needs {BITS_HEADER_BYTES}")
    mode = data[0]
    if mode == _BITS_COUNT:
        ones = _BITS_HEADER_COUNT.unpack_from(data)[1]
        if ones > count:
            raise BitstreamError(f"bit-map blob: {ones} ones in a map of {count}")
        if ones in (0, count):
            if len(data) != BITS_HEADER_BYTES:
                raise BitstreamError("bit-map blob: data after a constant-map header")
            return np.full(count, ones == count and count > 0, dtype=bool)
        prob = _count_p(ones, count)
    elif mode == _BITS_FIXED:
        prob = _BITS_HEADER_FIXED.unpack_from(data)[1]
        if not (0.0 <= prob <= 1.0):
            raise BitstreamError(f"bit-map blob: invalid probability {prob!r}")
        if count == 0:
            if len(data) != BITS_HEADER_BYTES:
                raise BitstreamError("bit-map blob: data after an empty-map header")
            return np.zeros(0, dtype=bool)
        prob = min(max(prob, _MIN_P), 1.0 - _MIN_P)
        ones = None
    else:
        raise BitstreamError(f"bit-map blob: unknown mode {mode}")
    words = payload_words(data, BITS_HEADER_BYTES, "bit-map blob")
    out = run_decoder(words, _bernoulli(prob), count, "bit-map blob")
    bits = out.astype(bool)
    if ones is not None and int(bits.sum()) != ones:
        raise BitstreamError("bit-map blob: corrupted payload (wrong number of ones)")
    return bits


# ---------------------------------------------------------------- learned models (per-symbol parameters)


class SegmentWriter:
    """Several arrays, each under its own constriction model, in ONE ANS stream (one flush for all).

    For the learned entropy models of the neural baselines: ``add(symbols, model)`` with a
    fixed model (e.g. ``Categorical(p, perfect=False)``), or ``add(symbols, family, *params)``
    with per-symbol parameters (``QuantizedLaplace(lo, hi)`` with locations and scales,
    ``Bernoulli(perfect=False)`` with probabilities). Segments are added in the order the
    decoder reads them (:class:`SegmentReader`), so a later segment's model may depend on
    earlier decoded ones. :meth:`finish` returns the ANS words (no header; empty if no symbols).
    """

    def __init__(self) -> None:
        self._segments: list[tuple[np.ndarray, object, tuple]] = []

    def add(self, symbols: np.ndarray, model, *params: np.ndarray) -> None:
        v = np.asarray(symbols).ravel()
        if v.dtype.kind not in "iub":
            raise ValueError(f"symbols must be integers, got dtype {v.dtype}")
        if v.size:
            self._segments.append((v.astype(np.int32), model, params))

    def checksum(self) -> int:
        """CRC32 of every symbol in reading order: stored beside the stream, it lets a reader detect a
        payload that was altered yet still decodes (an ANS stream cannot tell by itself)."""
        crc = 0
        for symbols, _, _ in self._segments:
            crc = zlib.crc32(symbols.astype("<i4").tobytes(), crc)
        return crc

    def finish(self) -> bytes:
        if not self._segments:
            return b""
        coder = constriction.stream.stack.AnsCoder()
        for symbols, model, params in reversed(self._segments):
            coder.encode_reverse(symbols, model, *params)
        return words_to_bytes(coder.get_compressed())


class SegmentReader:
    """Reads back, segment by segment, what a :class:`SegmentWriter` wrote; failures are BitstreamError."""

    def __init__(self, data: bytes, what: str = "entropy stream"):
        self.what = what
        self._crc = 0
        words = payload_words(bytes(data), 0, what)
        try:
            self._coder = constriction.stream.stack.AnsCoder(words)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            raise BitstreamError(f"{what}: corrupted payload ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None

    def take(self, count: int, model, *params: np.ndarray) -> np.ndarray:
        """The next ``count`` symbols (``params``, if given, must hold ``count`` entries each)."""
        count = check_count(count)
        if count == 0:
            return np.zeros(0, dtype=np.int32)
        try:
            out = self._coder.decode(model, *params) if params else self._coder.decode(model, count)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # constriction raises ValueError, or pyo3's PanicException (a BaseException)
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BitstreamError(f"{self.what}: corrupted payload ({reason})") from None
        out = np.asarray(out, dtype=np.int32).ravel()
        if out.size != count:
            raise BitstreamError(f"{self.what}: decoded {out.size} symbols, expected {count}")
        self._crc = zlib.crc32(out.astype("<i4").tobytes(), self._crc)
        return out

    def finish(self, checksum: int | None = None) -> None:
        """The stream must be used up exactly (and the symbols match the writer's checksum, if given)."""
        if not self._coder.is_empty():
            raise BitstreamError(f"{self.what}: corrupted payload (data left over after the last symbol)")
        if checksum is not None and checksum != self._crc:
            raise BitstreamError(f"{self.what}: corrupted payload (the decoded symbols fail their checksum)")
