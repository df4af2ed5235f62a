"""Raw planar YUV 4:2:0 files (``.yuv``): 8-bit, or 10-bit as little-endian uint16 per sample.

A raw file has no header, so its geometry comes from :class:`ReadOptions` or from its name, in
the styles the public test sets use:

- UVG: ``Beauty_1920x1080_120fps_420_8bit_YUV.yuv`` (``WxH``, ``NNfps``, ``8bit``/``10bit``)
- MCL-JCV: ``videoSRC01_1920x1080_30.yuv`` (``WxH`` then ``_NN``, the frame rate)
- plain: ``foo_352x288.yuv`` (``WxH`` only: 30 fps and 8 bits are assumed)

Options win over the name, field by field. Frames are read by seeking, so ``start`` and
``frames`` never read more of the file than asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from weightstep.errors import InputError
from weightstep.video.options import ReadOptions
from weightstep.video.sources import SourceInfo

DEFAULT_FPS = 30.0  # assumed when neither the options nor the name give a frame rate

_SIZE = re.compile(r"(?<![0-9])(\d{2,5})[xX](\d{2,5})(?![0-9])")
_FPS = re.compile(r"(?<![0-9.])(\d+(?:\.\d+)?)[-_ ]?fps(?![a-z])", re.IGNORECASE)
_FPS_AFTER_SIZE = re.compile(r"[_\-](\d+(?:\.\d+)?)(?=$|[_\-.])")
_BITS = re.compile(r"(?<![0-9])(\d{1,2})[-_]?bits?(?![a-z])", re.IGNORECASE)
_OTHER_CHROMA = re.compile(r"(?:^|[_\-.])(yuv)?(422|444|400)(p\d*)?(?=$|[_\-.])", re.IGNORECASE)


def parse_yuv_name(name: str) -> dict:
    """Geometry, fps and bit depth a raw file's name states: any of width, height, fps, bit_depth.

    >>> parse_yuv_name("Beauty_1920x1080_120fps_420_8bit_YUV.yuv")
    {'width': 1920, 'height': 1080, 'fps': 120.0, 'bit_depth': 8}
    >>> parse_yuv_name("videoSRC01_1920x1080_30.yuv")
    {'width': 1920, 'height': 1080, 'fps': 30.0}
    """
    stem = Path(name).name
    if stem.lower().endswith(".yuv"):
        stem = stem[:-4]
    found: dict = {}
    other = _OTHER_CHROMA.search(stem)
    if other:
        raise InputError(f"{name}: the name says chroma format {other.group(2)}; only 4:2:0 raw video is supported")
    size = _SIZE.search(stem)
    if size:
        found["width"], found["height"] = int(size.group(1)), int(size.group(2))
    fps = _FPS.search(stem)
    if fps:
        found["fps"] = float(fps.group(1))
    elif size:
        after = _FPS_AFTER_SIZE.match(stem, size.end())
        if after and after.group(1) not in ("420", "422", "444") and 0 < float(after.group(1)) <= 300:
            found["fps"] = float(after.group(1))
    bits = _BITS.search(stem)
    if bits:
        depth = int(bits.group(1))
        if depth not in (8, 10):
            raise InputError(f"{name}: {depth}-bit raw video is not supported (8 or 10)")
        found["bit_depth"] = depth
    return found


def chroma_size(width: int, height: int) -> tuple[int, int]:
    """Chroma plane size of a 4:2:0 frame (rounded up for odd sizes, as FFmpeg does)."""
    return (width + 1) // 2, (height + 1) // 2


def frame_bytes(width: int, height: int, bit_depth: int) -> int:
    """Bytes of one planar 4:2:0 frame."""
    cw, ch = chroma_size(width, height)
    return (width * height + 2 * cw * ch) * (1 if bit_depth == 8 else 2)


def split_frame(data: bytes, width: int, height: int, bit_depth: int, what: str):
    """One frame's bytes -> (Y, U, V) arrays (uint8, or uint16 checked to fit 10 bits)."""
    dtype = np.dtype(np.uint8) if bit_depth == 8 else np.dtype("<u2")
    samples = np.frombuffer(data, dtype=dtype)
    cw, ch = chroma_size(width, height)
    luma = width * height
    y = samples[:luma].reshape(height, width)
    u = samples[luma:luma + cw * ch].reshape(ch, cw)
    v = samples[luma + cw * ch:].reshape(ch, cw)
    if bit_depth == 10:
        top = max(int(y.max()), int(u.max()), int(v.max()))
        if top > 1023:
            raise InputError(f"{what}: sample value {top} does not fit 10 bits (16-bit or big-endian data?)")
        return y.astype(np.uint16), u.astype(np.uint16), v.astype(np.uint16)
    return y.copy(), u.copy(), v.copy()


def raw_info(path: Path, options: ReadOptions) -> SourceInfo:
    """Geometry from options, else from the name; the frame count from the file size."""
    named = parse_yuv_name(path.name)
    width = options.width or named.get("width")
    height = options.height or named.get("height")
    if not width or not height:
        raise InputError(f"{path}: a raw .yuv file has no header; give its size with the width and height "
                         "options (or name it like clip_352x288_30fps.yuv)")
    fps = options.fps or named.get("fps") or DEFAULT_FPS
    bit_depth = options.bit_depth or named.get("bit_depth") or 8
    size = path.stat().st_size
    per_frame = frame_bytes(width, height, bit_depth)
    if size % per_frame:
        raise InputError(f"{path}: its size, {size} bytes, is not a whole number of {width}x{height} "
                         f"{bit_depth}-bit 4:2:0 frames of {per_frame} bytes; check width, height and bit_depth")
    return SourceInfo(width=width, height=height, fps=fps, bit_depth=bit_depth, frames=size // per_frame,
                      native="yuv420p" if bit_depth == 8 else "yuv420p10le", codec="rawvideo")


def raw_frames(path: Path, info: SourceInfo, start: int, count: int) -> Iterator[tuple]:
    """Frames [start, start + count) as planes, read one at a time."""
    per_frame = frame_bytes(info.width, info.height, info.bit_depth)
    with open(path, "rb") as f:
        f.seek(start * per_frame)
        for index in range(start, min(start + count, info.frames)):
            data = f.read(per_frame)
            if len(data) != per_frame:
                raise InputError(f"{path}: frame {index} is cut short (the file changed while reading?)")
            yield split_frame(data, info.width, info.height, info.bit_depth, f"{path} frame {index}")


def plane_bytes(plane: np.ndarray, bit_depth: int) -> bytes:
    """A plane as file bytes: uint8, or little-endian uint16 for 10 bits."""
    return plane.astype(np.uint8 if bit_depth == 8 else "<u2", copy=False).tobytes()


def write_raw(f: BinaryIO, planes, bit_depth: int) -> None:
    """Write (T,H,W), (T,H/2,W/2) x2 planes to ``f`` frame after frame."""
    y, u, v = planes
    for t in range(y.shape[0]):
        for plane in (y[t], u[t], v[t]):
            f.write(plane_bytes(plane, bit_depth))
