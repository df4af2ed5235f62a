"""Where jobs run: in this process, in a pool of local processes, or on a Ray cluster.

Every executor calls the same :func:`execute_job` and yields ``(job, outcome)`` pairs as jobs
finish; the driver records each outcome. Workers never touch the results database or the run
directory: the bitstream comes back inside the outcome and the driver writes it, so Ray
workers on other machines need no shared file system.

- :class:`LocalExecutor` with one job at a time runs in this process (simplest; tests use it).
  With ``jobs=N`` it uses a spawn-context process pool with ``max(1, cpu_count // N)`` torch
  threads per worker, and never has more than N jobs submitted, so a killed run loses at most
  the N in flight. A worker that dies (killed for memory, a crash) costs its jobs one retry;
  a job in flight during two such deaths is recorded as failed.
- :class:`~weightstep.experiments.ray_executor.RayExecutor` hands jobs to a Ray cluster (its own
  module, above this one; Ray is an optional extra). :func:`weightstep.experiments.runner.make_executor`
  chooses between them.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from weightstep.errors import ConfigError, UnavailableError, WeightstepError
from weightstep.experiments.jobs import Job, read_options
from weightstep.experiments.specs import DONE, FAILED, SKIPPED

EXECUTORS = ("local", "ray")

# The worker keeps the last clips it read: jobs are ordered video by video, so most reuse one.
_VIDEO_CACHE: OrderedDict[str, Any] = OrderedDict()
_VIDEO_CACHE_SIZE = 2


def _video(job: Job):
    from weightstep.experiments.jobs import canonical_json
    from weightstep.video.readers import open_video

    cache_key = canonical_json([job.spec, job.options])
    if cache_key in _VIDEO_CACHE:
        _VIDEO_CACHE.move_to_end(cache_key)
        return _VIDEO_CACHE[cache_key]
    video = open_video(job.spec, read_options(job.options))
    _VIDEO_CACHE[cache_key] = video
    while len(_VIDEO_CACHE) > _VIDEO_CACHE_SIZE:
        _VIDEO_CACHE.popitem(last=False)
    return video


def _seed_everything(seed: int | None) -> None:
    """Global generators seeded per job, so a job's result does not depend on what ran before it."""
    import numpy as np

    value = 0 if seed is None else int(seed)
    random.seed(value)
    np.random.seed(value % 2**32)
    try:
        import torch

        torch.manual_seed(value)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def execute_job(job_data: dict[str, Any], threads: int | None = None) -> dict[str, Any]:
    """Encode, write the bitstream, read it back, decode and measure one job; never raises.

    Returns the outcome: ``status`` ('done', 'failed' or 'skipped'), ``result`` (the Result
    record as a dict), ``data`` (the bitstream's bytes), ``error`` and ``traceback`` on
    failure, and wall-clock ``started`` / ``finished`` / ``wall_s``.
    """
    from weightstep import registry
    from weightstep.codecs import harness

    job = Job.from_dict(job_data)
    started = time.time()
    clock = time.perf_counter()
    outcome: dict[str, Any] = {"key": job.key, "status": FAILED, "result": None, "data": None, "error": None,
                               "traceback": None, "started": started, "pid": os.getpid()}
    try:
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        _seed_everything(job.seed)
        codec = registry.create(job.codec, job.params)
        reason = codec.availability()
        if reason:
            raise UnavailableError(f"{job.codec} cannot run here: {reason}")
        video = _video(job)
        with tempfile.TemporaryDirectory(prefix="weightstep-job-") as tmp:
            path = Path(tmp) / f"stream{job.suffix}"
            result = harness.run(codec, video, path)
            outcome["data"] = path.read_bytes()
        outcome["result"] = result.to_dict()
        outcome["status"] = DONE
    except UnavailableError as exc:
        outcome.update(status=SKIPPED, error=str(exc))
    except WeightstepError as exc:
        outcome.update(error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    except Exception as exc:  # a failing job is recorded, and the run goes on
        outcome.update(error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    outcome["finished"] = time.time()
    outcome["wall_s"] = time.perf_counter() - clock
    return outcome


def _died(job: Job, message: str) -> dict[str, Any]:
    now = time.time()
    return {"key": job.key, "status": FAILED, "result": None, "data": None, "error": message, "traceback": None,
            "started": now, "finished": now, "wall_s": 0.0}


# Jobs draw no progress bars of their own: weightstep.progress reads WEIGHTSTEP_PROGRESS, and any
# Rich console made during a job (the fitting loop's) reads TTY_COMPATIBLE=0 as "not a terminal".
_QUIET = {"WEIGHTSTEP_PROGRESS": "0", "TTY_COMPATIBLE": "0"}


def _init_worker(threads: int) -> None:
    """Process-pool initializer: split the cores between workers and keep workers quiet."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ.update(_QUIET)  # one display: the driver's
    import torch

    torch.set_num_threads(threads)


class LocalExecutor:
    """Jobs on this machine: in-process for ``jobs=1``, else a spawn process pool of ``jobs`` workers."""

    name = "local"

    def __init__(self, jobs: int = 1):
        if jobs < 1:
            raise ConfigError(f"--jobs {jobs}: must be 1 or more")
        self.jobs = jobs
        self.threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "workers": self.jobs, "threads_per_job": self.threads}

    def execute(self, jobs: list[Job]) -> Iterator[tuple[Job, dict[str, Any]]]:
        if self.jobs == 1:
            yield from self._in_process(jobs)
        else:
            yield from self._pool(jobs)

    def _in_process(self, jobs: list[Job]) -> Iterator[tuple[Job, dict[str, Any]]]:
        previous = {name: os.environ.get(name) for name in _QUIET}
        for job in jobs:
            os.environ.update(_QUIET)  # the codec's own bars would fight the run's display
            try:
                outcome = execute_job(job.to_dict())
            finally:
                for name, value in previous.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
            yield job, outcome

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.jobs, mp_context=get_context("spawn"),
                                   initializer=_init_worker, initargs=(self.threads,))

    def _pool(self, jobs: list[Job]) -> Iterator[tuple[Job, dict[str, Any]]]:
        queue = deque(jobs)
        deaths: dict[str, int] = {}
        pool = self._new_pool()
        running: dict[Any, Job] = {}
        try:
            while queue or running:
                while queue and len(running) < self.jobs:
                    job = queue.popleft()
                    running[pool.submit(execute_job, job.to_dict())] = job
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                broken = False
                for future in finished:
                    job = running.pop(future)
                    try:
                        yield job, future.result()
                    except BrokenProcessPool:
                        broken = True
                        deaths[job.key] = deaths.get(job.key, 0) + 1
                        if deaths[job.key] >= 2:
                            yield job, _died(job, "the worker process died twice while running this job "
                                                  "(killed for memory, or a crash)")
                        else:
                            queue.appendleft(job)
                    except BaseException as exc:  # e.g. KeyboardInterrupt raised inside the worker
                        yield job, _died(job, f"{type(exc).__name__} in the worker: {exc}")
                if broken:
                    for job in list(running.values()):  # they died with the pool: run them again
                        deaths[job.key] = deaths.get(job.key, 0) + 1
                        if deaths[job.key] >= 2:
                            yield job, _died(job, "the worker pool died twice while this job was running")
                        else:
                            queue.appendleft(job)
                    running.clear()
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = self._new_pool()
        finally:
            if running:  # interrupted: do not wait hours for the jobs in flight (they are lost anyway)
                for process in list(getattr(pool, "_processes", {}).values()):
                    process.terminate()
            pool.shutdown(wait=not running, cancel_futures=True)


__all__ = ["EXECUTORS", "LocalExecutor", "execute_job"]
