"""How well does a step's warp predict the next frame, beside a conventional codec's block motion?

    python benchmarks/motion_prediction.py [--video sample:bikes --downscale 2] [--crf 28] [--lambda 3e-3]

A weight step starts from its warp's prediction and pays a residual for what the prediction
misses, so the prediction's quality bounds what the residual must buy. This script measures the
motion models alone, in the picture, on the same references: frame t is predicted from x264's
decoded frame t-1 (``--crf``, its defaults; a low-delay codec's reference at that rate), against
the source frame t:

- ``previous``: frame t-1 as it is (no motion);
- ``smooth G``: the codec's own warp field (:func:`weightstep.stepping.warp.displacement`: six
  affine numbers and a G x G lattice of bilinear nodes), started from the codec's block-matching
  estimate (:func:`weightstep.stepping.motion.estimate_warp`), fitted by Adam for ``--steps`` steps
  on the prediction's MSE (bicubic resampling, as the codec's fit), then coded by the codec's warp
  coder (:func:`weightstep.stepping.warp_code.code_warp`) at ``--lambda`` with the steps' lambda
  scale: its bytes are the real blob, its PSNR that of the decoded warp's prediction;
- ``blocks B``: one vector per B x B block (whole blocks only; the frame's edge rows and columns
  outside them are left out of its PSNR), integer full search within ``--radius`` pixels, then
  the best quarter-pixel offset within +-3/4 (bicubic), on RGB squared error; its bytes are an
  *estimate*: signed Exp-Golomb codes of each vector's quarter-pixel difference from the median of
  its left, upper and upper-right neighbours (H.264's CAVLC motion vectors; CABAC spends less,
  and no block is skipped).

The warp in the codec moves latent grids, not pixels; on carphone a step's decoded warp applied
to the decoded previous frame's pixels predicts within 0.1 dB of the same warp applied to the
latents (README), so the picture is a fair place to compare motion models.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

from weightstep import registry
from weightstep.codecs import harness
from weightstep.stepping.motion import estimate_warp
from weightstep.stepping.warp import displacement
from weightstep.stepping.warp_code import code_warp
from weightstep.video import ReadOptions, open_video

STEP_LAMBDA_SCALE = 0.5  # the codec's default: a step's rate is weighed at half the clip's lambda


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10.0 * math.log10(max(F.mse_loss(a.clamp(0, 1), b).item(), 1e-12))


class Frame:
    """Pixel positions of one frame size and bicubic backward warps over them."""

    def __init__(self, height: int, width: int):
        self.height, self.width = height, width
        self.ys, self.xs = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                                          torch.arange(width, dtype=torch.float32), indexing="ij")

    def warp(self, ref: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
        """ref (3, H, W) sampled at p + d(p), borders clamped."""
        gx = (self.xs + dx) * (2.0 / (self.width - 1)) - 1.0
        gy = (self.ys + dy) * (2.0 / (self.height - 1)) - 1.0
        grid = torch.stack([gx, gy], dim=-1)[None]
        return F.grid_sample(ref[None], grid, mode="bicubic", padding_mode="border", align_corners=True)[0]

    def smooth(self, values: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
        dx, dy = displacement(values, self.xs.reshape(-1), self.ys.reshape(-1), self.width, self.height, grid)
        return dx.reshape(self.height, self.width), dy.reshape(self.height, self.width)


def smooth_prediction(frame: Frame, ref: torch.Tensor, target: torch.Tensor, grid: int, steps: int,
                      lam_per_bit: float) -> tuple[float, float, int]:
    """(fitted PSNR, coded PSNR, coded bytes) of the codec's warp field with ``grid`` nodes a side."""
    start = torch.as_tensor(estimate_warp(ref, target, grid), dtype=torch.float32)
    values = start.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([values], lr=0.05)
    for _ in range(steps):
        loss = F.mse_loss(frame.warp(ref, *frame.smooth(values, grid)), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    values = values.detach()
    with torch.no_grad():
        fitted = psnr(frame.warp(ref, *frame.smooth(values, grid)), target)

        def distortion(decoded: np.ndarray) -> float:
            field = frame.smooth(torch.as_tensor(decoded, dtype=torch.float32), grid)
            return F.mse_loss(frame.warp(ref, *field).clamp(0, 1), target).item()

        blob, decoded, _ = code_warp(values, distortion, lam_per_bit)
        coded = -10.0 * math.log10(max(distortion(decoded), 1e-12))
    return fitted, coded, len(blob)


def _exp_golomb_bits(n: int) -> int:
    k = 2 * abs(n) - (1 if n > 0 else 0)
    return 2 * int(math.log2(k + 1)) + 1


def block_prediction(frame: Frame, ref: torch.Tensor, target: torch.Tensor, block: int,
                     radius: int) -> tuple[float, float, torch.Tensor]:
    """(PSNR over the whole blocks, estimated bytes of the vectors, the vectors (2, rows, cols) in pixels) of
    quarter-pixel block motion."""
    rows, cols = frame.height // block, frame.width // block
    h, w = rows * block, cols * block
    tgt = target[:, :h, :w]
    padded = F.pad(ref[None], (radius, radius, radius, radius), mode="replicate")[0]
    best = torch.full((rows, cols), float("inf"))
    vectors = torch.zeros(2, rows, cols)
    for vy in range(-radius, radius + 1):
        for vx in range(-radius, radius + 1):
            shifted = padded[:, radius + vy:radius + vy + h, radius + vx:radius + vx + w]
            err = F.avg_pool2d(((shifted - tgt) ** 2).sum(0)[None], block)[0]
            better = err < best
            best = torch.where(better, err, best)
            vectors[0] = torch.where(better, float(vx), vectors[0])
            vectors[1] = torch.where(better, float(vy), vectors[1])

    def full(per_block: torch.Tensor) -> torch.Tensor:
        up = per_block.repeat_interleave(block, 0).repeat_interleave(block, 1)
        return F.pad(up[None, None], (0, frame.width - w, 0, frame.height - h), mode="replicate")[0, 0]

    whole_x, whole_y = full(vectors[0]), full(vectors[1])
    best = torch.full((rows, cols), float("inf"))
    fraction = torch.zeros(2, rows, cols)
    offsets = np.arange(-0.75, 0.76, 0.25)
    for oy in offsets:
        for ox in offsets:
            pred = frame.warp(ref, whole_x + float(ox), whole_y + float(oy))[:, :h, :w]
            err = F.avg_pool2d(((pred - tgt) ** 2).sum(0)[None], block)[0]
            better = err < best
            best = torch.where(better, err, best)
            fraction[0] = torch.where(better, float(ox), fraction[0])
            fraction[1] = torch.where(better, float(oy), fraction[1])
    final = vectors + fraction
    pred = frame.warp(ref, full(final[0]), full(final[1]))[:, :h, :w]
    quarter = (final * 4).round().long()
    bits = 0
    for i in range(rows):
        for j in range(cols):
            neighbours = ([quarter[:, i, j - 1]] if j > 0 else []) + \
                ([quarter[:, i - 1, j], quarter[:, i - 1, min(j + 1, cols - 1)]] if i > 0 else [])
            median = torch.stack(neighbours).median(dim=0).values if neighbours else torch.zeros(2, dtype=torch.long)
            difference = quarter[:, i, j] - median
            bits += _exp_golomb_bits(int(difference[0])) + _exp_golomb_bits(int(difference[1]))
    return psnr(pred, tgt), bits / 8.0, final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default="sample:carphone")
    parser.add_argument("--downscale", type=int, default=1)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--at", type=int, action="append", help="frames to predict (default 1, 5, 10, ..., and the last)")
    parser.add_argument("--crf", type=float, default=28.0, help="x264's crf for the decoded references")
    parser.add_argument("--lambda", dest="lam", type=float, default=3e-3, help="the codec's lambda for the warp coder")
    parser.add_argument("--steps", type=int, default=300, help="Adam steps of each smooth field's fit")
    parser.add_argument("--radius", type=int, default=12, help="block search radius in pixels")
    parser.add_argument("--grids", type=int, action="append", help="warp lattices (default 8 and 16)")
    parser.add_argument("--blocks", type=int, action="append", help="block sizes (default 16 and 8)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    video = open_video(args.video, ReadOptions(frames=args.frames, downscale=args.downscale))
    source = torch.from_numpy(video.rgb())
    codec = registry.create("x264", {"crf": args.crf})
    decoded = torch.from_numpy(harness.decode(codec, codec.encode(video).data).rgb())
    count, _, height, width = source.shape
    frame = Frame(height, width)
    lam_per_bit = args.lam * STEP_LAMBDA_SCALE / (height * width)
    grids = args.grids or [8, 16]
    blocks = args.blocks or [16, 8]
    at = sorted(set(args.at or [*range(1, count, 5), count - 1]))
    if not at or at[0] < 1 or at[-1] >= count:
        print(f"error: --at must lie in 1..{count - 1}", file=sys.stderr)
        return 2
    columns = ["reference", "previous"] + [f"smooth {g}" for g in grids] + [f"blocks {b}" for b in blocks]
    print(f"{args.video} {width}x{height}, references: x264 crf {args.crf:g} decoded; warp coder at lambda "
          f"{args.lam:g} x {STEP_LAMBDA_SCALE}; PSNR dB (bytes)")
    print(f"{'frame':>5}  " + "  ".join(f"{c:>16}" for c in columns))
    sums: dict[str, list[float]] = {c: [0.0, 0.0] for c in columns}
    for t in at:
        ref, target = decoded[t - 1], source[t]
        cells = {"reference": (psnr(ref, source[t - 1]), None), "previous": (psnr(ref, target), None)}
        for g in grids:
            _, coded, size = smooth_prediction(frame, ref, target, g, args.steps, lam_per_bit)
            cells[f"smooth {g}"] = (coded, size)
        for b in blocks:
            cells[f"blocks {b}"] = block_prediction(frame, ref, target, b, args.radius)[:2]
        text = []
        for c in columns:
            value, size = cells[c]
            sums[c][0] += value
            sums[c][1] += size or 0.0
            text.append(f"{value:>7.2f}" + (f" ({size:>6.0f})" if size is not None else " " * 9))
        print(f"{t:>5}  " + "  ".join(f"{x:>16}" for x in text), flush=True)
    n = len(at)
    mean = [f"{sums[c][0] / n:>7.2f}" + (f" ({sums[c][1] / n:>6.0f})" if sums[c][1] else " " * 9) for c in columns]
    print(f"{'mean':>5}  " + "  ".join(f"{x:>16}" for x in mean))
    print("smooth: the codec's warp, coded (real bytes); blocks: quarter-pixel block motion, vector bytes estimated "
          "(Exp-Golomb, no skip)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
