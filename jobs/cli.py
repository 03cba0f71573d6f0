"""`posepipe` console script: the command group. Each command lives in a module of its own under
jobs/ and imports nothing from here, so the modules form no import circle.

The command modules import only click and posepipe's light modules at import time (torch, Ray,
pyarrow, OpenCV and SciPy are imported inside the commands), so `posepipe --help` lists the commands
without loading a model library. tests/jobs/test_conventions.py holds that line.
"""
from __future__ import annotations

import sys
from typing import Any

import click

from posepipe.jobs.bench import bench_command
from posepipe.jobs.config import ENV_CONFIG, ENV_PREFIX, load_for_group
from posepipe.jobs.evaluate import eval_command
from posepipe.jobs.export import export_group
from posepipe.jobs.files import files_command
from posepipe.jobs.render import render_command
from posepipe.jobs.run import demo_command, run_command
from posepipe.jobs.submit import logs_command, status_command, submit_command
from posepipe.jobs.weights import weights_group
from posepipe.pipeline.run.terminal import configure_logging, excepthook, plain_click_error

HELP_EPILOG = f"""\b
Conventions (every command):
  -o, --output   what the command writes        --json         JSON on stdout
  -q, --quiet    warnings, errors, result only  -h, --help     options and their defaults
  Progress bars (run, render, export, eval) are drawn on stderr when it is a terminal.

\b
Defaults from a config file or the environment (highest first):
  the command line; {ENV_PREFIX}_<COMMAND>_<OPTION>=VALUE (e.g. {ENV_PREFIX}_RUN_MAX_PERSONS=3,
  {ENV_PREFIX}_EXPORT_POSEC3D_MAX_PERSONS=2); a TOML file given by --config FILE (here or after
  the command) or ${ENV_CONFIG}, one table per command:
      [run]
      max-persons = 3
      device = "cuda"
      [export.posec3d]
      max-persons = 2
  then the defaults `posepipe COMMAND --help` shows.

\b
Exit codes (each command's --help lists its own):
  0    done                         3    some videos failed (run)
  1    an unexpected error          4    model weights could not be had or loaded
  2    a bad option or input        5    the output storage failed (run, files)
  6    the local Ray died (run)     130  Ctrl-C, 143 SIGTERM (a clean stop)
"""


class PlainGroup(click.Group):
    """The command group, with everything click prints about a command line shown through
    `terminal.plain`: click quotes the values and names it was given in its errors ("Invalid value
    for '--num-workers': ..."), and our commands' errors quote names from outside."""

    posepipe_root = True  # where a config file's tables start (`posepipe.jobs.config.command_path`)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        configure_logging()  # every command's log records and warnings as plain lines on stderr (urllib3's retries muted)
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


@click.group(cls=PlainGroup, epilog=HELP_EPILOG,
             context_settings={"help_option_names": ["-h", "--help"], "show_default": True,
                               "auto_envvar_prefix": ENV_PREFIX})
@click.version_option(package_name="posepipe", allow_from_autoenv=False)
@click.option("--config", type=click.Path(dir_okay=False), default=None, envvar=ENV_CONFIG, is_eager=True,
              expose_value=False, callback=load_for_group, metavar="FILE",
              help=f"TOML file of option defaults for every command, a table per command (also ${ENV_CONFIG}).")
def main() -> None:
    """posepipe: videos in a folder or bucket -> per-frame, per-person 2D/3D poses and SMPL in Parquet."""


for _command in (run_command, demo_command, weights_group, export_group, files_command, render_command, eval_command,
                 bench_command, submit_command, status_command, logs_command):
    main.add_command(_command)
