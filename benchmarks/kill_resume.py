"""Kill a protocol run with SIGKILL at random moments, resume it each time, compare with an uninterrupted run.

    OMP_NUM_THREADS=1 python benchmarks/kill_resume.py --kills 10

A small synthetic protocol (x264, x265, weight-step SIREN and full-cnn jobs on a 4-frame 64x48 clip)
is run once without interruption. Then the same protocol is started in a fresh run folder and
SIGKILLed (the whole process group) after a random delay, then restarted with ``--resume``,
``--kills`` times; the last start runs to the end. Printed: for every kill, the jobs recorded
when it struck; then whether the final table equals the uninterrupted one (same job keys,
statuses, bytes and PSNR; the same bitstream bytes for our own files, the same elementary-stream
checksum for Matroska files), rows lost or duplicated, bitstreams referenced but missing or
different, and files left over (half-written ``.part`` files, bitstreams no row references).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROTOCOL = """
name = "kill-resume"
seeds = [0]
anchor = "H.264"

[[datasets]]
name = "synth"
videos = ["synthetic:testsrc2", "synthetic:mandelbrot", "synthetic:smptebars"]
frames = 4
width = 64
height = 48

[[techniques]]
label = "H.264"
codec = "x264"
params = { preset = "ultrafast" }
rate_points = [{ crf = 18 }, { crf = 23 }, { crf = 28 }, { crf = 33 }, { crf = 38 }, { crf = 43 }]

[[techniques]]
label = "H.265"
codec = "x265"
params = { preset = "ultrafast" }
rate_points = [{ crf = 23 }, { crf = 33 }, { crf = 43 }]

[[techniques]]
label = "WS"
codec = "weightstep"
params = { inr = "siren", depth = 2, anchor_steps = 60, step_steps = 10, device = "cpu" }
rate_points = [{ width = 8 }, { width = 12 }, { width = 16 }]

[[techniques]]
label = "CNN"
codec = "full-cnn"
params = { dip_levels = 2, epochs = 5, device = "cpu" }
rate_points = [{ dip_channels = 4 }, { dip_channels = 6 }]
"""


def command(protocol: Path, out: Path, resume: bool) -> list[str]:
    args = [sys.executable, "-c", "from weightstep.cli import main; main()", "run", str(protocol), "--out", str(out),
            "--no-report"]
    return args + (["--resume"] if resume else [])


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "WEIGHTSTEP_PROGRESS": "0", "OMP_NUM_THREADS": "1"}


def rows(run_dir: Path) -> list[tuple]:
    with sqlite3.connect(f"file:{run_dir / 'results.sqlite'}?mode=ro", uri=True) as db:
        return db.execute("SELECT key, technique, status, result, bitstream FROM jobs ORDER BY key").fetchall()


def stream_identity(path: Path) -> str:
    """Our files: their SHA-256. Matroska: the elementary-stream checksum tag (the container has a random UID)."""
    data = path.read_bytes()
    if path.suffix == ".mkv":
        import av

        with av.open(io.BytesIO(data)) as container:
            return "es:" + container.metadata.get("WEIGHTSTEP_STREAM_SHA256", "none")
    return hashlib.sha256(data).hexdigest()


def table(run_dir: Path) -> dict[str, tuple]:
    import json

    out = {}
    for key, technique, status, result, bitstream in rows(run_dir):
        measured = json.loads(result) if result else {}
        identity = None
        if bitstream:
            path = run_dir / bitstream
            identity = stream_identity(path) if path.is_file() else "MISSING"
        out[key] = (technique, status, measured.get("bytes"), measured.get("psnr_rgb"), identity)
    return out


def leftovers(run_dir: Path) -> list[str]:
    referenced = {r[4] for r in rows(run_dir) if r[4]}
    found = []
    for path in run_dir.rglob("*"):
        rel = path.relative_to(run_dir).as_posix()
        if path.is_file() and (".part" in path.name or (rel.startswith("bitstreams/") and rel not in referenced)):
            found.append(rel)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-delay", type=float, default=4.0, help="seconds after a start before a kill, at least")
    parser.add_argument("--max-delay", type=float, default=16.0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kill-resume-"))
    protocol = work / "protocol.toml"
    protocol.write_text(PROTOCOL)

    started = time.perf_counter()
    subprocess.run(command(protocol, work / "reference", False), env=environment(), check=True,
                   capture_output=True, timeout=1800)
    reference = table(work / "reference")
    print(f"uninterrupted run: {len(reference)} jobs in {time.perf_counter() - started:.0f} s")

    run_dir = work / "killed"
    kills, starts = 0, 0
    while True:
        starts += 1
        process = subprocess.Popen(command(protocol, run_dir, resume=starts > 1), env=environment(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if kills < args.kills:
            delay = rng.uniform(args.min_delay, args.max_delay)
            try:
                process.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                kills += 1
                recorded = len(rows(run_dir)) if (run_dir / "results.sqlite").exists() else 0
                print(f"kill {kills}: after {delay:.1f} s, {recorded} of {len(reference)} jobs recorded")
                continue
            if process.returncode == 0:
                print(f"start {starts} finished before its kill ({delay:.1f} s): the protocol is too short "
                      "for this many kills; the rest of the kills are skipped")
                break
            raise SystemExit(f"start {starts} failed with exit code {process.returncode}")
        if process.wait(timeout=1800) != 0:
            raise SystemExit(f"the final resume failed with exit code {process.returncode}")
        break

    final = table(run_dir)
    keys = [r[0] for r in rows(run_dir)]
    lost = sorted(set(reference) - set(final))
    duplicated = len(keys) - len(set(keys))
    different = sorted(k for k in set(reference) & set(final) if reference[k] != final[k])
    missing = sorted(k for k, v in final.items() if v[4] == "MISSING")
    extra = leftovers(run_dir)
    print(f"\n{kills} kills, {starts} starts; final table: {len(final)} jobs")
    print(f"lost: {len(lost)}, duplicated: {duplicated}, different from the uninterrupted run: {len(different)}, "
          f"referenced bitstreams missing: {len(missing)}, leftover files: {len(extra)} {extra[:5]}")
    for key in different[:10]:
        print(f"  {key[:12]}: reference {reference[key]} / resumed {final[key]}")
    same = final == reference and not duplicated and not extra
    print("identical to the uninterrupted run" if same else "NOT identical to the uninterrupted run")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
