"""Rich progress bars on stderr, so ``--json`` output on stdout stays one clean object."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

_console = Console(stderr=True)


def enabled() -> bool:
    """Bars are shown unless WEIGHTSTEP_PROGRESS=0 (tests and CI set it)."""
    return os.environ.get("WEIGHTSTEP_PROGRESS", "1") != "0"


def make_progress(transient: bool = True) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=_console, transient=transient, disable=not enabled())


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr."""
    with make_progress() as progress:
        task = progress.add_task(description, total=total, status="")
        for item in items:
            yield item
            progress.advance(task)
