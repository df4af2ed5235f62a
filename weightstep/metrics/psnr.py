"""Per-frame PSNR on RGB frames and on YUV 4:2:0 planes.

Every function returns one value per frame; a clip's PSNR is the **mean over frames of the
per-frame PSNR** (not the PSNR of the clip's mean squared error), as in the video-coding
literature. Per-frame values are capped at :data:`PSNR_CAP_DB`, so that identical frames
(MSE 0, PSNR +inf) still give finite means and valid JSON.
"""

from __future__ import annotations

import numpy as np

from weightstep.errors import MetricError

PSNR_CAP_DB = 100.0
"""Ceiling on every per-frame PSNR (dB). A frame equal to its reference (MSE 0) reads exactly
this; an 8-bit frame needs an MSE below about 6.5e-6 (far less than one code value) to reach it."""

CHUNK_FRAMES = 16
"""Frames converted to float64 at a time, bounding the temporary memory of long clips."""


def _psnr_from_mse(mse: np.ndarray, peak: float) -> np.ndarray:
    """PSNR (dB) of per-frame MSEs for the given peak, capped at PSNR_CAP_DB (MSE 0 -> the cap)."""
    mse = np.asarray(mse, dtype=np.float64)
    out = np.full(mse.shape, PSNR_CAP_DB)
    positive = mse > 0
    out[positive] = np.minimum(10.0 * np.log10(peak * peak / mse[positive]), PSNR_CAP_DB)
    return out


def _frame_mse(ref: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """MSE of each frame (axis 0) over all other axes, computed in float64 chunk by chunk."""
    out = np.empty(ref.shape[0], dtype=np.float64)
    for start in range(0, ref.shape[0], CHUNK_FRAMES):
        stop = start + CHUNK_FRAMES
        diff = ref[start:stop].astype(np.float64) - dist[start:stop].astype(np.float64)
        out[start:stop] = np.mean(np.square(diff).reshape(diff.shape[0], -1), axis=1)
    return out


def _check_pair(ref: np.ndarray, dist: np.ndarray, what: str) -> None:
    if ref.shape != dist.shape:
        raise MetricError(f"{what}: reference {ref.shape} and distorted {dist.shape} shapes differ")
    if ref.ndim < 2 or ref.shape[0] == 0 or ref.size == 0:
        raise MetricError(f"{what}: need at least one non-empty frame, got shape {ref.shape}")


def psnr_rgb(ref: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Per-frame PSNR (dB) of float RGB frames (T,3,H,W) in [0, 1], peak 1.0.

    The MSE of a frame is taken over all three channels and all pixels, in float64. Values
    are capped at PSNR_CAP_DB. The clip's PSNR is the mean of the returned array.
    """
    ref = np.asarray(ref)
    dist = np.asarray(dist)
    _check_pair(ref, dist, "RGB PSNR")
    if ref.ndim != 4 or ref.shape[1] != 3:
        raise MetricError(f"RGB PSNR: frames must have shape (T,3,H,W), got {ref.shape}")
    return _psnr_from_mse(_frame_mse(ref, dist), 1.0)


def psnr_yuv(ref_planes, dist_planes, bit_depth: int = 8) -> dict[str, np.ndarray]:
    """Per-frame PSNR (dB) of integer YUV 4:2:0 planes: Y (T,H,W), U and V (T,H/2,W/2).

    The peak is 2**bit_depth - 1. Returns per-frame arrays ``'y'``, ``'u'``, ``'v'`` (each
    capped at PSNR_CAP_DB) and ``'yuv'`` = (6*PSNR_Y + PSNR_U + PSNR_V) / 8, the weighted
    average of the (capped) plane PSNRs used in the video-coding literature. The clip's
    values are the means over frames of these arrays.
    """
    if len(ref_planes) != 3 or len(dist_planes) != 3:
        raise MetricError("YUV PSNR: need three planes (Y, U, V) for reference and distorted")
    if not isinstance(bit_depth, int) or not 1 <= bit_depth <= 16:
        raise MetricError(f"YUV PSNR: bit depth must be an integer in 1..16, got {bit_depth!r}")
    y_shape, u_shape = np.shape(ref_planes[0]), np.shape(ref_planes[1])
    if (len(y_shape) != 3 or u_shape != (y_shape[0], (y_shape[1] + 1) // 2, (y_shape[2] + 1) // 2)
            or np.shape(ref_planes[2]) != u_shape):
        raise MetricError(f"YUV PSNR: planes {y_shape}, {u_shape}, {np.shape(ref_planes[2])} "
                          "are not a 4:2:0 clip (T,H,W), (T,H/2,W/2), (T,H/2,W/2)")
    peak = float((1 << bit_depth) - 1)
    out: dict[str, np.ndarray] = {}
    for name, ref, dist in zip("yuv", ref_planes, dist_planes, strict=True):
        ref = np.asarray(ref)
        dist = np.asarray(dist)
        _check_pair(ref, dist, f"YUV PSNR, plane {name.upper()}")
        for arr in (ref, dist):
            if not np.issubdtype(arr.dtype, np.integer):
                raise MetricError(f"YUV PSNR: planes must hold integers, got {arr.dtype}")
            if arr.min() < 0 or arr.max() > peak:
                raise MetricError(f"YUV PSNR: plane {name.upper()} has values outside 0..{int(peak)} "
                                  f"for {bit_depth}-bit video")
        out[name] = _psnr_from_mse(_frame_mse(ref, dist), peak)
    out["yuv"] = (6.0 * out["y"] + out["u"] + out["v"]) / 8.0
    return out
