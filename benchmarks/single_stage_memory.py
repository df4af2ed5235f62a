"""Memory of the single-stage schedule against the clip's length and its frame batch (issue 11, item 4).

    python benchmarks/single_stage_memory.py [--video sample:carphone] [--inr grid --inr siren]
        [--frames 8 --frames 16 --frames 32] [--batch 4] [--batch-sweep 2 --batch-sweep 8]

Each encode runs in a child process of its own (``schedule=single-stage``, ``update=l0``, few fit
steps: memory, not quality, is measured) and its peak resident memory comes from ``wait4`` (the
kernel's ``ru_maxrss``), so the figure is what the machine had to hold, torch's allocator and all.
For each network the script prints every encode's peak, then the least-squares slope of the peak
over the clip's length at the fixed batch (**memory per frame**) and over the batch at the
largest clip length (memory per frame of the window).

What a frame costs, by construction: the joint fit keeps one update per stepped frame (its raw
values and gate logits, each the size of the network's parameters, a latent grid's latents
included, plus Adam's two moments of each), so memory grows linearly with the clip; the autograd
graph covers only the window of ``--batch`` frames (the updates before it enter as constants), so
the graph's share grows with the batch, not with the clip. The script prints the network's
parameter count beside the slope so the two can be compared (6 float32 values a parameter is
24 bytes a parameter a frame).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def child(args: argparse.Namespace) -> int:
    """Encode once (no decode, no metrics) and print the network's parameter count as JSON."""
    import torch

    from weightstep import registry
    from weightstep.inr import build_network
    from weightstep.video import ReadOptions, open_video

    torch.set_num_threads(1)
    params = {"inr": args.inr, "schedule": "single-stage", "update": "l0", "lambda": 1e-3, "anchor_steps": args.anchor_steps,
              "step_steps": args.step_steps, "frame_batch": args.batch}
    codec = registry.create("weightstep", params)
    video = open_video(args.video, ReadOptions(frames=args.frames, downscale=args.downscale))
    encoded = codec.encode(video)
    height, width = video.rgb().shape[-2:]
    net = build_network(codec.config.network_spec(), height, width)
    print(json.dumps({"frames": video.frames, "bytes": len(encoded.data),
                      "params": sum(p.numel() for p in net.parameters())}))
    return 0


def run_child(args: argparse.Namespace, inr: str, frames: int, batch: int) -> dict:
    """Run one encode in a child process and reap it with ``wait4``: its frames, seconds, peak RSS in MiB."""
    command = [sys.executable, __file__, "--child", "--inr", inr, "--frames", str(frames), "--batch", str(batch),
               "--video", args.video, "--downscale", str(args.downscale), "--anchor-steps", str(args.anchor_steps),
               "--step-steps", str(args.step_steps)]
    env = {**os.environ, "WEIGHTSTEP_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = subprocess.Popen(command, stdout=out, stderr=err, env=env).pid
        _, status, usage = os.wait4(pid, 0)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        lines, err_text = out.read().decode().strip().splitlines(), err.read().decode()
    if os.waitstatus_to_exitcode(status) != 0 or not lines:
        raise RuntimeError(f"{inr}, {frames} frames, batch {batch}: the encode failed: {err_text[-400:]}")
    info = json.loads(lines[-1])
    return {"inr": inr, "frames": frames, "batch": batch, "seconds": seconds, "peak_mib": usage.ru_maxrss / 1024,
            "bytes": info["bytes"], "params": info["params"]}


def slope(xs: list[int], ys: list[float]) -> float:
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0]) if len(set(xs)) > 1 else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default="sample:carphone")
    parser.add_argument("--downscale", type=int, default=1)
    parser.add_argument("--inr", action="append", help="networks to measure (default: grid and siren)")
    parser.add_argument("--frames", type=int, action="append", help="clip lengths (default 8, 16, 32)")
    parser.add_argument("--batch", type=int, default=4, help="frame_batch of the length sweep")
    parser.add_argument("--batch-sweep", type=int, action="append", help="more frame_batch values at the longest clip")
    parser.add_argument("--anchor-steps", type=int, default=50)
    parser.add_argument("--step-steps", type=int, default=4)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.frames = args.frames[0]
        args.inr = args.inr[0]
        return child(args)
    inrs = args.inr or ["grid", "siren"]
    lengths = sorted(args.frames or [8, 16, 32])
    batches = sorted({args.batch, *(args.batch_sweep or [])})
    print(f"{'inr':<6} {'frames':>6} {'batch':>5} {'peak MiB':>9} {'seconds':>8} {'bytes':>8}")
    for inr in inrs:
        rows = []
        for frames in lengths:
            rows.append(run_child(args, inr, frames, args.batch))
            r = rows[-1]
            print(f"{inr:<6} {frames:>6} {args.batch:>5} {r['peak_mib']:>9.1f} {r['seconds']:>8.1f} {r['bytes']:>8}", flush=True)
        sweep = [r for r in rows if r["frames"] == lengths[-1]]
        for batch in batches:
            if batch == args.batch:
                continue
            sweep.append(run_child(args, inr, lengths[-1], batch))
            r = sweep[-1]
            print(f"{inr:<6} {lengths[-1]:>6} {batch:>5} {r['peak_mib']:>9.1f} {r['seconds']:>8.1f} {r['bytes']:>8}", flush=True)
        per_frame = slope([r["frames"] for r in rows], [r["peak_mib"] for r in rows])
        per_batch = slope([r["batch"] for r in sweep], [r["peak_mib"] for r in sweep])
        params = rows[-1]["params"]
        per_param = f", {per_frame * 2**20 / params:.1f} bytes a parameter a frame ({params} parameters)" if params else ""
        print(f"{inr}: memory per frame of the clip {per_frame * 1024:.0f} KiB{per_param}; "
              f"per frame of the batch {per_batch * 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
