"""Write a :class:`Video` to disk, chosen by the path: ``.y4m``, raw ``.yuv``, lossless FFV1 ``.mkv``,
or a folder of PNGs (a path with no suffix, ending in '/', or an existing folder).

Every write is atomic: the data goes to a hidden temporary name in the same directory and is
renamed into place only when complete, so an error never leaves a half-written output. YUV
formats get the video's own planes (RGB-only videos are converted with its matrix); PNGs get
8-bit RGB, ``video.rgb()`` rounded. All of these read back with ``open_video``; ``.y4m``,
``.yuv`` and ``.mkv`` bit-exactly (a ``.yuv`` needs its size in the name or the options).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from weightstep.errors import ConfigError, InputError
from weightstep.fileio import check_output_path
from weightstep.video.avframes import fps_fraction, planes_to_frame, quiet_libav
from weightstep.video.colour import yuv420_to_rgb
from weightstep.video.rawyuv import write_raw
from weightstep.video.video import Video
from weightstep.video.y4m import write_y4m

quiet_libav()  # libav warnings would drown the one line users should see

FILE_SUFFIXES = (".y4m", ".yuv", ".mkv")
_FRAME_NAME = "frame_{:05d}.png"


def _temporary(path: Path) -> Path:
    """A fresh hidden name beside ``path`` (same filesystem, so the rename is atomic)."""
    return path.parent / f".{path.name}.{secrets.token_hex(4)}.part"


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it onto ``path`` on success, delete it on failure."""
    tmp = _temporary(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _write_ffv1(video: Video, tmp: Path) -> None:
    y, u, v = video.yuv420()
    pix_fmt = "yuv420p" if video.bit_depth == 8 else "yuv420p10le"
    with av.open(str(tmp), "w", format="matroska") as container:
        stream = container.add_stream("ffv1", rate=fps_fraction(video.fps))
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, pix_fmt
        for t in range(video.frames):
            frame = planes_to_frame(y[t], u[t], v[t], video.bit_depth)
            frame.pts = t
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _rgb8(video: Video, t: int) -> np.ndarray:
    """Frame t as 8-bit RGB (H, W, 3), converting one frame at a time to keep memory small."""
    if video.has_native_yuv:
        y, u, v = (p[t:t + 1] for p in video.planes)
        rgb = yuv420_to_rgb(y, u, v, bit_depth=video.bit_depth, matrix=video.matrix)[0]
    else:
        rgb = video.rgb_frames[t]
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0)


def encode_png(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> the bytes of a PNG file, through PyAV's png encoder."""
    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt = rgb.shape[1], rgb.shape[0], "rgb24"
    packets = ctx.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24"))
    packets += ctx.encode(None)
    return b"".join(bytes(p) for p in packets)


def _is_frame_folder(path: Path) -> bool:
    """True for an empty folder or one holding only frame_NNNNN.png files (an earlier output)."""
    return all(p.is_file() and p.name.startswith("frame_") and p.suffix == ".png" for p in path.iterdir())


def _write_png_folder(video: Video, path: Path) -> None:
    if path.exists() and not (path.is_dir() and _is_frame_folder(path)):
        raise InputError(f"{path}: exists and is not a folder of frame_*.png files; refusing to replace it")
    tmp = _temporary(path)
    tmp.mkdir()
    try:
        for t in range(video.frames):
            (tmp / _FRAME_NAME.format(t)).write_bytes(encode_png(_rgb8(video, t)))
        if path.exists():  # swap the old folder out, the new one in, then delete the old
            old = _temporary(path)
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_writable(path: str | os.PathLike) -> tuple[Path, str, bool]:
    """(target, suffix, is a PNG folder) for an output path, checked before any work is done.

    ConfigError for an unsupported suffix; InputError when its folder is missing or not writable
    (:func:`weightstep.fileio.check_output_path`: the one rule for every output, never created).
    """
    text = os.fspath(path)
    target = Path(text).expanduser()
    suffix = target.suffix.lower()
    folder = text.endswith(("/", os.sep)) or not suffix or target.is_dir()
    if not folder and suffix not in FILE_SUFFIXES:
        raise ConfigError(f"cannot write {text}: use a .y4m, .yuv or .mkv file, or a folder for PNG frames")
    check_output_path(target, folder_ok=folder)
    return target, suffix, folder


def write_video(video: Video, path: str | os.PathLike) -> None:
    """Write ``video`` to ``path``, format by suffix; see the module docstring.

    Raises ConfigError for an unsupported suffix and InputError when the path cannot be written
    (see :func:`check_writable`).
    """
    text = os.fspath(path)
    target, suffix, folder = check_writable(path)
    try:
        if folder:
            _write_png_folder(video, target)
            return
        with _atomic_file(target) as tmp:
            if suffix == ".mkv":
                _write_ffv1(video, tmp)
                return
            with open(tmp, "xb") as f:
                if suffix == ".y4m":
                    write_y4m(f, video.yuv420(), video.fps, video.bit_depth)
                else:
                    write_raw(f, video.yuv420(), video.bit_depth)
    except av.FFmpegError as exc:
        raise InputError(f"cannot write {text}: {getattr(exc, 'strerror', None) or exc}") from None
    except OSError as exc:
        raise InputError(f"cannot write {text}: {exc.strerror or exc}") from None
