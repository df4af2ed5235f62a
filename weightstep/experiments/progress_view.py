"""What ``weightstep run`` shows while it works: overall progress and ETA on stderr.

Jobs differ in cost by orders of magnitude (a conventional encode takes a second, a weight-step
fit an hour), so progress is counted in *estimated job seconds* (:mod:`.estimate`'s cost model),
not in jobs: the fraction done and the ETA then mean something after the first few jobs. The
ETA is the remaining estimated work times the measured pace (wall seconds per estimated second
of the jobs finished so far); before any job finishes it is the bare estimate spread over the
workers.

On a terminal it is a Rich bar. Elsewhere (a log file, a batch system) it is one plain line
every ``interval`` seconds from a background thread, plus one per finished job, so a multi-hour
run's log says where it stands.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from weightstep.experiments.specs import DONE, FAILED, SKIPPED

PLAIN_INTERVAL_S = 10.0
"""Seconds between the plain progress lines when stderr is not a terminal."""


def _clock(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "-:--:--"
    seconds = int(round(max(0.0, seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class RunProgress:
    """Overall progress of a run's jobs; ``weights``: each job's estimated seconds (any positive scale)."""

    def __init__(self, name: str, weights: Sequence[float], *, workers: int = 1, show: bool = True,
                 terminal: bool | None = None, interval: float = PLAIN_INTERVAL_S, stream: TextIO | None = None,
                 now: Callable[[], float] = time.monotonic):
        self.name = name
        self.total_jobs = len(weights)
        self.total_weight = float(sum(weights)) or 1.0
        self.workers = max(1, workers)
        self.show = show
        self.interval = interval
        self.stream = stream
        self.now = now
        self.counts = {DONE: 0, FAILED: 0, SKIPPED: 0}
        self.done_weight = 0.0
        self.started = now()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rich = None
        if show:
            from rich.console import Console

            console = Console(stderr=True) if stream is None else Console(file=stream)
            self.terminal = console.is_terminal if terminal is None else terminal
            if self.terminal:
                self._rich = self._make_bar(Console(stderr=True, force_terminal=True) if stream is None
                                            else Console(file=stream, force_terminal=True))
        else:
            self.terminal = False

    # figures -------------------------------------------------------------------------------------
    @property
    def finished_jobs(self) -> int:
        return sum(self.counts.values())

    def eta(self) -> float | None:
        """Seconds left: remaining estimated work at the pace measured so far (or the bare estimate)."""
        remaining = max(0.0, self.total_weight - self.done_weight)
        if self.finished_jobs >= self.total_jobs:
            return 0.0
        if self.done_weight > 0:
            return remaining * (self.now() - self.started) / self.done_weight
        return remaining / self.workers if self.total_weight > 1.0 else None

    def status(self) -> str:
        left = self.total_jobs - self.finished_jobs
        return (f"done {self.counts[DONE]}  failed {self.counts[FAILED]}  skipped {self.counts[SKIPPED]}  "
                f"left {left}")

    def line(self) -> str:
        """The plain progress line."""
        share = 100.0 * min(1.0, self.done_weight / self.total_weight)
        return (f"progress: {self.name}: {self.finished_jobs}/{self.total_jobs} jobs ({share:.1f} % of the "
                f"estimated work); {self.status()}; elapsed {_clock(self.now() - self.started)}, "
                f"ETA {_clock(self.eta())}")

    # display -------------------------------------------------------------------------------------
    def _make_bar(self, console):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        return Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        TextColumn("{task.fields[jobs]}"), TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                        TextColumn("ETA {task.fields[eta]}"), console=console)

    def _refresh(self) -> None:
        if self._rich is not None:
            self._rich.update(self._task, completed=self.done_weight,
                              jobs=f"{self.finished_jobs}/{self.total_jobs}", status=self.status(),
                              eta=_clock(self.eta()))

    def print(self, text: str) -> None:
        """A line above the bar (terminal) or in the log (otherwise)."""
        with self._lock:
            if self._rich is not None:
                self._rich.console.print(text, markup=False, highlight=False, soft_wrap=True)
            else:
                stream = self.stream or sys.stderr
                stream.write(text + "\n")
                stream.flush()

    def advance(self, weight: float, status: str) -> None:
        """One job finished with ``status``; ``weight``: its estimated seconds."""
        with self._lock:
            self.counts[status] = self.counts.get(status, 0) + 1
            self.done_weight += float(weight)
            self._refresh()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self.print(self.line())

    def __enter__(self) -> RunProgress:
        if self._rich is not None:
            self._rich.__enter__()
            self._task = self._rich.add_task(self.name, total=self.total_weight, jobs="", status="", eta="")
            self._refresh()
        elif self.show:
            self.print(self.line())
            self._thread = threading.Thread(target=self._tick, name="weightstep-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self.print(self.line())
        if self._rich is not None:
            self._rich.__exit__(*exc)


__all__ = ["PLAIN_INTERVAL_S", "RunProgress"]
