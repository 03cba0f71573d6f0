"""posepipe's config file: TOML, one table per command, read into click's `default_map`.

    # posepipe.toml
    [run]
    max-persons = 3
    device = "cuda"
    weights = ["yolox_s=/weights/yolox_s.pth"]

    [export.posec3d]
    max-persons = 2

Keys are the options' long names without the dashes (`max-persons`, `json`, `3d`, `half = false` for
`--no-half`; `max_persons` works too), values what the command line would take (a list for a
repeatable option, true/false for a flag). It is read by `--config FILE`,
which every command and the `posepipe` group itself take, or from `$POSEPIPE_CONFIG`.

Precedence is click's: the command line, then a `POSEPIPE_<COMMAND>_<OPTION>` environment variable
(`POSEPIPE_RUN_MAX_PERSONS=3`, `POSEPIPE_EXPORT_POSEC3D_MAX_PERSONS=2`), then the config file, then
the built-in default `--help` shows. The variable's name is the option's long name too
(`--json` -> `POSEPIPE_RUN_JSON`, `--3d` -> `POSEPIPE_RENDER_3D`; `posepipe.jobs.conventions` sets them). A table or key that names no command or option is refused
(exit 2) with the names it could be: a typo must not leave a setting silently unapplied.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import click

from posepipe.pipeline.run.terminal import plain

ENV_CONFIG = "POSEPIPE_CONFIG"
ENV_PREFIX = "POSEPIPE"
# Options a file cannot set: what reads the file, and what only makes sense typed.
NOT_CONFIGURABLE = frozenset({"config", "help", "version"})


def read_toml(path: str | Path, option: str = "--config") -> dict[str, Any]:
    """The TOML file at `path` as a dict; a `click.BadParameter` naming the file and the problem."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI (a dependency there)
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise click.BadParameter(plain(f"cannot read {path}: {exc.strerror or exc}"), param_hint=f"'{option}'") from None
    except UnicodeDecodeError:
        raise click.BadParameter(plain(f"{path} is not UTF-8 text; a TOML file is"), param_hint=f"'{option}'") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(plain(f"{path} is not valid TOML: {exc}"), param_hint=f"'{option}'") from None


def option_key(param: click.Parameter) -> str:
    """An option's name in a config file and in its environment variable: its (first) long flag without
    the dashes (`--max-persons` -> max-persons, `--json` -> json, `--3d` -> 3d, `--half/--no-half` -> half),
    whatever the Python parameter behind it is called."""
    for opt in param.opts:
        if opt.startswith("--"):
            return opt[2:]
    return (param.name or "").replace("_", "-")


def env_name(prefix: str, param: click.Parameter) -> str:
    """`POSEPIPE_<COMMAND>_<OPTION>`: the option's long name, upper case, dashes as underscores."""
    return f"{prefix}_{option_key(param).upper().replace('-', '_')}"


def _options(command: click.Command) -> dict[str, click.Parameter]:
    """The options a file may set, by their config key."""
    return {option_key(p): p for p in command.params
            if isinstance(p, click.Option) and p.name and p.name not in NOT_CONFIGURABLE and p.expose_value}


def defaults_for(command: click.Command, table: Mapping[str, Any], where: str, path: str | Path) -> dict[str, Any]:
    """`table` (one command's part of the file) as that command's default_map, every key checked:
    a subcommand's table for a group, an option's value for a command."""
    if not isinstance(table, Mapping):
        raise _error(path, f"[{where}] must be a table of options, not {type(table).__name__}")
    if isinstance(command, click.Group):
        out: dict[str, Any] = {}
        for name, sub_table in table.items():
            sub = command.commands.get(name)
            if sub is None:
                raise _error(path, f"[{where}.{name}]: `posepipe {where.replace('.', ' ')}` has no command {name!r}; "
                                   f"its commands: {', '.join(sorted(command.commands))}")
            out[name] = defaults_for(sub, sub_table, f"{where}.{name}", path)
        return out
    options = _options(command)
    out = {}
    for key, value in table.items():
        param = options.get(key.replace("_", "-"))
        if param is None:
            known = ", ".join(sorted(options))
            raise _error(path, f"[{where}] {key}: `posepipe {where.replace('.', ' ')}` has no option --{key.replace('_', '-')}; "
                               f"its options: {known}")
        if isinstance(value, Mapping):
            raise _error(path, f"[{where}] {key}: give a value, not a table")
        if getattr(param, "multiple", False) and not isinstance(value, list):
            value = [value]
        out[param.name] = value   # click's default_map is keyed by the parameter's Python name
    return out


def group_defaults(root: click.Group, data: Mapping[str, Any], path: str | Path) -> dict[str, Any]:
    """The whole file as the root group's default_map (a table per command, `[export.posec3d]` nested)."""
    out: dict[str, Any] = {}
    for name, table in data.items():
        command = root.commands.get(name)
        if command is None:
            raise _error(path, f"[{name}]: posepipe has no command {name!r}; its commands: {', '.join(sorted(root.commands))}")
        out[name] = defaults_for(command, table, name, path)
    return out


def command_path(ctx: click.Context) -> list[str]:
    """The names of the commands from the root group's down to `ctx`'s (`['export', 'posec3d']`)."""
    names = []
    at: click.Context | None = ctx
    while at is not None and not getattr(at.command, "posepipe_root", False):  # a command run on its own counts itself
        names.append(at.info_name or at.command.name or "")
        at = at.parent
    return names[::-1]


def merge(base: Mapping[str, Any] | None, top: Mapping[str, Any]) -> dict[str, Any]:
    """`top` over `base`, table by table."""
    out = dict(base or {})
    for key, value in top.items():
        out[key] = merge(out.get(key) if isinstance(out.get(key), Mapping) else None, value) if isinstance(value, Mapping) else value
    return out


def _error(path: str | Path, message: str) -> click.BadParameter:
    return click.BadParameter(plain(f"{path}: {message}"), param_hint="'--config'")


def load_for_group(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """`--config` of the `posepipe` group (and $POSEPIPE_CONFIG): the file's tables as the default_map
    every command's context inherits."""
    if value:
        root = ctx.command
        assert isinstance(root, click.Group)
        ctx.default_map = merge(ctx.default_map, group_defaults(root, read_toml(value), value))
    return value


def load_for_command(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """`--config` of one command: its table of the file (`[run]`, `[export.posec3d]`) over any defaults
    the group's --config or $POSEPIPE_CONFIG gave. The file may hold tables for other commands (one
    posepipe.toml for all), each checked; a command without a table of its own gets no defaults from it.
    The whole file's defaults are kept in `ctx.meta[CONFIG_META]` (`submit` reads the [run] table)."""
    if value:
        data: Any = read_toml(value)
        names = command_path(ctx)
        root = ctx.find_root().command
        if getattr(root, "posepipe_root", False):
            whole = group_defaults(root, data, value)
            ctx.meta[CONFIG_META] = merge(ctx.meta.get(CONFIG_META), whole)
            mine: Any = whole
            for name in names:
                mine = mine.get(name, {}) if isinstance(mine, Mapping) else {}
        else:  # a command run on its own (in tests): only its table
            for name in names:
                data = data.get(name, {}) if isinstance(data, Mapping) else {}
            mine = defaults_for(ctx.command, data, ".".join(names), value)
        ctx.default_map = merge(ctx.default_map, mine)
    return value


CONFIG_META = "posepipe.config"


__all__ = ["CONFIG_META", "ENV_CONFIG", "ENV_PREFIX", "command_path", "defaults_for", "env_name", "group_defaults", "load_for_command",
           "load_for_group", "merge", "option_key", "read_toml"]
