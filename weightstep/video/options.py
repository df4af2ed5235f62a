"""How a video is read: the frozen :class:`ReadOptions` and what its crop and downscale do to frames.

Every reader hands its frames, one at a time, to :func:`shape_planes` / :func:`shape_rgb`, so
memory stays bounded by the output size, not the source size. Option values are checked when
the options are made (``ConfigError``); whether they fit a particular video is checked when it
is opened (``InputError``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

import numpy as np

from weightstep.errors import ConfigError, InputError
from weightstep.video.colour import MATRICES

Crop = tuple[int, int, int, int]  # (width, height, x, y) in luma samples

# Fields that only matter for some kinds of source; the identity leaves the others out.
RAW_FIELDS = ("width", "height", "bit_depth")
SYNTHETIC_FIELDS = ("synthetic_width", "synthetic_height", "synthetic_rate", "synthetic_frames")


@dataclass(frozen=True)
class ReadOptions:
    """What part of a source to read and how; the defaults read the whole clip as it is."""

    # Skip this many frames first: lets an experiment start mid-clip without re-encoding it.
    start: int = 0
    # Read at most this many frames (None: to the end); short clips keep neural fits affordable.
    frames: int | None = None
    # (w, h, x, y) window in luma samples, applied before downscale: studies a region at full
    # detail. All four must be even so the 4:2:0 chroma planes crop on whole samples.
    crop: Crop | None = None
    # Integer area-filter factor (mean of factor x factor blocks on every plane): big sources
    # (1080p UVG clips) become sizes a CPU can fit without resampling artefacts.
    downscale: int = 1
    # Raw .yuv files carry no header: geometry comes from here when the name does not say it.
    width: int | None = None
    height: int | None = None
    # Frame rate: needed for headerless .yuv, and an override for a container's own rate (it
    # only changes the reported fps, which bits-per-second figures depend on).
    fps: float | None = None
    # Raw .yuv sample size (8 or 10); 10-bit samples are little-endian uint16.
    bit_depth: int | None = None
    # Y'CbCr <-> RGB matrix for the RGB view: sources rarely say, HD content is BT.709.
    matrix: str = "bt709"
    # synthetic: sources have no size of their own; 176x144 (QCIF) matches sample:carphone.
    synthetic_width: int = 176
    synthetic_height: int = 144
    # synthetic: frame rate.
    synthetic_rate: float = 30.0
    # synthetic: sources are endless: this many frames are made when ``frames`` is None.
    synthetic_frames: int = 30

    def __post_init__(self) -> None:
        if self.start < 0:
            raise ConfigError(f"start={self.start} must be 0 or more")
        if self.frames is not None and self.frames < 1:
            raise ConfigError(f"frames={self.frames} must be 1 or more")
        if self.downscale < 1:
            raise ConfigError(f"downscale={self.downscale} must be an integer 1 or more")
        for name in ("width", "height", "synthetic_width", "synthetic_height", "synthetic_frames"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name}={value} must be 1 or more")
        for name in ("fps", "synthetic_rate"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name}={value} must be positive")
        if self.bit_depth not in (None, 8, 10):
            raise ConfigError(f"bit_depth={self.bit_depth} is not supported (8 or 10)")
        if self.matrix not in MATRICES:
            raise ConfigError(f"matrix={self.matrix!r} is not one of {', '.join(MATRICES)}")
        if self.crop is not None:
            if len(self.crop) != 4:
                raise ConfigError(f"crop={self.crop!r} must be (width, height, x, y)")
            object.__setattr__(self, "crop", tuple(int(c) for c in self.crop))
            w, h, x, y = self.crop
            if w < 2 or h < 2 or x < 0 or y < 0:
                raise ConfigError(f"crop={format_crop(self.crop)} needs a size of at least 2x2 and offsets >= 0")
            if any(c % 2 for c in self.crop):
                raise InputError(f"crop={format_crop(self.crop)}: 4:2:0 needs even sizes and offsets")

    def identity_query(self, exclude: tuple[str, ...] = ()) -> str:
        """``?frames=30&downscale=2``: the non-default fields (bar ``exclude``), '' if none."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in exclude or value == f.default:
                continue
            if f.name == "crop":
                value = format_crop(value)
            elif isinstance(value, float) and value.is_integer():
                value = int(value)
            parts.append(f"{f.name}={value}")
        return "?" + "&".join(parts) if parts else ""


def format_crop(crop: Crop) -> str:
    """(w, h, x, y) -> ``WxH+X+Y`` (the form :func:`parse_crop` reads)."""
    w, h, x, y = crop
    return f"{w}x{h}+{x}+{y}"


def parse_crop(text: str) -> Crop:
    """``'WxH+X+Y'``, ``'WxH'`` (offset 0,0) or ``'w,h,x,y'`` -> (w, h, x, y); for the command line."""
    text = text.strip()
    match = re.fullmatch(r"(\d+)x(\d+)(?:\+(\d+)\+(\d+))?", text) or re.fullmatch(
        r"(\d+),\s*(\d+),\s*(\d+),\s*(\d+)", text)
    if not match:
        raise ConfigError(f"crop={text!r} is not of the form WxH+X+Y (e.g. 64x48+16+8)")
    return tuple(int(g or 0) for g in match.groups())


# applying crop and downscale --------------------------------------------------------------------

def output_size(width: int, height: int, options: ReadOptions, what: str) -> tuple[int, int]:
    """Size after crop and downscale of a ``width`` x ``height`` source; InputError if it does not fit."""
    if options.crop is not None:
        w, h, x, y = options.crop
        if x + w > width or y + h > height:
            raise InputError(f"{what}: crop={format_crop(options.crop)} lies outside its {width}x{height} frame")
        width, height = w, h
    f = options.downscale
    if f == 1 and (width % 2 or height % 2):
        raise InputError(f"{what}: 4:2:0 needs an even width and height, got {width}x{height}; "
                         f"crop it, e.g. crop={width - width % 2}x{height - height % 2}+0+0")
    if width % (2 * f) or height % (2 * f):
        raise InputError(f"{what}: downscale={f} needs a width and height that are multiples of {2 * f} "
                         f"(for an even 4:2:0 result), got {width}x{height}; crop it first, e.g. "
                         f"crop={width - width % (2 * f)}x{height - height % (2 * f)}+0+0")
    return width // f, height // f


def _area(a: np.ndarray, f: int) -> np.ndarray:
    """Mean of f x f blocks over the last two axes; integers are rounded half up, exactly."""
    *lead, h, w = a.shape
    blocks = a.reshape(*lead, h // f, f, w // f, f)
    if np.issubdtype(a.dtype, np.integer):
        total = blocks.sum(axis=(-3, -1), dtype=np.int64)
        return ((total + (f * f) // 2) // (f * f)).astype(a.dtype)
    return blocks.mean(axis=(-3, -1), dtype=np.float64).astype(a.dtype)


def shape_planes(y: np.ndarray, u: np.ndarray, v: np.ndarray, options: ReadOptions):
    """Crop then downscale one 4:2:0 frame (or a stack of frames); chroma at half the offsets."""
    if options.crop is not None:
        w, h, x, yo = options.crop
        y = y[..., yo:yo + h, x:x + w]
        u = u[..., yo // 2:(yo + h) // 2, x // 2:(x + w) // 2]
        v = v[..., yo // 2:(yo + h) // 2, x // 2:(x + w) // 2]
    if options.downscale > 1:
        y, u, v = (_area(p, options.downscale) for p in (y, u, v))
    return y, u, v


def shape_rgb(rgb: np.ndarray, options: ReadOptions) -> np.ndarray:
    """Crop then downscale RGB frame(s) (..., 3, H, W)."""
    if options.crop is not None:
        w, h, x, y = options.crop
        rgb = rgb[..., y:y + h, x:x + w]
    if options.downscale > 1:
        rgb = _area(rgb, options.downscale)
    return rgb
