"""Metrics: PSNR against FFmpeg's psnr filter, MS-SSIM sanity, BD-rate against the bjontegaard package, measure()."""

from __future__ import annotations

from fractions import Fraction

import av
import bjontegaard  # test-only dependency (the dev extra): an independent BD-rate
import numpy as np
import pytest
import pytorch_msssim
import torch

from weightstep.errors import MetricError
from weightstep.metrics import (
    PSNR_CAP_DB,
    bd_quality,
    bd_rate,
    bpp,
    measure,
    ms_ssim_rgb,
    ms_ssim_setup,
    psnr_rgb,
    psnr_yuv,
)
from weightstep.metrics.msssim import _reduced_ms_ssim
from weightstep.video.video import Video


def _noisy_planes(rng, t=3, h=48, w=64, sigma=6.0):
    ref = (rng.integers(0, 256, (t, h, w), dtype=np.uint8),
           rng.integers(0, 256, (t, h // 2, w // 2), dtype=np.uint8),
           rng.integers(0, 256, (t, h // 2, w // 2), dtype=np.uint8))
    dist = tuple(np.clip(p + rng.normal(0, sigma * (k + 1), p.shape).round(), 0, 255).astype(np.uint8)
                 for k, p in enumerate(ref))
    return ref, dist


def _ffmpeg_psnr(ref, dist):
    """Per-frame Y, U, V PSNR from FFmpeg's psnr filter, driven through PyAV's filter graph."""
    t, h, w = ref[0].shape
    graph = av.filter.Graph()
    main = graph.add_buffer(width=w, height=h, format="yuv420p", time_base=Fraction(1, 25), name="main")
    refsrc = graph.add_buffer(width=w, height=h, format="yuv420p", time_base=Fraction(1, 25), name="ref")
    psnr = graph.add("psnr")
    sink = graph.add("buffersink")
    main.link_to(psnr, 0, 0)
    refsrc.link_to(psnr, 0, 1)
    psnr.link_to(sink)
    graph.configure()

    def frame(planes, i):
        stacked = np.concatenate([p[i].reshape(-1) for p in planes]).reshape(h * 3 // 2, w)
        f = av.VideoFrame.from_ndarray(stacked, format="yuv420p")
        f.pts, f.time_base = i, Fraction(1, 25)
        return f

    values = []
    for i in range(t):
        main.push(frame(dist, i))
        refsrc.push(frame(ref, i))
        meta = sink.pull().metadata
        values.append([float(meta[f"lavfi.psnr.psnr.{c}"]) for c in "yuv"])
    return np.array(values)


def test_psnr_yuv_matches_ffmpeg_filter():
    rng = np.random.default_rng(1)
    ref, dist = _noisy_planes(rng)
    ours = psnr_yuv(ref, dist, bit_depth=8)
    theirs = _ffmpeg_psnr(ref, dist)
    for k, c in enumerate("yuv"):
        np.testing.assert_allclose(ours[c], theirs[:, k], atol=0.01)
    np.testing.assert_allclose(ours["yuv"], (6 * ours["y"] + ours["u"] + ours["v"]) / 8)


def test_psnr_cap_and_rgb_value():
    rng = np.random.default_rng(2)
    ref = rng.random((2, 3, 8, 8))
    assert np.all(psnr_rgb(ref, ref) == PSNR_CAP_DB)
    dist = ref.copy()
    dist[1] += 0.1  # MSE 0.01 -> 20 dB on frame 1 only
    np.testing.assert_allclose(psnr_rgb(ref, dist), [PSNR_CAP_DB, 20.0])
    planes = (np.zeros((1, 4, 4), np.uint16),) + (np.zeros((1, 2, 2), np.uint16),) * 2
    assert psnr_yuv(planes, planes, 10)["yuv"][0] == PSNR_CAP_DB
    with pytest.raises(MetricError):
        psnr_rgb(ref, ref[:1])
    with pytest.raises(MetricError):  # floats are not integer planes
        psnr_yuv(tuple(p.astype(float) for p in planes), planes, 10)
    with pytest.raises(MetricError):  # 10-bit values declared 8-bit
        psnr_yuv((planes[0] + 1000,) + planes[1:], planes, 8)


def test_ms_ssim_identity_and_monotone():
    rng = np.random.default_rng(3)
    for h, w in ((32, 32), (144, 176)):
        ref = rng.random((1, 3, h, w)).astype(np.float32)
        ref = (ref + np.roll(ref, 1, axis=2) + np.roll(ref, 1, axis=3)) / 3  # some structure
        assert abs(ms_ssim_rgb(ref, ref)[0] - 1.0) < 1e-6
        noise = rng.normal(size=ref.shape)
        values = [ms_ssim_rgb(ref, np.clip(ref + s * noise, 0, 1))[0] for s in (0.02, 0.1, 0.3)]
        assert 1.0 > values[0] > values[1] > values[2] >= 0.0


def test_ms_ssim_setup_and_reduced_path_matches_library():
    assert ms_ssim_setup(720, 1280) == (5, 11)
    assert ms_ssim_setup(144, 176) == (4, 11)
    assert ms_ssim_setup(32, 32) == (2, 11)
    assert ms_ssim_setup(8, 12) == (1, 7)
    with pytest.raises(MetricError):
        ms_ssim_setup(2, 64)
    rng = np.random.default_rng(4)
    x = torch.rand(1, 3, 168, 170, generator=torch.Generator().manual_seed(4))
    y = (x + 0.05 * torch.from_numpy(rng.normal(size=x.shape)).float()).clamp(0, 1)
    ours = _reduced_ms_ssim(x, y, 5, 11)
    theirs = pytorch_msssim.ms_ssim(x, y, data_range=1.0, size_average=False)
    torch.testing.assert_close(ours, theirs)
    assert ms_ssim_rgb(np.zeros((1, 3, 8, 8)), np.ones((1, 3, 8, 8)))[0] >= 0.0


def _curve():
    return np.array([0.02, 0.05, 0.1, 0.2, 0.4]), np.array([27.0, 30.5, 33.0, 35.5, 38.0])


@pytest.mark.parametrize("method", ["pchip", "akima"])
def test_bd_identities(method):
    r, q = _curve()
    assert bd_rate(r, q, r, q, method=method) == pytest.approx(0.0, abs=1e-9)
    assert bd_rate(r, q, 0.9 * r, q, method=method) == pytest.approx(-10.0, rel=1e-6)
    assert bd_quality(r, q, r, q + 1.0, method=method) == pytest.approx(1.0, rel=1e-6)
    order = [3, 0, 4, 1, 2]  # unsorted input is sorted first
    assert bd_rate(r, q, 0.9 * r[order], q[order], method=method) == pytest.approx(-10.0, rel=1e-6)


def _curved_pair():
    """Two concave RD curves (PSNR quadratic in log-rate), unevenly spaced, crossing: no constant shift."""
    ra = np.array([0.021, 0.048, 0.11, 0.23, 0.47])
    rt = np.array([0.018, 0.035, 0.09, 0.19, 0.52])
    la, lt = np.log10(ra / 0.01), np.log10(rt / 0.01)
    return ra, 24 + 9 * la - 1.1 * la**2, rt, 24.6 + 8.2 * lt - 0.7 * lt**2


@pytest.mark.parametrize("method", ["pchip", "akima"])
def test_bd_on_curved_data_matches_the_bjontegaard_package(method):
    ra, qa, rt, qt = _curved_pair()
    reference_rate = bjontegaard.bd_rate(ra, qa, rt, qt, method=method)
    reference_psnr = bjontegaard.bd_psnr(ra, qa, rt, qt, method=method)
    assert bd_rate(ra, qa, rt, qt, method=method) == pytest.approx(reference_rate, rel=1e-9, abs=1e-9)
    assert bd_quality(ra, qa, rt, qt, method=method) == pytest.approx(reference_psnr, rel=1e-9, abs=1e-9)
    # the data is curved enough that the method matters: the old cubic polynomial fit differs by far
    # more than the tolerance above, so a change of interpolation would be caught
    cubic = bjontegaard.bd_rate(ra, qa, rt, qt, method="cubic")
    assert abs(cubic - reference_rate) > 1e-3


def test_bd_pinned_values():
    # exact values, computed with the bjontegaard package 1.3.0 (an independent implementation)
    ra, qa, rt, qt = _curved_pair()
    assert bd_rate(ra, qa, rt, qt) == pytest.approx(-8.350848307038817, rel=1e-9)
    assert bd_quality(ra, qa, rt, qt) == pytest.approx(0.260290852902664, rel=1e-9)
    # README: x265 against x264 on 120 frames of carphone (bytes, RGB PSNR): -14.8 %
    x264 = [89977, 46948, 26032, 15516, 9934], [38.22, 35.26, 32.35, 29.60, 26.99]
    x265 = [97087, 49408, 25402, 13443, 7839], [39.06, 35.99, 32.84, 30.04, 27.35]
    assert bd_rate(*x264, *x265) == pytest.approx(-14.895849031253594, rel=1e-9)
    assert bd_rate(*x264, *x265, method="akima") == pytest.approx(-14.902313205052808, rel=1e-9)


def test_bd_rate_is_exact_where_log_rate_is_linear_in_quality():
    # log-rate linear in quality on both curves (curved in rate, a different slope each): every
    # piecewise-cubic interpolant is exact, and the mean gap over the overlap [lo, hi] is in closed form
    q = np.array([26.0, 29.0, 31.5, 34.0, 38.0])
    anchor, test = np.exp(-3.0 + 0.15 * q), np.exp(-2.2 + 0.12 * q[:-1])
    lo, hi = 26.0, 34.0
    gap = (-2.2 - -3.0) + (0.12 - 0.15) * (lo + hi) / 2
    for method in ("pchip", "akima"):
        assert bd_rate(anchor, q, test, q[:-1], method=method) == pytest.approx(np.expm1(gap) * 100, rel=1e-9)


def test_bd_refusals():
    r, q = _curve()
    bad = [
        (r[:3], q[:3], r, q),                                  # fewer than 4 points
        (np.r_[0.0, r[1:]], q, r, q),                          # non-positive rate
        (r, np.r_[np.nan, q[1:]], r, q),                       # non-finite quality
        (np.r_[np.inf, r[1:]], q, r, q),                       # non-finite rate
        (r, q, r, q + 20.0),                                   # quality ranges do not overlap
        (r, np.r_[q[:-1], q[-2]], r, q),                       # duplicate quality
    ]
    for args in bad:
        with pytest.raises(MetricError):
            bd_rate(*args)
    with pytest.raises(MetricError):
        bd_quality(r, q, r * 100.0, q)                         # rate ranges do not overlap
    with pytest.raises(MetricError):
        bd_rate(r, q, r, q, method="cubic")


def test_measure_self_and_mismatch():
    rng = np.random.default_rng(5)
    planes = (rng.integers(16, 236, (3, 32, 48), dtype=np.uint8),
              rng.integers(16, 240, (3, 16, 24), dtype=np.uint8),
              rng.integers(16, 240, (3, 16, 24), dtype=np.uint8))
    video = Video(identity="test:yuv", fps=25.0, planes=planes)
    report = measure(video, video, chunk=2)
    assert report.frames == 3
    for values in (report.psnr_rgb, report.psnr_yuv, report.psnr_y, report.psnr_u, report.psnr_v):
        assert np.all(values == PSNR_CAP_DB)
    assert abs(report.mean_ms_ssim - 1.0) < 1e-6
    assert report.summary()["psnr_yuv"] == PSNR_CAP_DB

    rgb = Video(identity="test:rgb", fps=25.0, rgb_frames=video.rgb())  # RGB path, same content
    noisy = Video(identity="test:noisy", fps=25.0,
                  rgb_frames=np.clip(video.rgb() + rng.normal(0, 0.05, video.rgb().shape), 0, 1))
    report = measure(rgb, noisy, chunk=2)
    assert 20.0 < report.mean_psnr_rgb < 35.0 and 0.0 < report.mean_ms_ssim < 1.0
    assert np.isfinite(report.mean_psnr_yuv) and report.mean_psnr_yuv < PSNR_CAP_DB

    ten = Video(identity="test:10bit", fps=25.0, planes=tuple(p.astype(np.uint16) << 2 for p in planes),
                bit_depth=10)
    assert np.all(measure(video, ten).psnr_yuv == PSNR_CAP_DB)  # converted to the reference's depth

    with pytest.raises(MetricError):
        measure(video, video.slice(0, 2))
    other = Video(identity="test:other", fps=25.0, rgb_frames=np.zeros((3, 3, 32, 32), np.float32))
    with pytest.raises(MetricError):
        measure(video, other)


def test_bpp():
    assert bpp(1000, 10, 40, 20) == pytest.approx(8000 / 8000)
    with pytest.raises(MetricError):
        bpp(10, 0, 4, 4)
