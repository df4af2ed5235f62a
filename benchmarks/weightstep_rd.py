"""Rate-distortion of weight stepping (every update kind x schedule) beside x264 and x265.

    python benchmarks/weightstep_rd.py --frames 30 --out /tmp/ws_rd.jsonl

On the first frames of a clip, for each update kind (l0, dct, dense) and schedule (two-stage,
single-stage), codes the clip at each rate point (lambda: every fit, gate penalty and quantisation
step search minimises MSE + lambda * bpp), then x264 and x265 at five crf values on the same frames, and prints
bpp, RGB PSNR, MS-SSIM, encode seconds per frame, decode frames per second and the BD-rate
(PCHIP, RGB PSNR) of every weight-step variant against x264. Each finished encode is appended
to --out as one JSON line, and an existing file is resumed, so a long run can be stopped and
continued. Figures, not tests; BD-rate is reported only where the curves overlap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from weightstep import registry
from weightstep.codecs import harness
from weightstep.errors import MetricError
from weightstep.metrics import bd_rate
from weightstep.video import ReadOptions, open_video

# lambda of D + lambda * bpp: one rate point each
RATE_POINTS = [1e-4, 3e-4, 1e-3, 3e-3]
CRFS = [18, 23, 28, 33, 38]


def jobs(model: dict[str, str]) -> list[tuple[str, dict]]:
    """x264 and x265 first (fast), then one rate point of every variant at a time, so a run
    stopped early still compares every variant."""
    out = [(codec, {"crf": crf}) for codec in ("x264", "x265") for crf in CRFS]
    for point in (1, 2, 0, 3):
        for update in ("l0", "dct", "dense"):
            for schedule in ("two-stage", "single-stage"):
                out.append((f"ws-{update}-{schedule}", {"update": update, "schedule": schedule,
                                                         "lambda": RATE_POINTS[point], **model}))
    return out


def main(video: Annotated[str, typer.Option()] = "sample:carphone", frames: int = 30,
         out: Annotated[Path, typer.Option()] = Path("weightstep_rd.jsonl"),
         inr: str = "siren", width: int = 64, depth: int = 3, anchor_steps: int = 400, step_steps: int = 40,
         only: Annotated[list[str] | None, typer.Option()] = None) -> None:
    source = open_video(video, ReadOptions(frames=frames))
    model = {"inr": inr, "width": width, "depth": depth, "anchor_steps": anchor_steps, "step_steps": step_steps}
    done = {}
    if out.exists():
        for line in out.read_text().splitlines():
            row = json.loads(line)
            done[(row["label"], json.dumps(row["params"], sort_keys=True))] = row
    for label, params in jobs(model):
        key = (label, json.dumps(params, sort_keys=True))
        if key in done or (only and not any(label.startswith(o) for o in only)):
            continue
        codec = registry.create(label if label in ("x264", "x265") else "weightstep", params)
        result = harness.run(codec, source)
        row = {"label": label, "params": params, "bpp": result.bpp, "psnr_rgb": result.psnr_rgb,
               "ms_ssim": result.ms_ssim, "encode_s": result.encode_s, "decode_s": result.decode_s,
               "bytes": result.bytes, "per_frame_bits": [f["bits"] for f in result.per_frame]}
        with out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        done[key] = row
    report(list(done.values()), frames, video)


def report(rows: list[dict], frames: int, video: str) -> None:
    console = Console(width=200)
    table = Table(title=f"{video}, {frames} frames")
    for column in ("technique", "point", "bpp", "PSNR RGB", "MS-SSIM", "enc s/frame", "dec fps", "anchor bytes",
                   "mean step bytes"):
        table.add_column(column, justify="right")
    curves: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: (r["label"], r["bpp"])):
        curves.setdefault(row["label"], []).append(row)
        point = (f"crf {row['params']['crf']}" if "crf" in row["params"]
                 else f"λ {row['params']['lambda']:g}")
        bits = row["per_frame_bits"]
        steps = [b for b in bits[1:] if b is not None]
        table.add_row(row["label"], point, f"{row['bpp']:.4f}", f"{row['psnr_rgb']:.2f}", f"{row['ms_ssim']:.4f}",
                      f"{row['encode_s'] / frames:.2f}", f"{frames / max(row['decode_s'], 1e-9):.1f}",
                      str(bits[0] // 8) if bits[0] is not None else "-",
                      f"{sum(steps) / 8 / len(steps):.0f}" if steps else "-")
    console.print(table)
    anchor = curves.get("x264", [])
    for label, curve in sorted(curves.items()):
        if label == "x264" or not anchor:
            continue
        try:
            value = bd_rate([r["bpp"] for r in anchor], [r["psnr_rgb"] for r in anchor],
                            [r["bpp"] for r in curve], [r["psnr_rgb"] for r in curve])
            console.print(f"BD-rate of {label} against x264 (PCHIP, RGB PSNR): {value:+.1f} %")
        except MetricError as exc:
            console.print(f"BD-rate of {label} against x264: not defined ({exc})")


if __name__ == "__main__":
    typer.run(main)
