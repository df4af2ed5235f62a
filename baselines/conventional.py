"""Conventional codecs (H.264, H.265, AV1, VP9) run in-process through PyAV, no ffmpeg binary.

Each codec is a small class that records its exact settings (CompressAI's habit). The encoder
is fed the source's own 4:2:0 planes, the stream goes into a Matroska file, and the rate is
the elementary stream: the sum of packet sizes plus the codec's global header (extradata:
parameter sets a decoder needs). The Matroska size is ``file_bytes``. Text the encoders write
about themselves (x264's settings SEI, x265's info SEI, ~0.7-2.3 kB) is left out of the stream:
a decoder does not need it, and on short clips it would be a large part of the rate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

import av
import numpy as np
from av.bitstream import BitStreamFilterContext

from weightstep.codecs import budget
from weightstep.codecs.base import Codec, Encoded
from weightstep.coding.container import MAX_FRAMES, MAX_SIDE
from weightstep.config import param
from weightstep.errors import BitstreamError, ConfigError
from weightstep.video import Video
from weightstep.video.avframes import fps_fraction, frame_to_planes, planes_to_frame, quiet_libav

# Matroska header tags: the frame count (so truncation is detected) and the exact codec settings
# (so `weightstep eval` on a file reports the configuration that made it).
# A third tag carries a SHA-256 of the elementary stream (global header, every packet with its
# timestamps) and of the other tags: Matroska has no checksum a decoder checks, so without it a
# damaged file silently decodes to another video. A file carrying it must match it; files without
# it (from other tools, or ours from before checksums) are decoded as they are.
FRAMES_TAG = "WEIGHTSTEP_FRAMES"
CODEC_TAG = "WEIGHTSTEP_CODEC"
CONFIG_TAG = "WEIGHTSTEP_CONFIG"
CHECKSUM_TAG = "WEIGHTSTEP_STREAM_SHA256"
TAG_PREFIX = "WEIGHTSTEP_"
STREAM_CODECS = {"h264": "x264", "hevc": "x265", "av1": "svtav1", "libdav1d": "svtav1", "vp9": "vp9"}
X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                "veryslow", "placebo")
PIX_FMTS = ("yuv420p", "yuv420p10le")


def _quiet() -> None:
    """Silence libav's and the encoders' own log output (SVT-AV1 reads SVT_LOG at start-up)."""
    quiet_libav()
    os.environ.setdefault("SVT_LOG", "1")


def _convert_depth(plane: np.ndarray, src_bits: int, dst_bits: int) -> np.ndarray:
    if src_bits == dst_bits:
        return plane
    if dst_bits > src_bits:
        return plane.astype(np.uint16) << (dst_bits - src_bits)
    shift = src_bits - dst_bits
    return ((plane.astype(np.uint32) + (1 << (shift - 1))) >> shift).clip(0, (1 << dst_bits) - 1).astype(np.uint8)


class ConventionalCodec(Codec):
    """Shared encode/decode path; subclasses name the libav encoder and map their options."""

    encoder: ClassVar[str]
    suffix = ".mkv"
    # NAL unit types removed after encoding: SEI that only carries the encoder's version and
    # settings as text (x264 writes ~700 bytes into the first frame; a decoder never needs it).
    strip_units: ClassVar[str | None] = None

    def encoder_options(self) -> dict[str, str]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["encoder"] = self.encoder
        info["options"] = self.encoder_options()
        info["libavcodec"] = ".".join(map(str, av.library_versions["libavcodec"]))
        return info

    def encode(self, video: Video) -> Encoded:
        _quiet()
        cfg = self.config
        out_bits = 8 if cfg.pix_fmt == "yuv420p" else 10
        y, u, v = video.yuv420()
        buffer = io.BytesIO()
        with av.open(buffer, "w", format="matroska") as container:
            container.metadata[FRAMES_TAG] = str(video.frames)
            container.metadata[CODEC_TAG] = self.name
            container.metadata[CONFIG_TAG] = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
            stream = container.add_stream(self.encoder, rate=fps_fraction(video.fps))
            stream.width, stream.height, stream.pix_fmt = video.width, video.height, cfg.pix_fmt
            if cfg.gop is not None:
                stream.codec_context.gop_size = cfg.gop
            if getattr(cfg, "bframes", None) is not None:
                stream.codec_context.max_b_frames = cfg.bframes
            stream.options = self.encoder_options()
            for i in range(video.frames):
                frame = planes_to_frame(*(_convert_depth(p[i], video.bit_depth, out_bits) for p in (y, u, v)),
                                        bit_depth=out_bits)
                frame.pts = i
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        data = _remux(buffer.getvalue(), self.strip_units)
        header, sizes = stream_sizes(data)
        per_frame = [8 * size for size in sizes] if len(sizes) == video.frames else None
        if per_frame is not None:
            per_frame[0] += 8 * header
        return Encoded(data=data, payload_bytes=header + sum(sizes), per_frame_bits=per_frame,
                       extra={"extradata_bytes": header, "packets": len(sizes)})

    def decode(self, data: bytes) -> Video:
        return decode_stream(data, identity=f"decoded:{self.name}")

    def payload_bytes(self, data: bytes) -> int:
        """Elementary stream of a written file: packet sizes plus the global header."""
        header, sizes = stream_sizes(data)
        return header + sum(sizes)

    @staticmethod
    def for_stream(data: bytes) -> ConventionalCodec:
        """The registered codec (with the settings recorded in the file) that decodes ``data``."""
        from weightstep import registry

        with _open(data) as container:
            tags = dict(container.metadata)
            stream_codec = container.streams.video[0].codec_context.name
        if any(key.startswith(TAG_PREFIX) for key in tags) and CODEC_TAG not in tags:
            raise BitstreamError("damaged file: its weightstep tags are incomplete (no codec tag)")
        name = tags.get(CODEC_TAG) or STREAM_CODECS.get(stream_codec)
        if name is None:
            raise BitstreamError(f"no registered codec decodes a {stream_codec} stream")
        try:
            params = json.loads(tags.get(CONFIG_TAG, "{}"))
        except json.JSONDecodeError:
            raise BitstreamError("the file's codec settings tag is not valid JSON") from None
        if not isinstance(params, dict):
            raise BitstreamError("the file's codec settings tag is not a JSON object")
        codec = registry.create(name, params, where="the file's settings tag")
        if not isinstance(codec, ConventionalCodec):
            raise BitstreamError(f"the file names codec {name!r}, which does not write video streams")
        return codec


class _open:
    """Open bytes with PyAV as a video file, every libav failure becoming a BitstreamError."""

    def __init__(self, data: bytes):
        _quiet()
        try:
            self.container = av.open(io.BytesIO(data))
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise BitstreamError(f"not a readable video file ({getattr(exc, 'strerror', None) or exc})") from None
        try:
            streams = self.container.streams.video
            context = streams[0].codec_context if streams else None
            usable = context is not None and bool(context.name)
        except (av.FFmpegError, AttributeError, ValueError) as exc:  # a damaged stream description
            self.container.close()
            raise BitstreamError(f"the file has no usable video stream ({exc})") from None
        if not streams:
            self.container.close()
            raise BitstreamError("the file has no video stream")
        if not usable:
            self.container.close()
            raise BitstreamError("the file's video stream has no codec a decoder can open")

    def __enter__(self):
        return self.container

    def __exit__(self, *exc):
        self.container.close()


def _remux(data: bytes, remove_types: str | None) -> bytes:
    """Re-mux ``data`` (one video stream) into a Matroska file carrying the stream's checksum tag,
    dropping NAL unit types ``remove_types`` on the way (libav's filter_units bitstream filter)."""
    filtered = _copy_stream(data, remove_types, {})
    with _open(filtered) as container:
        tags = {k: v for k, v in container.metadata.items() if k.startswith(TAG_PREFIX)}
        stream = container.streams.video[0]
        digest = stream_digest(tags, stream.codec_context.extradata, container.demux(stream))
    out = _copy_stream(filtered, None, {CHECKSUM_TAG: digest})
    with _open(out) as container:  # the tag must describe exactly what a decoder will read
        stream = container.streams.video[0]
        tags = dict(container.metadata)
        again = stream_digest(tags, stream.codec_context.extradata, container.demux(stream))
    if again != digest:  # pragma: no cover - a change in libav's muxer would show here
        raise RuntimeError("re-muxing changed the elementary stream")
    return out


def _copy_stream(data: bytes, remove_types: str | None, extra_tags: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with _open(data) as source, av.open(buffer, "w", format="matroska") as target:
        stream = source.streams.video[0]
        target.metadata.update({k: v for k, v in source.metadata.items()
                                if k.startswith(TAG_PREFIX) and k != CHECKSUM_TAG})
        target.metadata.update(extra_tags)
        # opaque: copy the codec parameters as they are (AV1's template names a decoder, libdav1d)
        out = target.add_stream_from_template(stream, opaque=not remove_types)
        bsf = BitStreamFilterContext(f"filter_units=remove_types={remove_types}", stream, out) if remove_types else None
        for packet in [*source.demux(stream), None]:
            if packet is not None and packet.size == 0:
                continue
            if bsf is None:
                if packet is not None:
                    packet.stream = out
                    target.mux(packet)
                continue
            for filtered in bsf.filter(packet):
                filtered.stream = out
                target.mux(filtered)
    return buffer.getvalue()


def stream_digest(tags: dict[str, str], extradata: bytes | None, packets) -> str:
    """SHA-256 (hex) of the weightstep tags (but the checksum), the global header and every packet."""
    digest = hashlib.sha256()
    mine = {k: v for k, v in tags.items() if k.startswith(TAG_PREFIX) and k != CHECKSUM_TAG}
    digest.update(json.dumps(mine, sort_keys=True).encode("utf-8"))
    digest.update(struct.pack("<Q", len(extradata or b"")) + bytes(extradata or b""))
    for packet in packets:
        if not packet.size:
            continue
        stamps = [-(2**63) if t is None else int(t) for t in (packet.pts, packet.dts)]
        digest.update(struct.pack("<qqQ", *stamps, packet.size) + bytes(packet))
    return digest.hexdigest()


def stream_sizes(data: bytes) -> tuple[int, list[int]]:
    """(global header bytes, packet bytes in display order) of the file's video stream, as stored."""
    with _open(data) as container:
        stream = container.streams.video[0]
        header = len(stream.codec_context.extradata or b"")
        packets = sorted((packet.pts, packet.size) for packet in container.demux(stream)
                         if packet.size and packet.pts is not None)
    return header, [size for _, size in packets]


def decode_stream(data: bytes, identity: str = "decoded") -> Video:
    """Decode any single-video-stream file PyAV reads (our conventional outputs) into a Video.

    Checked before decoding: a usable video stream, its declared size (at most MAX_SIDE), the
    declared frame count, the checksum tag of our own files, and the decode memory budget. Every
    decoded frame must have the stream's declared size; no more frames than declared are kept.
    """
    try:
        with _open(data) as container:
            stream = container.streams.video[0]
            context = stream.codec_context
            tags = dict(container.metadata)
            width, height = int(context.width or 0), int(context.height or 0)
            if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
                raise BitstreamError(f"the video stream declares a {width}x{height} frame (1 to {MAX_SIDE} a side)")
            if width % 2 or height % 2:
                raise BitstreamError(f"the video stream declares a {width}x{height} frame: odd sizes have no 4:2:0 "
                                     "planes")
            expected = _declared_frames(tags)
            packets = [packet for packet in container.demux(stream)]
            present = sum(1 for p in packets if p.size)
            if expected is not None and present < expected:
                raise BitstreamError(f"truncated stream: {present} of the {expected} frames it declares are in the file")
            if any(key.startswith(TAG_PREFIX) for key in tags):
                _check_digest(tags, context.extradata, packets)
            most = expected if expected is not None else min(present, MAX_FRAMES)
            budget.check_frames("the video stream", max(most, 1), height, width)
            fmt = context.pix_fmt or "yuv420p"
            bits = 10 if "10" in fmt else 8
            fps = float(stream.average_rate or stream.guessed_rate or 25)
            planes = []
            for packet in packets:  # the last one (size 0) flushes the decoder
                for frame in context.decode(packet):
                    if (frame.width, frame.height) != (width, height):
                        raise BitstreamError(f"a frame decodes at {frame.width}x{frame.height}, the stream declares "
                                             f"{width}x{height}")
                    if len(planes) >= most:
                        raise BitstreamError(f"the stream decodes to more than the {most} frames it declares")
                    planes.append(frame_to_planes(frame, bits))
            if not packets or packets[-1].size:
                for frame in context.decode(None):
                    if (frame.width, frame.height) == (width, height) and len(planes) < most:
                        planes.append(frame_to_planes(frame, bits))
    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
        raise BitstreamError(f"cannot decode the stream: {getattr(exc, 'strerror', None) or exc}") from None
    if expected is not None and expected != len(planes):
        raise BitstreamError(f"truncated stream: {len(planes)} of the {expected} frames it declares decode")
    if not planes:
        raise BitstreamError("the stream holds no decodable frames")
    if not math.isfinite(fps) or not 0 < fps <= 1000:
        fps = 25.0
    stacked = tuple(np.stack([p[k] for p in planes]) for k in range(3))
    return Video(identity=identity, fps=fps, planes=stacked, bit_depth=bits)


def _declared_frames(tags: dict[str, str]) -> int | None:
    text = tags.get(FRAMES_TAG)
    if text is None:
        return None
    if not text.isdigit() or not 0 < int(text) <= MAX_FRAMES:
        raise BitstreamError(f"the file's frame count tag {text[:20]!r} is not 1 to {MAX_FRAMES}")
    return int(text)


def _check_digest(tags: dict[str, str], extradata: bytes | None, packets) -> None:
    stored = tags.get(CHECKSUM_TAG)
    if stored is None:  # written before checksums existed: decoded as before (golden files are such)
        return
    if stream_digest(tags, extradata, packets) != stored.strip().lower():
        raise BitstreamError("damaged file: the elementary stream does not match its checksum")


class _RateControl:
    """crf or qp: a qp, when given, replaces the default crf (recorded as crf=None)."""

    def __post_init__(self) -> None:
        if self.qp is not None:
            object.__setattr__(self, "crf", None)
        elif self.crf is None:
            raise ConfigError("give crf or qp")


@dataclass(frozen=True)
class X264Config(_RateControl):
    crf: float | None = param(23.0, "constant rate factor, the usual rate control for RD curves (lower = better)", low=0, high=51)
    qp: int | None = param(None, "constant quantiser, for fixed-QP comparisons; replaces crf when given", low=0, high=69)
    preset: str = param("medium", "speed/efficiency trade-off of the encoder's search", choices=X26X_PRESETS)
    tune: str | None = param(None, "psychovisual tuning; 'psnr' or 'ssim' for metric-fair comparisons",
                             choices=("film", "animation", "grain", "stillimage", "psnr", "ssim", "fastdecode", "zerolatency"))
    gop: int | None = param(None, "intra period in frames (none = the encoder's default, 250)", low=1, high=100000)
    bframes: int | None = param(None, "maximum consecutive B-frames (none = the encoder's default, 3)", low=0, high=16)
    pix_fmt: str = param("yuv420p", "pixel format the encoder codes (8- or 10-bit 4:2:0)", choices=PIX_FMTS)


def _rate_control(cfg: Any) -> dict[str, str]:
    return {"crf": f"{cfg.crf:g}"} if cfg.crf is not None else {"qp": str(cfg.qp)}


class X264(ConventionalCodec):
    name = "x264"
    encoder = "libx264"
    Config = X264Config
    summary = "H.264 / AVC through libx264 (PyAV)"
    strip_units = "6"  # SEI

    def encoder_options(self) -> dict[str, str]:
        opts = {**_rate_control(self.config), "preset": self.config.preset}
        if self.config.tune:
            opts["tune"] = self.config.tune
        return opts


@dataclass(frozen=True)
class X265Config(_RateControl):
    crf: float | None = param(28.0, "constant rate factor, the usual rate control for RD curves (lower = better)", low=0, high=51)
    qp: int | None = param(None, "constant quantiser, for fixed-QP comparisons; replaces crf when given", low=0, high=51)
    preset: str = param("medium", "speed/efficiency trade-off of the encoder's search", choices=X26X_PRESETS)
    tune: str | None = param(None, "psychovisual tuning; 'psnr' or 'ssim' for metric-fair comparisons",
                             choices=("psnr", "ssim", "grain", "zerolatency", "fastdecode", "animation"))
    gop: int | None = param(None, "intra period in frames (none = the encoder's default, 250)", low=1, high=100000)
    bframes: int | None = param(None, "maximum consecutive B-frames (none = the encoder's default, 4)", low=0, high=16)
    pix_fmt: str = param("yuv420p", "pixel format the encoder codes (8- or 10-bit 4:2:0)", choices=PIX_FMTS)


class X265(ConventionalCodec):
    name = "x265"
    encoder = "libx265"
    Config = X265Config
    summary = "H.265 / HEVC through libx265 (PyAV)"

    def encoder_options(self) -> dict[str, str]:
        opts = {**_rate_control(self.config), "preset": self.config.preset, "x265-params": "log-level=error:info=0"}
        if self.config.tune:
            opts["tune"] = self.config.tune
        return opts


@dataclass(frozen=True)
class SvtAv1Config(_RateControl):
    crf: float | None = param(35.0, "constant rate factor (1..63, lower = better)", low=1, high=63)
    qp: int | None = param(None, "constant quantiser; replaces crf when given", low=1, high=63)
    preset: int = param(8, "speed preset, 0 (slowest, best) to 13 (fastest)", low=0, high=13)
    tune: int | None = param(None, "0 = visual quality, 1 = PSNR (none = the encoder's default)", choices=(0, 1, 2))
    gop: int | None = param(None, "intra period in frames (none = the encoder's default)", low=1, high=100000)
    pix_fmt: str = param("yuv420p", "pixel format the encoder codes (8- or 10-bit 4:2:0)", choices=PIX_FMTS)


class SvtAv1(ConventionalCodec):
    name = "svtav1"
    encoder = "libsvtav1"
    Config = SvtAv1Config
    summary = "AV1 through SVT-AV1 (PyAV)"

    def encoder_options(self) -> dict[str, str]:
        cfg = self.config
        opts = {**_rate_control(cfg), "preset": str(cfg.preset)}
        if cfg.tune is not None:
            opts["svtav1-params"] = f"tune={cfg.tune}"
        return opts


@dataclass(frozen=True)
class Vp9Config(_RateControl):
    crf: float | None = param(31.0, "constant quality level (0..63, lower = better); bitrate is left unconstrained", low=0, high=63)
    qp: int | None = param(None, "fixed quantiser (qmin = qmax); replaces crf when given", low=0, high=63)
    deadline: str = param("good", "libvpx quality deadline", choices=("good", "best", "realtime"))
    cpu_used: int = param(1, "libvpx speed setting (0 slowest/best .. 8 fastest)", low=-8, high=8)
    gop: int | None = param(None, "intra period in frames (none = the encoder's default)", low=1, high=100000)
    pix_fmt: str = param("yuv420p", "pixel format the encoder codes (8- or 10-bit 4:2:0)", choices=PIX_FMTS)


class Vp9(ConventionalCodec):
    name = "vp9"
    encoder = "libvpx-vp9"
    Config = Vp9Config
    summary = "VP9 through libvpx (PyAV)"

    def encoder_options(self) -> dict[str, str]:
        cfg = self.config
        opts = {"deadline": cfg.deadline, "cpu-used": str(cfg.cpu_used), "b": "0"}
        if cfg.crf is not None:
            opts["crf"] = f"{cfg.crf:g}"
        else:
            opts.update({"qmin": str(cfg.qp), "qmax": str(cfg.qp)})
        return opts
