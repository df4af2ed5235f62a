"""The measuring harness: encode, write, read back, decode, measure. Codecs never measure themselves.

Every Result comes from here, so rates are bytes of a file that decodes and quality is
measured on the decoded output against the source.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from weightstep import registry
from weightstep.codecs import budget
from weightstep.codecs.base import Codec, Encoded, Result
from weightstep.device import resolve_device
from weightstep.errors import BitstreamError
from weightstep.fileio import atomic_write_bytes
from weightstep.metrics import bpp as bits_per_pixel
from weightstep.metrics import measure as measure_quality
from weightstep.versions import versions
from weightstep.video import Video


def identify(data: bytes, device: str = "auto") -> tuple[Codec, Any]:
    """Which codec can decode ``data``, set up to decode it on ``device``.

    Our container names the codec and its settings (the full ones in its metadata; the stream
    carries what decoding needs, and the codec's decoder rebuilds its settings from that alone);
    they are used as written, except where to compute, which is ``device`` (auto: CUDA when
    present; the file records where it was encoded as ``encoded_on``). Anything else goes to
    PyAV, which decodes on the CPU.
    """
    from weightstep.coding.container import MAGIC, Container

    resolve_device(device)  # an unknown or absent device is refused for every kind of file
    if data[: len(MAGIC)] == MAGIC:
        container = Container.from_bytes(data)
        written = container.meta.get("config") if isinstance(container.meta.get("config"), dict) else None
        settings = {k: v for k, v in (written or container.header.get("config", {})).items() if k != "device"}
        cls = registry.codec_class(container.codec)
        if any(f.name == "device" for f in dataclasses.fields(cls.Config)):
            settings["device"] = device
        codec = registry.create(container.codec, settings, where=f"the {container.codec} file's header")
        return codec, container
    if len(data) < 16:
        raise BitstreamError("not a weightstep or video file (too short)")
    from baselines.conventional import ConventionalCodec

    return ConventionalCodec.for_stream(data), None


def decode(codec: Codec, data: bytes) -> Video:
    """``codec.decode(data)``, a failed allocation turned into one clean error (see codecs.budget)."""
    with budget.guarded(f"decoding a {codec.name} stream"):
        return codec.decode(data)


def decode_bytes(data: bytes, device: str = "auto") -> tuple[Codec, Video]:
    codec, _ = identify(data, device)
    return codec, decode(codec, data)


def encoded_on(container: Any) -> str | None:
    """Where a file was encoded, as its header records it (None: conventional files, older files)."""
    if container is None:
        return None
    return container.meta.get("encoded_on") or container.header.get("encoded_on")  # version 1: the header


def _result(codec: Codec, video: Video, decoded: Video, encoded: Encoded | None, data: bytes,
            encode_s: float, decode_s: float, container: Any = None) -> Result:
    if decoded.has_native_yuv and video.has_native_yuv:
        decoded.matrix = video.matrix  # decoded planes are read with the source's colour matrix
    quality = measure_quality(video, decoded)
    known = encoded is not None and encoded.payload_bytes is not None
    payload = encoded.payload_bytes if known else codec.payload_bytes(data)
    per_frame_bits = (encoded.per_frame_bits if encoded is not None else None) or [None] * video.frames
    per_frame = [{"bits": bits, "psnr_rgb": float(psnr)}
                 for bits, psnr in zip(per_frame_bits, quality.psnr_rgb, strict=True)]
    extra = dict(encoded.extra) if encoded is not None else {}
    extra.update({"psnr_y": quality.mean_psnr_y, "psnr_u": quality.mean_psnr_u, "psnr_v": quality.mean_psnr_v,
                  "ms_ssim_scales": quality.ms_ssim_scales, "encoded_on": encoded_on(container),
                  "describe": codec.describe()})
    return Result(
        codec=codec.name, config=codec.describe()["config"], video=video.identity, frames=video.frames,
        width=video.width, height=video.height, fps=video.fps, bytes=int(payload), file_bytes=len(data),
        bpp=bits_per_pixel(payload, video.frames, video.width, video.height),
        psnr_rgb=quality.mean_psnr_rgb, psnr_yuv=quality.mean_psnr_yuv, ms_ssim=quality.mean_ms_ssim,
        encode_s=encode_s, decode_s=decode_s, per_frame=per_frame, device=codec.device_label(),
        versions=versions(), seed=getattr(codec.config, "seed", None),
        estimated_bits=encoded.estimated_bits if encoded is not None else None, extra=extra,
    )


def run(codec: Codec, video: Video, out_path: str | os.PathLike | None = None) -> Result:
    """Encode ``video``, write the file (atomically), read it back, decode it, measure."""
    start = time.perf_counter()
    encoded = codec.encode(video)
    encode_s = time.perf_counter() - start
    data = encoded.data
    if out_path is not None:
        atomic_write_bytes(out_path, data)
        with open(out_path, "rb") as handle:
            data = handle.read()
    start = time.perf_counter()
    decoded = decode(codec, data)
    decode_s = time.perf_counter() - start
    from weightstep.coding.container import MAGIC, Container

    container = Container.from_bytes(data) if data[: len(MAGIC)] == MAGIC else None
    return _result(codec, video, decoded, encoded, data, encode_s, decode_s, container)


def evaluate(data: bytes, video: Video, device: str = "auto") -> Result:
    """Decode a file written earlier on ``device`` and measure it against ``video`` (encode_s is 0:
    not timed here). The Result's ``device`` is where it decoded; ``extra.encoded_on`` where it was made."""
    codec, container = identify(data, device)
    start = time.perf_counter()
    decoded = decode(codec, data)
    decode_s = time.perf_counter() - start
    if (decoded.frames, decoded.width, decoded.height) != (video.frames, video.width, video.height):
        raise BitstreamError(
            f"the file decodes to {decoded.frames} frames of {decoded.width}x{decoded.height}, "
            f"but the video has {video.frames} of {video.width}x{video.height} (use --frames/options to match)")
    result = _result(codec, video, decoded, None, data, 0.0, decode_s, container)
    result.extra["encode_s_measured"] = False
    return result
