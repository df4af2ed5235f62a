"""Protocol files: good files parse as written; every kind of bad file is one ConfigError naming key and file."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from weightstep.cli import app
from weightstep.errors import ConfigError, InputError
from weightstep.experiments import check_parameters, load_protocol, parse_protocol

PROTOCOLS = Path(__file__).resolve().parents[1] / "protocols"

GOOD = """
name = "good"
description = "a test protocol"
seeds = [0, 1]
metrics = ["psnr_rgb", "ms_ssim"]
anchor = "H.264"
also_against = ["MLP width=16 gop=2"]
bd_interpolation = "akima"

[resources]
cpus_per_job = 2
gpus_per_job = 0.5

[[datasets]]
name = "synth"
videos = ["synthetic:testsrc2", "clip.y4m"]
frames = [3, 5]
start = 0
width = 64
height = 48

[[datasets]]
name = "uvg"
root = "UVG"
sequences = ["Beauty_1920x1080_120fps_420_8bit_YUV.yuv", "*.yuv"]
frames = 8
downscale = 4

[[techniques]]
label = "H.264"
codec = "x264"
params = { preset = "ultrafast" }
rate_points = [{ crf = 20 }, { crf = 30 }]

[[techniques]]
label = "MLP"
codec = "weightstep"
params = { inr = "siren" }
vary = { width = [16, 32], gop = [2, 4] }
rate_points = [{ lambda = 1e-6 }]

[profiles.cpu]
"*" = { frames = [2] }
uvg = { downscale = 8, crop = "1920x1024+0+0" }
"""


def parse(text: str, **kwargs):
    return parse_protocol(text, "test.toml", **kwargs)


def test_good_file_parses_as_written():
    p = parse(GOOD)
    assert p.name == "good" and p.seeds == (0, 1) and p.metrics == ("psnr_rgb", "ms_ssim")
    assert p.anchor == "H.264" and p.bd_interpolation == "akima" and p.also_against == ("MLP width=16 gop=2",)
    assert p.resources.cpus_per_job == 2.0 and p.resources.gpus_per_job == 0.5
    synth, uvg = p.datasets
    assert synth.videos == ("synthetic:testsrc2", "clip.y4m") and synth.frames == (3, 5) and synth.start == (0,)
    assert (synth.width, synth.height) == (64, 48)
    assert uvg.root == "UVG" and uvg.frames == (8,) and uvg.downscale == 4 and len(uvg.sequences) == 2
    labels = [t.label for t in p.techniques]
    assert labels == ["H.264", "MLP width=16 gop=2", "MLP width=16 gop=4", "MLP width=32 gop=2", "MLP width=32 gop=4"]
    assert p.technique("MLP width=32 gop=4").params == {"inr": "siren", "width": 32, "gop": 4}
    assert p.technique("H.264").rate_points == ({"crf": 20}, {"crf": 30})


def test_defaults_and_data_root_precedence(monkeypatch, tmp_path):
    text = """
[[datasets]]
name = "d"
videos = ["sample:carphone"]
[[techniques]]
label = "a"
codec = "x264"
"""
    monkeypatch.setenv("WEIGHTSTEP_DATA", str(tmp_path / "env"))
    p = parse(text)
    assert p.name == "test" and p.seeds == (0,) and p.anchor == "a" and p.bd_interpolation == "pchip"
    assert p.metrics == ("psnr_rgb", "psnr_yuv", "ms_ssim") and p.technique("a").rate_points == ({},)
    assert p.datasets[0].frames == (None,)
    assert p.data_root == str(tmp_path / "env")
    assert parse('data_root = "/from/file"\n' + text).data_root == "/from/file"
    assert parse('data_root = "/from/file"\n' + text, data_root="/cli").data_root == "/cli"


def test_profile_overrides_read_options():
    p = parse(GOOD, profile="cpu")
    assert p.profile == "cpu"
    synth, uvg = p.datasets
    assert synth.frames == (2,) and synth.width == 64
    assert uvg.frames == (2,) and uvg.downscale == 8 and uvg.crop == "1920x1024+0+0"
    with pytest.raises(ConfigError, match="no profile 'gpu'"):
        parse(GOOD, profile="gpu")


@pytest.mark.parametrize("name", ["quick", "core", "capacity", "ablation-inr"])
def test_committed_protocols_parse_and_fit_the_registered_codecs(name):
    protocol = load_protocol(PROTOCOLS / f"{name}.toml")
    assert protocol.name == name and protocol.techniques and protocol.datasets
    problems = check_parameters(protocol)
    refused = [p for p in problems if p.kind == "failed"]
    assert not refused, refused  # parameters a registered codec refuses: a typo, or a renamed field
    for problem in problems:  # anything else: a codec that is not registered here (yet)
        assert "not registered" in problem.message or "cannot be loaded" in problem.message


def test_core_has_the_ten_techniques_of_table_1_plus_nerv():
    protocol = load_protocol(PROTOCOLS / "core.toml")
    codecs = [t.codec for t in protocol.techniques]
    assert sorted(set(codecs)) == ["dvc", "full-cnn", "full-mlp", "nerv", "svtav1", "vcii", "vp9", "weightstep",
                                   "x264", "x265"]
    stepped = [t.params for t in protocol.techniques if t.codec == "weightstep" and t.params.get("inr") != "grid"]
    kinds = sorted((p["inr"] == "dip", p["schedule"]) for p in stepped)
    assert kinds == [(False, "single-stage"), (False, "two-stage"), (True, "single-stage"), (True, "two-stage")]
    assert all(p["update"] in ("l0", "dct", "dense") for p in stepped)  # Table 1: the proposal's updates
    new_kinds = [t for t in protocol.techniques if t.group == "new weight-step kinds"]
    assert {t.params["update"] for t in new_kinds} == {"warp+lowrank", "lowrank"}
    low_delay = [t for t in protocol.techniques if t.params.get("bframes") == 0]
    assert sorted(t.codec for t in low_delay) == ["x264", "x265"]  # the conventional codecs with P-frames only
    assert protocol.also_against == ("H.264 low-delay P",)
    assert len(protocol.techniques) == 13 + len(new_kinds) + len(low_delay)
    for technique in protocol.techniques:  # 4+ rate points each; INR techniques along lambda only
        assert len(technique.rate_points) >= 4, technique.label
        if technique.codec in ("weightstep", "full-mlp", "full-cnn", "nerv"):
            assert all(set(point) == {"lambda"} for point in technique.rate_points), technique.label
    assert len(protocol.seeds) >= 3 and protocol.seed_points
    for profile in protocol.profiles:
        parse_protocol(protocol.text, protocol.path, profile=profile)


# bad files ------------------------------------------------------------------------------------------

MINIMAL_DATASET = '[[datasets]]\nname = "d"\nvideos = ["sample:carphone"]\n'
MINIMAL_TECHNIQUE = '[[techniques]]\nlabel = "a"\ncodec = "x264"\n'


@pytest.mark.parametrize("text, needles", [
    ("colour = 1\n" + MINIMAL_DATASET + MINIMAL_TECHNIQUE, ["unknown key 'colour'", "top level"]),
    ('[[datasets]]\nname = "d"\nvideos = ["sample:carphone"]\nframe = 3\n' + MINIMAL_TECHNIQUE,
     ["unknown key 'frame'", "dataset 'd'"]),
    (MINIMAL_DATASET + '[[techniques]]\nlabel = "a"\ncodec = "x264"\nrate_pionts = [{crf = 1}]\n',
     ["unknown key 'rate_pionts'", "technique 'a'"]),
    (MINIMAL_DATASET + MINIMAL_TECHNIQUE + "[resources]\ngpus = 1\n", ["unknown key 'gpus'", "resources"]),
    (MINIMAL_DATASET + MINIMAL_TECHNIQUE + '[profiles.cpu]\nd = { downscale = 2, size = 3 }\n',
     ["unknown key 'size'", "profile 'cpu'"]),
    (MINIMAL_DATASET + MINIMAL_TECHNIQUE + '[profiles.cpu]\nnope = { downscale = 2 }\n', ["unknown dataset 'nope'"]),
    (MINIMAL_DATASET + MINIMAL_TECHNIQUE + "seeds = [3]\n", ["unknown key 'seeds'", "technique 'a'"]),
    ('seeds = "zero"\n' + MINIMAL_DATASET + MINIMAL_TECHNIQUE, ["seeds must be a list"]),
    ("seeds = [1, 1]\n" + MINIMAL_DATASET + MINIMAL_TECHNIQUE, ["seeds must be distinct"]),
    ('metrics = ["vmaf"]\n' + MINIMAL_DATASET + MINIMAL_TECHNIQUE, ["metric 'vmaf'"]),
    ('anchor = "b"\n' + MINIMAL_DATASET + MINIMAL_TECHNIQUE, ["anchor 'b' is not a technique label"]),
    ('also_against = ["b"]\n' + MINIMAL_DATASET + MINIMAL_TECHNIQUE, ["also_against 'b'"]),
    ('also_against = ["a"]\n' + MINIMAL_DATASET + MINIMAL_TECHNIQUE, ["other than the anchor"]),
    ('bd_interpolation = "cubic"\n' + MINIMAL_DATASET + MINIMAL_TECHNIQUE, ["bd_interpolation"]),
    (MINIMAL_TECHNIQUE, ["at least one [[datasets]]"]),
    (MINIMAL_DATASET, ["at least one [[techniques]]"]),
    (MINIMAL_DATASET + MINIMAL_TECHNIQUE + MINIMAL_TECHNIQUE, ["labels must be unique", "'a'"]),
    (MINIMAL_DATASET + MINIMAL_DATASET + MINIMAL_TECHNIQUE, ["dataset names must be unique"]),
    (MINIMAL_DATASET + '[[techniques]]\nlabel = "a"\n', ["'codec' is required"]),
    ('[[datasets]]\nvideos = ["sample:carphone"]\n' + MINIMAL_TECHNIQUE, ["'name' is required"]),
    ('[[datasets]]\nname = "d"\n' + MINIMAL_TECHNIQUE, ["give videos"]),
    ('[[datasets]]\nname = "d"\nsequences = ["a.yuv"]\n' + MINIMAL_TECHNIQUE, ["sequences need a root"]),
    ('[[datasets]]\nname = "d"\nvideos = ["sample:carphone"]\nframes = 0\n' + MINIMAL_TECHNIQUE,
     ["frames must be 1 or more"]),
    ('[[datasets]]\nname = "d"\nvideos = ["sample:carphone"]\ndownscale = "2"\n' + MINIMAL_TECHNIQUE,
     ["downscale = '2' must be an integer"]),
    ('[[datasets]]\nname = "d"\nvideos = ["sample:carphone"]\ncrop = "10x10+1+1"\n' + MINIMAL_TECHNIQUE,
     ["crop", "even"]),
    ('[[datasets]]\nname = "d"\nvideos = ["sample:carphone"]\nmatrix = "bt2020"\n' + MINIMAL_TECHNIQUE,
     ["matrix"]),
    (MINIMAL_DATASET + '[[techniques]]\nlabel = "a"\ncodec = "x264"\nrate_points = []\n', ["rate_points"]),
    (MINIMAL_DATASET + '[[techniques]]\nlabel = "a"\ncodec = "x264"\nrate_points = [1, 2]\n',
     ["rate_points[0] must be a table"]),
    (MINIMAL_DATASET + '[[techniques]]\nlabel = "a"\ncodec = "x264"\nparams = {crf = 1}\n'
     'rate_points = [{crf = 2}]\n', ["already fixed in params"]),
    (MINIMAL_DATASET + '[[techniques]]\nlabel = "a"\ncodec = "x264"\nrate_points = [{crf = 2}, {crf = 2}]\n',
     ["repeated"]),
    (MINIMAL_DATASET + '[[techniques]]\nlabel = "a"\ncodec = "x264"\nparams = {crf = [1]}\n',
     ["parameter 'crf' must be a string, number or boolean"]),
    (MINIMAL_DATASET + '[[techniques]]\nlabel = "a"\ncodec = "x264"\nvary = {crf = 3}\n',
     ["vary.crf must be a non-empty list"]),
    ("name = [\n", ["not valid TOML"]),
])
def test_bad_files_are_refused_naming_the_key_and_the_file(text, needles):
    with pytest.raises(ConfigError) as info:
        parse(text)
    message = str(info.value)
    assert message.startswith("test.toml: "), message
    for needle in needles:
        assert needle in message, message


def test_missing_or_unreadable_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such protocol file"):
        load_protocol(tmp_path / "nope.toml")
    with pytest.raises(InputError, match="is a directory"):
        load_protocol(tmp_path)


def test_parameters_are_checked_against_registered_codecs():
    text = MINIMAL_DATASET + """
[[techniques]]
label = "bad"
codec = "x264"
rate_points = [{ crf = 23 }, { crff = 23 }, { crf = 99 }]

[[techniques]]
label = "later"
codec = "not-yet-a-codec"
"""
    problems = check_parameters(parse(text))
    by_index = {(p.technique, p.rate_index): p for p in problems}
    assert by_index[("bad", 1)].kind == "failed" and "unknown parameter 'crff'" in by_index[("bad", 1)].message
    assert "valid: crf" in by_index[("bad", 1)].message
    assert by_index[("bad", 2)].kind == "failed" and "out of range" in by_index[("bad", 2)].message
    assert ("bad", 0) not in by_index
    assert by_index[("later", None)].kind == "skipped" and "not registered" in by_index[("later", None)].message


def test_cli_run_refuses_a_bad_protocol_with_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL_DATASET + '[[techniques]]\nlabel = "a"\ncodec = "x264"\nrate_pionts = []\n')
    result = CliRunner().invoke(app, ["run", str(bad), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "rate_pionts" in lines[0] and "bad.toml" in lines[0]
    assert not (tmp_path / "run").exists()
