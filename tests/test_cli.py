"""The command-line contract: --json prints one Result; bad input is one line on stderr and exit 2."""

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from typer.testing import CliRunner

from weightstep.cli import app

SCHEMA = json.loads((Path(__file__).parent / "data" / "result.schema.json").read_text())
SYNTH = "synthetic:testsrc2"
SMALL = ["--frames", "3"]


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def small_env(monkeypatch):
    """Synthetic sources default to 176x144; keep them tiny in tests via the crop/downscale options."""
    return ["--downscale", "2"]


def invoke(runner, *args):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_failure(result, needle):
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert needle.lower() in lines[0].lower(), lines[0]


def test_encode_json_is_one_valid_result(runner, tmp_path, small_env):
    out = tmp_path / "c.mkv"
    result = invoke(runner, "encode", SYNTH, "--codec", "x264", "-p", "crf=30", "-o", out, *SMALL, *small_env, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    jsonschema.validate(record, SCHEMA)
    assert record["codec"] == "x264" and record["frames"] == 3 and record["config"]["crf"] == 30
    assert record["file_bytes"] == out.stat().st_size
    assert len(record["per_frame"]) == 3


def test_decode_then_eval_agree_with_encode(runner, tmp_path, small_env):
    out = tmp_path / "c.mkv"
    enc = invoke(runner, "encode", SYNTH, "-c", "x265", "-o", out, *SMALL, *small_env, "--json")
    assert enc.exit_code == 0, enc.output
    y4m = tmp_path / "d.y4m"
    dec = invoke(runner, "decode", out, "-o", y4m)
    assert dec.exit_code == 0, dec.output
    assert y4m.exists()
    ev = invoke(runner, "eval", out, SYNTH, *SMALL, *small_env, "--json")
    assert ev.exit_code == 0, ev.output
    a, b = json.loads(enc.stdout), json.loads(ev.stdout)
    jsonschema.validate(b, SCHEMA)
    assert a["bytes"] == b["bytes"] and a["psnr_rgb"] == pytest.approx(b["psnr_rgb"])
    assert b["config"] == a["config"]


def test_info_and_codecs_json(runner, small_env):
    info = invoke(runner, "info", SYNTH, *SMALL, *small_env, "--json")
    assert info.exit_code == 0, info.output
    facts = json.loads(info.stdout)
    assert facts["width"] == 88 and facts["height"] == 72
    listing = invoke(runner, "codecs", "--json")
    names = {entry["name"] for entry in json.loads(listing.stdout)}
    assert {"x264", "x265", "svtav1", "vp9"} <= names


def test_unknown_codec(runner, tmp_path):
    out = tmp_path / "x.mkv"
    assert_clean_failure(invoke(runner, "encode", SYNTH, "-c", "h266", "-o", out), "unknown codec")
    assert not out.exists()


def test_unknown_parameter_names_the_valid_ones(runner, tmp_path):
    out = tmp_path / "x.mkv"
    assert_clean_failure(invoke(runner, "encode", SYNTH, "-c", "x264", "-p", "crff=3", "-o", out), "valid: crf")
    assert not out.exists()


def test_crf_out_of_range(runner, tmp_path):
    out = tmp_path / "x.mkv"
    assert_clean_failure(invoke(runner, "encode", SYNTH, "-c", "x264", "-p", "crf=99", "-o", out), "out of range")
    assert not out.exists()


def test_missing_file(runner, tmp_path):
    out = tmp_path / "x.mkv"
    assert_clean_failure(invoke(runner, "encode", tmp_path / "nope.mp4", "-c", "x264", "-o", out), "nope.mp4")
    assert not out.exists()
    assert_clean_failure(invoke(runner, "decode", tmp_path / "nope.wsv", "-o", tmp_path / "o.y4m"), "no such file")


def test_yuv_not_whole_frames(runner, tmp_path):
    bad = tmp_path / "clip_32x32_30fps_420_8bit_YUV.yuv"
    bad.write_bytes(bytes(32 * 32 * 3 // 2 * 2 + 7))
    out = tmp_path / "x.mkv"
    assert_clean_failure(invoke(runner, "encode", bad, "-c", "x264", "-o", out), "is not a whole number of 32x32")
    assert not out.exists()


def test_odd_size_for_420(runner, tmp_path):
    bad = tmp_path / "clip.yuv"
    bad.write_bytes(bytes(2 * (33 * 32 + 2 * 17 * 16)))  # two whole frames, odd width
    assert_clean_failure(invoke(runner, "info", bad, "--width", "33", "--height", "32"), "even")


def test_zero_frames(runner, tmp_path):
    assert_clean_failure(invoke(runner, "info", SYNTH, "--frames", "0"), "frames")


def test_foreign_and_truncated_files_to_decode(runner, tmp_path, small_env):
    foreign = tmp_path / "foreign.bin"
    foreign.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    target = tmp_path / "o.y4m"
    assert_clean_failure(invoke(runner, "decode", foreign, "-o", target), "not")
    assert not target.exists()
    good = tmp_path / "c.mkv"
    assert invoke(runner, "encode", SYNTH, "-c", "x264", "-o", good, "--frames", "6", *small_env).exit_code == 0
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert_clean_failure(invoke(runner, "decode", cut, "-o", target), "truncated")
    assert not target.exists()
