"""Anchor networks as image codecs: RD curves, encode and decode time, BD-rate against x265 intra.

    python benchmarks/anchor_rd.py --out anchor_rd.jsonl [--frame carphone --frame bikes ...]
        [--net grid --net siren ...] [--lambdas 3e-4 ...] [--threads 1] [--markdown] [--report-only]

For each frame (the first frame of a sample clip; bikes and bigbuckbunny area-downscaled to
about 320 wide) and each network, codes the frame at every lambda (``D + lambda * bpp``) and
records bytes of the file that decodes, bpp, RGB PSNR after the fit and after coding, encode
seconds, decode milliseconds and, for the grid, the latents' written bytes against their
information content under the stored model. x264 and x265 code the same frame as intra
(crf 18..38, medium preset). Prints one table per frame and the BD-rates (PCHIP, RGB PSNR)
of every network against x265 and x264 intra, and of SIREN/Fourier against their
"shared" variant (one relative step for all tensors, no quantisation-aware fine-tune: the
coding before per-tensor steps). Each finished encode is appended to --out as a JSON line
and an existing file is resumed. Figures, not tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.table import Table

from weightstep import registry
from weightstep.codecs import harness
from weightstep.errors import MetricError
from weightstep.metrics import bd_rate
from weightstep.video import ReadOptions, open_video

FRAMES = {"carphone": ("sample:carphone", 1), "bikes": ("sample:bikes", 2), "bigbuckbunny": ("sample:bigbuckbunny", 4)}
NETS = {
    "grid": {"inr": "grid"},
    "siren": {"inr": "siren", "width": 64, "depth": 4},
    "siren-shared": {"inr": "siren", "width": 64, "depth": 4, "step_sweeps": 0, "qat_steps": 0},
    "siren-128": {"inr": "siren", "width": 128, "depth": 4},
    "fourier": {"inr": "fourier", "width": 64, "depth": 3, "fourier_features": 128},
    "fourier-shared": {"inr": "fourier", "width": 64, "depth": 3, "fourier_features": 128, "step_sweeps": 0,
                       "qat_steps": 0},
    "dip": {"inr": "dip", "dip_channels": 16, "dip_levels": 4},
}
CRFS = [18, 23, 28, 33, 38]


def run_one(label: str, params: dict, frame) -> dict:
    codec = registry.create(label if label in ("x264", "x265") else "weightstep", params)
    result = harness.run(codec, frame)
    row = {"label": label, "params": params, "bytes": result.bytes, "bpp": result.bpp, "psnr_rgb": result.psnr_rgb,
           "encode_s": result.encode_s, "decode_ms": 1000 * result.decode_s}
    anchor = (result.extra or {}).get("anchor")
    if anchor:
        row.update({key: anchor.get(key) for key in ("fit_psnr", "coded_psnr", "fit_seconds", "fit_steps",
                                                      "latent_bytes", "latent_ideal_bytes", "weight_bytes")})
    return row


def main(out: Annotated[Path, typer.Option()] = Path("anchor_rd.jsonl"),
         frame: Annotated[list[str], typer.Option()] = ["carphone", "bikes", "bigbuckbunny"],  # noqa: B006
         net: Annotated[list[str], typer.Option()] = list(NETS),  # noqa: B006
         lambdas: Annotated[list[float], typer.Option()] = [3e-4, 1e-3, 3e-3, 1e-2],  # noqa: B006
         anchor_steps: int | None = None, threads: int = 1, device: str = "cpu",
         markdown: bool = False, report_only: bool = False) -> None:
    torch.set_num_threads(threads)
    done = {}
    if out.exists():
        for line in out.read_text().splitlines():
            row = json.loads(line)
            done[(row["frame"], row["label"], json.dumps(row["params"], sort_keys=True))] = row
    for name in frame:
        spec, downscale = FRAMES[name]
        source = open_video(spec, ReadOptions(frames=1, downscale=downscale))
        jobs = [(codec, {"crf": crf, "gop": 1}) for codec in ("x265", "x264") for crf in CRFS]
        for lam in lambdas:
            for label in net:
                params = {**NETS[label], "lambda": lam, "device": device}
                if anchor_steps:
                    params["anchor_steps"] = anchor_steps
                jobs.append((label, params))
        for label, params in jobs:
            key = (name, label, json.dumps(params, sort_keys=True))
            if key in done or report_only:
                continue
            row = {"frame": name, **run_one(label, params, source)}
            with out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            done[key] = row
        report([r for r in done.values() if r["frame"] == name], f"{name} frame 0 ({source.width}x{source.height})",
               markdown)


def _bd(say, curves: dict[str, list[dict]], label: str, reference: str) -> None:
    ref, curve = curves.get(reference, []), curves.get(label, [])
    if len(ref) < 4 or len(curve) < 4:
        return
    try:
        value = bd_rate([r["bpp"] for r in ref], [r["psnr_rgb"] for r in ref],
                        [r["bpp"] for r in curve], [r["psnr_rgb"] for r in curve])
        say(f"BD-rate of {label} against {reference}: {value:+.1f} %")
    except MetricError as exc:
        say(f"BD-rate of {label} against {reference}: not defined ({exc})")


COLUMNS = ("codec", "point", "bytes", "bpp", "fit dB", "coded dB", "fit-coded dB", "encode s", "decode ms",
           "latents coded/ideal")


def report(rows: list[dict], title: str, markdown: bool = False) -> None:
    """One table per frame (Rich, or Markdown for the README) and the BD-rates below it."""
    console = Console(width=200)
    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column, justify="right")
    lines = [f"{title}:", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    curves: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: (r["label"], r["bpp"])):
        curves.setdefault(row["label"], []).append(row)
        point = f"crf {row['params']['crf']}" if "crf" in row["params"] else f"λ {row['params']['lambda']:g}"
        fit = row.get("fit_psnr")
        ratio = (f"{row['latent_bytes'] / row['latent_ideal_bytes']:.4f}" if row.get("latent_ideal_bytes") else "-")
        cells = (row["label"], point, str(row["bytes"]), f"{row['bpp']:.3f}", f"{fit:.2f}" if fit else "-",
                 f"{row['psnr_rgb']:.2f}", f"{fit - row['psnr_rgb']:+.2f}" if fit else "-",
                 f"{row['encode_s']:.1f}", f"{row['decode_ms']:.0f}", ratio)
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    if markdown:
        print("\n".join(lines) + "\n")
    else:
        console.print(table)
    say = print if markdown else (lambda text: console.print("  " + text))
    for label in sorted(curves):
        if label in ("x264", "x265"):
            continue
        _bd(say, curves, label, "x265")
        _bd(say, curves, label, "x264")
        if f"{label}-shared" in curves:
            _bd(say, curves, label, f"{label}-shared")
    if markdown:
        print()


if __name__ == "__main__":
    typer.run(main)
