"""The habits every `posepipe` command shares, kept in one place so a new command inherits them:

* **One spelling per idea**: `--output`/`-o` names what a command writes, `--json` asks for JSON on
  stdout. The spellings they replaced (`--out`, `run --json-summary`) still parse, with a one-line
  deprecation notice on stderr (`Command(renamed={...})`): scripts keep working and learn the new name.
* **`-q`/`--quiet`** (`quiet_option`): warnings, errors and the result only; no progress, no summary lines.
* **`--config FILE`** on every command (and on the group, or `$POSEPIPE_CONFIG`): defaults from a TOML
  file (`posepipe.jobs.config`), below `POSEPIPE_<COMMAND>_<OPTION>` environment variables.
* **`--help` says it all**: every default (the group sets show_default) and the exit codes
  (`exit_codes=...`, printed after the options).

Modules under jobs/ import only click and the light parts of posepipe at import time (everything
heavy inside the command), so `posepipe --help` and `posepipe CMD --help` start in well under a second.
"""
from __future__ import annotations

import textwrap
from typing import Any, Mapping, Sequence

import click

from posepipe.jobs.config import env_name, load_for_command
from posepipe.pipeline.run.terminal import say

CONFIG_HELP = ("TOML file of option defaults, a table per command ([run], [export.posec3d]); below the command "
               "line and POSEPIPE_<COMMAND>_<OPTION> variables. See `posepipe --help`.")
QUIET_HELP = "Print only warnings, errors and the result: no progress bar, no summary lines."


def exit_codes_epilog(codes: Sequence[tuple[int, str]], width: int = 76) -> str:
    """The 'Exit codes' block `--help` ends with, wrapped here (click keeps a `\\b` paragraph as written)."""
    lines = ["\b", "Exit codes:"]
    for code, meaning in codes:
        lines += textwrap.wrap(meaning, width, initial_indent=f"  {code:<4d} ", subsequent_indent=" " * 7)
    return "\n".join(lines)


def respell(args: Sequence[str], renamed: Mapping[str, str], command: str) -> list[str]:
    """`args` with each old spelling in `renamed` replaced by its new one (`--out x`, `--out=x`), and a
    deprecation notice on stderr for each spelling used. Words after `--` are values, left alone."""
    out: list[str] = []
    used: dict[str, str] = {}
    rest = False
    for arg in args:
        if not rest and arg == "--":
            rest = True
        elif not rest and arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if name in renamed:
                used[name] = renamed[name]
                arg = renamed[name] + eq + value
        out.append(arg)
    for old, new in used.items():
        say(f"posepipe {command}: {old} is deprecated and will be removed; write {new}", err=True, fg="yellow")
    return out


def config_option() -> click.Option:
    """`--config FILE` of one command: read before its other options (eager), so they default to it."""
    return click.Option(["--config"], type=click.Path(dir_okay=False), default=None, is_eager=True, expose_value=False,
                        allow_from_autoenv=False, callback=load_for_command, metavar="FILE", help=CONFIG_HELP)


class Command(click.Command):
    """A posepipe command: `--config`, deprecated spellings (`renamed`: old -> new), exit codes in --help."""

    def __init__(self, *args: Any, renamed: Mapping[str, str] | None = None,
                 exit_codes: Sequence[tuple[int, str]] = (), **kwargs: Any) -> None:
        if exit_codes:
            kwargs["epilog"] = "\n\n".join(filter(None, [kwargs.get("epilog"), exit_codes_epilog(exit_codes)]))
        super().__init__(*args, **kwargs)
        self.renamed = dict(renamed or {})
        self.params.append(config_option())

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if self.renamed:
            args = respell(args, self.renamed, " ".join(filter(None, [*_parents(ctx), ctx.info_name])))
        self._name_environment(ctx)
        return super().parse_args(ctx, args)

    def _name_environment(self, ctx: click.Context) -> None:
        """Each option's variable, `POSEPIPE_<COMMAND>_<OPTION>` after its long name (`--json` ->
        POSEPIPE_RUN_JSON), where click's own would use the Python name (POSEPIPE_RUN_AS_JSON)."""
        for param in self.params:
            if not isinstance(param, click.Option) or not param.allow_from_autoenv:
                continue
            if param.envvar is not None and not getattr(param, "posepipe_envvar", False):
                continue  # named by its declaration
            param.envvar = env_name(ctx.auto_envvar_prefix, param) if ctx.auto_envvar_prefix else None
            param.posepipe_envvar = True  # type: ignore[attr-defined]


class Group(click.Group):
    """A posepipe command group below the root (`export`, `weights`): its commands are `Command`s."""

    command_class = Command


def _parents(ctx: click.Context) -> list[str]:
    names = []
    parent = ctx.parent
    while parent is not None and parent.parent is not None:
        names.append(parent.info_name or "")
        parent = parent.parent
    return names[::-1]


def quiet_option(function: Any) -> Any:
    return click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)(function)


def output_option(*, required: bool, help: str, **kwargs: Any) -> Any:
    """`-o/--output` for what a command writes (its deprecated spelling `--out` is the Command's `renamed`)."""
    return click.option("--output", "-o", required=required, help=help, **kwargs)


# The exit codes the commands share, for their epilogs.
EXIT_OK = (0, "done")
EXIT_USAGE = (2, "a bad option, argument, config file or input (nothing was done), named in the message")
EXIT_UNEXPECTED = (1, "an unexpected error (a bug: the traceback says where)")

__all__ = ["Command", "EXIT_OK", "EXIT_UNEXPECTED", "EXIT_USAGE", "Group", "config_option", "exit_codes_epilog",
           "output_option", "quiet_option", "respell"]
