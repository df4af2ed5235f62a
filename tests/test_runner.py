"""The runner: grid expansion, stable job keys, recorded runs, failures that do not stop a run, resume."""

import shutil
from dataclasses import dataclass

import numpy as np
import pytest
from typer.testing import CliRunner

from weightstep import registry
from weightstep.cli import app
from weightstep.codecs import harness
from weightstep.codecs.base import Codec
from weightstep.config import param
from weightstep.errors import InputError
from weightstep.experiments import executors, expand, job_key, parse_protocol, run_protocol
from weightstep.experiments.jobs import read_options
from weightstep.experiments.store import Store
from weightstep.video import open_video


@dataclass(frozen=True)
class FakeConfig:
    level: int = param(1, "a parameter", low=0, high=9)
    seed: int = param(0, "seeded, so protocol seeds multiply its jobs", low=0)


class FailingCodec(Codec):
    name = "failing"
    Config = FakeConfig
    summary = "always raises (tests)"

    def encode(self, video):
        raise RuntimeError("boom: this codec always fails")

    def decode(self, data):  # pragma: no cover - never reached
        raise AssertionError


class AbsentCodec(FailingCodec):
    name = "absent"

    def availability(self):
        return "no checkpoint at /nowhere/model.pth"


@pytest.fixture
def fakes(monkeypatch):
    monkeypatch.setitem(registry._CODECS, "failing", f"{__name__}:FailingCodec")
    monkeypatch.setitem(registry._CODECS, "absent", f"{__name__}:AbsentCodec")


def make_protocol(techniques: str, *, videos='["synthetic:testsrc2"]', frames="3", seeds="[0]", name="t",
                  anchor="H.264", extra=""):
    text = f"""
name = "{name}"
seeds = {seeds}
anchor = "{anchor}"
{extra}
[[datasets]]
name = "synth"
videos = {videos}
frames = {frames}
width = 64
height = 48
""" + techniques
    return parse_protocol(text, "test.toml")


X264 = """
[[techniques]]
label = "H.264"
codec = "x264"
params = { preset = "ultrafast" }
rate_points = [{ crf = 20 }, { crf = 27 }, { crf = 34 }, { crf = 41 }]
"""
X265 = X264.replace('"H.264"', '"H.265"').replace('"x264"', '"x265"')
FAILING = """
[[techniques]]
label = "Failing"
codec = "failing"
rate_points = [{ level = 1 }, { level = 2 }]
"""
OTHERS = """
[[techniques]]
label = "Fixed seed"
codec = "failing"
params = { seed = 7 }
rate_points = [{ level = 3 }]

[[techniques]]
label = "Absent"
codec = "absent"

[[techniques]]
label = "DVC"
codec = "dvc"
rate_points = [{ lmbda = 256 }, { lmbda = 512 }]

[[techniques]]
label = "Typo"
codec = "x264"
rate_points = [{ crff = 20 }]
"""


def test_grid_expansion(fakes):
    protocol = make_protocol(X264 + FAILING + OTHERS, videos='["synthetic:testsrc2", "synthetic:mandelbrot"]',
                             frames="[3, 4]", seeds="[0, 1]")
    plan = expand(protocol)
    assert [v.label for v in plan.videos] == ["testsrc2@3f", "testsrc2@4f", "mandelbrot@3f", "mandelbrot@4f"]
    per_clip = {"H.264": 4, "Failing": 2 * 2, "Fixed seed": 1, "Absent": 2, "DVC": 2, "Typo": 1}
    assert len(plan.jobs) == 4 * sum(per_clip.values())
    for technique, count in per_clip.items():
        assert sum(j.technique == technique for j in plan.jobs) == 4 * count, technique
    by = {}
    for job in plan.jobs:
        by.setdefault(job.technique, job)  # each technique's first job
    assert by["H.264"].seed is None and by["H.264"].config["crf"] == 20.0 and by["H.264"].status == "todo"
    assert {j.seed for j in plan.jobs if j.technique == "Failing"} == {0, 1}
    assert {j.seed for j in plan.jobs if j.technique == "Fixed seed"} == {7}
    assert by["Absent"].status == "skipped" and "no checkpoint at /nowhere/model.pth" in by["Absent"].reason
    assert by["DVC"].status == "skipped" and "no checkpoint" in by["DVC"].reason  # registered, but needs weights
    assert "weightstep train dvc" in by["DVC"].reason
    assert by["Typo"].status == "failed" and "unknown parameter 'crff'" in by["Typo"].reason
    assert len({j.key for j in plan.jobs}) == len(plan.jobs)
    assert by["H.264"].video == "synthetic:testsrc2?frames=3&synthetic_width=64&synthetic_height=48"


def test_job_keys_are_stable_and_change_with_any_input():
    pinned = job_key("x264", {"crf": 23.0, "preset": "medium"}, {"encoder": "libx264"}, "synthetic:testsrc2", None)
    assert pinned == job_key("x264", {"preset": "medium", "crf": 23.0}, {"encoder": "libx264"}, "synthetic:testsrc2",
                             None)  # key order does not matter
    changed = [job_key("x264", {"crf": 24.0, "preset": "medium"}, {"encoder": "libx264"}, "synthetic:testsrc2", None),
               job_key("x264", {"crf": 23.0, "preset": "slow"}, {"encoder": "libx264"}, "synthetic:testsrc2", None),
               job_key("x265", {"crf": 23.0, "preset": "medium"}, {"encoder": "libx264"}, "synthetic:testsrc2", None),
               job_key("x264", {"crf": 23.0, "preset": "medium"}, {"encoder": "other"}, "synthetic:testsrc2", None),
               job_key("x264", {"crf": 23.0, "preset": "medium"}, {"encoder": "libx264"}, "synthetic:mandelbrot", None),
               job_key("x264", {"crf": 23.0, "preset": "medium"}, {"encoder": "libx264"}, "synthetic:testsrc2", 1)]
    assert len({pinned, *changed}) == 7

    first = {j.key for j in expand(make_protocol(X264)).jobs}
    assert first == {j.key for j in expand(make_protocol(X264)).jobs}  # the same protocol, the same keys
    renamed = make_protocol(X264.replace('"H.264"', '"AVC"'), anchor="AVC")
    assert first == {j.key for j in expand(renamed).jobs}  # labels are not part of a key
    slower = make_protocol(X264.replace("ultrafast", "veryfast"))
    assert not first & {j.key for j in expand(slower).jobs}  # a fixed parameter changes every key
    longer = make_protocol(X264, frames="4")
    assert not first & {j.key for j in expand(longer).jobs}  # so does the input
    one_more = make_protocol(X264.replace("{ crf = 41 }", "{ crf = 41 }, { crf = 45 }"))
    assert first < {j.key for j in expand(one_more).jobs}  # new rate point: one new key, the rest kept


def test_key_pinned_value():
    """The canonical JSON and hash must not drift between versions, or every resume would start over."""
    key = job_key("x264", {"crf": 23.0, "preset": "medium"}, {"encoder": "libx264"}, "synthetic:testsrc2", None)
    import hashlib
    import json

    text = json.dumps({"key_version": 1, "codec": "x264", "config": {"crf": 23.0, "preset": "medium"},
                       "config_built": True, "codec_info": {"encoder": "libx264"}, "video": "synthetic:testsrc2",
                       "seed": None}, sort_keys=True, separators=(",", ":"))
    assert key == hashlib.sha256(text.encode()).hexdigest()


def test_run_records_everything_and_failing_jobs_do_not_stop_it(fakes, tmp_path):
    protocol = make_protocol(FAILING + X264 + OTHERS)  # the failures come first
    summary = run_protocol(protocol, tmp_path / "run", report=False)
    assert summary.status == "finished"
    assert (summary.done, summary.failed, summary.skipped) == (4, 2 + 1 + 1, 1 + 2)
    with Store.open(tmp_path / "run") as store:
        rows = {(r["technique"], r["rate_index"]): r for r in store.rows()}
        run = store.latest_run()
    failing = rows[("Failing", 0)]
    assert failing["status"] == "failed" and "RuntimeError: boom" in failing["error"] and "Traceback" in failing["traceback"]
    assert rows[("Absent", 0)]["status"] == "skipped" and "no checkpoint" in rows[("Absent", 0)]["error"]
    assert rows[("DVC", 1)]["status"] == "skipped" and "no checkpoint" in rows[("DVC", 1)]["error"]
    assert rows[("Typo", 0)]["status"] == "failed" and "ConfigError" in rows[("Typo", 0)]["error"]
    assert run["status"] == "finished" and run["git_commit"] and run["versions"]["torch"]
    assert run["device"]["cpu_count"] >= 1 and run["seeds"] == [0] and run["protocol_text"] == protocol.text
    assert run["executor"] == "local" and len(run["keys"]) == len(rows)
    assert (tmp_path / "run" / "protocol.toml").read_text() == protocol.text

    done = [r for r in rows.values() if r["status"] == "done"]
    assert len(done) == 4
    video = open_video(done[0]["spec"], read_options(done[0]["options"]))
    for row in done:
        path = tmp_path / "run" / row["bitstream"]
        assert path.is_file() and path.suffix == ".mkv"
        result = row["result"]
        assert result["codec"] == "x264" and result["frames"] == 3 and result["file_bytes"] == path.stat().st_size
        again = harness.evaluate(path.read_bytes(), video)  # the stored file decodes to what was measured
        assert again.bytes == result["bytes"] and np.isclose(again.psnr_rgb, result["psnr_rgb"])
        assert row["bpp"] == result["bpp"]


def test_resume_after_a_simulated_kill(monkeypatch, tmp_path):
    protocol = make_protocol(X264 + X265)
    real = executors.execute_job
    calls, kills = [], []

    def killed_on_the_third(job, threads=None):
        calls.append(job["key"])
        if len(calls) == 3 and not kills:
            kills.append(job["key"])
            raise KeyboardInterrupt  # as Ctrl-C (or a kill) would, in the middle of the third job
        return real(job, threads)

    monkeypatch.setattr(executors, "execute_job", killed_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        run_protocol(protocol, tmp_path / "run", report=False)
    with Store.open(tmp_path / "run") as store:
        assert sorted(store.statuses().values()) == ["done", "done"]
        assert store.latest_run()["status"] == "interrupted"
        first_done = set(store.statuses())

    with pytest.raises(InputError, match="--resume"):
        run_protocol(protocol, tmp_path / "run", report=False)

    calls.clear()
    summary = run_protocol(protocol, tmp_path / "run", resume=True, report=False)
    assert (summary.reused, summary.done, summary.failed) == (2, 6, 0)
    assert len(calls) == 6 and not first_done & set(calls)  # finished jobs were not run again
    with Store.open(tmp_path / "run") as store:
        assert list(store.statuses().values()).count("done") == 8
        assert [r["status"] for r in store.runs()] == ["interrupted", "finished"]


def test_parallel_jobs_in_worker_processes(tmp_path):
    summary = run_protocol(make_protocol(X264), tmp_path / "run", jobs=2, report=False)
    assert (summary.done, summary.failed) == (4, 0)
    with Store.open(tmp_path / "run") as store:
        run = store.latest_run()
        rows = store.rows()
    assert run["workers"] == 2 and run["threads_per_job"] >= 1
    assert all((tmp_path / "run" / r["bitstream"]).is_file() for r in rows)


def test_sequences_under_a_data_root_have_portable_identities(tmp_path):
    root = tmp_path / "data" / "DS"
    root.mkdir(parents=True)
    frame = np.arange(64 * 48 + 2 * 32 * 24, dtype=np.uint8)
    (root / "clip_64x48_25fps.yuv").write_bytes(np.tile(frame, 3).tobytes())
    text = """
[[datasets]]
name = "ds"
root = "DS"
sequences = ["*.yuv", "missing_64x48.yuv"]
frames = 2
""" + X264
    plan = expand(parse_protocol(text, "t.toml", data_root=tmp_path / "data"))
    clip, missing = plan.videos
    assert clip.label == "clip" and clip.identity == "data:DS/clip_64x48_25fps.yuv?frames=2" and clip.status == "todo"
    assert missing.status == "failed" and "no such file" in missing.reason
    shutil.copytree(tmp_path / "data", tmp_path / "moved")
    moved = expand(parse_protocol(text, "t.toml", data_root=tmp_path / "moved"))
    assert [j.key for j in moved.jobs] == [j.key for j in plan.jobs]

    with pytest.raises(InputError, match="no clips to run"):
        run_protocol(parse_protocol(text, "t.toml"), tmp_path / "run", report=False)


def test_cli_run_resume_and_report(tmp_path):
    proto = tmp_path / "p.toml"
    proto.write_text(make_protocol(X264).text)
    runner = CliRunner()
    out = tmp_path / "run"
    first = runner.invoke(app, ["run", str(proto), "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert "4 done now" in first.stdout and (out / "report" / "summary.md").is_file()
    again = runner.invoke(app, ["run", str(proto), "--out", str(out)])
    assert again.exit_code == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    resumed = runner.invoke(app, ["run", str(proto), "--out", str(out), "--resume", "--no-report"])
    assert resumed.exit_code == 0, resumed.output
    assert "0 done now, 4 done before" in resumed.stdout
    dry = runner.invoke(app, ["run", str(proto), "--out", str(out), "--dry-run"])
    assert dry.exit_code == 0 and "4 jobs" in dry.stdout


def test_weightstep_keys_leave_out_fields_the_config_never_reads():
    """A default changed for another step kind or network must not make a run start over."""
    from weightstep.experiments.jobs import prepare

    def key(**params):
        prep = prepare("weightstep", params)
        assert prep.status == "todo", prep.reason
        return job_key("weightstep", prep.key_config, prep.codec_info, "synthetic:testsrc2", 0)

    l0 = dict(inr="siren", update="l0", width=16)
    assert key(**l0) == key(**l0, warp_grid=12) == key(**l0, latent_lr=0.2) == key(**l0, dip_channels=5)
    assert len({key(**l0), key(**l0, gate_lr=0.2), key(**{**l0, "width": 17})}) == 3  # what it reads still counts
    warp = dict(inr="grid", update="warp+lowrank")
    assert key(**warp) != key(**warp, warp_grid=12)
    assert key(**warp) == key(**warp, width=17, gate_lr=0.2)
    assert prepare("weightstep", l0).config["warp_grid"] == 8  # the stored config stays complete
    # a knob at the value that reproduces the codec from before it existed (an anchor lambda scale of 1, the
    # default) leaves the key as it was; another value enters it
    assert "anchor_lambda_scale" not in prepare("weightstep", l0).key_config
    assert key(**l0) == key(**l0, anchor_lambda_scale=1.0) != key(**l0, anchor_lambda_scale=0.5)
    assert key(**warp) == key(**warp, anchor_lambda_scale=1.0) != key(**warp, anchor_lambda_scale=0.5)
    assert "anchor_lambda_scale" in prepare("weightstep", {**warp, "anchor_lambda_scale": 0.5}).key_config
    assert "anchor_lambda_scale" not in prepare("weightstep", {**warp, "anchor_lambda_scale": 1.0}).key_config
    assert key(**warp) == key(**warp, anchor_starts=1) != key(**warp, anchor_starts=3)
    # the anchor's gradient clip: an unclipped fit is the codec from before the field (a SIREN at its default, a
    # grid told 0); a grid at its default is clipped, so its key is new
    assert key(**l0) == key(**l0, anchor_grad_clip=0) != key(**l0, anchor_grad_clip=0.02)
    assert "anchor_grad_clip" in prepare("weightstep", warp).key_config
    assert key(**warp) != key(**warp, anchor_grad_clip=0) and "anchor_grad_clip" not in prepare(
        "weightstep", {**warp, "anchor_grad_clip": 0}).key_config
    # the steps' quality floor: off is the codec from before the field; on is a new codec
    assert "step_guard" not in prepare("weightstep", warp).key_config and key(**warp) != key(**warp, step_guard=1.0)
    assert "anchor_beta2" not in prepare("weightstep", warp).key_config  # none is Adam's 0.999: the codec as it was
    assert key(**warp) == key(**warp, anchor_beta2=0.999) != key(**warp, anchor_beta2=0.98)


def test_redo_measures_a_technique_again_and_an_interrupted_redo_continues(monkeypatch, tmp_path):
    """--redo: a technique's finished jobs run again (a key holds settings, not code); the rest are kept."""
    from weightstep.errors import ConfigError
    from weightstep.experiments import runner as runner_module

    protocol = make_protocol(X264 + X265)
    run_dir = tmp_path / "run"
    monkeypatch.setattr(runner_module, "git_info", lambda path=None, ignore=None: ("a" * 40, False))
    run_protocol(protocol, run_dir, report=False)
    with Store.open(run_dir) as store:
        before = {r["key"]: (r["technique"], r["run_id"]) for r in store.rows()}
    with pytest.raises(ConfigError, match="no such technique.*'H.264', 'H.265'"):
        run_protocol(protocol, run_dir, resume=True, redo=("H.266",), report=False)
    with pytest.raises(ConfigError, match="add --resume"):
        run_protocol(protocol, tmp_path / "other", redo=("H.265",), report=False)

    # measured at the current commit from a clean tree: nothing to redo
    summary = run_protocol(protocol, run_dir, resume=True, redo=("H.265",), report=False)
    assert (summary.reused, summary.done) == (8, 0)

    # a later commit: the H.265 jobs run again, one of them is interrupted
    monkeypatch.setattr(runner_module, "git_info", lambda path=None, ignore=None: ("b" * 40, False))
    real = executors.execute_job
    calls = []

    def interrupted_on_the_third(job, threads=None):
        calls.append(job["technique"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(job, threads)

    monkeypatch.setattr(executors, "execute_job", interrupted_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        run_protocol(protocol, run_dir, resume=True, redo=("H.265",), report=False)
    assert calls == ["H.265"] * 3
    calls.clear()
    summary = run_protocol(protocol, run_dir, resume=True, redo=("H.265",), report=False)
    assert calls == ["H.265"] * 2 and (summary.reused, summary.done) == (6, 2)  # the two redone ones are kept
    with Store.open(run_dir) as store:
        after = {r["key"]: (r["technique"], r["run_id"]) for r in store.rows()}
        commits = {r["id"]: r["git_commit"] for r in store.runs()}
    assert after.keys() == before.keys()
    for technique, run_id in after.values():
        assert (commits[run_id] == "b" * 40) == (technique == "H.265"), (technique, run_id)

    from weightstep.experiments import build_report

    summary = (build_report(run_dir, tmp_path / "report").out_dir / "summary.md").read_text()
    assert "| H.264 | aaaaaaaaaaaa (4) |" in summary and "| H.265 | bbbbbbbbbbbb (4) |" in summary


def test_cli_redo_needs_resume_and_names_a_technique(tmp_path):
    proto = tmp_path / "p.toml"
    proto.write_text(make_protocol(X264).text)
    runner = CliRunner()
    out = tmp_path / "run"
    fresh = runner.invoke(app, ["run", str(proto), "--out", str(out), "--redo", "H.264"])
    assert fresh.exit_code == 2 and "add --resume" in fresh.stderr and "Traceback" not in fresh.stderr
    assert not out.exists()
    wrong = runner.invoke(app, ["run", str(proto), "--out", str(out), "--dry-run", "--redo", "H.266"])
    assert wrong.exit_code == 2 and "'H.266'" in wrong.stderr and "'H.264'" in wrong.stderr


def test_dry_run_counts_the_jobs_a_redo_runs_again(monkeypatch, tmp_path):
    from weightstep.experiments import runner as runner_module
    from weightstep.experiments.runner import dry_run_lines

    protocol = make_protocol(X264 + X265)
    monkeypatch.setattr(runner_module, "git_info", lambda path=None, ignore=None: ("a" * 40, False))
    run_protocol(protocol, tmp_path / "run", report=False)
    assert "0 to run, 8 already done" in dry_run_lines(protocol, tmp_path / "run", redo=("H.264",))[0]
    monkeypatch.setattr(runner_module, "git_info", lambda path=None, ignore=None: ("a" * 40, True))  # uncommitted changes
    assert "4 to run, 4 already done" in dry_run_lines(protocol, tmp_path / "run", redo=("H.264",))[0]
    assert "0 to run, 8 already done" in dry_run_lines(protocol, tmp_path / "run")[0]


def test_a_runs_own_directory_does_not_make_the_tree_dirty(tmp_path):
    # a run directory committed with its results is changed by the run itself; only other changes count
    import subprocess

    from weightstep.experiments.runner import git_info

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.sqlite").write_bytes(b"before")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    commit, dirty = git_info(tmp_path, ignore=tmp_path / "run")
    assert len(commit) == 40 and dirty is False
    (tmp_path / "run" / "results.sqlite").write_bytes(b"after")
    assert git_info(tmp_path, ignore=tmp_path / "run")[1] is False
    assert git_info(tmp_path)[1] is True  # without ignore the run's change counts
    assert git_info(tmp_path, ignore=tmp_path.parent / "elsewhere")[1] is True  # outside the tree: nothing ignored
    assert git_info(tmp_path, ignore=tmp_path)[1] is True  # the whole tree is never ignored
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_info(tmp_path, ignore=tmp_path / "run")[1] is True


def test_a_run_records_its_command_so_that_a_shell_reads_it_back(monkeypatch, tmp_path):
    # technique labels hold spaces and '+': the recorded command must split back into the same arguments
    import shlex
    import sys

    argv = ["weightstep", "run", "p.toml", "--resume", "--redo", "Grid + warp+lowrank steps"]
    monkeypatch.setattr(sys, "argv", argv)
    run_protocol(make_protocol(X264), tmp_path / "run", report=False)
    with Store.open(tmp_path / "run") as store:
        assert shlex.split(store.runs()[-1]["command"]) == argv
