"""The resumable runner: plan a protocol's jobs, run those not yet done, record every outcome.

The driver (this module) is the only writer of the run directory: ``results.sqlite``, the
bitstreams under ``bitstreams/``, ``protocol.toml`` (the text of the latest run) and the
report under ``report/``. Each finished job is committed on its own, after its bitstream is
on disk, so a killed run loses only the jobs in flight; ``resume=True`` then skips every job
whose key is already ``done`` and runs the rest (failed and skipped jobs are tried again:
their cause may have been fixed).

Every run records the git commit (and whether the tree had uncommitted changes), package
versions, the machine, the executor and the seeds.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightstep.errors import ConfigError, InputError
from weightstep.experiments.executors import EXECUTORS, LocalExecutor
from weightstep.experiments.jobs import Job, Plan, expand
from weightstep.experiments.protocol import check_parameters
from weightstep.experiments.report_doc import write_file
from weightstep.experiments.specs import DONE, FAILED, SKIPPED, TODO, Protocol
from weightstep.experiments.store import Store

Echo = Callable[[str], None]


@dataclass
class RunSummary:
    """What one invocation did."""

    run_dir: Path
    run_id: int
    status: str  # 'finished' or 'interrupted'
    planned: int  # jobs in the protocol's grid
    reused: int  # already done before this invocation (resume)
    done: int  # finished now
    failed: int
    skipped: int
    seconds: float
    notes: list[str] = field(default_factory=list)
    reasons: list[tuple[str, str, str]] = field(default_factory=list)  # (technique, status, reason)
    report_dir: Path | None = None

    def line(self) -> str:
        text = (f"{self.run_dir}: {self.planned} jobs: {self.done} done now, {self.reused} done before, "
                f"{self.failed} failed, {self.skipped} skipped ({self.seconds:.0f} s)")
        if self.report_dir is not None:
            text += f"; report: {self.report_dir / 'summary.md'}"
        return text


def make_executor(name: str, jobs: int | None = None, *, cpus_per_job: float = 1.0, gpus_per_job: float = 0.0,
                  address: str | None = None, retries: int = 2, timeout_s: float | None = None):
    """The executor called ``name`` ('local' or 'ray'); ``address`` and the rest are Ray's."""
    if name == "local":
        if address:
            raise ConfigError("--address is for --executor ray")
        return LocalExecutor(1 if jobs is None else jobs)
    if name == "ray":
        from weightstep.experiments.ray_executor import RayExecutor

        return RayExecutor(jobs, cpus_per_job=cpus_per_job, gpus_per_job=gpus_per_job, address=address,
                           retries=retries, timeout_s=timeout_s)
    raise ConfigError(f"unknown executor {name!r}; use one of {', '.join(EXECUTORS)}")


# what a run records -------------------------------------------------------------------------------

def git_info(path: str | os.PathLike | None = None, ignore: str | os.PathLike | None = None) -> tuple[str, bool | None]:
    """(commit, dirty) of the git work tree holding ``path`` (default: this package); ('unknown', None) if none.

    ``ignore``: a directory whose changes do not make the tree dirty, the run's own: a run directory
    committed with its results (reports/*/run) is changed by the run itself, and counting that would
    mark every resumed run as measured with uncommitted changes (so ``--redo`` would redo its jobs)."""
    where = str(path or Path(__file__).resolve().parents[2])
    try:
        commit = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        command = ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"]
        if ignore is not None:
            top = subprocess.run(["git", "-C", where, "rev-parse", "--show-toplevel"], capture_output=True,
                                 text=True, timeout=10, check=True).stdout.strip()
            inside, root = Path(ignore).resolve(), Path(top).resolve()
            if top and inside != root and inside.is_relative_to(root):  # (the whole tree is never ignored)
                command += ["--", ":(top)", f":(top,exclude){inside.relative_to(root).as_posix()}"]
        status = subprocess.run(command, capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", None
    return commit or "unknown", bool(status.strip())


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """The machine the driver runs on (no host name: reports get committed)."""
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(), "cpu": _cpu_model(),
                            "cpu_count": os.cpu_count(), "python": platform.python_version()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = bool(torch.cuda.is_available())
        if info["cuda"]:
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:  # pragma: no cover - torch is a dependency
        info["cuda"] = False
    return info


def protocol_meta(plan: Plan) -> dict[str, Any]:
    """What reports need to know about the protocol, stored with the run."""
    p = plan.protocol
    return {
        "name": p.name, "description": p.description, "anchor": p.anchor, "also_against": list(p.also_against),
        "metrics": list(p.metrics),
        "bd_interpolation": p.bd_interpolation, "seeds": list(p.seeds), "profile": p.profile,
        "seed_points": list(p.seed_points) if p.seed_points is not None else None,
        "techniques": [{"label": t.label, "codec": t.codec, "params": dict(t.params or {}),
                        "rate_points": [dict(r) for r in t.rate_points], "description": t.description,
                        "group": t.group, "variant_of": t.variant_of} for t in p.techniques],
        "datasets": [d.name for d in p.datasets],
        "videos": [{"dataset": v.dataset, "label": v.label, "identity": v.identity, "width": v.width,
                    "height": v.height, "frames": v.frames, "status": v.status, "reason": v.reason}
                   for v in plan.videos],
        "notes": list(plan.notes),
    }


# the run ------------------------------------------------------------------------------------------

@contextmanager
def _locked(run_dir: Path):
    """Only one driver per run directory (the store has one writer)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    handle = open(run_dir / ".lock", "w")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"{run_dir}: another `weightstep run` is using this run directory") from None
        yield
    finally:
        handle.close()


def _job_line(job: Job, outcome: dict[str, Any]) -> str:
    point = " ".join(f"{k}={v}" for k, v in job.rate_point.items()) or "defaults"
    where = f"{job.technique} | {job.dataset}/{job.video_label} | {point}"
    if job.seed is not None:
        where += f" | seed {job.seed}"
    status = outcome["status"]
    if status == DONE:
        r = outcome["result"]
        return (f"done     {where} | {r['bpp']:.4f} bpp  {r['psnr_rgb']:.2f} dB  MS-SSIM {r['ms_ssim']:.4f}  "
                f"enc {r['encode_s']:.1f} s  dec {r['decode_s']:.1f} s")
    error = (outcome.get("error") or "").splitlines()[0] if outcome.get("error") else ""
    if len(error) > 200:
        error = error[:197] + "..."
    return f"{status:<8} {where} | {error}"


def plan_lines(plan: Plan, done_keys: set[str] | None = None) -> list[str]:
    """Human lines describing a plan: counts, notes, why jobs are skipped or fail before running."""
    done_keys = done_keys or set()
    todo = sum(1 for j in plan.jobs if j.status == TODO and j.key not in done_keys)
    reused = sum(1 for j in plan.jobs if j.key in done_keys)
    lines = [f"{plan.protocol.name}: {len(plan.videos)} clips, {len(plan.protocol.techniques)} techniques, "
             f"{len(plan.jobs)} jobs: {todo} to run, {reused} already done, {plan.count(SKIPPED)} skipped, "
             f"{plan.count(FAILED)} failing before they start"]
    lines += [f"note: {note}" for note in plan.notes]
    grouped: dict[tuple[str, str], list[str]] = {}
    for technique, status, reason in plan.reasons():
        names = grouped.setdefault((status, reason), [])
        if technique not in names:
            names.append(technique)
    for (status, reason), techniques in grouped.items():
        lines.append(f"{status}: {', '.join(techniques)}: {reason}")
    if not plan.jobs:  # no clips, so no job says it: check the techniques on their own
        for problem in check_parameters(plan.protocol):
            where = "" if problem.rate_index is None else f" (rate point {problem.rate_index})"
            lines.append(f"{problem.kind}: {problem.technique}{where}: {problem.message}")
    return lines


def check_redo(plan: Plan, redo: tuple[str, ...] | list[str]) -> None:
    """Raise ConfigError when ``redo`` names a technique the protocol does not have."""
    labels = [t.label for t in plan.protocol.techniques]
    unknown = [name for name in redo if name not in labels]
    if unknown:
        raise ConfigError(f"--redo {unknown[0]!r}: the protocol has no such technique; its techniques: "
                          + ", ".join(repr(label) for label in labels))


def redo_keys(plan: Plan, redo: tuple[str, ...] | list[str], measured: dict[str, tuple[str | None, bool | None]],
              commit: str, dirty: bool | None) -> set[str]:
    """Keys of the finished jobs of the techniques labelled in ``redo`` to measure again.

    A job's key covers its codec's settings and stream format, not the code: after a change that
    alters a codec's output under the same settings, resuming would keep its finished jobs.
    ``measured`` maps a finished job's key to the (commit, dirty) that measured it; a job
    measured at ``commit`` from a clean tree, as now, is kept, so an interrupted redo continues
    with the same command.
    """
    wanted = set(redo)
    current = commit != "unknown" and dirty is False
    return {job.key for job in plan.jobs if job.technique in wanted and job.key in measured
            and not (current and measured[job.key] == (commit, False))}


def dry_run_lines(protocol: Protocol, out_dir: str | os.PathLike | None = None, *, jobs: int | None = None,
                  timings: tuple[str | os.PathLike, ...] = (), redo: tuple[str, ...] = ()) -> list[str]:
    """The plan (``plan_lines``) and its time estimate, without running anything.

    ``out_dir``: a run directory to be resumed, if it exists (its finished jobs cost nothing and
    its timings calibrate the estimate); ``timings``: more run directories whose finished jobs
    calibrate it; ``redo``: technique labels whose finished jobs count as not done.
    """
    from weightstep.experiments.estimate import estimate

    plan = expand(protocol)
    check_redo(plan, redo)
    again: set[str] = set()
    done_keys: set[str] = set()
    rows: list[dict[str, Any]] = []
    for index, directory in enumerate([out_dir, *timings] if out_dir is not None else list(timings)):
        if out_dir is not None and index == 0 and not (Path(directory) / "results.sqlite").is_file():
            continue  # a fresh run directory: nothing done yet
        with Store.open(directory) as store:
            found = store.rows()
            if out_dir is not None and index == 0 and redo:
                again = redo_keys(plan, redo, store.measured_at(), *git_info(ignore=directory))
        rows.extend(found)
        if out_dir is not None and index == 0:
            done_keys = {r["key"] for r in found if r["status"] == DONE} - again
    workers = jobs or 1
    threads = max(1, (os.cpu_count() or 1) // workers)
    return plan_lines(plan, done_keys) + estimate(plan, done_keys, rows, threads).lines(workers)


def run_protocol(protocol: Protocol, out_dir: str | os.PathLike, *, resume: bool = False, jobs: int | None = None,
                 executor: str = "local", echo: Echo | None = None, report: bool = True,
                 command: str | None = None, address: str | None = None, redo: tuple[str, ...] = ()) -> RunSummary:
    """Run ``protocol`` into ``out_dir`` and (``report``) write the report; returns what was done.

    ``redo``: technique labels whose finished jobs run again (with ``resume``); a new result
    replaces the old row, a failure leaves it. Raises InputError when ``out_dir`` already holds
    a run and ``resume`` is false, and ConfigError when resuming a directory that holds another
    protocol's run or ``redo`` names a technique the protocol lacks.
    """
    from weightstep.progress import enabled
    from weightstep.versions import versions

    run_dir = Path(out_dir)
    start_clock = time.perf_counter()
    res = protocol.resources
    runner = make_executor(executor, jobs, cpus_per_job=res.cpus_per_job, gpus_per_job=res.gpus_per_job,
                           address=address, retries=res.retries, timeout_s=res.timeout_s)
    plan = expand(protocol)
    if not plan.jobs:
        raise InputError(f"{protocol.path}: no clips to run: " + ("; ".join(plan.notes) or "no videos"))
    if redo and not resume:
        raise ConfigError("--redo measures a resumed run's techniques again; add --resume")
    check_redo(plan, redo)  # before touching the directory
    store = Store.create(run_dir)
    try:
        with _locked(run_dir):
            previous = store.latest_run()
            if previous is not None and not resume:
                raise InputError(f"{run_dir} already holds a run of {previous['protocol_name']!r} ({store.count()} "
                                 "jobs recorded); pass --resume to continue it, or choose another --out")
            if previous is not None and previous["protocol_name"] != protocol.name:
                raise ConfigError(f"{run_dir} holds a run of protocol {previous['protocol_name']!r}, not "
                                  f"{protocol.name!r}; choose another --out")
            statuses = store.statuses()
            commit, dirty = git_info(ignore=run_dir)
            again = redo_keys(plan, redo, store.measured_at(), commit, dirty) if redo else set()
            done_keys = {k for k, s in statuses.items() if s == DONE} - again
            facts = runner.describe()
            run_id = store.begin_run({
                "protocol_name": protocol.name, "protocol_path": protocol.path, "protocol_text": protocol.text,
                "profile": protocol.profile, "git_commit": commit,
                "git_dirty": None if dirty is None else int(dirty), "versions": versions(),
                "device": machine_info(), "seeds": list(protocol.seeds), "executor": facts["executor"],
                "workers": facts.get("workers"), "threads_per_job": facts.get("threads_per_job"),
                "command": command or shlex.join(sys.argv), "meta": protocol_meta(plan),
                "keys": [j.key for j in plan.jobs]})
            write_file(run_dir / "protocol.toml", protocol.text.encode("utf-8"))
            _remove_partial_files(run_dir)
            return _execute(store, run_id, plan, runner, done_keys, echo, report, run_dir, start_clock, enabled())
    finally:
        store.close()


def _remove_partial_files(run_dir: Path) -> None:
    """Delete the temporary files a killed run left half-written (``.NAME.*.part``); the lock is held."""
    for stale in run_dir.glob("bitstreams/**/.*.part"):
        try:
            stale.unlink()
        except OSError:
            pass


def _execute(store: Store, run_id: int, plan: Plan, runner, done_keys: set[str], echo: Echo | None,
             report: bool, run_dir: Path, start_clock: float, show: bool) -> RunSummary:
    from weightstep.experiments.estimate import job_weights
    from weightstep.experiments.progress_view import RunProgress

    counts = {DONE: 0, FAILED: 0, SKIPPED: 0}
    reused = 0
    todo: list[Job] = []
    for job in plan.jobs:
        if job.key in done_keys:
            reused += 1
        elif job.status != TODO:
            store.record(job, job.status, run_id, error=job.reason)
            counts[job.status] += 1
        else:
            todo.append(job)
    for line in plan_lines(plan, done_keys):
        if echo is not None:
            echo(line)
    status = "interrupted"
    weights = dict(zip((j.key for j in todo), job_weights(plan, todo, store.rows()), strict=True))
    workers = runner.describe().get("workers") or 1
    # Jobs run with TTY_COMPATIBLE=0 so that codecs' own bars stay hidden: the display decides now.
    progress = RunProgress(plan.protocol.name, list(weights.values()), workers=workers, show=show)
    say = progress.print if show else echo
    try:
        with progress:
            for job, outcome in runner.execute(todo):
                bitstream = None
                if outcome["status"] == DONE and outcome.get("data") is not None:
                    bitstream = job.bitstream_name()
                    target = run_dir / bitstream
                    target.parent.mkdir(parents=True, exist_ok=True)
                    write_file(target, outcome["data"])
                store.record(job, outcome["status"], run_id, result=outcome.get("result"), bitstream=bitstream,
                             error=outcome.get("error"), traceback=outcome.get("traceback"),
                             started=outcome.get("started"), finished=outcome.get("finished"),
                             wall_s=outcome.get("wall_s"))
                counts[outcome["status"]] += 1
                progress.advance(weights[job.key], outcome["status"])
                if say is not None:
                    say(_job_line(job, outcome))
        status = "finished"
    finally:
        store.finish_run(run_id, status, {**counts, "reused": reused, "planned": len(plan.jobs)})
    summary = RunSummary(run_dir=run_dir, run_id=run_id, status=status, planned=len(plan.jobs), reused=reused,
                         done=counts[DONE], failed=counts[FAILED], skipped=counts[SKIPPED],
                         seconds=time.perf_counter() - start_clock, notes=list(plan.notes), reasons=plan.reasons())
    if report:
        from weightstep.experiments.report import build_report

        summary.report_dir = build_report(run_dir).out_dir
    return summary


__all__ = ["RunSummary", "check_redo", "dry_run_lines", "redo_keys", "make_executor", "git_info", "machine_info", "plan_lines", "protocol_meta", "run_protocol"]
