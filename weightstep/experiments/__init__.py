"""Experiments: protocol files, the grid of jobs, the resumable runner, its results store and reports.

Modules, from the bottom up (each imports only modules above it in this list, never the reverse):

- :mod:`.specs`: the shared types (protocol records, job statuses, codec look-ups).
- :mod:`.protocol`: TOML protocol files into those records (:func:`load_protocol`).
- :mod:`.jobs`: the grid as :class:`~.jobs.Job` records with stable keys (:func:`expand`).
- :mod:`.store`: the run directory's SQLite database (:class:`~.store.Store`).
- :mod:`.estimate`: the time a plan needs (a cost model calibrated by finished jobs).
- :mod:`.executors`, :mod:`.ray_executor`: in-process, local process pool and Ray execution.
- :mod:`.progress_view`: the run's progress bar or plain progress lines, with an ETA.
- :mod:`.plots`, :mod:`.report_doc`, :mod:`.report_data`, :mod:`.report_more`, :mod:`.compare`,
  :mod:`.report`: figures, documents, aggregation, sections and :func:`build_report`.
- :mod:`.runner`: :func:`run_protocol`, resumable, one commit per job; the dry run's plan.

Importing this package imports neither torch nor matplotlib; the functions do, when called.
"""

from weightstep.experiments.jobs import Job, Plan, expand, job_key
from weightstep.experiments.protocol import Protocol, check_parameters, load_protocol, parse_protocol
from weightstep.experiments.report import build_report
from weightstep.experiments.runner import RunSummary, plan_lines, run_protocol

__all__ = ["Job", "Plan", "Protocol", "RunSummary", "build_report", "check_parameters", "expand", "job_key",
           "load_protocol", "parse_protocol", "plan_lines", "run_protocol"]
