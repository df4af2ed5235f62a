"""Rate-distortion of the conventional codecs on one clip, and BD-rate of each against x264.

    python benchmarks/conventional_rd.py sample:carphone --crf 18 23 28 33 38

Prints one row per (codec, crf): bpp, RGB / YUV PSNR, MS-SSIM and timings, then the BD-rate
(PCHIP, over log-rate) of every codec against the first one on RGB PSNR, YUV PSNR and MS-SSIM.
Figures, not tests: timings depend on the machine.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from weightstep import registry
from weightstep.codecs import harness
from weightstep.metrics import bd_rate
from weightstep.progress import track
from weightstep.video import ReadOptions, open_video


def main(video: Annotated[str, typer.Argument()] = "sample:carphone",
         codecs: Annotated[list[str], typer.Option("--codec")] = ["x264", "x265"],  # noqa: B006
         crf: Annotated[list[float], typer.Option("--crf")] = [18, 23, 28, 33, 38],  # noqa: B006
         frames: int | None = None, preset: str = "medium") -> None:
    source = open_video(video, ReadOptions(frames=frames))
    table = Table(title=f"{source.identity}: {source.frames} frames {source.width}x{source.height}")
    for column in ("codec", "crf", "bytes", "bpp", "PSNR RGB", "PSNR YUV", "MS-SSIM", "enc s", "dec s"):
        table.add_column(column, justify="right")
    curves: dict[str, list] = {}
    jobs = [(name, value) for name in codecs for value in crf]
    for name, value in track(jobs, "encoding", total=len(jobs)):
        params = {"crf": value}
        if name in ("x264", "x265"):
            params["preset"] = preset
        result = harness.run(registry.create(name, params), source)
        curves.setdefault(name, []).append(result)
        table.add_row(name, f"{value:g}", str(result.bytes), f"{result.bpp:.4f}", f"{result.psnr_rgb:.2f}",
                      f"{result.psnr_yuv:.2f}", f"{result.ms_ssim:.4f}", f"{result.encode_s:.2f}",
                      f"{result.decode_s:.2f}")
    console = Console(width=200)
    console.print(table)
    anchor = curves[codecs[0]]
    for name in codecs[1:]:
        test = curves[name]
        figures = []
        for metric in ("psnr_rgb", "psnr_yuv", "ms_ssim"):
            value = bd_rate([r.bpp for r in anchor], [getattr(r, metric) for r in anchor],
                            [r.bpp for r in test], [getattr(r, metric) for r in test])
            figures.append(f"{metric} {value:+.1f} %")
        console.print(f"BD-rate of {name} against {codecs[0]} (PCHIP): " + ", ".join(figures))


if __name__ == "__main__":
    typer.run(main)
