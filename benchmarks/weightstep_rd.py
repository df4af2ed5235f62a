"""Rate-distortion of weight stepping (every update kind x schedule) beside x264 and x265.

    python benchmarks/weightstep_rd.py --frames 30 --out /tmp/ws_rd.jsonl
    python benchmarks/weightstep_rd.py --video sample:bikes --downscale 2 --variants warp+l0/two-stage
    python benchmarks/weightstep_rd.py --frames 10 --variants warp+lowrank/two-stage --param step_lambda_scale=0.3
    python benchmarks/weightstep_rd.py --frames 30 --variants warp+lowrank/two-stage --seed 0 --seed 1 --seed 2
    python benchmarks/weightstep_rd.py --out rows.jsonl --merge other.jsonl --report-only --plots figures/clip

On the first frames of a clip, for each step kind (l0, dct, dense, warp, lowrank, film and the warp+X
combinations) and schedule (two-stage,
single-stage), codes the clip at each rate point (lambda: every fit, gate penalty and quantisation
step search minimises MSE + lambda * bpp), then x264 and x265 at five crf values on the same frames (at their
defaults, B-frames on, and with P-frames only: ``x264-p``, ``x265-p``, the low-delay structure of weight
stepping), and prints bpp, RGB PSNR, MS-SSIM, encode seconds per frame, decode frames per second and the
BD-rate (PCHIP, RGB PSNR) of every weight-step variant against each of the four. Each finished encode is appended
to --out as one JSON line, and an existing file is resumed, so a long run can be stopped and
continued. ``--plots PREFIX`` draws the curves (PREFIX-rd.png) and each frame's quality and bits near x264-p
at crf 28 (PREFIX-frames.png); ``--merge FILE`` reports another run's rows beside these. Figures, not tests;
BD-rate is reported only where the curves overlap.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import rich.box
import typer
from rich.console import Console
from rich.table import Table

from weightstep import registry
from weightstep.codecs import harness
from weightstep.errors import MetricError, WeightstepError
from weightstep.experiments.plots import rd_figure, style, timeline_figure
from weightstep.metrics import bd_rate
from weightstep.video import ReadOptions, open_video

# lambda of D + lambda * bpp: one rate point each
RATE_POINTS = [3e-4, 1e-3, 3e-3, 1e-2]
CRFS = [18, 23, 28, 33, 38]
# the conventional references (label: codec, settings beside crf): x264 and x265 at their defaults (B-frames on),
# and the same with P-frames only (bframes=0), the low-delay structure weight stepping has (each frame predicted
# from the one before); the reference is the P-frame one, the default is reported beside it
REFERENCES = {"x264": ("x264", {}), "x265": ("x265", {}), "x264-p": ("x264", {"bframes": 0}),
              "x265-p": ("x265", {"bframes": 0})}
# every step kind x schedule the codec takes (single-stage fits the proposal's l0 / dct / dense only)
VARIANTS = [f"{kind}/two-stage" for kind in ("l0", "dct", "dense", "warp", "warp+l0", "warp+dct", "lowrank", "film",
                                             "warp+lowrank", "warp+film")] + \
    [f"{kind}/single-stage" for kind in ("l0", "dct", "dense")]


def jobs(model: dict[str, str], variants: list[str], points: list[float], suffix: str = "") -> list[tuple[str, dict]]:
    """The conventional references first (fast), then one rate point of every variant at a time, so a
    run stopped early still compares every variant."""
    out = [(label, {"crf": crf, **extra}) for label, (_, extra) in REFERENCES.items() for crf in CRFS]
    order = sorted(range(len(points)), key=lambda i: abs(i - (len(points) - 1) / 2))  # middle points first
    for point in order:
        for variant in variants:
            update, schedule = variant.split("/")
            out.append((f"ws-{update}-{schedule}{suffix}", {"update": update, "schedule": schedule,
                                                     "lambda": points[point], **model}))
    return out


def main(video: Annotated[str, typer.Option()] = "sample:carphone", frames: int = 30, downscale: int = 1,
         out: Annotated[Path, typer.Option()] = Path("weightstep_rd.jsonl"),
         inr: str = "grid", anchor_steps: int = 2000, step_steps: int = 150,
         variants: Annotated[list[str] | None, typer.Option(help="KIND/SCHEDULE, repeatable")] = None,
         points: Annotated[list[float] | None, typer.Option(help="lambda values, repeatable")] = None,
         only: Annotated[list[str] | None, typer.Option()] = None, report_only: bool = False,
         markdown: bool = False,
         merge: Annotated[list[Path] | None, typer.Option(help="rows of another --out file to report beside these "
                                                          "(repeatable; never written to)")] = None,
         plots: Annotated[Path | None, typer.Option(help="write PREFIX-rd.png (RD curves) and PREFIX-frames.png "
                                                   "(quality and bits per frame near x264-p crf 28)")] = None,
         param: Annotated[list[str] | None, typer.Option(help="KEY=VALUE codec setting for every weight-step "
                                                          "variant (repeatable; named in the label)")] = None,
         seeds: Annotated[list[int] | None, typer.Option("--seed", help="run every weight-step variant with this "
                                                         "codec seed (repeatable; 0 is the default and unnamed, "
                                                         "others are named as seed=N, as --param seed=N names them); "
                                                         "the BD-rates are then also given over the seeds")] = None
         ) -> None:
    source = open_video(video, ReadOptions(frames=frames, downscale=downscale))
    model = {"inr": inr, "anchor_steps": anchor_steps, "step_steps": step_steps}
    try:
        if any("=" not in item for item in param or []):
            raise WeightstepError(f"--param takes KEY=VALUE, got {next(i for i in param if '=' not in i)!r}")
        extra = dict(item.split("=", 1) for item in param or [])
        model.update(extra)
        registry.create("weightstep", model)
    except WeightstepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    suffix = "".join(f" {k}={v}" for k, v in extra.items())
    done, merged = {}, {}
    for path, into in ((out, done), *((path, merged) for path in merge or [])):
        if path.exists():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                into[(row["label"], json.dumps(row["params"], sort_keys=True))] = row
        elif path != out:
            print(f"error: --merge {path}: no such file", file=sys.stderr)
            raise SystemExit(2)
    planned = [] if report_only else [
        job for seed in seeds or [None]
        for job in jobs({**model, **({"seed": str(seed)} if seed else {})}, variants or VARIANTS, points or RATE_POINTS,
                        suffix + (f" seed={seed}" if seed else ""))]
    for label, params in planned:
        key = (label, json.dumps(params, sort_keys=True))
        if key in done or (only and not any(label.startswith(o) for o in only)):
            continue
        codec = registry.create(REFERENCES[label][0] if label in REFERENCES else "weightstep", params)
        result = harness.run(codec, source)
        steps = result.extra.get("steps", [])
        row = {"label": label, "params": params, "bpp": result.bpp, "psnr_rgb": result.psnr_rgb,
               "ms_ssim": result.ms_ssim, "encode_s": result.encode_s, "decode_s": result.decode_s,
               "bytes": result.bytes, "per_frame_bits": [f["bits"] for f in result.per_frame],
               "per_frame_psnr": [f["psnr_rgb"] for f in result.per_frame],
               "step_seconds": [s.get("fit_seconds") for s in steps], "fit_steps": [s.get("fit_steps") for s in steps],
               "step_total_seconds": [s.get("step_seconds") for s in steps],
               "guard_scale": [s.get("guard_scale", 1.0) for s in steps]}  # < 1: the floor refitted that step
        with out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        done[key] = row
    rows = list({**merged, **done}.values())
    report(rows, frames, video, markdown)
    if plots is not None:
        for path in write_plots(rows, frames, video, plots):
            print(f"wrote {path}")


def _point(row: dict) -> str:
    """A row's rate point as the tables print it: its crf, or its lambda."""
    return f"crf {row['params']['crf']}" if "crf" in row["params"] else f"λ {row['params']['lambda']:g}"


def _styles(labels: list[str]) -> dict[str, dict]:
    """The references first, then the weight-step variants, each with the protocol reports' colours."""
    ordered = [label for label in REFERENCES if label in labels] + sorted(set(labels) - set(REFERENCES))
    return {label: style(index) for index, label in enumerate(ordered)}


def write_plots(rows: list[dict], frames: int, video: str, prefix: Path) -> list[Path]:
    """PREFIX-rd.png: PSNR and MS-SSIM against bpp of every curve; PREFIX-frames.png: quality and bits per
    frame of each curve's point nearest (in bpp) to x264-p at crf 28 (x264 where there is no x264-p),
    beside that reference and x264 at crf 28."""
    curves: dict[str, list[dict]] = {}
    for row in rows:
        curves.setdefault(row["label"], []).append(row)
    styles = _styles(list(curves))
    title = f"{video}, {frames} frames"
    panels = [(metric, {label: [(r["bpp"], r[metric]) for r in curves[label]] for label in styles})
              for metric in ("psnr_rgb", "ms_ssim")]
    prefix.parent.mkdir(parents=True, exist_ok=True)
    written = [prefix.with_name(prefix.name + "-rd.png")]
    written[0].write_bytes(rd_figure(title, panels, styles, columns=2))
    reference = next((r for name in ("x264-p", "x264") for r in curves.get(name, []) if r["params"].get("crf") == 28),
                     None)
    if reference is not None:
        series, frame_styles = {}, {}
        for label, curve in sorted(curves.items()):
            if label in REFERENCES and label not in ("x264", "x264-p"):
                continue
            row = min(curve, key=lambda r: abs(math.log(r["bpp"] / reference["bpp"])))
            point = _point(row)
            short = label.removeprefix("ws-").replace("-two-stage", "").replace("-single-stage", " single-stage")
            name = f"{short}, {point}: {row['bpp']:.3f} bpp"
            series[name] = (row["per_frame_psnr"], row["per_frame_bits"])
            frame_styles[name] = styles[label]
        written.append(prefix.with_name(prefix.name + "-frames.png"))
        written[1].write_bytes(timeline_figure(title, [(video, series)], frame_styles))
    return written


def report(rows: list[dict], frames: int, video: str, markdown: bool = False) -> None:
    console = Console(width=200)
    table = Table(title=f"{video}, {frames} frames", box=rich.box.MARKDOWN if markdown else rich.box.HEAVY_HEAD)
    for column in ("technique", "point", "bpp", "PSNR RGB", "MS-SSIM", "enc s/frame", "s/step", "dec fps",
                   "anchor bytes", "mean step bytes", "PSNR f1", "PSNR last"):
        table.add_column(column, justify="right")
    curves: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: (r["label"], r["bpp"])):
        curves.setdefault(row["label"], []).append(row)
        point = _point(row)
        bits = row["per_frame_bits"]
        steps = [b for b in bits[1:] if b is not None]
        step_s = [s for s in row.get("step_total_seconds", []) if s is not None]  # fit + rate search of a step
        table.add_row(row["label"], point, f"{row['bpp']:.4f}", f"{row['psnr_rgb']:.2f}", f"{row['ms_ssim']:.4f}",
                      f"{row['encode_s'] / frames:.2f}", f"{sum(step_s) / len(step_s):.2f}" if step_s else "-",
                      f"{frames / max(row['decode_s'], 1e-9):.1f}",
                      str(bits[0] // 8) if bits[0] is not None else "-",
                      f"{sum(steps) / 8 / len(steps):.0f}" if steps else "-",
                      *(f"{row['per_frame_psnr'][i]:.2f}" if len(row.get("per_frame_psnr", [])) > 1 else "-"
                        for i in (1, -1)))
    console.print(table)
    bds: dict[tuple[str, str], float] = {}  # (variant, reference) -> BD-rate, where defined
    for reference in REFERENCES:
        anchor = curves.get(reference, [])
        for label, curve in sorted(curves.items()):
            if label in REFERENCES or not anchor or len(curve) < 2:
                continue
            try:
                bds[label, reference] = value = bd_rate(
                    [r["bpp"] for r in anchor], [r["psnr_rgb"] for r in anchor],
                    [r["bpp"] for r in curve], [r["psnr_rgb"] for r in curve])
                console.print(f"BD-rate of {label} against {reference} (PCHIP, RGB PSNR): {value:+.1f} %")
            except MetricError as exc:
                console.print(f"BD-rate of {label} against {reference}: not defined ({exc})")
    _over_seeds(curves, bds, console)
    _split_against(curves, "x264-p", console)
    # the freeze check: last frame against frame 1 (issue 11: within 1.5 dB at every point); the references' own
    # drops come first, since a clip whose content gets harder drops under any codec
    for label, curve in sorted(curves.items(), key=lambda item: (item[0] not in REFERENCES, item[0])):
        tracked = [r for r in curve if len(r.get("per_frame_psnr", [])) > 2]
        if not tracked:
            continue
        row = max(tracked, key=lambda r: r["per_frame_psnr"][1] - r["per_frame_psnr"][-1])
        drop = row["per_frame_psnr"][1] - row["per_frame_psnr"][-1]
        verdict = "holds" if drop <= 1.5 else "decays"
        role = "reference, " if label in REFERENCES else ""
        console.print(f"{label}: frame {frames - 1} vs frame 1, worst drop {drop:+.2f} dB at {_point(row)} "
                      f"({role}{verdict})")


def _equal_quality_bytes(points: list[tuple[float, float]], psnr: float) -> float | None:
    """Bytes at ``psnr`` on a reference's (PSNR, bytes) points, linear in log bytes; None outside their range."""
    points = sorted(points)
    if not points or not points[0][0] <= psnr <= points[-1][0]:
        return None
    return float(np.exp(np.interp(psnr, [p for p, _ in points], [math.log(b) for _, b in points])))


def _split_against(curves: dict[str, list[dict]], reference: str, console: Console) -> None:
    """Each weight-step point's anchor against ``reference``'s first frame, and its steps against the reference's
    later frames, each at the same PSNR: which of the two parts a curve's BD-rate comes from."""
    rows = [r for r in curves.get(reference, []) if len(r.get("per_frame_bits", [])) > 1]
    if len(rows) < 2:
        return

    def part(row: dict, first: bool) -> tuple[float, float]:
        bits, psnr = row["per_frame_bits"], row["per_frame_psnr"]
        if first:
            return psnr[0], bits[0] / 8
        return float(np.mean(psnr[1:])), float(np.mean(bits[1:])) / 8

    firsts, laters = [part(r, True) for r in rows], [part(r, False) for r in rows]
    for label, curve in sorted(curves.items()):
        if label in REFERENCES:
            continue
        for row in curve:
            if len(row.get("per_frame_bits", [])) < 2 or None in row["per_frame_bits"]:
                continue
            cells = []
            for name, own, theirs in (("anchor", part(row, True), firsts), ("steps", part(row, False), laters)):
                equal = _equal_quality_bytes(theirs, own[0])
                ratio = f"{own[1] / equal:.2f} x {reference}'s" if equal else f"outside {reference}'s range of"
                what = "first frame" if name == "anchor" else "later frames"
                cells.append(f"{name} {own[1]:.0f} B at {own[0]:.2f} dB = {ratio} {what}")
            console.print(f"{label} at {_point(row)}: " + "; ".join(cells))


SEED = re.compile(r" seed=(\d+)")


def _over_seeds(curves: dict[str, list[dict]], bds: dict[tuple[str, str], float], console: Console) -> None:
    """Mean and range of the BD-rates (``bds``, as the report printed them) of curves that differ only by their seed
    (a label without one is seed 0): a single seed's curve moves by tens of points (README, "The same curves with
    two more seeds")."""
    groups: dict[str, dict[int, str]] = {}
    for label, curve in curves.items():
        if label not in REFERENCES and len(curve) >= 2:
            match = SEED.search(label)
            groups.setdefault(SEED.sub("", label), {})[int(match.group(1)) if match else 0] = label
    for base, by_seed in sorted(groups.items()):
        if len(by_seed) < 2:
            continue
        for reference in REFERENCES:
            values = [bds[label, reference] for label in by_seed.values() if (label, reference) in bds]
            if values:
                console.print(f"BD-rate of {base} over seeds {', '.join(map(str, sorted(by_seed)))} against {reference}: "
                              f"mean {sum(values) / len(values):+.1f} % (from {min(values):+.1f} to {max(values):+.1f}; "
                              f"defined for {len(values)} of {len(by_seed)})")

if __name__ == "__main__":
    typer.run(main)
