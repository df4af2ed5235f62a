"""Conventional codecs through PyAV: every codec round-trips a short clip; the rate is the stream's."""

import numpy as np
import pytest
from streams import packet_sizes

from baselines.conventional import ConventionalCodec, decode_stream
from weightstep import registry
from weightstep.codecs import harness
from weightstep.errors import BitstreamError, ConfigError
from weightstep.video import Video

CONVENTIONAL = ["x264", "x265", "svtav1", "vp9"]


def moving_clip(frames=6, height=48, width=64, bit_depth=8):
    """A smooth gradient that slides one pixel per frame, with neutral-ish chroma."""
    yy, xx = np.mgrid[0:height, 0:width]
    top = (1 << bit_depth) - 1
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    y = np.stack([((xx + 2 * yy + 3 * t) % 200 + 20) * (top / 255) for t in range(frames)]).astype(dtype)
    u = np.stack([np.full((height // 2, width // 2), (100 + t) * (top / 255)) for t in range(frames)]).astype(dtype)
    v = np.stack([np.full((height // 2, width // 2), 150 * (top / 255)) for _ in range(frames)]).astype(dtype)
    return Video(identity="test:moving", fps=25.0, planes=(y, u, v), bit_depth=bit_depth)


@pytest.mark.parametrize("name", CONVENTIONAL)
def test_codec_round_trip_measures_the_decoded_stream(name, tmp_path):
    video = moving_clip()
    codec = registry.create(name)
    result = harness.run(codec, video, tmp_path / f"clip{codec.suffix}")
    assert result.frames == video.frames and (result.width, result.height) == (64, 48)
    assert 0 < result.bytes < result.file_bytes  # elementary stream is smaller than the Matroska file
    assert result.file_bytes == (tmp_path / f"clip{codec.suffix}").stat().st_size
    extradata, packets = packet_sizes((tmp_path / f"clip{codec.suffix}").read_bytes())  # read by PyAV here
    assert len(packets) == video.frames
    assert result.bytes == extradata + sum(packets)
    assert result.bpp == pytest.approx(8 * result.bytes / (6 * 64 * 48))
    assert result.psnr_yuv > 30 and result.psnr_rgb > 28
    assert 0.8 < result.ms_ssim <= 1.0
    # each frame's bits are its own packet's (frame 0 also carries the parameter sets)
    assert [f["bits"] for f in result.per_frame] == [8 * (extradata + packets[0])] + [8 * n for n in packets[1:]]


def test_lower_crf_costs_more_bits_and_gives_more_quality():
    video = moving_clip(frames=4)
    low = harness.run(registry.create("x264", {"crf": "40"}), video)
    high = harness.run(registry.create("x264", {"crf": "18"}), video)
    assert high.bytes > low.bytes and high.psnr_yuv > low.psnr_yuv


def test_ten_bit_encode_keeps_ten_bits():
    video = moving_clip(frames=3, bit_depth=10)
    codec = registry.create("x265", {"pix_fmt": "yuv420p10le", "crf": "12"})
    decoded = codec.decode(codec.encode(video).data)
    assert decoded.bit_depth == 10 and decoded.planes[0].dtype == np.uint16
    assert np.abs(decoded.planes[0].astype(int) - video.planes[0].astype(int)).mean() < 8


def test_settings_travel_in_the_file_and_come_back_for_eval():
    video = moving_clip(frames=3)
    codec = registry.create("x264", {"crf": "30", "preset": "fast", "gop": "2"})
    data = codec.encode(video).data
    again = ConventionalCodec.for_stream(data)
    assert again.name == "x264" and again.config == codec.config
    result = harness.evaluate(data, video)
    assert result.config["crf"] == 30 and result.config["preset"] == "fast"
    assert result.bytes == codec.payload_bytes(data)


def test_qp_replaces_crf_and_bounds_are_checked():
    assert registry.create("x264", {"qp": "30"}).config.crf is None
    with pytest.raises(ConfigError, match="out of range"):
        registry.create("x264", {"crf": "52"})
    with pytest.raises(ConfigError, match="valid: crf, qp"):
        registry.create("x265", {"qualty": "1"})
    with pytest.raises(ConfigError, match="unknown codec"):
        registry.create("h266")


def test_truncated_and_foreign_streams_are_refused():
    video = moving_clip(frames=6)
    data = registry.create("x264").encode(video).data
    for cut in (len(data) // 2, len(data) * 3 // 4, 40):
        with pytest.raises(BitstreamError):
            decode_stream(data[:cut])
    with pytest.raises(BitstreamError):
        decode_stream(b"this is not a video at all, just text" * 10)
