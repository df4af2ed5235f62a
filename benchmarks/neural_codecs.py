"""DVC and VCII on a real clip: real file size against the model's rate estimate, and decode speed.

For each checkpoint given: encode the clip (default: the 120 frames of sample:carphone,
176x144), write the file, decode it from the file, and print

- the real bytes of the coded P-/B-frame streams against the model's estimate of them (the
  entropy coder's overhead), and the whole file's bpp against (key frames' real bits + the
  estimate), so the container and key-frame framing are counted too;
- whether the decoded video equals the encoder's reconstruction bit for bit (MD5);
- PSNR, encode and decode time, decoded frames per second.

Run: ``python benchmarks/neural_codecs.py --dvc dvc.ckpt --vcii vcii.ckpt [--frames N] [--gop 12]``.
Numbers depend on the checkpoint: say which one (and what it was trained on) when you quote them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from baselines.neuralvc.checkpoint import read_record
from baselines.neuralvc.codec import recon_digest
from weightstep import registry
from weightstep.codecs import harness
from weightstep.video.options import ReadOptions
from weightstep.video.readers import open_video


def run(kind: str, checkpoint: str, video, params: dict) -> dict:
    record = read_record(checkpoint, kind)
    codec = registry.create(kind, {"checkpoint": checkpoint, **params})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.wst"
        result = harness.run(codec, video, path)
        data = path.read_bytes()
    start = time.perf_counter()
    decoded = registry.create(kind, {"checkpoint": checkpoint, **params}).decode(data)
    decode_s = time.perf_counter() - start
    extra = result.extra
    coded_key = "p_frame" if kind == "dvc" else "b_frame"
    est = extra[f"{coded_key}_estimated_bits"]
    real = 8 * extra[f"{coded_key}_bytes"]
    pixels = video.frames * video.width * video.height
    predicted_file_bits = 8 * extra["intra_bytes"] + est
    return {
        "codec": kind, "checkpoint": checkpoint, "trained_on": record["data"], "steps": record["steps"],
        "lambda": record["lambda"], "architecture": record["architecture"], "params": params,
        "frames": video.frames, "size": f"{video.width}x{video.height}",
        "bpp": result.bpp, "psnr_rgb": result.psnr_rgb, "ms_ssim": result.ms_ssim,
        f"{coded_key}_real_bits": real, f"{coded_key}_estimated_bits": est,
        "coder_overhead_pct": 100.0 * (real - est) / est,
        "estimate_by_part": extra.get("p_frame_estimated_bits_by_latent"),
        "information_bits_float64": extra.get("p_frame_information_bits_float64"),
        "file_bpp_vs_predicted_pct": 100.0 * (8 * len(data) - predicted_file_bits) / predicted_file_bits,
        "predicted_bpp": predicted_file_bits / pixels, "key_frame_bpp": 8 * extra["intra_bytes"] / pixels,
        "bit_exact": recon_digest(decoded.rgb()) == extra["reconstruction_md5"],
        "encode_s": result.encode_s, "decode_s": decode_s, "decode_fps": video.frames / decode_s,
        "intra": extra["intra"], "padding": extra["padding"], "device": result.device,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dvc", help="DVC checkpoint")
    parser.add_argument("--vcii", help="VCII checkpoint")
    parser.add_argument("--video", default="sample:carphone")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--gop", type=int, default=12)
    parser.add_argument("--iterations", type=int, default=None, help="VCII passes (default: the codec's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="one JSON object per codec instead of text")
    args = parser.parse_args()
    torch.manual_seed(0)
    video = open_video(args.video, ReadOptions(frames=args.frames))
    jobs = []
    if args.dvc:
        jobs.append(("dvc", args.dvc, {"gop": args.gop, "device": args.device}))
    if args.vcii:
        params = {"gop": args.gop, "device": args.device}
        if args.iterations:
            params["iterations"] = args.iterations
        jobs.append(("vcii", args.vcii, params))
    if not jobs:
        parser.error("give --dvc and/or --vcii checkpoints")
    for kind, checkpoint, params in jobs:
        row = run(kind, checkpoint, video, params)
        if args.json:
            print(json.dumps(row))
            continue
        coded = "P" if kind == "dvc" else "B"
        real, est = row[f"{coded.lower()}_frame_real_bits"], row[f"{coded.lower()}_frame_estimated_bits"]
        print(f"{kind} on {args.video} ({row['frames']} frames {row['size']}, {row['device']}), checkpoint "
              f"{checkpoint}: trained {row['steps']} steps on {', '.join(row['trained_on']) or 'unknown data'}")
        print(f"  file {row['bpp']:.4f} bpp (key frames {row['key_frame_bpp']:.4f}), {row['psnr_rgb']:.2f} dB RGB, "
              f"MS-SSIM {row['ms_ssim']:.4f}; {row['intra']}")
        print(f"  {coded}-frame streams: real {real:.0f} bits, model estimate {est:.0f} bits: "
              f"overhead {row['coder_overhead_pct']:+.2f} %")
        if row["information_bits_float64"] is not None:
            print(f"  exact information content (float64, no floor): {row['information_bits_float64']:.0f} bits; "
                  f"by latent (estimate): {json.dumps({k: round(v) for k, v in row['estimate_by_part'].items()})}")
        print(f"  whole file against key frames + estimate: {row['file_bpp_vs_predicted_pct']:+.2f} % "
              f"(predicted {row['predicted_bpp']:.4f} bpp)")
        print(f"  decode equals the encoder's reconstruction: {row['bit_exact']}; encode {row['encode_s']:.1f} s, "
              f"decode {row['decode_s']:.1f} s = {row['decode_fps']:.2f} frames/s; {row['padding']}")


if __name__ == "__main__":
    main()
