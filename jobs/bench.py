"""`posepipe bench`: parse the options, run `pipeline.measure.benchmark`, print its JSON report.

See pipeline/measure/benchmark.py for what each section measures.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from posepipe.jobs.conventions import Command
from posepipe.pipeline.options import JobOptions, OptionError
from posepipe.pipeline.run.terminal import say_json

BENCH_EXIT_CODES = ((0, "measured; the JSON report is on stdout (and in --output)"),
                    (2, "a bad option or VIDEO"), (1, "a section could not be measured, or model weights could not be had"))


def parse_workers(value: str | None) -> list[int]:
    if not value:
        return []
    try:
        counts = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise click.BadParameter(f"{value!r}: give worker counts separated by commas, e.g. 1,2", param_hint="--workers")
    return counts


@click.command("bench", cls=Command, renamed={"--out": "--output"}, exit_codes=BENCH_EXIT_CODES)
@click.argument("video", required=False)
@click.option("--frames", "n_frames", type=click.IntRange(min=1), default=64, help="Frames to time (N).")
@click.option("--max-persons", type=click.IntRange(min=1), default=3,
              help="People kept per frame (K): 3, the setting of the README's figures (`run`'s default is 10).")
@click.option("--device", default="auto", help="auto | cpu | cuda[:N]")
@click.option("--half/--no-half", default=None, show_default=False,
              help="Reduced-precision autocast: fp16 on CUDA (default on), bf16 on a CPU (default off).")
@click.option("--frames-per-batch", type=click.IntRange(min=1), default=None,
              help="Frames per model batch (default: the job's).")
@click.option("--pose-model", default=None, help="2D keypoint weights name to time (default: the job's).")
@click.option("--lifter", default=None, help="Lifter weights name to time (default: the job's).")
@click.option("--weights", "weights", multiple=True, metavar="NAME=URI", help="Checkpoint for a model (repeatable).")
@click.option("--random-weights", is_flag=True, help="Random weights: speed only, outputs meaningless.")
@click.option("--refine", type=click.Choice(["smplify"]), default=None,
              help="Time the job with SMPLify after HMR (run's --refine): a models.refine section, and every "
                   "end-to-end figure includes it. Needs --smpl-model and --smpl-prior.")
@click.option("--smpl-model", envvar="POSEPIPE_SMPL_MODEL", default=None, metavar="PATH",
              help="SMPL's neutral model file, for --refine ($POSEPIPE_SMPL_MODEL).")
@click.option("--smpl-prior", envvar="POSEPIPE_SMPL_PRIOR", default=None, metavar="PATH",
              help="SMPLify's GMM pose prior gmm_08.pkl, for --refine ($POSEPIPE_SMPL_PRIOR).")
@click.option("--densepose", is_flag=True,
              help="Time the job with DensePose charts (run's --densepose): a models.densepose section, and every "
                   "end-to-end figure includes it. Needs --densepose-weights, or --random-weights.")
@click.option("--densepose-weights", envvar="POSEPIPE_DENSEPOSE_WEIGHTS", default=None, metavar="PATH",
              help="detectron2's densepose_rcnn_R_50_FPN_s1x file, for --densepose ($POSEPIPE_DENSEPOSE_WEIGHTS).")
@click.option("--smplify-option", "smplify_options", multiple=True, metavar="NAME=VALUE",
              help="A SMPLify setting other than SPIN's, as for run (repeatable), e.g. iterations=50.")
@click.option("--shard-frames", type=click.IntRange(min=1), default=None,
              help="Frames per shard for the end-to-end runs. Default: N/4 (at least the detector batch), so 2 workers share work.")
@click.option("--workers", "workers", default=None, metavar="1,2", help="Also time run_job with each of these worker counts.")
@click.option("--memory", is_flag=True, help="Also measure a worker process's peak RSS on N and 10xN frames.")
@click.option("--no-ray", is_flag=True, help="Skip the run_job sections (no Ray startup).")
@click.option("--no-h264", is_flag=True, help="Skip decoding generated H.264 720p/1080p clips with 1, 2, 4 threads.")
@click.option("--output", "-o", "output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the JSON report to this file (was --out).")
def bench_command(video: str | None, n_frames: int, max_persons: int, device: str, half: bool | None,
                  frames_per_batch: int | None, pose_model: str | None, lifter: str | None, weights: tuple[str, ...],
                  random_weights: bool, refine: str | None, smpl_model: str | None, smpl_prior: str | None,
                  smplify_options: tuple[str, ...], densepose: bool, densepose_weights: str | None,
                  shard_frames: int | None, workers: str | None, memory: bool, no_ray: bool,
                  no_h264: bool, output: Path | None) -> None:
    """Time decoding, each model batched, the pipeline end to end, and a naive per-frame loop; print JSON.

    VIDEO defaults to ../shared/media/vtest.avi, or a generated clip where that is absent. The report
    is always JSON (a measurement is for comparing and keeping), on stdout and, with --output, in a file.
    """
    from posepipe.jobs.run import parse_smplify_options, parse_weights
    from posepipe.models import CATALOGUE
    from posepipe.pipeline.measure.benchmark import BenchError, default_shard_frames, run_benchmark
    from posepipe.pipeline.run.runner import WeightsError
    from posepipe.pipeline.io.video import VideoError

    worker_counts = parse_workers(workers)
    if worker_counts and no_ray:
        raise click.UsageError("--workers times run_job on Ray; drop --no-ray or --workers")
    if video is not None and not Path(video).exists() and "://" not in video:
        raise click.BadParameter(f"{video!r} does not exist", param_hint="VIDEO")
    batch = frames_per_batch or JobOptions(input="", output="").frames_per_batch
    models = dict(JobOptions(input="", output="").models)
    models.update({stage: name for stage, name in (("pose", pose_model), ("lifter", lifter)) if name})
    options = JobOptions(input="bench", output="bench", device=device, max_persons=max_persons,
                         weights=parse_weights(weights), random_weights=random_weights,
                         shard_frames=shard_frames or default_shard_frames(n_frames, batch), half=half,
                         frames_per_batch=batch, models=models, refine=refine, smpl_model=smpl_model,
                         smpl_prior=smpl_prior, smplify=parse_smplify_options(smplify_options), densepose=densepose,
                         densepose_weights=densepose_weights)
    try:
        options.validate(CATALOGUE)
    except OptionError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        report = run_benchmark(options, video, n_frames, worker_counts=worker_counts, use_ray=not no_ray, memory=memory,
                               decode_sizes=not no_h264)
    except VideoError as exc:
        raise click.BadParameter(f"{video or 'the sample video'}: {exc}", param_hint="VIDEO") from None
    except WeightsError as exc:
        raise click.ClickException(" ".join(exc.lines)) from None
    except BenchError as exc:
        raise click.ClickException(str(exc)) from None

    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2) + "\n")
    say_json(report)
