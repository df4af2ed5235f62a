"""Anchor networks coded as images: size, speed, quality and how close the written bits are to ideal.

    python benchmarks/anchor_codec.py [--video sample:carphone] [--steps 300] [--kinds siren fourier dip]

For each network kind at two sizes, on the first frame: parameters, ms per full-frame fitting
step on this machine, RGB PSNR after the fit and after coding, bits per parameter written, and
the coded weight bits against the ideal information content of the quantised weights under
the stored entropy models, and the side information in bytes (container header, quantisation
steps, shapes, entropy-model parameters). Figures, not tests. Sizes: siren width/depth,
fourier width/depth/frequencies, dip channels/levels.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from weightstep import registry
from weightstep.codecs import harness
from weightstep.codecs.netcoding import parameter_shapes
from weightstep.codecs.weightstep_codec import ANCHOR
from weightstep.coding.container import Container
from weightstep.coding.entropy import INT_HEADER_BYTES, encode_ints, ideal_bits, model_of
from weightstep.coding.quantise import unpack_tensors
from weightstep.video import ReadOptions, open_video

SIZES = {
    "siren": [{"width": 64, "depth": 4}, {"width": 128, "depth": 4}],
    "fourier": [{"width": 64, "depth": 3, "fourier_features": 128}, {"width": 128, "depth": 3, "fourier_features": 256}],
    "dip": [{"dip_channels": 16, "dip_levels": 4}, {"dip_channels": 32, "dip_levels": 4}],
}


def weight_bits(section: bytes, shapes) -> tuple[float, int]:
    """(ideal information content of the quantised weights under the models their blobs store,
    bits the coder wrote for them, entropy-model headers excluded)."""
    ideal, payload = 0.0, 0
    for q in unpack_tensors(section, shapes):
        blob = encode_ints(q.values)
        ideal += ideal_bits(q.values, *model_of(blob))
        payload += 8 * (len(blob) - INT_HEADER_BYTES)
    return ideal, payload


def main(video: Annotated[str, typer.Option()] = "sample:carphone", steps: int = 300,
         kinds: Annotated[list[str], typer.Option("--kinds")] = ["siren", "fourier", "dip"],  # noqa: B006
         q_lambda: float = 1e-3, device: str = "auto") -> None:
    frame = open_video(video, ReadOptions(frames=1))
    table = Table(title=f"anchor networks on frame 0 of {video} ({frame.width}x{frame.height}), {steps} steps")
    for column in ("network", "params", "ms/step", "fit dB", "coded dB", "bytes", "bpp", "bits/param",
                   "coded/ideal", "side bytes"):
        table.add_column(column, justify="right")
    for kind in kinds:
        for size in SIZES[kind]:
            params = {"inr": kind, "anchor_steps": steps, "q_lambda": q_lambda, "device": device, **size}
            codec = registry.create("weightstep", params)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "anchor.wsv"
                result = harness.run(codec, frame, path)
                section = Container.from_bytes(path.read_bytes()).section(ANCHOR)
            anchor = result.extra["anchor"]
            ideal, payload = weight_bits(section, parameter_shapes(codec._network(frame.height, frame.width)))
            label = f"{kind} " + "/".join(str(v) for v in size.values())
            table.add_row(label, str(anchor["parameters"]), f"{1000 * anchor['fit_seconds'] / anchor['fit_steps']:.1f}",
                          f"{anchor['fit_psnr']:.2f}", f"{result.psnr_rgb:.2f}", str(result.bytes), f"{result.bpp:.3f}",
                          f"{8 * anchor['weight_bytes'] / anchor['parameters']:.2f}",
                          f"{payload / ideal:.4f}", str(result.bytes - payload // 8))
    Console(width=200).print(table)


if __name__ == "__main__":
    typer.run(main)
