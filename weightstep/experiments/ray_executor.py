"""Jobs on a Ray cluster: one Ray task per job, results back to the driver as they finish.

Each job is a task running :func:`~weightstep.experiments.executors.execute_job` with the CPUs and
GPUs its technique asks for (technique ``cpus`` / ``gpus``, else the protocol's ``[resources]``).
The task returns the outcome, bitstream included, so workers need no shared file system and
the driver stays the only writer of the run directory.

Failures:

- a job whose code raises is not retried: ``execute_job`` records the error and returns a
  ``failed`` outcome (the same as with the local executor);
- a task whose worker process dies (killed for memory, SIGKILL, a lost node) is retried by Ray
  up to ``retries`` times, then recorded as failed with Ray's reason;
- a task running longer than ``timeout_s`` is cancelled and recorded as failed.

Where it connects: ``address`` (``--address``), else ``RAY_ADDRESS``, else a Ray instance started
for this run on 127.0.0.1 only (stopped at the end). An already initialised Ray (a test's) is used
as it is.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from weightstep.errors import ConfigError, UnavailableError
from weightstep.experiments.jobs import Job

INSTALL_HINT = ("the ray executor needs Ray: pip install 'weightstep[ray]' (or pip install 'ray>=2.9'); "
                "or use --executor local")
WAIT_S = 1.0  # longest single wait for a result, so timeouts and Ctrl-C are noticed
FORWARDED_ENV = ("WEIGHTSTEP_CODECS", "WEIGHTSTEP_DECODE_MEMORY")  # settings workers must share with the driver


# Ray on Linux advertises and binds the machine's network address even for a one-machine instance;
# with this switch off it keeps to the loopback interface (127.0.0.1). Read when Ray is imported.
_LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _ray(local: bool = False):
    """The ray module (UnavailableError with the install line without it); ``local``: keep it on 127.0.0.1."""
    import sys

    if local and "ray" not in sys.modules:
        os.environ.setdefault(_LOOPBACK_SWITCH, "0")
    try:
        import ray
    except ImportError:
        raise UnavailableError(INSTALL_HINT) from None
    if local:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # Ray was imported before the switch could be set
    return ray


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = next((line.strip() for line in text if line.strip()), "")
    return f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__


class RayExecutor:
    """Jobs as Ray tasks; ``jobs`` caps how many are in flight (default: what the cluster's CPUs hold)."""

    name = "ray"

    def __init__(self, jobs: int | None = None, cpus_per_job: float = 1.0, gpus_per_job: float = 0.0, *,
                 address: str | None = None, retries: int = 2, timeout_s: float | None = None):
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        _ray(local=self.address is None)
        if jobs is not None and jobs < 1:
            raise ConfigError(f"--jobs {jobs}: must be 1 or more")
        if not 0 <= int(retries) <= 100:
            raise ConfigError(f"retries={retries}: must be 0 to 100")
        self.jobs = jobs
        self.cpus_per_job = float(cpus_per_job)
        self.gpus_per_job = float(gpus_per_job)
        self.retries = int(retries)
        self.timeout_s = timeout_s

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "workers": self.jobs, "threads_per_job": max(1, int(self.cpus_per_job)),
                "cpus_per_job": self.cpus_per_job, "gpus_per_job": self.gpus_per_job,
                "address": self.address or "local (127.0.0.1)", "retries": self.retries, "timeout_s": self.timeout_s}

    def _connect(self, ray) -> bool:
        """Initialise Ray unless it already is; True when this call started it (and must stop it)."""
        from weightstep.experiments.executors import _QUIET

        if ray.is_initialized():
            return False
        env = dict(_QUIET)
        env.update({name: os.environ[name] for name in FORWARDED_ENV if name in os.environ})
        settings: dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": False,
                                    "configure_logging": False}
        try:
            if self.address:
                ray.init(address=self.address, **settings)
            else:
                ray.init(include_dashboard=False, **settings)
        except ConnectionError as exc:
            raise UnavailableError(f"cannot reach the Ray cluster at {self.address}: {_error_line(exc)}") from None
        return True

    def execute(self, jobs: list[Job]) -> Iterator[tuple[Job, dict[str, Any]]]:
        from weightstep.experiments.executors import _died, execute_job

        ray = _ray(local=self.address is None)
        started_here = self._connect(ray)
        remote = ray.remote(execute_job)
        cpus_total = float(ray.cluster_resources().get("CPU", 1.0))
        limit = self.jobs or max(1, int(cpus_total // max(self.cpus_per_job, 1e-9)))
        queue = deque(jobs)
        running: dict[Any, tuple[Job, float]] = {}
        try:
            while queue or running:
                while queue and len(running) < limit:
                    job = queue.popleft()
                    cpus = self.cpus_per_job if job.cpus is None else float(job.cpus)
                    gpus = self.gpus_per_job if job.gpus is None else float(job.gpus)
                    ref = remote.options(num_cpus=cpus, num_gpus=gpus, max_retries=self.retries,
                                         retry_exceptions=False, name=f"weightstep:{job.technique}"
                                         ).remote(job.to_dict(), max(1, int(cpus)))
                    running[ref] = (job, time.monotonic())
                ready, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_S)
                for ref in ready:
                    job, _ = running.pop(ref)
                    try:
                        yield job, ray.get(ref)
                    except Exception as exc:  # ray.exceptions.*: the worker died more than `retries` times
                        yield job, _died(job, f"Ray gave up after {self.retries + 1} attempts: {_error_line(exc)}")
                if self.timeout_s is not None:
                    now = time.monotonic()
                    for ref, (job, since) in list(running.items()):
                        if now - since > self.timeout_s:
                            ray.cancel(ref, force=True)
                            del running[ref]
                            yield job, _died(job, f"timed out after {self.timeout_s:g} s (resources.timeout_s)")
        finally:
            for ref in running:
                ray.cancel(ref, force=True)
            if started_here:
                ray.shutdown()


__all__ = ["INSTALL_HINT", "RayExecutor"]
