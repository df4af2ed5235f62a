"""Experiments: protocol files, the grid of jobs, the resumable runner, its results store and reports.

- :mod:`.protocol`: TOML protocol files as frozen dataclasses (:func:`load_protocol`).
- :mod:`.jobs`: the grid as :class:`~.jobs.Job` records with stable keys (:func:`expand`).
- :mod:`.store`: the run directory's SQLite database (:class:`~.store.Store`).
- :mod:`.executors`: in-process, local process pool and Ray execution of :func:`~.executors.execute_job`.
- :mod:`.runner`: :func:`run_protocol`, resumable, one commit per job.
- :mod:`.report`: :func:`build_report` (summary.md, report.html, results.csv, figures).

Importing this package imports neither torch nor matplotlib; the functions do, when called.
"""

from weightstep.experiments.jobs import Job, Plan, expand, job_key
from weightstep.experiments.protocol import Protocol, check_parameters, load_protocol, parse_protocol
from weightstep.experiments.report import build_report
from weightstep.experiments.runner import RunSummary, plan_lines, run_protocol

__all__ = ["Job", "Plan", "Protocol", "RunSummary", "build_report", "check_parameters", "expand", "job_key",
           "load_protocol", "parse_protocol", "plan_lines", "run_protocol"]
