"""Print how far the real coded size of ``encode_ints`` is from the information content.

For each distribution and size: payload bits (blob minus its 17-byte header) against the
ideal -sum log2 p under the fitted model, against the data's empirical entropy, and the
encode / decode times. Run: ``python benchmarks/entropy_overhead.py``.
"""

from __future__ import annotations

import struct
import time

import numpy as np

from weightstep.coding.entropy import INT_HEADER_BYTES, decode_ints, encode_ints, ideal_bits


def _data(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "laplace(b=3)":
        x = rng.laplace(0.0, 3.0, n)
    elif kind == "laplace(b=0.4)":
        x = rng.laplace(0.0, 0.4, n)
    elif kind == "gauss(s=20)":
        x = rng.normal(0.0, 20.0, n)
    elif kind == "uniform(+-50)":
        x = rng.uniform(-50.5, 50.5, n)
    else:  # 5 % nonzero
        x = (rng.random(n) < 0.05) * rng.laplace(0.0, 4.0, n)
    return np.round(x).astype(np.int32)


def main() -> None:
    rng = np.random.default_rng(0)
    kinds = ["laplace(b=3)", "laplace(b=0.4)", "gauss(s=20)", "uniform(+-50)", "sparse 5%"]
    print(f"{'data':16s} {'n':>8s} {'blob B':>8s} {'payload/ideal':>14s} {'ideal/empirical':>16s} "
          f"{'enc ms':>7s} {'dec ms':>7s}")
    for kind in kinds:
        for n in (100, 1_000, 10_000, 100_000, 1_000_000):
            x = _data(kind, n, rng)
            t0 = time.perf_counter()
            blob = encode_ints(x)
            t1 = time.perf_counter()
            assert np.array_equal(decode_ints(blob, n), x)
            t2 = time.perf_counter()
            family, loc, scale, lo, hi = struct.unpack_from("<Bffii", blob)
            ideal = ideal_bits(x, family, loc, scale, lo, hi) if lo < hi else 0.0
            _, counts = np.unique(x, return_counts=True)
            empirical = float(-(counts * np.log2(counts / n)).sum())
            payload = 8 * (len(blob) - INT_HEADER_BYTES)
            ratio = payload / ideal if ideal else float("nan")
            print(f"{kind:16s} {n:8d} {len(blob):8d} {ratio:14.5f} {ideal / max(empirical, 1e-9):16.4f} "
                  f"{1e3 * (t1 - t0):7.1f} {1e3 * (t2 - t1):7.1f}")


if __name__ == "__main__":
    main()
