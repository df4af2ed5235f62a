"""Key frames (I-frames) of the neural baselines, coded by a conventional intra codec through PyAV.

DVC and VCII code only the frames between key frames; the papers code key frames with an
image codec (DVC: BPG / H.265 intra). Here one frame is coded as a one-frame raw elementary
stream (Annex B) of libx265 or libx264, parameter sets included, so the bytes stored in our
container are exactly what a decoder needs. x265's informational SEI is switched off and
x264's (its settings as text) is left out by the stream filter, as in
:mod:`baselines.conventional`.
"""

from __future__ import annotations

import io

import av
import numpy as np
from av.bitstream import BitStreamFilterContext

from baselines.conventional import X26X_PRESETS
from weightstep.errors import BitstreamError, ConfigError
from weightstep.video.avframes import frame_to_planes, planes_to_frame, quiet_libav

INTRA_CODECS = {"x265": ("libx265", "hevc"), "x264": ("libx264", "h264")}
__all__ = ["INTRA_CODECS", "X26X_PRESETS", "encode_intra", "decode_intra"]


def _options(codec: str, crf: float, preset: str) -> dict[str, str]:
    if preset not in X26X_PRESETS:
        raise ConfigError(f"intra preset {preset!r} is not one of {', '.join(X26X_PRESETS)}")
    opts = {"crf": f"{crf:g}", "preset": preset}
    if codec == "x265":
        opts["x265-params"] = "log-level=error:info=0"
    return opts


def encode_intra(planes: tuple[np.ndarray, np.ndarray, np.ndarray], codec: str = "x265", crf: float = 23.0,
                 preset: str = "medium") -> bytes:
    """One 8-bit 4:2:0 frame -> the Annex-B elementary stream of one intra frame."""
    if codec not in INTRA_CODECS:
        raise ConfigError(f"intra codec {codec!r} is not one of {', '.join(INTRA_CODECS)}")
    quiet_libav()
    encoder, fmt = INTRA_CODECS[codec]
    y, u, v = planes
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as container:
        stream = container.add_stream(encoder, rate=25)
        stream.width, stream.height, stream.pix_fmt = y.shape[1], y.shape[0], "yuv420p"
        stream.options = _options(codec, crf, preset)
        if codec == "x264":
            bsf = BitStreamFilterContext("filter_units=remove_types=6", stream)
            packets = [p for pkt in stream.encode(planes_to_frame(y, u, v, bit_depth=8)) for p in bsf.filter(pkt)]
            packets += [p for pkt in stream.encode(None) for p in bsf.filter(pkt)]
            packets += list(bsf.filter(None))
            for packet in packets:
                packet.stream = stream
                container.mux(packet)
        else:
            container.mux(stream.encode(planes_to_frame(y, u, v, bit_depth=8)))
            container.mux(stream.encode(None))
    return buffer.getvalue()


def decode_intra(data: bytes, codec: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one intra frame written by :func:`encode_intra`; its size must be ``width`` x ``height``."""
    if codec not in INTRA_CODECS:
        raise BitstreamError(f"unknown intra codec {codec!r}")
    quiet_libav()
    try:
        with av.open(io.BytesIO(bytes(data)), format=INTRA_CODECS[codec][1]) as container:
            if not container.streams.video:
                raise BitstreamError("the key frame holds no video stream")
            frames = [frame for _, frame in zip(range(2), container.decode(video=0), strict=False)]
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise BitstreamError(f"cannot decode a key frame: {getattr(exc, 'strerror', None) or exc}") from None
    if len(frames) != 1:
        raise BitstreamError(f"a key frame section decodes to {len(frames)} frames, expected 1")
    frame = frames[0]
    if (frame.width, frame.height) != (width, height):
        raise BitstreamError(f"a key frame is {frame.width}x{frame.height}, the header says {width}x{height}")
    return frame_to_planes(frame, 8)
