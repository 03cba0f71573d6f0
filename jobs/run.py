"""`posepipe run` and `posepipe demo`: options -> JobOptions -> pipeline.run.runner, with the summary.

Exit codes of `posepipe run` (`RUN_EXIT_CODES`, listed by `--help`): 0 every video succeeded (or was
already complete); 3 some videos failed (see OUTPUT/videos and the summary); 4 model weights could
not be had or loaded; 2 a bad option, input or output (nothing was processed); 5 the output storage
failed mid-job (what was committed is kept; rerun to resume); 6 the local Ray died under the job;
130 stopped by Ctrl-C (SIGINT) and 143 stopped by SIGTERM (128 + the signal's number, as a shell
reports a process the signal killed): a clean stop, what was committed is kept, rerun to resume; 1
an unexpected error.

Everything printed goes through `pipeline.run.terminal` (one line per message, hidden characters
escaped); the commands printed for pasting (rerun, query) are quoted by `terminal.shell_quote`.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import click

from posepipe.jobs.conventions import Command, quiet_option
from posepipe.pipeline.io.redaction import redact
from posepipe.pipeline.options import DEFAULT_MODELS, JobOptions, OptionError
from posepipe.pipeline.run.terminal import configure_logging, plain, say, say_json, shell_join, shell_quote

if TYPE_CHECKING:  # the runner imports torch and Ray: loaded when a job runs, not for --help
    from posepipe.pipeline.run.runner import JobSummary

# `posepipe run`'s exit codes, as --help lists them (pipeline.run.runner's EXIT_* constants; a test
# keeps the two the same).
RUN_EXIT_CODES = (
    (0, "every video succeeded (or was already complete)"),
    (3, "some videos failed: each has a failed row with its reason (the rest were processed)"),
    (4, "model weights could not be had or loaded (nothing was processed)"),
    (2, "a bad option, INPUT or OUTPUT (refused before any work)"),
    (5, "the output storage failed mid-job: what was committed is kept; rerun to resume"),
    (6, "the local Ray died under the job: what was committed is kept; rerun to resume"),
    (130, "stopped by Ctrl-C; 143: stopped by SIGTERM (a clean stop: committed videos kept, rerun to resume)"),
    (1, "an unexpected error"),
)

RANDOM_BANNER = (
    "WARNING: --random-weights: models use RANDOM weights. This is a PLUMBING RUN: every box, keypoint, "
    "SMPL value and DensePose chart in the output is meaningless. The output's metadata records it."
)


def parse_weights(values: tuple[str, ...]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for value in values:
        name, sep, uri = value.partition("=")
        if not sep or not name or not uri:
            raise click.BadParameter(f"{value!r}: write NAME=URI, e.g. yolox_s=/weights/yolox_s.pth", param_hint="--weights")
        parsed[name.strip()] = uri.strip()
    return parsed


@click.command("run", cls=Command, renamed={"--json-summary": "--json"}, exit_codes=RUN_EXIT_CODES)
@click.argument("input_uri", metavar="INPUT")
@click.option("--output", "-o", required=True, help="Folder or s3:// prefix for the Parquet tables.")
@click.option("--address", default=None, help="Ray cluster to join (e.g. auto, ray://HEAD:10001). Default: a local Ray started on demand.")
@click.option("--num-workers", type=int, default=None, help="Model workers. Default: two per GPU, else one per 2 CPUs.")
@click.option("--shard-frames", type=int, default=256, help="Frames per shard (unit of parallel work).")
@click.option("--device", default="auto", help="auto | cpu | cuda[:N]")
@click.option("--half/--no-half", default=None, show_default=False,
              help="Reduced-precision autocast: fp16 on CUDA (default on), bf16 on a CPU (default off; README, Precision).")
@click.option("--device-path/--reference-path", "device_path", default=None, show_default=False,
              help="Per-frame pre/post-processing (letterbox, NMS, crops, decoding) on the models' device, or "
                   "on the host as the reference path does. Default: device on a GPU, reference on a CPU.")
@click.option("--max-persons", type=int, default=10,
              help="At most K rows per frame, chosen after tracking: tracked people first, best box score first.")
@click.option("--det-conf", type=float, default=0.3,
              help="Score (obj x cls) a box needs to be written without a track; the tracker sees boxes down to 0.1.")
@click.option("--det-nms", type=float, default=0.7, help="Detector NMS IoU threshold (ByteTrack's 0.7).")
@click.option("--no-flip-test", is_flag=True, help="Skip the 2D model's flip test (faster, slightly less accurate).")
@click.option("--frames-per-batch", type=int, default=8, help="Frames batched through the detector.")
@click.option("--decode-threads", type=int, default=None, help="FFmpeg decode threads per worker. Default: the worker's CPUs.")
@click.option("--detector", default=DEFAULT_MODELS["detector"],
              help="Detector weights name (not used with a detector-free --pose-model).")
@click.option("--pose-model", default=DEFAULT_MODELS["pose"],
              help="2D keypoint weights name: any pose model of `posepipe weights list` (HRNet, RTMPose, SimpleBaseline, "
                   "RLE, Hourglass, ViTPose, ...; the detector-free AE, RTMO and DEKR models find the people themselves, "
                   "so --detector is then ignored).")
@click.option("--lifter", default=DEFAULT_MODELS["lifter"],
              help="2D-to-3D lifter weights name: any lifter of `posepipe weights list` (VideoPose3D, SimpleBaseline3D, "
                   "MotionBERT, ...).")
@click.option("--weights", "weights", multiple=True, metavar="NAME=URI", help="Checkpoint for a model (repeatable): path, file://, http(s):// or s3://.")
@click.option("--random-weights", is_flag=True, help="Random weights for a plumbing check only (outputs are meaningless).")
@click.option("--refine", type=click.Choice(["smplify"]), default=None,
              help="Refine HMR's SMPL of every row: smplify fits it to the row's 2D keypoints (SPIN's SMPLify), "
                   "into the smplify_* columns; HMR's stay. Needs --smpl-model and --smpl-prior.")
@click.option("--smpl-model", envvar="POSEPIPE_SMPL_MODEL", default=None, metavar="PATH",
              help="SMPL's neutral model file (.pkl), licensed, from SMPL's site ($POSEPIPE_SMPL_MODEL). "
                   "Only its sha256 is recorded.")
@click.option("--smpl-prior", envvar="POSEPIPE_SMPL_PRIOR", default=None, metavar="PATH",
              help="SMPLify's GMM pose prior gmm_08.pkl, licensed, from SMPLify's site ($POSEPIPE_SMPL_PRIOR). "
                   "Only its sha256 is recorded.")
@click.option("--smplify-option", "smplify_options", multiple=True, metavar="NAME=VALUE",
              help="A SMPLify setting other than SPIN's (repeatable): iterations (100 per stage), step_size (0.01), "
                   "sigma (100), pose_prior_weight (4.78), angle_prior_weight (15.2), shape_prior_weight (5), "
                   "depth_loss_weight (100), focal_length (5000).")
@click.option("--densepose", is_flag=True, help="DensePose R-CNN's body-surface chart (I, U, V per pixel) of every "
              "row's box into densepose/ beside poses/ (docs/densepose.md). Off by default: it costs about a "
              "frame's ResNet-50 FPN at 800 px plus 14 GMACs a person. Needs --densepose-weights.")
@click.option("--densepose-weights", envvar="POSEPIPE_DENSEPOSE_WEIGHTS", default=None, metavar="PATH",
              help="detectron2's densepose_rcnn_R_50_FPN_s1x model_final_162be9.pkl, downloaded from "
                   "dl.fbaipublicfiles.com ($POSEPIPE_DENSEPOSE_WEIGHTS). Only its sha256 is recorded.")
@click.option("--force", is_flag=True, help="Reprocess videos that are already complete.")
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as JSON on stdout (was --json-summary).")
@click.option("--explain-skip", is_flag=True, help="Say for every video why it was skipped or (re)done.")
@quiet_option
@click.option("-v", "--verbose", is_flag=True, help="Log progress details, and show Ray's worker output.")
def run_command(input_uri: str, output: str, address: str | None, num_workers: int | None, shard_frames: int,
                device: str, half: bool | None, device_path: bool | None, max_persons: int, det_conf: float, det_nms: float, no_flip_test: bool,
                frames_per_batch: int, decode_threads: int | None, detector: str, pose_model: str, lifter: str, weights: tuple[str, ...], random_weights: bool,
                refine: str | None, smpl_model: str | None, smpl_prior: str | None, smplify_options: tuple[str, ...],
                densepose: bool, densepose_weights: str | None,
                force: bool, as_json: bool, explain_skip: bool, quiet: bool, verbose: bool) -> None:
    """Detect, track and pose every person in every video under INPUT; write Parquet under --output."""
    configure_logging(logging.INFO if verbose else logging.WARNING)
    options = options_from_run_params(click.get_current_context().params, address=address)
    summary = execute(options, json_summary=as_json, explain=explain_skip, quiet=quiet)
    sys.exit(summary.exit_code)


def options_from_run_params(params: Mapping[str, Any], *, address: str | None) -> JobOptions:
    """The JobOptions for `posepipe run`'s parsed params (shared with `posepipe submit`)."""
    return JobOptions(
        input=params["input_uri"], output=params["output"], address=address, num_workers=params["num_workers"],
        shard_frames=params["shard_frames"], device=params["device"], half=params["half"],
        device_path=params["device_path"],
        max_persons=params["max_persons"], det_conf=params["det_conf"], det_nms=params["det_nms"],
        flip_test=not params["no_flip_test"], frames_per_batch=params["frames_per_batch"],
        decode_threads=params["decode_threads"],
        models=dict(DEFAULT_MODELS, detector=params["detector"], pose=params["pose_model"],
                    lifter=params["lifter"]),
        weights=parse_weights(params["weights"]), random_weights=params["random_weights"], force=params["force"],
        refine=params["refine"], smpl_model=params["smpl_model"], smpl_prior=params["smpl_prior"],
        smplify=parse_smplify_options(params["smplify_options"]),
        densepose=params["densepose"], densepose_weights=params["densepose_weights"],
    )


def parse_smplify_options(values: tuple[str, ...]) -> dict[str, float]:
    """--smplify-option NAME=VALUE pairs; names and ranges are checked with the other options (JobOptions)."""
    parsed: dict[str, float] = {}
    for value in values:
        name, sep, number = value.partition("=")
        try:
            parsed[name.strip()] = int(number) if name.strip() == "iterations" else float(number)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise click.BadParameter(f"{value!r}: write NAME=NUMBER, e.g. iterations=50", param_hint="--smplify-option")
    return parsed


def execute(options: JobOptions, *, json_summary: bool = False, explain: bool = False, quiet: bool = False) -> JobSummary:
    """Validate, run with a progress display, print the summary; exits on usage/weights errors.

    SIGTERM stops the job as Ctrl-C does (`runner.stop_on_signals`): the workers are stopped, what
    was committed is kept, and it exits 128 + the signal's number with the command to rerun.
    `quiet`: no progress display and no summary lines; failures, warnings and errors still show."""
    from posepipe.pipeline.run.runner import exit_code_for_signal, ignore_stop_signals, stop_on_signals

    with stop_on_signals():
        try:
            summary = _execute(options, quiet=quiet)
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            ignore_stop_signals()  # the work is already stopped: the message is said whole
            say(f"posepipe: stopped by {signal.Signals(signum).name}; videos committed before this are kept.",
                f"Rerun the same command to resume: {rerun_command()}", err=True, fg="yellow")
            sys.exit(exit_code_for_signal(signum))
    print_summary(summary, options, json_summary=json_summary, explain=explain, quiet=quiet)
    return summary


def _quiet_reporter(event: str, data: dict[str, Any]) -> None:
    """`run_job`'s reporter under --quiet: nothing as it goes (the failures are said at the end)."""


def _execute(options: JobOptions, *, quiet: bool = False) -> JobSummary:
    import contextlib

    from posepipe.models import CATALOGUE
    from posepipe.pipeline.io.store import OutputError, StorageError
    from posepipe.pipeline.io.sources import InputError
    from posepipe.pipeline.run.progress import ProgressReporter
    from posepipe.pipeline.run.runner import (EXIT_RAY_DIED, EXIT_STORAGE, EXIT_USAGE, EXIT_WEIGHTS, RayDiedError,
                                              WeightsError, run_job)

    try:
        options.validate(CATALOGUE)
    except OptionError as exc:
        raise click.UsageError(plain(exc)) from None
    if options.random_weights:
        say(RANDOM_BANNER, err=True, fg="red", bold=True)
    try:
        with contextlib.nullcontext(_quiet_reporter) if quiet else ProgressReporter() as reporter:
            return run_job(options, reporter=reporter)
    except OptionError as exc:
        raise click.UsageError(plain(exc)) from None
    except (InputError, OutputError) as exc:
        say(f"error: {exc}", err=True, fg="red")
        sys.exit(EXIT_USAGE)
    except WeightsError as exc:
        say(f"error: {exc.lines[0]}", *exc.lines[1:], err=True, fg="red")
        sys.exit(EXIT_WEIGHTS)
    except StorageError as exc:
        say(f"error: the output storage failed, so the job stopped: {exc}", err=True, fg="red")
        say("Videos committed before this are kept. When the storage answers again, rerun the same "
            f"command to resume: {rerun_command()}", err=True)
        sys.exit(EXIT_STORAGE)
    except RayDiedError as exc:
        # One line: Ray's own account (raylet logs) is in its session log folder, not on the terminal.
        say(f"error: {exc}, so the job stopped; videos committed before this are kept. "
            f"Rerun the same command to resume: {rerun_command()}", err=True, fg="red")
        sys.exit(EXIT_RAY_DIED)


def rerun_command() -> str:
    """This process's command line, quoted for a shell (`terminal.shell_quote`: exact, one line)."""
    return shell_join(["posepipe", *sys.argv[1:]])


def sql_string(text: str) -> str:
    """`text` as an SQL string literal: quotes doubled (DuckDB reads no backslash escapes in '...')."""
    return "'" + text.replace("'", "''") + "'"


def duckdb_path(path: str) -> str:
    """`path` as DuckDB's `read_parquet` reads it literally. DuckDB expands `*`, `?` and `[...]` in
    every file name it is given, so an OUTPUT named `o[1]` would read `o1`'s files: each becomes a
    one-character class (`[*]`, `[?]`, `[[]`). DuckDB's patterns cannot hold a backslash, so a path
    with both is refused (ValueError)."""
    if not any(c in path for c in "*?["):
        return path
    if "\\" in path:
        raise ValueError("DuckDB cannot read a path holding both a backslash and a pattern character")
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def query_command(output: str) -> str:
    """The shell command that shows five committed rows of `output` with the DuckDB CLI, or, where
    DuckDB cannot name the path, the same with Python and pyarrow (which expands no patterns).

    It reads `_committed.parquet`, the commit of the last job that ended (this one): a plain glob of
    poses/ would also see the parts of a job that was killed or still runs (README, Reading only
    committed rows). SQL quoting first, then the shell's (`terminal.shell_quote`)."""
    base = output.rstrip("/") if "://" in output else os.path.abspath(output)
    try:
        prefix, manifest = duckdb_path(base + "/"), duckdb_path(base + "/_committed.parquet")
    except ValueError:
        script = ("import sys, pyarrow.parquet as pq; o = sys.argv[1]; "
                  "paths = [o + '/' + p for p in pq.read_table(o + '/_committed.parquet')['path'].to_pylist()]; "
                  "print(pq.read_table(paths).slice(0, 5).to_pandas())")
        return shell_join(["python3", "-c", script, base])
    sql = (f"SET VARIABLE parts = (SELECT list({sql_string(prefix)} || path) FROM read_parquet({sql_string(manifest)})); "
           "SELECT * FROM read_parquet(getvariable('parts')) LIMIT 5")
    return f"duckdb -c {shell_quote(sql)}"


def print_summary(summary: JobSummary, options: JobOptions, *, json_summary: bool, explain: bool = False,
                  quiet: bool = False) -> None:
    """The job's summary: JSON on stdout (`--json`), or lines on stderr, each through `terminal.say`
    (under `quiet`, only the failures)."""
    from collections import Counter

    data = {
        "videos": summary.videos, "ok": summary.ok, "failed": summary.failed, "skipped_complete": summary.skipped,
        "frames": summary.frames, "rows": summary.rows, "seconds": round(summary.seconds, 2),
        "frames_per_second": round(summary.frames_per_second, 2), "workers": summary.workers,
        "finishers": summary.finishers,
        "device_windows": summary.device_windows, "fallback_windows": dict(summary.fallback_windows),
        "plumbing_run_random_weights": summary.random_weights, "output": redact(options.output),
        "failures": [{"video_id": v, "error": e} for v, e in summary.failures],
        "skipped_inputs": [{"name": n, "reason": r} for n, r in summary.skipped_inputs],
        "decisions": dict(Counter(why for _, why in summary.decisions)),
    }
    if explain:
        data["explain"] = [{"video_id": v, "decision": why} for v, why in summary.decisions]
    if json_summary:
        say_json(data)
        return
    if quiet:
        say(*(f"failed: {video_id}: {error}" for video_id, error in summary.failures), err=True)
        return
    label = " (PLUMBING RUN: random weights)" if summary.random_weights else ""
    ignored = f", {len(summary.skipped_inputs)} input files skipped" if summary.skipped_inputs else ""
    lines = [
        f"posepipe: {summary.ok} ok, {summary.failed} failed, {summary.skipped} already complete of {summary.videos} videos{ignored}; "
        f"{summary.frames} frames, {summary.rows} person rows in {summary.seconds:.1f}s "
        f"({summary.frames_per_second:.1f} frames/s, {summary.workers} workers){label}"]
    if summary.fallback_windows:  # the device path gave some windows to the slower reference path
        why = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(summary.fallback_windows.items()))
        lines.append(f"  device path: {sum(summary.fallback_windows.values())} of {summary.device_windows} windows "
                     f"redone the reference way ({why})")
    lines += [f"  failed: {video_id}: {error}" for video_id, error in summary.failures]
    lines += [f"  skipped: {name}: {reason}" for name, reason in summary.skipped_inputs]
    if explain:
        lines += [f"  {video_id}: {why}" for video_id, why in summary.decisions]
    if summary.ok or summary.skipped:
        lines.append(f"  query: {query_command(options.output)}")
    say(*lines, err=True)


# The bundled sample: the checkout's samples/, which a wheel installs as posepipe/samples (package data,
# pyproject.toml), beside posepipe/jobs either way.
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "samples"


@click.command("demo", cls=Command, exit_codes=RUN_EXIT_CODES)
@click.option("--output", "-o", default="out/demo", help="Where to write the Parquet tables.")
@click.option("--input", "input_uri", default=None, help="Videos to process. Default: the bundled sample street clip.")
@click.option("--max-persons", type=int, default=3,
              help="At most K rows per frame, as `run --max-persons` (whose default is 10): 3 keeps the demo short on a CPU.")
@click.option("--no-flip-test", is_flag=True, help="Skip the 2D model's flip test, as `run --no-flip-test` (faster).")
@click.option("--random-weights", is_flag=True,
              help="Go straight to the plumbing run (random weights, meaningless outputs) without trying to fetch weights.")
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as JSON on stdout.")
@quiet_option
def demo_command(output: str, input_uri: str | None, max_persons: int, no_flip_test: bool, random_weights: bool,
                 as_json: bool, quiet: bool) -> None:
    """Run the main job on the bundled sample, with official weights when they can be had.

    Offline, where the official checkpoints cannot be downloaded, it says so and runs the same
    pipeline with --random-weights, labelled as a plumbing run. The sample is part of the package:
    the demo works from any folder, in a checkout or a pip install.
    """
    if random_weights:
        options = JobOptions(input=_demo_source(input_uri), output=output, max_persons=max_persons, random_weights=True,
                             flip_test=not no_flip_test, shard_frames=16)
        sys.exit(execute(options, json_summary=as_json, quiet=quiet).exit_code)
    from posepipe.models import get_weights
    from posepipe.models.download import WeightsUnavailable, fetch

    source = _demo_source(input_uri)
    missing = []
    for name in DEFAULT_MODELS.values():
        spec = get_weights(name)
        try:
            fetch(spec.url, sha256=spec.sha256, hash_prefix=spec.hash_prefix, filename=spec.filename, progress=not quiet)
        except WeightsUnavailable as exc:
            missing.append((name, str(exc).splitlines()[0]))
    random_weights = bool(missing)
    if missing:
        say("Official weights could not be fetched (no internet, or the files are not in the cache):",
            err=True, fg="yellow", bold=True)
        say(*(f"  {name}: {reason}" for name, reason in missing), err=True)
        say("Running the pipeline with --random-weights instead: a PLUMBING RUN that exercises every stage, "
            "with meaningless numbers. Put the checkpoints in the cache (`posepipe weights fetch --all` "
            "online) or pass --weights NAME=PATH to `posepipe run` for real poses.", err=True, fg="yellow")
    options = JobOptions(input=source, output=output, max_persons=max_persons, random_weights=random_weights,
                         flip_test=not no_flip_test, shard_frames=16)
    summary = execute(options, json_summary=as_json, quiet=quiet)
    if random_weights and not quiet:
        say("Demo finished as a PLUMBING RUN (random weights): the output's metadata says so.", err=True, fg="yellow")
    sys.exit(summary.exit_code)


def _demo_source(input_uri: str | None) -> str:
    if input_uri is not None:
        return input_uri
    if not SAMPLE_DIR.is_dir():
        raise click.UsageError(f"the bundled sample folder {SAMPLE_DIR} is missing (a broken install?); pass --input VIDEOS")
    return str(SAMPLE_DIR)
