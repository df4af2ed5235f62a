"""Decode speed of stored bitstreams: frames per second, best and median of repeated decodes.

    python benchmarks/decode_speed.py runs/core-cpu/bitstreams/.../*.ws [--repeats 7] [--threads 1]
    python benchmarks/decode_speed.py FILE --profile          # also the 15 costliest functions

Each file is decoded once to warm up, then ``--repeats`` times on the CPU in one process (the
codec named in the file's container decodes it, as ``weightstep decode`` would); the figure is
frames / wall seconds of the whole decode (container parse, entropy decoding, every step and
render), without writing the video. Issue 11's target is 100 frames/s at 176x144.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch

from weightstep.codecs import harness


def timed_decodes(data: bytes, repeats: int) -> tuple[int, list[float]]:
    """(frames, wall seconds of each of ``repeats`` decodes after one warm-up decode)."""
    _, video = harness.decode_bytes(data, "cpu")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        harness.decode_bytes(data, "cpu")
        times.append(time.perf_counter() - start)
    return video.frames, times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="bitstreams any weightstep codec wrote")
    parser.add_argument("--repeats", type=int, default=7, help="timed decodes per file (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: the protocol runs' setting)")
    parser.add_argument("--profile", action="store_true", help="print the costliest functions of one more decode")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{'file':<60} {'frames':>6} {'bytes':>8} {'best s':>8} {'median s':>9} {'best fps':>9} {'median fps':>11}")
    for path in args.files:
        try:
            data = path.read_bytes()
            frames, times = timed_decodes(data, max(1, args.repeats))
        except Exception as exc:  # a benchmark goes on with the next file and says why this one failed
            print(f"{str(path)[-60:]:<60} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        best, median = min(times), statistics.median(times)
        print(f"{str(path)[-60:]:<60} {frames:>6} {len(data):>8} {best:>8.4f} {median:>9.4f} {frames / best:>9.1f} "
              f"{frames / median:>11.1f}")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            harness.decode_bytes(data, "cpu")
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
