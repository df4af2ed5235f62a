"""Tiny synthetic clips shared by the INR codec tests."""

import numpy as np

from weightstep.video import Video


def moving_clip(frames=4, size=32):
    """Smooth gradients and a soft disc that moves across the frame: learnable in a few epochs."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    out = []
    for t in range(frames):
        s = t / max(frames - 1, 1)
        disc = 1.0 / (1.0 + np.exp(((xx - 0.3 - 0.3 * s) ** 2 + (yy - 0.4) ** 2 - 0.06) * 80))
        out.append(np.stack([0.2 + 0.6 * xx, 0.3 + 0.5 * yy * disc, 0.8 - 0.6 * xx * yy]))
    return Video(identity="test:moving", fps=25.0, rgb_frames=np.asarray(out, dtype=np.float32))
