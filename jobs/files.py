"""`posepipe files`: the committed poses parts of an OUTPUT, for readers that cannot honour the commit."""
from __future__ import annotations

import json
import sys

import click

from posepipe.pipeline.io.redaction import has_secrets, redact
from posepipe.pipeline.io.store import OutputError, StorageError, Store
from posepipe.pipeline.run.terminal import plain


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@click.command("files")
@click.argument("output")
@click.option("--format", "fmt", type=click.Choice(["lines", "duckdb", "json"]), default="lines", show_default=True,
              help="lines: one path per line; duckdb: a read_parquet([...]) query; json: a list of paths.")
def files_command(output: str, fmt: str) -> None:
    """Print the poses parts OUTPUT's videos rows commit, and no other.

    A plain glob (OUTPUT/poses/**/*.parquet) also sees the parts of a video being written, of a
    finish that crashed, or of an attempt a rerun replaced, until the job that writes them ends.
    These paths are exactly the committed rows at the moment this runs:

        duckdb -c "$(posepipe files OUT --format duckdb)"
        pl.read_parquet(json.loads(subprocess.check_output(["posepipe", "files", OUT, "--format", "json"])))

    Exit codes: 0 ok, 2 OUTPUT is not usable, 5 the store failed (outage, access).
    """
    if has_secrets(output):
        raise click.BadParameter(plain(f"{redact(output)} was given with credentials or a query string; give them "
                                       "through the environment (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...)"),
                                 param_hint="OUTPUT")
    try:
        store = Store(output)
        if store.local and not store.exists(""):
            raise click.BadParameter(plain(f"{output} does not exist; pass the --output of a posepipe run"),
                                     param_hint="OUTPUT")
        parts = store.committed_parts()
    except OutputError as exc:
        raise click.BadParameter(plain(exc), param_hint="OUTPUT") from None
    except StorageError as exc:
        click.echo(f"Error: {plain(exc)}", err=True)
        sys.exit(5)
    paths = [store.where(path) for _, path in parts]
    if fmt == "json":
        click.echo(json.dumps(paths))
    elif fmt == "duckdb":
        if not paths:  # read_parquet([]) is an error in DuckDB; an empty result keeps scripts simple
            click.echo("SELECT NULL AS video_id WHERE false;")
        else:
            click.echo("SELECT * FROM read_parquet([" + ",\n  ".join(_sql_string(p) for p in paths) + "]);")
    else:
        for path in paths:
            click.echo(path)
