"""Progress display for a job: a live bar on a terminal, quiet log lines elsewhere.

Every message passes whole through `pipeline.run.terminal.styled` (one line, hidden characters
escaped, no markup, URIs redacted): video ids and error texts come from the outside world.
"""
from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from posepipe.pipeline.run.terminal import console as plain_console, styled


class ProgressReporter:
    """Callable `(event, data)` for `run_job`: videos and frames done, frames/s and ETA."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or plain_console()
        self.live = self.console.is_terminal
        self.frames_total = 0
        self.frames_done = 0
        self.started = time.perf_counter()
        self.progress: Progress | None = None

    def __enter__(self) -> "ProgressReporter":
        if self.live:
            self.progress = Progress(
                TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}", markup=False), TimeElapsedColumn(), TimeRemainingColumn(),
                console=self.console, transient=False,
            )
            self.progress.start()
            self.videos_task = self.progress.add_task("videos", total=None, rate="")
            self.frames_task = self.progress.add_task("frames", total=None, rate="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event == "start":
            self._log(f"{data['videos']} videos found, {data['todo']} to process, {data['skipped']} already complete")
            for name, reason in data.get("skipped_inputs", []):
                self._log(f"skipped {name}: {reason}", "yellow")
            if self.progress:
                self.progress.update(self.videos_task, total=data["todo"])
        elif event == "workers":
            self._log(f"{data['workers']} model workers ({data['resources']}), {data.get('finishers', 0)} finishers")
        elif event == "video_started":
            self.frames_total += data["frames"]
            if self.progress:
                self.progress.update(self.frames_task, total=self.frames_total)
        elif event == "frames":
            self.frames_done += data["frames"]
            rate = self.frames_done / max(time.perf_counter() - self.started, 1e-9)
            if self.progress:
                self.progress.update(self.frames_task, completed=self.frames_done, rate=f"{rate:.1f} frames/s")
        elif event in ("video_done", "video_failed"):
            if self.progress:
                self.progress.advance(self.videos_task)
            if event == "video_failed":
                self._log(f"failed {data['video_id']}: {data['error']}", "red")
            elif not self.live:
                self._log(f"done {data['video_id']} ({data['rows']} rows)")
        elif event == "retry":
            where = f"frames from {data['start']}" if data.get("start") is not None else "after a failure that passes"
            self._log(f"retrying {data['video_id']} {where} (attempt {data['attempt'] + 1})")

    def _log(self, text: str, style: str = "") -> None:
        """One message on one line, shown as plain text (`styled` escapes and parses no markup), in one style."""
        target = self.progress.console if self.progress is not None else self.console
        target.print(styled(text, style), markup=False, highlight=False, emoji=False, soft_wrap=True)


__all__ = ["ProgressReporter"]
