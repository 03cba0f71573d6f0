"""`posepipe weights list | fetch | verify`: the catalogue's checkpoints, the cache, and what a file holds.

Printing is plain text: every line through `terminal.say` (file names and error texts from outside
are escaped, never read as markup).
Exit codes: 0 all good; 4 a checkpoint could not be had or loaded; 2 a bad NAME or option.
"""
from __future__ import annotations

import sys

import click

from posepipe.jobs.conventions import Group
from posepipe.pipeline.options import DEFAULT_MODELS
from posepipe.pipeline.run.terminal import say, say_json

EXIT_WEIGHTS = 4  # pipeline.run.runner.EXIT_WEIGHTS (`run` exits with it too; a test keeps them equal)
WEIGHTS_EXIT_CODES = ((0, "every checkpoint is good"), (4, "a checkpoint could not be had or loaded (the reason is printed)"),
                      (2, "an unknown NAME or a bad option"))


def _spec(name: str):  # -> models.Weights
    from posepipe.models import get_weights

    try:
        return get_weights(name)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="NAME") from None


@click.group("weights", cls=Group)
def weights_group() -> None:
    """List, fetch and verify the catalogue's official checkpoints."""


# What one unit of a record's `gmacs` is, per stage.
_COST_UNIT = {"detector": "image", "pose": "crop", "lifter": "frame", "mesh": "crop"}


def relative_cost(spec, catalogue) -> float | None:  # spec: models.Weights
    """`spec`'s multiply-accumulates per input over those of its stage's default model."""
    default = catalogue.get(DEFAULT_MODELS.get(spec.stage, ""))
    if spec.gmacs is None or default is None or not default.gmacs:
        return None
    return spec.gmacs / default.gmacs


def _cost(spec, catalogue) -> str:
    if spec.gmacs is None:
        return "cost: not measured"
    rel = relative_cost(spec, catalogue)
    from posepipe.models import DETECTOR_FREE

    unit = "frame" if spec.name in DETECTOR_FREE else _COST_UNIT.get(spec.stage, "input")
    versus = f" ({rel:.2g}x {DEFAULT_MODELS[spec.stage]}, the default {spec.stage} model)" if rel is not None else ""
    return f"cost: {spec.gmacs:.3g} GMACs per {unit}{versus}"


@weights_group.command("list", exit_codes=((0, "listed"),))
@click.option("--json", "as_json", is_flag=True, help="Print the catalogue as JSON.")
def weights_list(as_json: bool) -> None:
    """Every weight set posepipe knows, by stage: official URL, how its file is checked, licence,
    accuracy (as published for that file) and cost (multiply-accumulates, relative to the stage's default)."""
    from posepipe.models import CATALOGUE

    if as_json:
        rows = [dict(spec.describe(), relative_cost=relative_cost(spec, CATALOGUE)) for spec in CATALOGUE.values()]
        say_json(rows)
        return
    for spec in CATALOGUE.values():
        say(f"{spec.name:34s} {spec.stage:8s} {spec.family:16s} {spec.url}")
        notes = [f"hash: {spec.integrity}"]
        if spec.plain_http:
            notes.append("PLAIN HTTP (no TLS): nothing authenticates the download; compare the sha256 that "
                         f"`posepipe weights verify {spec.name}` prints with a copy you trust")
        notes.append(f"licence: {spec.license}")
        metric = ", ".join(f"{k}={v}" for k, v in spec.metrics.items()) or "none published for this file"
        say("    " + "; ".join(notes), f"    accuracy: {metric}; {_cost(spec, CATALOGUE)}")
        if spec.stage == "pose" and tuple(spec.keypoint_names) != tuple(CATALOGUE[DEFAULT_MODELS["pose"]].keypoint_names):
            say(f"    skeleton: {len(spec.keypoint_names)} joints, not COCO-17: from Python only for now "
                "(posepipe.models.load_model); a job refuses it, as its tables hold COCO-17")


@weights_group.command("fetch", exit_codes=WEIGHTS_EXIT_CODES)
@click.argument("names", nargs=-1)
@click.option("--all", "fetch_all", is_flag=True, help="Fetch the four models `posepipe run` uses by default.")
@click.option("--from", "source", default=None,
              help="Fill NAME's cache entry from this URI (a mirror) instead of the official URL (one NAME only).")
@click.option("-q", "--quiet", is_flag=True, help="No download progress; warnings, errors and the fetched files only.")
def weights_fetch(names: tuple[str, ...], fetch_all: bool, source: str | None, quiet: bool) -> None:
    """Download NAME's checkpoint into the cache ($POSEPIPE_CACHE), check its hash, and load it."""
    from posepipe.models.download import WeightsUnavailable, fetch, sha256_file
    from posepipe.models.verify import verify_weights

    if fetch_all:
        names = tuple(DEFAULT_MODELS.values())
    if not names:
        raise click.UsageError("name at least one weight set (see `posepipe weights list`) or pass --all")
    if source and len(names) != 1:
        raise click.UsageError("--from takes exactly one NAME")
    failed = False
    for name in names:
        spec = _spec(name)
        try:
            path = fetch(source or spec.url, sha256=spec.sha256, hash_prefix=spec.hash_prefix, filename=spec.filename,
                         progress=not quiet, require_source=bool(source))
        except WeightsUnavailable as exc:
            failed = True
            say(f"{name}: {exc}", err=True, fg="red")
            continue
        # A file that downloads is not yet a checkpoint: load it as `posepipe run` would (a text
        # file, an error page or another model's weights must not pass as fetched).
        result = verify_weights(name, path)
        if not result.ok:
            failed = True
            say(f"{name}: {path} is not a usable checkpoint: {result.problem}", err=True, fg="red")
            continue
        say(f"{name}: {path} (sha256 {sha256_file(path)})")  # the result: printed under --quiet too
    sys.exit(EXIT_WEIGHTS if failed else 0)


def _size(n: int) -> str:
    return f"{n} bytes" if n < 100_000 else f"{n / 1e6:.1f} MB"


def _print_verification(result) -> None:  # result: models.verify.Verification
    if not result.ok:
        say(f"{result.name}: FAILED", fg="red", bold=True)
        say(f"  {result.problem}")
    else:
        r = result.report
        say(f"{result.name}: OK", fg="green", bold=True)
        rows = [("file", f"{r.path} ({_size(r.size)})")]
        if result.origin:
            rows.append(("origin", result.origin))
        rows += [
            ("sha256", r.sha256),
            ("hash", result.integrity),
            ("container", r.container),
            ("layout", r.layout),
            ("tensors", f"{r.tensors} loaded strictly into {result.name}'s architecture; {r.renamed} renamed "
                        f"from the file's names"),
            ("dropped", ", ".join(r.dropped) if r.dropped else "none"),
            ("ignored", ", ".join(r.ignored) if r.ignored else "none"),
        ]
        for label, value in rows:
            say(f"  {label:10s} {value}")
    for message in dict.fromkeys(result.warnings):
        say(f"  {'warning':10s} {message}")


@weights_group.command("verify", exit_codes=WEIGHTS_EXIT_CODES)
@click.argument("names", nargs=-1)
@click.option("--weights", "weights", multiple=True, metavar="NAME=URI",
              help="Verify this file for NAME (repeatable): path, file://, http(s):// or s3://.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def weights_verify(names: tuple[str, ...], weights: tuple[str, ...], as_json: bool) -> None:
    """Load each checkpoint through the real loader and say what it holds.

    NAMEs without --weights are checked in the cache only (nothing is downloaded); with no NAME and
    no --weights, the four default models are. For each: the container and layout recognised, the
    keys renamed, dropped or ignored, the sha256 and the hash check, and a verdict. Exit code 4 when
    any checkpoint fails, with the reason.
    """
    from posepipe.jobs.run import parse_weights
    from posepipe.models.verify import verify_weights

    given = parse_weights(weights)
    wanted = list(dict.fromkeys([*names, *given])) or list(DEFAULT_MODELS.values())
    for name in wanted:
        _spec(name)  # unknown names are a usage error, before any work
    results = [verify_weights(name, given.get(name)) for name in wanted]
    if as_json:
        rows = []
        for res in results:
            row = {"name": res.name, "source": res.source, "ok": res.ok, "problem": res.problem,
                   "warnings": list(res.warnings), "origin": res.origin, "hash": res.integrity or None}
            if res.report is not None:
                rep = res.report
                row.update(path=str(rep.path), sha256=rep.sha256, bytes=rep.size, container=rep.container,
                           layout=rep.layout, tensors=rep.tensors, renamed=rep.renamed, dropped=list(rep.dropped),
                           ignored=list(rep.ignored))
            rows.append(row)
        say_json(rows)
    else:
        for res in results:
            _print_verification(res)
    sys.exit(0 if all(res.ok for res in results) else EXIT_WEIGHTS)


__all__ = ["weights_group"]
