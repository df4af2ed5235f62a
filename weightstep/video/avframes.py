"""Moving 4:2:0 planes in and out of PyAV frames (8-bit yuv420p, 10-bit yuv420p10le)."""

from __future__ import annotations

import logging
from fractions import Fraction

import av
import numpy as np


def quiet_libav() -> None:
    """Keep libav's messages out of the user's terminal, but inside PyAV's exceptions.

    At level ERROR PyAV attaches libav's last message to the exceptions it raises; a
    NullHandler on the ``libav`` logger stops those messages from also reaching stderr
    through Python's last-resort handler (the CLI promises one line per error).
    """
    av.logging.set_level(av.logging.ERROR)
    logger = logging.getLogger("libav")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def fps_fraction(fps: float) -> Fraction:
    """A float rate as containers and headers want it: 29.97002997 -> 30000/1001, 25.0 -> 25/1."""
    return Fraction(fps).limit_denominator(1001)


def pixel_format(bit_depth: int) -> str:
    return "yuv420p" if bit_depth == 8 else "yuv420p10le"


def planes_to_frame(y: np.ndarray, u: np.ndarray, v: np.ndarray, bit_depth: int) -> av.VideoFrame:
    """One frame's planes (H,W), (H/2,W/2) x2 -> a PyAV frame in the matching 4:2:0 format."""
    h, w = y.shape
    packed = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(h * 3 // 2, w)
    return av.VideoFrame.from_ndarray(packed, format=pixel_format(bit_depth))


def frame_to_planes(frame: av.VideoFrame, bit_depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A decoded PyAV frame -> its 4:2:0 planes at ``bit_depth`` (converting the format if needed)."""
    fmt = pixel_format(bit_depth)
    if frame.format.name != fmt:
        frame = frame.reformat(format=fmt)
    packed = frame.to_ndarray()
    h, w = frame.height, frame.width
    flat = packed.reshape(-1)
    luma = h * w
    chroma = (h // 2) * (w // 2)
    y = flat[:luma].reshape(h, w)
    u = flat[luma:luma + chroma].reshape(h // 2, w // 2)
    v = flat[luma + chroma:luma + 2 * chroma].reshape(h // 2, w // 2)
    return y.copy(), u.copy(), v.copy()
