"""`posepipe` console script: the command group. Each command lives in a module of its own under
jobs/ and imports nothing from here, so the modules form no import circle.
"""
from __future__ import annotations

import sys
from typing import Any

import click

from posepipe.jobs.bench import bench_command
from posepipe.jobs.evaluate import eval_command
from posepipe.jobs.export import export_group
from posepipe.jobs.files import files_command
from posepipe.jobs.render import render_command
from posepipe.jobs.run import demo_command, run_command
from posepipe.jobs.submit import logs_command, status_command, submit_command
from posepipe.jobs.weights import weights_group
from posepipe.pipeline.run.terminal import configure_logging, excepthook, plain_click_error


class PlainGroup(click.Group):
    """The command group, with everything click prints about a command line shown through
    `terminal.plain`: click quotes the values and names it was given in its errors ("Invalid value
    for '--num-workers': ..."), and our commands' errors quote names from outside."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        configure_logging()  # every command's log records and warnings as plain lines on stderr
        sys.excepthook = excepthook  # an unexpected error's traceback too
        return super().main(*args, **kwargs)

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.ClickException as exc:
            raise plain_click_error(exc)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            raise plain_click_error(exc)


@click.group(cls=PlainGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="posepipe")
def main() -> None:
    """posepipe: videos in a folder or bucket -> per-frame, per-person 2D/3D poses and SMPL in Parquet."""


for _command in (run_command, demo_command, weights_group, export_group, files_command, render_command, eval_command,
                 bench_command, submit_command, status_command, logs_command):
    main.add_command(_command)
