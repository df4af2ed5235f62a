"""Rate-distortion and speed of the full-sequence INR baselines beside x264, on the same frames.

    python benchmarks/full_sequence_rd.py [--video sample:carphone] [--frames 30] [--downscale 1] [--budget SECONDS]
        [--q-lambda 1e-3] [--threads 1] [--codecs full-mlp --codecs nerv ...] [--crf 23 ...]

Each INR baseline is run at four model sizes (its rate points). Training effort is fixed in
epochs per baseline (``EPOCHS``: chosen so that each baseline's mid-size point trains for
roughly a minute on one idle CPU core), which gives the same work, and the same figures, on
a busy shared machine; the table shows the training seconds each point took. ``--budget S``
instead gives every point the same wall-time training budget (``time_budget``: fit plus
pruning fine-tune, the lr schedule laid out over the steps that fit), for equal-time
comparisons on a machine of steady load. All use the same quantisation step search with ``lambda`` (default 1e-3 here:
MSE + lambda * bpp). The rate is the bytes of the file that decodes; quality is measured on the
decoded frames by the harness (RGB PSNR: mean over frames; MS-SSIM on RGB). x264 (medium
preset) is run at several CRFs on the same frames. "epochs" are those the budget allowed (NeRV:
fit + fine-tune after pruning), "train s" the training time. Encode time is the whole encode
(training, step search, coding); decode fps is frames / decode wall time (container parse,
network rebuild, rendering every frame). Figures, not tests: timings depend on the machine
and its load; ``--threads`` sets torch's CPU threads (1 on a shared 2-core machine).
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.table import Table

from weightstep import registry
from weightstep.codecs import harness
from weightstep.errors import MetricError
from weightstep.metrics import bd_rate
from weightstep.video import ReadOptions, open_video

# Four model sizes per baseline (its rate points; four so that BD-rate against x264 can be computed).
POINTS: dict[str, list[dict[str, Any]]] = {
    "full-mlp": [{"width": 32}, {"width": 64}, {"width": 96}, {"width": 160}],  # SIREN on (x, y, t), 4 layers
    "full-cnn": [{"dip_channels": 6}, {"dip_channels": 10}, {"dip_channels": 16}, {"dip_channels": 24}],  # 4 levels
    "nerv": [{"channels": 8, "stem_hidden": 16, "min_channels": 4},  # 176x144: 4x5 stem grid, blocks 3-3-2-2
             {"channels": 12, "stem_hidden": 24, "min_channels": 6},
             {"channels": 16, "stem_hidden": 32, "min_channels": 8},
             {"channels": 32, "stem_hidden": 64, "min_channels": 12}],
}
EPOCHS = {"full-mlp": {"epochs": 20}, "full-cnn": {"epochs": 50}, "nerv": {"epochs": 120, "finetune_epochs": 20}}
CRFS = [18, 23, 28, 33, 38]


def label(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def main(video: Annotated[str, typer.Option()] = "sample:carphone", frames: int = 30,
         downscale: Annotated[int, typer.Option(help="integer area downscale, as weightstep_rd.py's")] = 1,
         budget: Annotated[float | None, typer.Option(help="equal wall-time training budget per INR point, "
                                                                  "seconds (default: the epochs of EPOCHS)")] = None,
         threads: int = 1, lam: float = 1e-3, device: str = "cpu",
         codecs: Annotated[list[str], typer.Option("--codecs")] = ["full-mlp", "full-cnn", "nerv", "x264"],  # noqa: B006
         crf: Annotated[list[int], typer.Option("--crf")] = CRFS,  # noqa: B006
         markdown: bool = True) -> None:
    torch.set_num_threads(threads)
    source = open_video(video, ReadOptions(frames=frames, downscale=downscale))
    effort = (f"training budget {budget:g} s per point" if budget is not None else
              "epochs " + ", ".join(f"{name} {label(value)}" for name, value in EPOCHS.items()))
    title = (f"{source.identity}: first {source.frames} frames, {source.width}x{source.height}; INR {effort}; "
             f"lambda {lam:g}, torch threads {threads}, device {device}")
    columns = ("codec", "setting", "params", "epochs", "train s", "bytes", "bpp", "PSNR RGB", "MS-SSIM", "enc s",
               "dec fps")
    rows: list[list[str]] = []
    curves: dict[str, list] = {}
    console = Console(width=220, stderr=False)
    for name in codecs:
        if name in POINTS:
            effort = EPOCHS[name] if budget is None else {"epochs": 100_000, "time_budget": budget}
            jobs = [{**point, **effort, "lambda": lam, "device": device} for point in POINTS[name]]
            shown = POINTS[name]
        else:
            jobs = [{"crf": value, "preset": "medium"} if name in ("x264", "x265") else {"crf": value}
                    for value in crf]
            shown = [{"crf": value} for value in crf]
        for params, setting in zip(jobs, shown, strict=True):
            result = harness.run(registry.create(name, params), source)
            curves.setdefault(name, []).append(result)
            extra = result.extra
            epochs = ""
            if "fit" in extra:
                epochs = f"{extra['fit']['epochs']:.0f}"
                if "finetune" in extra:
                    epochs += f"+{extra['finetune']['epochs']:.0f}"
            train = f"{extra['train_seconds']:.0f}" if "train_seconds" in extra else ""
            row = [name, label(setting), str(extra.get("parameters", "")), epochs, train, str(result.bytes),
                   f"{result.bpp:.4f}", f"{result.psnr_rgb:.2f}", f"{result.ms_ssim:.4f}", f"{result.encode_s:.1f}",
                   f"{result.frames / result.decode_s:.1f}"]
            rows.append(row)
            console.print(" | ".join(row), highlight=False)
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if "x264" in curves:
        anchor = curves["x264"]
        for name, test in curves.items():
            if name == "x264":
                continue
            try:
                value = bd_rate([r.bpp for r in anchor], [r.psnr_rgb for r in anchor],
                                [r.bpp for r in test], [r.psnr_rgb for r in test])
                console.print(f"BD-rate of {name} against x264 (RGB PSNR, PCHIP): {value:+.1f} %")
            except MetricError as exc:
                console.print(f"BD-rate of {name} against x264: not measurable ({exc})")
    if markdown:
        print()
        print(f"{title}\n")
        print("| " + " | ".join(columns) + " |")
        print("|" + "|".join("---" for _ in columns) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    typer.run(main)
