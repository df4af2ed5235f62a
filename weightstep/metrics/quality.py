"""Measuring a decoded Video against its source: one QualityReport with every per-frame metric."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from weightstep.errors import MetricError
from weightstep.metrics.msssim import ms_ssim_rgb, ms_ssim_setup
from weightstep.metrics.psnr import psnr_rgb, psnr_yuv
from weightstep.video.video import Video

CHUNK_FRAMES = 8
"""Frames of the distorted clip converted and measured at a time (bounds float copies)."""


@dataclass(frozen=True)
class QualityReport:
    """Per-frame quality of a distorted clip against its reference (float64 arrays, length T).

    PSNRs are in dB, capped per frame at psnr.PSNR_CAP_DB; ``psnr_yuv`` is the 4:2:0 weighted
    (6*Y + U + V) / 8. Every ``mean_*`` property is the mean over frames of per-frame values.
    ``ms_ssim_scales`` and ``ms_ssim_win`` record the MS-SSIM setup used (5 and 11 is the
    standard one; smaller frames use fewer scales, see msssim.ms_ssim_setup).
    """

    psnr_rgb: np.ndarray
    psnr_yuv: np.ndarray
    psnr_y: np.ndarray
    psnr_u: np.ndarray
    psnr_v: np.ndarray
    ms_ssim: np.ndarray
    ms_ssim_scales: int = 5
    ms_ssim_win: int = 11

    @property
    def frames(self) -> int:
        return int(self.psnr_rgb.shape[0])

    @property
    def mean_psnr_rgb(self) -> float:
        return float(np.mean(self.psnr_rgb))

    @property
    def mean_psnr_yuv(self) -> float:
        return float(np.mean(self.psnr_yuv))

    @property
    def mean_psnr_y(self) -> float:
        return float(np.mean(self.psnr_y))

    @property
    def mean_psnr_u(self) -> float:
        return float(np.mean(self.psnr_u))

    @property
    def mean_psnr_v(self) -> float:
        return float(np.mean(self.psnr_v))

    @property
    def mean_ms_ssim(self) -> float:
        return float(np.mean(self.ms_ssim))

    def summary(self) -> dict:
        """Means over frames as plain floats (JSON-ready), with the MS-SSIM setup."""
        return {"psnr_rgb": self.mean_psnr_rgb, "psnr_yuv": self.mean_psnr_yuv,
                "psnr_y": self.mean_psnr_y, "psnr_u": self.mean_psnr_u, "psnr_v": self.mean_psnr_v,
                "ms_ssim": self.mean_ms_ssim, "ms_ssim_scales": self.ms_ssim_scales,
                "ms_ssim_win": self.ms_ssim_win}


def _convert_depth(plane: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Integer plane from `src` to `dst` bits: a left shift up, a rounded (half up) right shift down."""
    if src == dst:
        return plane
    wide = plane.astype(np.int64)
    if dst > src:
        wide = wide << (dst - src)
    else:
        shift = src - dst
        wide = (wide + (1 << (shift - 1))) >> shift
    return np.clip(wide, 0, (1 << dst) - 1).astype(np.uint8 if dst <= 8 else np.uint16)


def _yuv_chunk(video: Video, start: int, stop: int):
    """The clip's 4:2:0 planes for frames [start, stop): shared if it has planes, else converted."""
    if video.has_native_yuv:
        return tuple(p[start:stop] for p in video.planes)
    return video.slice(start, stop - start).yuv420()


def measure(ref: Video, dist: Video, chunk: int = CHUNK_FRAMES) -> QualityReport:
    """Every quality metric of ``dist`` against ``ref``, per frame.

    RGB PSNR and MS-SSIM compare ``ref.rgb()`` (read once; Video caches it) with ``dist``'s
    RGB, converted ``chunk`` frames at a time. YUV PSNR compares 4:2:0 planes (each video's
    own, or converted from RGB chunk by chunk) at the reference's bit depth: if the distorted
    clip has another depth its planes are shifted to the reference's (left shift up, rounded
    right shift down) before measuring. Frame counts and sizes must match (MetricError).
    """
    if (ref.frames, ref.height, ref.width) != (dist.frames, dist.height, dist.width):
        raise MetricError(f"cannot compare {dist.identity} ({dist.frames} frames, {dist.width}x{dist.height}) "
                          f"with {ref.identity} ({ref.frames} frames, {ref.width}x{ref.height})")
    chunk = max(1, int(chunk))
    ref_rgb = ref.rgb()
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("rgb", "ms_ssim", "y", "u", "v", "yuv")}
    for start in range(0, ref.frames, chunk):
        stop = min(start + chunk, ref.frames)
        dist_rgb = dist.slice(start, stop - start).rgb()
        parts["rgb"].append(psnr_rgb(ref_rgb[start:stop], dist_rgb))
        parts["ms_ssim"].append(ms_ssim_rgb(ref_rgb[start:stop], dist_rgb, chunk=chunk))
        del dist_rgb
        ref_planes = _yuv_chunk(ref, start, stop)
        dist_planes = tuple(_convert_depth(p, dist.bit_depth, ref.bit_depth)
                            for p in _yuv_chunk(dist, start, stop))
        yuv = psnr_yuv(ref_planes, dist_planes, bit_depth=ref.bit_depth)
        for key in ("y", "u", "v", "yuv"):
            parts[key].append(yuv[key])
    joined = {k: np.concatenate(v) for k, v in parts.items()}
    scales, win = ms_ssim_setup(ref.height, ref.width)
    return QualityReport(psnr_rgb=joined["rgb"], psnr_yuv=joined["yuv"], psnr_y=joined["y"],
                         psnr_u=joined["u"], psnr_v=joined["v"], ms_ssim=joined["ms_ssim"],
                         ms_ssim_scales=scales, ms_ssim_win=win)


def bpp(num_bytes: int, frames: int, width: int, height: int) -> float:
    """Bits per pixel: 8 * num_bytes / (frames * width * height)."""
    if frames <= 0 or width <= 0 or height <= 0:
        raise MetricError(f"bpp needs positive frames, width and height, got {frames}, {width}x{height}")
    if num_bytes < 0:
        raise MetricError(f"bpp needs a non-negative byte count, got {num_bytes}")
    return 8.0 * num_bytes / (frames * width * height)
