"""Running a job: check everything that can be wrong with it as a whole, then hand the videos to do
to the scheduler (pipeline.run.scheduler) on the Ray the job runs on (pipeline.run.cluster).

In this order, before any work: the output (exit 2), the input listing (exit 2), every model's
weights, resolved, hashed and loaded here (exit 4). Then the committed rows decide what to (re)do
(`redo_reason`), and the job's end settles the output. `JobSummary` and the exit codes are
pipeline.run.summary's; `JobStopped` and the signals pipeline.run.signals'.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping

from posepipe.pipeline.io.destinations import DestinationError, refuse_inside_output
from posepipe.pipeline.io.store import Store
from posepipe.pipeline.io.redaction import redact, scrub
from posepipe.pipeline.io.sources import VideoRef, scan_inputs, scheme_of
from posepipe.pipeline.run.cluster import RayDiedError, forwarded_env, gpu_expected, kept_local_notice, start_ray
from posepipe.pipeline.options import JobOptions, OptionError
from posepipe.pipeline.run.scheduler import schedule
from posepipe.pipeline.run.signals import JobStopped, exit_code_for_signal, ignore_stop_signals, stop_on_signals
from posepipe.pipeline.run.summary import (EXIT_OK, EXIT_RAY_DIED, EXIT_SOME_FAILED, EXIT_STORAGE, EXIT_USAGE,
                                           EXIT_WEIGHTS, JobSummary)


class WeightsError(RuntimeError):
    """Official weights could not be had; the message names the model, what was tried and the fix.

    `lines`: the problem, then what to do, each one line (printed as separate lines)."""

    def __init__(self, *lines: str) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def load_weights(options: JobOptions) -> dict[str, str | None]:
    """Resolve, download, hash and *load* every model's checkpoint here, before any output is
    touched or any video read: a bad weights file then stops the job with its reason (exit 4)
    instead of failing every worker while finished results wait to be redone. name -> sha256."""
    from posepipe.models import load_model
    from posepipe.models.checkpoint import CheckpointError
    from posepipe.models.download import WeightsUnavailable

    hashes: dict[str, str | None] = {}
    for stage, name in options.models.items():
        if options.random_weights:
            hashes[name] = None
            continue
        uri = options.weights.get(name)
        tried = f"--weights {name}={redact(uri)}" if uri else "its official checkpoint"
        try:
            model = load_model(name, weights=uri, device="cpu", half=False)
        except WeightsUnavailable as exc:
            raise WeightsError(
                f"cannot get weights for the {stage} model {name!r} (tried {tried}): {scrub(str(exc))}",
                f"Supply the checkpoint file as its authors publish it with --weights {name}=PATH_OR_URI "
                f"(local path, file://, http(s):// or s3://), or place it in the cache. For a plumbing check "
                f"without real weights, pass --random-weights (outputs are meaningless)."
            ) from None
        except Exception as exc:  # CheckpointError, or anything a hostile file provokes in torch
            reason = str(exc) if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: {exc}"
            raise WeightsError(
                f"the {stage} model {name!r} cannot load {tried}: {scrub(reason)}",
                f"Nothing was processed and no output was changed. Check that the file is the checkpoint "
                f"of {name} as its authors publish it (`posepipe weights verify {name} --weights {name}=...`)."
            ) from None
        hashes[name] = model.weights_sha256
        del model
    return hashes


def provenance(options: JobOptions, hashes: dict[str, str | None]) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    from posepipe.models import get_weights

    try:
        pkg_version = version("posepipe")
    except PackageNotFoundError:
        pkg_version = "unknown"
    return {
        "posepipe_version": pkg_version,
        "plumbing_run_random_weights": options.random_weights,
        "models": {stage: {"name": name, "sha256": hashes.get(name), "url": get_weights(name).url,
                           "source": redact(options.weights.get(name, "")) or "official"}
                   for stage, name in options.models.items()},
        "options": options.public(),
    }


def run_job(options: JobOptions, *, reporter: Callable[[str, dict[str, Any]], None] | None = None) -> JobSummary:
    """Run `options` to completion; returns counts (exit_code tells the CLI what to return)."""
    import ray
    from posepipe.models import CATALOGUE

    options.validate(CATALOGUE)
    options = options.with_absolute_paths()
    if scheme_of(options.output) == "":  # a job's OUTPUT inside another OUTPUT's videos/ or poses/ breaks it
        try:
            refuse_inside_output(options.output, options.output, option="--output")
        except DestinationError as exc:
            raise OptionError("--output", str(exc)) from None
    report = reporter or (lambda event, data: None)
    started = time.perf_counter()
    # Everything that can be wrong with the job as a whole is found before any work, in this order:
    # the output (exit 2), the input (exit 2), the weights (exit 4, loaded here, not on the workers).
    output = Store(options.output)
    output.check_writable()
    listing = scan_inputs(options.input)
    videos = listing.videos
    hashes = load_weights(options)
    started_ray = False
    gpu = gpu_expected(options)
    if gpu is None:  # joining a cluster with --device auto: its GPUs decide the precision, so ask it
        started_ray = start_ray(options)
        gpu = ray.cluster_resources().get("GPU", 0) > 0
    try:
        fingerprint = options.fingerprint(hashes, precision=options.precision(gpu))
        metadata_dict = provenance(options, hashes)
        from posepipe.pipeline.io.schema import provenance_metadata

        metadata = provenance_metadata(metadata_dict)
        summary = JobSummary(videos=len(videos), random_weights=options.random_weights, skipped_inputs=listing.skipped)
        done = output.completed_videos(refresh_index=True)  # a store that cannot be read stops the job here
        committed = {vid: row for vid, row in done.items() if row.get("status") == "ok"}
        todo: list[VideoRef] = []
        for ref in videos:
            why = redo_reason(done.get(ref.video_id), fingerprint, ref.identity, force=options.force)
            summary.decisions.append((ref.video_id, why or "skipped: complete, same results-affecting settings and input"))
            if why is None:
                summary.skipped += 1
            else:
                todo.append(ref)
        report("start", {"videos": len(videos), "todo": len(todo), "skipped": summary.skipped,
                         "skipped_inputs": listing.skipped})
        if not todo:
            output.finish_job([])  # settles what a job that did not end left (no-op when nothing did)
            summary.seconds = time.perf_counter() - started
            return summary
        if not ray.is_initialized():
            started_ray = start_ray(options)
        schedule(ray, options, output, todo, fingerprint, metadata, summary, report, committed)
    finally:
        if started_ray:
            ray.shutdown()
    summary.seconds = time.perf_counter() - started
    return summary


def redo_reason(row: Mapping[str, Any] | None, fingerprint: str, identity: str | None, *, force: bool) -> str | None:
    """Why a video is (re)done this run, or None when its committed row makes it complete."""
    if force:
        return "redone: --force"
    if row is None:
        return "new: no videos/ row yet"
    if row.get("status") != "ok":
        return "redone: it failed before"
    if row.get("job_fingerprint") != fingerprint:
        return "redone: results-affecting options, weights, precision or code version changed"
    if identity is not None and row.get("input_identity") not in (None, identity):
        return f"redone: the input changed ({row.get('input_identity')} -> {identity})"
    return None


# The job's API in one place (jobs/ and notebooks import it from here; each name's owner is above).
__all__ = [
    "EXIT_OK", "EXIT_RAY_DIED", "EXIT_SOME_FAILED", "EXIT_STORAGE", "EXIT_USAGE", "EXIT_WEIGHTS", "JobStopped",
    "JobSummary", "RayDiedError", "WeightsError", "exit_code_for_signal", "forwarded_env", "ignore_stop_signals",
    "kept_local_notice",
    "load_weights", "provenance", "redo_reason", "run_job", "stop_on_signals",
]
