"""The Ray executor on a local Ray instance (127.0.0.1, 2 CPUs): same table as the local executor,
failing jobs recorded, a killed worker retried, resume sends only unfinished jobs.

CI installs the `ray` extra; without Ray these tests are skipped, except the one that checks the
message telling how to install it.
"""

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import fake_codecs
import pytest

from weightstep.errors import UnavailableError
from weightstep.experiments import parse_protocol, run_protocol
from weightstep.experiments.store import Store

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

PROTOCOL = """
name = "ray-small"
seeds = [0]
anchor = "H.264"

[[datasets]]
name = "synth"
videos = ["synthetic:testsrc2"]
frames = 2
width = 32
height = 32

[[techniques]]
label = "H.264"
codec = "x264"
params = { preset = "ultrafast" }
rate_points = [{ crf = 24 }, { crf = 36 }]

[[techniques]]
label = "WS"
codec = "weightstep"
cpus = 1
params = { inr = "siren", width = 8, depth = 2, anchor_steps = 15, step_steps = 5, update = "l0", device = "cpu" }
rate_points = [{ lambda = 1e-6 }]
"""

FAILING = """
[[techniques]]
label = "Failing"
codec = "failing"
rate_points = [{ level = 1 }]
"""


def _protocol(extra: str = "", name: str = "ray-small"):
    return parse_protocol(PROTOCOL.replace("ray-small", name) + extra, "ray.toml")


def _table(run_dir: Path) -> dict[str, tuple]:
    """key -> (technique, status, bytes, psnr_rgb, sha256 of the bitstream) of every job of the run.

    Matroska files carry a random segment UID and a date, so for those the hash is left out: their
    elementary stream's size is in ``bytes`` and its content in the PSNR."""
    with Store.open(run_dir) as store:
        rows = store.rows()
    table = {}
    for row in rows:
        result = row.get("result") or {}
        digest = None
        if row.get("bitstream") and not row["bitstream"].endswith(".mkv"):
            digest = hashlib.sha256((run_dir / row["bitstream"]).read_bytes()).hexdigest()
        table[row["key"]] = (row["technique"], row["status"], result.get("bytes"), result.get("psnr_rgb"), digest)
    return table


def test_without_ray_the_executor_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UnavailableError, match=r"pip install 'weightstep\[ray\]'"):
        run_protocol(_protocol(), tmp_path / "run", executor="ray", report=False)
    assert not (tmp_path / "run").exists()


ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module: 2 CPUs, 127.0.0.1 only, the fake codecs importable in workers."""
    saved = os.environ.get("WEIGHTSTEP_CODECS")
    os.environ["WEIGHTSTEP_CODECS"] = fake_codecs.PLUGINS
    python_path = os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0"  # conftest: loopback only
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False,
             runtime_env={"env_vars": {"WEIGHTSTEP_CODECS": fake_codecs.PLUGINS, "PYTHONPATH": python_path,
                                       "WEIGHTSTEP_PROGRESS": "0", "TTY_COMPATIBLE": "0"}})
    try:
        assert ray.nodes()[0]["NodeManagerAddress"] == "127.0.0.1"
        yield ray
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("WEIGHTSTEP_CODECS", None)
        else:
            os.environ["WEIGHTSTEP_CODECS"] = saved


def test_ray_gives_the_local_executors_table_and_records_a_failing_job(local_ray, tmp_path):
    protocol = _protocol(FAILING)
    local = run_protocol(protocol, tmp_path / "local", executor="local", report=False)
    remote = run_protocol(protocol, tmp_path / "ray", executor="ray", jobs=2, report=False)
    assert (local.done, local.failed) == (remote.done, remote.failed) == (3, 1)
    local_table, ray_table = _table(tmp_path / "local"), _table(tmp_path / "ray")
    assert local_table == ray_table  # same jobs, bytes, PSNR and bitstreams
    with Store.open(tmp_path / "ray") as store:
        rows = {r["technique"]: r for r in store.rows()}
        run = store.latest_run()
    assert rows["Failing"]["status"] == "failed" and "boom" in rows["Failing"]["error"]
    assert run["executor"] == "ray"
    assert all((tmp_path / "ray" / r["bitstream"]).is_file() for r in rows.values() if r["status"] == "done")


def test_a_worker_killed_mid_job_is_retried(local_ray, tmp_path):
    marker = tmp_path / "died-once"
    dying = f"""
[[techniques]]
label = "Dying"
codec = "dying"
rate_points = [{{ crf = 30, marker = "{marker}" }}]
"""
    summary = run_protocol(_protocol(dying), tmp_path / "run", executor="ray", report=False)
    assert marker.exists()  # the first attempt did kill its worker
    assert int(marker.read_text()) != os.getpid()
    assert (summary.done, summary.failed) == (4, 0)
    rows = {r[0]: r for r in _table(tmp_path / "run").values()}
    assert rows["Dying"][1] == "done" and rows["Dying"][2] > 0


def test_a_worker_that_always_dies_is_failed_after_bounded_retries(local_ray, tmp_path):
    text = """
[resources]
retries = 1

[[techniques]]
label = "Always dying"
codec = "dying"
rate_points = [{ crf = 30, marker = "always" }]
"""
    summary = run_protocol(_protocol(text), tmp_path / "run", executor="ray", report=False)
    assert (summary.done, summary.failed) == (3, 1)
    with Store.open(tmp_path / "run") as store:
        row = next(r for r in store.rows() if r["technique"] == "Always dying")
    assert row["status"] == "failed" and "Ray gave up after 2 attempts" in row["error"]


def test_resume_under_ray_sends_only_unfinished_jobs(local_ray, tmp_path):
    protocol = _protocol()
    first = run_protocol(protocol, tmp_path / "run", executor="ray", report=False)
    assert first.done == 3
    with Store.open(tmp_path / "run") as store:
        keys = sorted(store.statuses())
    # forget one finished job, as if the run had been killed before it was recorded
    with sqlite3.connect(tmp_path / "run" / "results.sqlite") as db:
        db.execute("DELETE FROM jobs WHERE key = ?", (keys[0],))
    before = _table(tmp_path / "run")
    second = run_protocol(protocol, tmp_path / "run", executor="ray", resume=True, report=False)
    assert (second.reused, second.done) == (2, 1)
    after = _table(tmp_path / "run")
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) == set(keys)


def test_the_command_line_runs_a_protocol_on_its_own_local_ray(tmp_path):
    """`weightstep run --executor ray` starting (and stopping) its own Ray on 127.0.0.1."""
    path = tmp_path / "p.toml"
    path.write_text(PROTOCOL.replace('cpus = 1\n', ''))
    env = {**os.environ, "WEIGHTSTEP_PROGRESS": "0", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-c", "from weightstep.cli import main; main()", "run", str(path), "--out",
               str(tmp_path / "run"), "--executor", "ray", "--jobs", "2", "--no-report"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "3 done now" in done.stdout
    table = _table(tmp_path / "run")
    assert sorted(v[1] for v in table.values()) == ["done"] * 3
