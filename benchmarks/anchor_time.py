"""Anchor time targets (issue 10): how long the grid anchor takes to reach its quality, and to decode.

    python benchmarks/anchor_time.py [--net grid] [--lam 1e-3] [--ladder 250 500 1000] [--threads 1]

Prints, for the network's defaults at one lambda:

1. carphone frame 0 (176x144): the coded PSNR at each anchor step count of ``--ladder`` and at
   the default, and the encode seconds of the cheapest count whose coded PSNR is within 0.3 dB
   of the default's (each count is a full encode: fit, rounding phase, step search, file);
2. bigbuckbunny frame 0 area-downscaled by 2 (640x360) at the defaults: the step count the
   defaults give that frame size, encode seconds, decode milliseconds;
3. the default step count and a projected encode time for a 1920x1080 frame (per-pixel-step
   cost measured in 2., not run).

Wall times are of this machine as it is (a shared CPU inflates them); figures, not tests.
"""

from __future__ import annotations

import os
from typing import Annotated

import torch
import typer

from weightstep import registry
from weightstep.codecs import harness
from weightstep.video import ReadOptions, open_video


def encode(params: dict, source) -> dict:
    result = harness.run(registry.create("weightstep", params), source)
    anchor = (result.extra or {}).get("anchor", {})
    return {"psnr": result.psnr_rgb, "bpp": result.bpp, "encode_s": result.encode_s,
            "decode_ms": 1000 * result.decode_s, "fit_steps": anchor.get("fit_steps")}


def main(net: Annotated[str, typer.Option()] = "grid", lam: Annotated[float, typer.Option()] = 1e-3,
         ladder: Annotated[list[int], typer.Option()] = [250, 500, 1000],  # noqa: B006
         threads: int = 1, skip_small: bool = False, skip_large: bool = False) -> None:
    torch.set_num_threads(threads)
    os.environ.setdefault("WEIGHTSTEP_PROGRESS", "0")
    base = {"inr": net, "lambda": lam, "device": "cpu"}
    print(f"network {net}, lambda {lam:g}, {threads} torch thread(s); wall times on this machine as it is")
    if not skip_small:
        small = open_video("sample:carphone", ReadOptions(frames=1))
        final = encode(base, small)
        print(f"carphone 176x144 at the defaults ({final['fit_steps']} steps): {final['psnr']:.2f} dB, "
              f"{final['bpp']:.3f} bpp, encode {final['encode_s']:.1f} s, decode {final['decode_ms']:.0f} ms")
        reached = None
        for steps in sorted(ladder):
            row = encode({**base, "anchor_steps": steps}, small)
            print(f"  {steps} steps: {row['psnr']:.2f} dB, {row['bpp']:.3f} bpp, encode {row['encode_s']:.1f} s")
            if reached is None and row["psnr"] >= final["psnr"] - 0.3:
                reached = (steps, row["encode_s"])
        if reached is None:
            reached = (final["fit_steps"], final["encode_s"])
        print(f"carphone: within 0.3 dB of the default's PSNR after {reached[0]} steps, "
              f"encode {reached[1]:.1f} s")
    if not skip_large:
        large = open_video("sample:bigbuckbunny", ReadOptions(frames=1, downscale=2))
        row = encode(base, large)
        pixels = large.width * large.height
        print(f"bigbuckbunny {large.width}x{large.height} at the defaults ({row['fit_steps']} steps): "
              f"{row['psnr']:.2f} dB, {row['bpp']:.3f} bpp, encode {row['encode_s']:.1f} s, "
              f"decode {row['decode_ms']:.0f} ms")
        config = registry.create("weightstep", base).config
        hd_steps = config.steps(1920 * 1080)
        per_pixel_step = row["encode_s"] / (row["fit_steps"] * pixels)
        print(f"1920x1080 at the defaults: {hd_steps} steps, about "
              f"{per_pixel_step * hd_steps * 1920 * 1080 / 60:.0f} min projected (not run)")


if __name__ == "__main__":
    typer.run(main)
