"""A progress bar with an ETA for the long commands (render, export, eval), on stderr, only on a terminal.

`posepipe run` has its own display (`pipeline.run.progress`). Here the work reports `(done, total)`
through a plain callable, so `pipeline.downstream` knows nothing of terminals; on a terminal that
draws a bar (`done/total`, elapsed, time remaining) that disappears when the work ends, and in a
log, a pipe, CI or with `--quiet` it draws nothing at all (no `\\r` redraws in a log file).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from posepipe.pipeline.run.terminal import console, plain

Report = Callable[[int, int], None]   # (steps done, steps in all)


@contextlib.contextmanager
def progress_bar(description: str, *, quiet: bool = False) -> Iterator[Report]:
    """Yields `report(done, total)`; the bar appears at the first report (when the total is known)."""
    stderr = console(stderr=True)
    if quiet or not stderr.is_terminal:
        yield lambda done, total: None
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("eta", markup=False), TimeRemainingColumn(),
                   console=stderr, transient=True)
    task: list[int] = []

    def report(done: int, total: int) -> None:
        if not task:
            bar.start()
            task.append(bar.add_task(plain(description), total=max(total, 1)))
        bar.update(task[0], completed=done, total=max(total, 1))

    try:
        yield report
    finally:
        if task:
            bar.stop()


__all__ = ["Report", "progress_bar"]
