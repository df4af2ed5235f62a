"""Video input and output: one Video object, readers for files, samples and synthetic sources."""

from weightstep.video.options import ReadOptions, parse_crop
from weightstep.video.rawyuv import parse_yuv_name
from weightstep.video.readers import open_video, probe
from weightstep.video.sources import SAMPLES, synthetic_names
from weightstep.video.video import Video
from weightstep.video.writers import write_video

__all__ = ["Video", "ReadOptions", "parse_crop", "parse_yuv_name", "open_video", "probe", "SAMPLES",
           "synthetic_names", "write_video"]
