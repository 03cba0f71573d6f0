"""`posepipe files`: the committed poses parts of an OUTPUT, for readers that cannot honour the commit."""
from __future__ import annotations

import json
import sys

import click

from posepipe.jobs.conventions import Command
from posepipe.pipeline.run.terminal import plain, say

FILES_EXIT_CODES = ((0, "listed (an OUTPUT with no committed part lists nothing)"),
                    (2, "OUTPUT is not a posepipe OUTPUT (missing, a file, a folder no run wrote)"),
                    (5, "the store failed (an outage, access refused)"))


def _sql_string(text: str) -> str:
    """`text` as a SQL string expression that reads back exactly and that `plain` leaves as it is:
    a quoted literal, with every character `plain` would escape (a newline, ESC, a bidi override)
    spliced in as ``chr(N)``."""
    pieces: list[str] = []
    literal = ""
    for ch in text:
        if plain(ch) == ch:
            literal += ch
            continue
        if literal:
            pieces.append("'" + literal.replace("'", "''") + "'")
            literal = ""
        pieces.append(f"chr({ord(ch)})")
    if literal or not pieces:
        pieces.append("'" + literal.replace("'", "''") + "'")
    return pieces[0] if len(pieces) == 1 else "(" + " || ".join(pieces) + ")"


@click.command("files", cls=Command, exit_codes=FILES_EXIT_CODES)
@click.argument("output")
@click.option("--format", "fmt", type=click.Choice(["lines", "duckdb", "json"]), default="lines",
              help="lines: one path per line; duckdb: a read_parquet([...]) query (json: write --json).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of the paths (was --format json).")
def files_command(output: str, fmt: str, as_json: bool) -> None:
    """Print the poses parts OUTPUT's videos rows commit, and no other.

    A plain glob (OUTPUT/poses/**/*.parquet) also sees the parts of a video being written, of a
    finish that crashed, or of an attempt a rerun replaced, until the job that writes them ends.
    These paths are exactly the committed rows at the moment this runs:

        duckdb -c "$(posepipe files OUT --format duckdb)"
        pl.read_parquet(json.loads(subprocess.check_output(["posepipe", "files", OUT, "--json"])))
    """
    from posepipe.pipeline.io.readback import NotAnOutputError, ReadbackError, open_store
    from posepipe.pipeline.io.store import StorageError

    if fmt == "json":  # the old spelling of --json
        say("posepipe files: --format json is deprecated and will be removed; write --json", err=True, fg="yellow")
        as_json = True
    elif as_json and fmt != "lines":
        raise click.UsageError(f"--json prints JSON; drop --format {fmt} or --json")
    try:
        store = open_store(output)  # exit 2 for what is not an OUTPUT: an empty answer would read as "no parts"
        parts = store.committed_parts()
    except NotAnOutputError as exc:
        raise click.BadParameter(plain(exc), param_hint="OUTPUT") from None
    except (ReadbackError, StorageError) as exc:
        click.echo(plain(f"Error: {exc}"), err=True)
        sys.exit(5)
    paths = [store.where(path) for _, path in parts]
    if as_json:  # exact: JSON escapes every control and non-ASCII character itself
        click.echo(json.dumps(paths, ensure_ascii=True))
    elif fmt == "duckdb":
        if not paths:  # read_parquet([]) is an error in DuckDB; an empty result keeps scripts simple
            click.echo(plain("SELECT NULL AS video_id WHERE false;"))
        else:
            strings = [_sql_string(p) for p in paths]
            lines = [f"  {s}," for s in strings[:-1]] + [f"  {strings[-1]}"]
            for line in ["SELECT * FROM read_parquet([", *lines, "]);"]:
                click.echo(plain(line))
    else:  # one per line, as shown (a name with a hidden character shows it escaped: use --format json)
        for path in paths:
            click.echo(plain(path))
