"""YUV4MPEG2 (``.y4m``) files: a small parser and writer for 4:2:0, 8-bit and 10-bit.

Header: ``YUV4MPEG2 W<w> H<h> F<num>:<den> [I<x>] [A<n>:<d>] [C<chroma>] [X<...>]``, then frames,
each ``FRAME[ params]\\n`` plus the planar data. Chroma tags ``420``, ``420jpeg``, ``420mpeg2``,
``420paldv`` (and no C tag) are 8-bit 4:2:0; ``420p10`` is 10-bit little-endian. Frames are
found by computing their offsets from the first frame header, and read only when asked for;
files whose frame headers vary in length are indexed by skipping from header to header.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

from weightstep.errors import InputError
from weightstep.video.avframes import fps_fraction
from weightstep.video.rawyuv import DEFAULT_FPS, frame_bytes, plane_bytes, split_frame
from weightstep.video.sources import SourceInfo

MAGIC = b"YUV4MPEG2"
CHROMA_DEPTH = {"420": 8, "420jpeg": 8, "420mpeg2": 8, "420paldv": 8, "420p10": 10}
_MAX_LINE = 4096  # longest header line we accept; a binary file gives no newline in that span


@dataclass(frozen=True)
class Y4MHeader:
    width: int
    height: int
    fps: float | None  # None when the header has no usable F tag
    bit_depth: int
    chroma: str
    size: int  # bytes of the header line, newline included


def _read_line(f: BinaryIO, what: str) -> bytes:
    line = f.readline(_MAX_LINE)
    if not line.endswith(b"\n"):
        raise InputError(f"{what}: truncated or not a YUV4MPEG2 file (no end of header line)")
    return line


def parse_header(line: bytes, what: str) -> Y4MHeader:
    """Parse the stream header line; InputError for foreign files and unsupported chroma formats."""
    if not line.startswith(MAGIC + b" "):
        raise InputError(f"{what}: not a YUV4MPEG2 file (no {MAGIC.decode()} header)")
    tags = {}
    for token in line[len(MAGIC):].decode("ascii", errors="replace").split():
        tags.setdefault(token[0], token[1:])
    try:
        width, height = int(tags["W"]), int(tags["H"])
    except (KeyError, ValueError):
        raise InputError(f"{what}: the YUV4MPEG2 header lacks a valid W or H tag") from None
    if width < 1 or height < 1:
        raise InputError(f"{what}: the YUV4MPEG2 header gives a {width}x{height} frame")
    fps = None
    num, _, den = tags.get("F", "").partition(":")
    try:
        if int(num) > 0 and int(den) > 0:
            fps = float(Fraction(int(num), int(den)))
    except ValueError:
        pass
    chroma = tags.get("C", "420")
    if chroma not in CHROMA_DEPTH:
        raise InputError(f"{what}: YUV4MPEG2 chroma format C{chroma} is not supported; "
                         "only 4:2:0 (C420, C420jpeg, C420mpeg2, C420paldv, C420p10)")
    return Y4MHeader(width, height, fps, CHROMA_DEPTH[chroma], chroma, len(line))


def read_header(path: Path) -> Y4MHeader:
    with open(path, "rb") as f:
        return parse_header(_read_line(f, str(path)), str(path))


def frame_offsets(path: Path, header: Y4MHeader) -> list[int]:
    """Byte offset of each frame's data. Regular files (the usual case) cost two small reads."""
    per_frame = frame_bytes(header.width, header.height, header.bit_depth)
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(header.size)
        if f.tell() >= size:
            return []
        first = _read_line(f, str(path))
        stride = len(first) + per_frame
        body = size - header.size
        if first.startswith(b"FRAME") and body % stride == 0:
            count = body // stride
            f.seek(header.size + (count - 1) * stride)
            if f.readline(_MAX_LINE) == first:
                return [header.size + i * stride + len(first) for i in range(count)]
        offsets = []  # frame headers vary: walk them
        f.seek(header.size)
        while f.tell() < size:
            line = _read_line(f, f"{path} frame {len(offsets)}")
            if not line.startswith(b"FRAME"):
                raise InputError(f"{path}: frame {len(offsets)} has no FRAME marker (corrupt file?)")
            offsets.append(f.tell())
            if f.tell() + per_frame > size:
                raise InputError(f"{path}: frame {len(offsets) - 1} is truncated ({size} bytes in all)")
            f.seek(per_frame, 1)
        return offsets


def y4m_info(path: Path, fps: float | None = None) -> tuple[SourceInfo, list[int]]:
    """Describe a .y4m file and index its frames; ``fps`` overrides the header's rate."""
    header = read_header(path)
    offsets = frame_offsets(path, header)
    info = SourceInfo(width=header.width, height=header.height, fps=fps or header.fps or DEFAULT_FPS,
                      bit_depth=header.bit_depth, frames=len(offsets),
                      native="yuv420p" if header.bit_depth == 8 else "yuv420p10le", codec="rawvideo")
    return info, offsets


def y4m_frames(path: Path, info: SourceInfo, offsets: list[int], start: int, count: int) -> Iterator[tuple]:
    """Frames [start, start + count) as planes, each read by seeking to its offset."""
    per_frame = frame_bytes(info.width, info.height, info.bit_depth)
    with open(path, "rb") as f:
        for index in range(start, min(start + count, len(offsets))):
            f.seek(offsets[index])
            data = f.read(per_frame)
            if len(data) != per_frame:
                raise InputError(f"{path}: frame {index} is truncated")
            yield split_frame(data, info.width, info.height, info.bit_depth, f"{path} frame {index}")


def write_y4m(f: BinaryIO, planes, fps: float, bit_depth: int) -> None:
    """Write (T,H,W), (T,H/2,W/2) x2 planes as YUV4MPEG2: plain ``C420`` or ``C420p10``."""
    y, u, v = planes
    rate = fps_fraction(fps)
    chroma = "420" if bit_depth == 8 else "420p10"
    height, width = y.shape[1:]
    f.write(f"YUV4MPEG2 W{width} H{height} F{rate.numerator}:{rate.denominator} Ip A1:1 C{chroma}\n".encode())
    for t in range(y.shape[0]):
        f.write(b"FRAME\n")
        for plane in (y[t], u[t], v[t]):
            f.write(plane_bytes(plane, bit_depth))
