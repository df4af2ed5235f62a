"""Video input and output: one Video object, readers for files, samples and synthetic sources."""

from weightstep.video.video import Video

__all__ = ["Video"]
