"""Golden bitstreams: small committed files of every codec family, and the md5s they decode to.

``tests/test_golden.py`` decodes each committed file (on the CPU) and compares the md5 of the
decoded frames with ``tests/data/golden/manifest.json``, so a change that stops files written
earlier from decoding, or decodes them to other pictures, fails. A format change must either
keep these files decoding or bump the format version and keep a decoder for the old one.

Regenerate only on purpose (a deliberate format change; say so in the commit):

    python tests/golden.py --write        # re-encode every case, rewrite files and manifest
    python tests/golden.py                # dry run: encode, and print what would change

The clips are made here from formulas (no downloads); encodes run on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))  # run as a script from anywhere: the checkout's packages
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from clips import moving_clip  # noqa: E402

from weightstep.video import Video  # noqa: E402

FOLDER = HERE / "data" / "golden"
MANIFEST = FOLDER / "manifest.json"

_STEPS = {"anchor_steps": "40", "step_steps": "10", "lambda": "1e-9", "log_alpha_init": "0", "device": "cpu"}

# name -> (codec, parameters, clip); one or more cases per codec family and network kind
CASES: dict[str, tuple[str, dict[str, str], str]] = {
    "weightstep-siren-l0-two-stage": ("weightstep", {"inr": "siren", "width": "16", "depth": "2", "update": "l0",
                                                     **_STEPS}, "rgb16x3"),
    "weightstep-fourier-dct-single-stage": ("weightstep", {"inr": "fourier", "width": "16", "depth": "2",
                                                           "fourier_features": "16", "fourier_sigma": "3",
                                                           "update": "dct", "schedule": "single-stage", **_STEPS},
                                            "rgb16x3"),
    "weightstep-dip-dense-gop2": ("weightstep", {"inr": "dip", "dip_channels": "4", "dip_levels": "2",
                                                 "update": "dense", "gop": "2", **_STEPS}, "rgb16x3"),
    "weightstep-grid-warp+latent": ("weightstep", {"inr": "grid", "grid_levels": "3", "grid_hidden": "4",
                                                   "grid_context_hidden": "4", "update": "warp+latent",
                                                   "warp_grid": "2", **_STEPS}, "rgb16x3"),
    "full-mlp": ("full-mlp", {"width": "16", "depth": "2", "epochs": "10", "batch": "256", "device": "cpu"},
                 "rgb16x3"),
    # written with container version 2 (the files above are version 1 and must keep decoding)
    "weightstep-grid-warp+lowrank-v2": ("weightstep", {"inr": "grid", "grid_levels": "3", "grid_hidden": "4",
                                                       "grid_context_hidden": "4", "update": "warp+lowrank",
                                                       "warp_grid": "2", **_STEPS}, "rgb16x3"),
    "full-mlp-v2": ("full-mlp", {"width": "16", "depth": "2", "epochs": "10", "batch": "256", "device": "cpu"},
                    "rgb16x3"),
    # weightstep stream format 3 (grid renders upsample by matrices; the grid files above are format 1/2)
    "weightstep-grid-warp+lowrank-f3": ("weightstep", {"inr": "grid", "grid_levels": "3", "grid_hidden": "4",
                                                       "grid_context_hidden": "4", "update": "warp+lowrank",
                                                       "warp_grid": "2", **_STEPS}, "rgb16x3"),
    # weightstep stream format 4 (grid steps carry a block-DCT residual: residual=auto, the default)
    "weightstep-grid-residual-f4": ("weightstep", {"inr": "grid", "grid_levels": "3", "grid_hidden": "4",
                                                   "grid_context_hidden": "4", "warp_grid": "2", **_STEPS},
                                    "rgb16x3"),
    # weightstep stream format 5 (a warp coded as its difference from the previous one; every warp
    # after the first is made to predict, see FORCED_PREDICTION, so the file takes the decoder's path)
    "weightstep-grid-predicted-warp-f5": ("weightstep", {"inr": "grid", "grid_levels": "3", "grid_hidden": "4",
                                                         "grid_context_hidden": "4", "warp_grid": "2", **_STEPS},
                                          "rgb16x3"),
    "full-cnn-pruned": ("full-cnn", {"dip_channels": "4", "dip_levels": "2", "epochs": "10", "prune": "0.3",
                                     "finetune_epochs": "2", "device": "cpu"}, "rgb16x3"),
    "nerv": ("nerv", {"channels": "8", "min_channels": "4", "stem_hidden": "8", "epochs": "10",
                      "finetune_epochs": "2", "device": "cpu"}, "rgb16x3"),
    "x264": ("x264", {"crf": "30"}, "yuv64x48x4"),
    "x265": ("x265", {"crf": "30"}, "yuv64x48x4"),
    "x265-10bit": ("x265", {"crf": "30", "pix_fmt": "yuv420p10le"}, "yuv64x48x4"),
    "svtav1": ("svtav1", {"crf": "45", "preset": "12"}, "yuv64x48x4"),
    "vp9": ("vp9", {"crf": "40", "cpu_used": "8", "deadline": "realtime"}, "yuv64x48x4"),
}


FORCED_PREDICTION = {"weightstep-grid-predicted-warp-f5"}  # cases encoded under predict_every_warp()


@contextlib.contextmanager
def predict_every_warp():
    """While open, every warp step with a previous warp is coded as its difference from it (the same
    decoded warp; a tiny clip's warps are a few numbers and rarely take the predicted layout by
    themselves): a valid format-5 stream whose decoder must predict."""
    import weightstep.stepping.step as step_module
    from weightstep.stepping import warp as W

    original = step_module.code_warp

    def predicting(values, distortion, lam_per_bit, previous=None):
        blob, decoded, facts = original(values, distortion, lam_per_bit, previous=previous)
        if previous is not None and facts["warp_step"] is not None:
            e = round(4 * math.log2(facts["warp_step"]))
            blob = W.encode_warp(W.quantise_warp(decoded, e), e, previous)
            facts = {**facts, "warp_bytes": len(blob), "warp_predicted": True}
        return blob, decoded, facts

    step_module.code_warp = predicting
    try:
        yield
    finally:
        step_module.code_warp = original


def clip(name: str) -> Video:
    if name == "rgb16x3":
        return moving_clip(frames=3, size=16)
    if name == "yuv64x48x4":
        t, h, w = 4, 48, 64
        yy, xx = np.mgrid[0:h, 0:w]
        y = np.stack([(xx + 2 * yy + 3 * k) % 200 + 20 for k in range(t)]).astype(np.uint8)
        cy, cx = np.mgrid[0:h // 2, 0:w // 2]
        u = np.stack([100 + (cx + k) % 40 for k in range(t)]).astype(np.uint8)
        v = np.stack([150 - (cy + 2 * k) % 30 for k in range(t)]).astype(np.uint8)
        return Video(identity="golden:yuv", fps=25.0, planes=(y, u, v))
    raise KeyError(name)


# An INR decoder renders floats and rounds them to 8-bit levels. Where a float lands within this
# many levels of a rounding boundary (x.5), another CPU's float arithmetic (other SIMD kernels,
# summation order) may round it the other way; such values are left out of the md5 (measured on
# these files: 1-7 of 2304 values per file lie within 1e-3 levels, the nearest at 4e-5; float32
# rendering differences between machines are expected near 1e-4 levels; 5e-3 leaves out about 1 %).
FRAGILE_LEVELS = 5e-3


def frame_digests(video: Video, fragile: list[list[int]] = ()) -> list[str]:
    """md5 of each decoded frame: its integer planes (YUV output) or its 8-bit RGB (INR output),
    with the ``fragile`` values ([frame, flat index in (3,H,W)] pairs) set to 0 first."""
    out = []
    for t in range(video.frames):
        if video.has_native_yuv:
            raw = b"".join(np.ascontiguousarray(p[t]).astype(p.dtype.newbyteorder("<")).tobytes()
                           for p in video.planes)
        else:
            levels = np.rint(video.rgb()[t] * 255.0).astype(np.uint8).reshape(-1)
            levels[[i for frame, i in fragile if frame == t]] = 0
            raw = levels.tobytes()
        out.append(hashlib.md5(raw).hexdigest())
    return out


def decode(data: bytes):
    from weightstep.codecs import harness

    return harness.decode_bytes(data, device="cpu")


def fragile_values(data: bytes, frames: int) -> list[list[int]]:
    """[frame, index] of each rendered value within FRAGILE_LEVELS of a rounding boundary, found by
    watching the renderer's float output (inr.render.to_8bit, which every INR decoder's render
    calls) while the file decodes."""
    import weightstep.inr.render as render_module

    seen, original = [], render_module.to_8bit

    def spy(values):
        seen.append(values.detach().cpu().clamp(0, 1).numpy().reshape(values.shape[0], -1) * 255.0)
        return original(values)

    render_module.to_8bit = spy
    try:
        decode(data)
    finally:
        render_module.to_8bit = original
    rendered = np.concatenate(seen)
    assert rendered.shape[0] == frames, f"saw {rendered.shape[0]} rendered frames of {frames}"
    distance = np.abs(rendered - np.floor(rendered) - 0.5)
    return [[int(t), int(i)] for t, i in zip(*np.nonzero(distance < FRAGILE_LEVELS), strict=True)]


def make(name: str) -> tuple[bytes, dict]:
    """Encode one case on the CPU; the bytes and its manifest entry (md5s of what they decode to)."""
    from weightstep import registry
    from weightstep.coding.container import FORMAT_VERSION, MAGIC
    from weightstep.versions import versions

    codec_name, params, clip_name = CASES[name]
    codec = registry.create(codec_name, params)
    with predict_every_warp() if name in FORCED_PREDICTION else contextlib.nullcontext():
        data = codec.encode(clip(clip_name)).data
    _, decoded = decode(data)
    fragile = [] if decoded.has_native_yuv else fragile_values(data, decoded.frames)
    entry = {"file": f"{name}{codec.suffix}", "codec": codec_name, "params": params, "clip": clip_name,
             "bytes": len(data), "file_md5": hashlib.md5(data).hexdigest(),
             "frames": frame_digests(decoded, fragile), "fragile": fragile,
             "format": codec.describe().get("format"),
             "container_version": FORMAT_VERSION if data.startswith(MAGIC) else None,
             "made_with": {k: v for k, v in versions().items() if k in ("weightstep", "torch", "av", "numpy")}}
    return data, entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite the committed files and manifest")
    parser.add_argument("names", nargs="*", help="cases to regenerate (default: all)")
    args = parser.parse_args(argv)
    import os

    os.environ.setdefault("WEIGHTSTEP_PROGRESS", "0")
    import torch

    torch.set_num_threads(1)
    old = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    new = dict(old)
    for name in args.names or list(CASES):
        data, entry = make(name)
        before = old.get(name, {})
        change = "new" if not before else "unchanged" if before["file_md5"] == entry["file_md5"] else (
            f"{before.get('bytes', '-')} -> {entry['bytes']} bytes, decoded frames "
            f"{'same' if before.get('frames') == entry['frames'] else 'differ'}")
        if entry["fragile"]:
            change += f"  ({len(entry['fragile'])} values near a rounding boundary left out of the md5s)"
        print(f"{name:40s} {entry['bytes']:6d} bytes  {change}")
        new[name] = entry
        if args.write:
            FOLDER.mkdir(parents=True, exist_ok=True)
            (FOLDER / entry["file"]).write_bytes(data)
    if args.write:
        MANIFEST.write_text(json.dumps(new, indent=1, sort_keys=True) + "\n")
        print(f"wrote {len(args.names or CASES)} files and {MANIFEST.relative_to(HERE.parent)}")
    else:
        print("dry run: nothing written (--write to rewrite)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
