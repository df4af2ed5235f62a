"""`weightstep run` stopped from outside, in a real process: SIGKILL (nothing lost or redone on
--resume), and Ctrl-C or SIGTERM (a batch scheduler's stop): a clean interruption that says how
to resume."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import fake_codecs
import pytest

from weightstep.experiments.store import Store

ROOT = Path(__file__).resolve().parents[1]


def held_run(tmp_path: Path) -> tuple[list[str], dict[str, str], Path, Path, Path, subprocess.Popen]:
    """A run of four jobs whose third waits while a file exists, started in a real process and
    watched until the two before it are committed. Returns (command, env, protocol, run dir, hold
    file, the process, still running)."""
    hold = tmp_path / "hold"
    hold.write_text("the third job waits while this file exists")
    protocol = tmp_path / "p.toml"
    protocol.write_text(f"""
name = "kill"
[[datasets]]
name = "s"
videos = ["synthetic:testsrc2"]
frames = 3
width = 64
height = 48
[[techniques]]
label = "held"
codec = "holding"
rate_points = [{{ crf = 20 }}, {{ crf = 27 }}, {{ crf = 34, hold = "{hold}" }}, {{ crf = 41 }}]
""")
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "WEIGHTSTEP_PROGRESS": "0",
           "OMP_NUM_THREADS": "1", "WEIGHTSTEP_CODECS": fake_codecs.PLUGINS}
    base = [sys.executable, "-c", "from weightstep.cli import main; main()", "run", str(protocol), "--out",
            str(run_dir), "--no-report"]
    # a child inherits an ignored SIGINT from whatever the suite ran before; give it the default back
    process = subprocess.Popen(base, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    done = 0
    for _ in range(1200):  # until the two jobs before the held one are committed (at most 2 minutes)
        if (run_dir / "results.sqlite").exists():
            with sqlite3.connect(run_dir / "results.sqlite", timeout=30) as db:
                try:
                    done = db.execute("SELECT count(*) FROM jobs WHERE status = 'done'").fetchone()[0]
                except sqlite3.OperationalError:
                    done = 0
        if done >= 2 or process.poll() is not None:
            break
        time.sleep(0.1)
    if not (done == 2 and process.poll() is None):  # the third job is held in the middle of its encode
        process.kill()
        raise AssertionError(f"the held run did not reach its third job ({done} done)")
    return base, env, protocol, run_dir, hold, process


def test_a_killed_run_resumes_with_nothing_lost_or_redone(tmp_path):
    base, env, _, run_dir, hold, process = held_run(tmp_path)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    with Store.open(run_dir) as store:
        before = {r["key"]: (r["bitstream"], r["finished"]) for r in store.rows() if r["status"] == "done"}
        assert store.latest_run()["status"] == "running"  # killed: it never got to say otherwise
    blobs = {key: (run_dir / path).read_bytes() for key, (path, _) in before.items()}
    hold.unlink()
    finished = subprocess.run(base + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert "2 done now, 2 done before, 0 failed" in finished.stdout
    with Store.open(run_dir) as store:
        rows = {r["key"]: r for r in store.rows()}
        assert [r["status"] for r in store.runs()] == ["killed", "finished"]
    assert len(rows) == 4 and all(r["status"] == "done" for r in rows.values())
    for key, (path, stamp) in before.items():  # kept, not redone
        assert rows[key]["finished"] == stamp and (run_dir / path).read_bytes() == blobs[key]
    assert not list(run_dir.glob("bitstreams/**/.*.part"))


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stopped_run_says_how_to_resume_and_resumes(tmp_path, stop):
    base, env, protocol, run_dir, hold, process = held_run(tmp_path)
    process.send_signal(stop)  # the driver only: Ctrl-C's SIGINT, or `kill PID` / a scheduler's first signal
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        hold.unlink()
    assert process.returncode == 130, stderr
    assert "interrupted; every finished job is saved" in stderr and "Traceback" not in stderr
    assert f"weightstep run {protocol} --out {run_dir} --resume" in stderr
    with Store.open(run_dir) as store:
        assert store.latest_run()["status"] == "interrupted"
        assert sum(r["status"] == "done" for r in store.rows()) == 2
    assert not list(run_dir.glob("bitstreams/**/.*.part"))
    finished = subprocess.run(base + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert "2 done now, 2 done before" in finished.stdout
