"""`posepipe export`: datasets for downstream training, built from a finished OUTPUT."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import click

from posepipe.jobs.conventions import Group, quiet_option
from posepipe.jobs.progress import progress_bar
from posepipe.pipeline.run.terminal import plain, say

if TYPE_CHECKING:  # numpy, pyarrow and the skeletons (torch) load when an export runs, not for --help
    from posepipe.pipeline.downstream.export import ExportReport
    from posepipe.pipeline.io.destinations import DestinationError

# pipeline.downstream.export.DEFAULT_MAX_PERSONS (a test keeps them equal): mmaction2's and PYSKL's
# skeleton pipelines take 2 persons (FormatGCNInput(num_person=2); PreNormalize3D asserts M <= 2).
DEFAULT_MAX_PERSONS = 2
EXPORT_EXIT_CODES = (
    (0, "written; the files listed are on disk"),
    (2, "a bad option or input file (a malformed --labels or --splits, an unknown --video), OUTPUT that is not a "
        "posepipe OUTPUT, an --output inside OUTPUT's own folders, or two outputs that would be one file"),
    (1, "OUTPUT cannot be read, nothing could be exported, or a file cannot be written or is gone afterwards"),
)


def _refuse_non_output(output: str) -> None:
    """Exit 2 unless OUTPUT is a posepipe OUTPUT (`pipeline.io.readback.open_store`)."""
    from posepipe.pipeline.io.readback import NotAnOutputError, ReadbackError, open_store

    try:
        open_store(output)
    except NotAnOutputError as exc:
        raise click.BadParameter(plain(exc), param_hint="OUTPUT") from None
    except ReadbackError as exc:
        raise click.ClickException(plain(exc)) from None


def _destination_error(exc: "DestinationError") -> click.ClickException:
    if exc.option:  # pipeline.io.destinations still names the option by its old spelling
        option = "--output" if exc.option == "--out" else exc.option
        return click.BadParameter(plain(exc), param_hint=f"'{option}'")
    return click.ClickException(plain(exc))


def _warn_plumbing(video_ids: Sequence[str], what: str) -> None:
    if video_ids:
        shown = ", ".join(video_ids[:3]) + (f" and {len(video_ids) - 3} more" if len(video_ids) > 3 else "")
        say(f"warning: {len(video_ids)} exported video(s) are a PLUMBING RUN's (random weights: meaningless poses): "
            f"{shown}; {what}", err=True, fg="yellow")


@click.group("export", cls=Group)
def export_group() -> None:
    """Export OUTPUT's poses to training formats."""


@export_group.command("posec3d", renamed={"--out": "--output"}, exit_codes=EXPORT_EXIT_CODES)
@click.argument("output_uri", metavar="OUTPUT")
@click.option("--output", "-o", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Pickle to write (the label map goes beside it as <name>.labels.txt). Was --out.")
@click.option("--kind", type=click.Choice(["2d", "3d"]), default="2d",
              help="2d: COCO-17 pixels + scores; 3d: H36M-17 metres in camera axes, each person where HMR's camera "
                   "puts them (no joint at the origin; see `pydoc posepipe.pipeline.downstream.export`).")
@click.option("--max-persons", type=click.IntRange(min=0), default=DEFAULT_MAX_PERSONS,
              help="Keep the M best tracks per video (frames seen x mean box score): 2, as mmaction2's skeleton "
                   "pipelines expect (not `run --max-persons`, which caps rows per frame); 0 keeps every confirmed track.")
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CSV video_id,label (names or integers). Default: the name of the folder holding each video.")
@click.option("--splits", "splits_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CSV video_id,split. Default: one split named 'all'.")
@click.option("--split-ratio", default=None, help="Random splits stratified by label, e.g. train=0.8,val=0.2.")
@click.option("--seed", type=click.IntRange(min=0), default=0, help="Seed of --split-ratio.")
@click.option("--3d-scores", "with_3d_scores", is_flag=True, default=False,
              help="With --kind 3d, add keypoint_score (mapped 2D confidences); mmaction2/PYSKL GCN pipelines reject it.")
@quiet_option
def posec3d_command(output_uri: str, output: Path, kind: str, max_persons: int | None, labels_csv: Path | None,
                    splits_csv: Path | None, split_ratio: str | None, seed: int, with_3d_scores: bool, quiet: bool) -> None:
    """Write a PoseC3D/PYSKL skeleton pickle from OUTPUT (a folder or s3:// prefix).

    A plumbing run's videos (random weights) are exported with a warning and marked in the pickle
    ('posepipe_plumbing_run').
    """
    from posepipe.pipeline.downstream.export import (ExportError, build_posec3d, check_posec3d_files,
                                                     parse_split_ratio, read_csv_mapping, write_mmaction_config,
                                                     write_posec3d)
    from posepipe.pipeline.io.destinations import DestinationError, count_on_disk
    from posepipe.pipeline.io.readback import NotAnOutputError, ReadbackError

    output, out = output_uri, output  # OUTPUT (what a run wrote), and the pickle to write
    if splits_csv is not None and split_ratio is not None:
        raise click.UsageError("give --splits or --split-ratio, not both")
    _refuse_non_output(output)
    try:
        files = check_posec3d_files(out, kind, output, [("--labels", labels_csv), ("--splits", splits_csv)])
    except DestinationError as exc:
        raise _destination_error(exc) from None
    try:
        ratio = parse_split_ratio(split_ratio) if split_ratio is not None else None
        labels = read_csv_mapping(labels_csv, "label", "--labels") if labels_csv is not None else None
        splits = read_csv_mapping(splits_csv, "split", "--splits") if splits_csv is not None else None
        with progress_bar("export posec3d", quiet=quiet) as report_progress:
            dataset, report = build_posec3d(
                output, kind=kind, max_persons=max_persons or None, labels=labels, split=splits, ratio=ratio, seed=seed,
                with_3d_scores=with_3d_scores, progress=report_progress,
            )
    except ExportError as exc:
        if exc.option:
            named = {"--labels": labels_csv, "--splits": splits_csv}.get(exc.option)
            message = str(exc) if named is None or str(named) in str(exc) else f"{named}: {exc}"
            raise click.BadParameter(plain(message), param_hint=f"'{exc.option}'") from None
        raise click.ClickException(plain(exc)) from None
    except NotAnOutputError as exc:
        raise click.BadParameter(plain(exc), param_hint="OUTPUT") from None
    except ReadbackError as exc:
        raise click.ClickException(plain(exc)) from None
    if not report.exported:
        for line in report.unmatched_lines():
            click.echo(plain(line), err=True)
        _echo_skipped(report)
        raise click.ClickException("no video could be exported; nothing written")
    try:
        write_posec3d(dataset, report, out)
        write_mmaction_config(report, out)
    except DestinationError as exc:
        raise _destination_error(exc) from None
    except OSError as exc:
        raise click.ClickException(plain(f"cannot write {exc.filename or out}: {exc.strerror or exc}")) from None
    present, lost = count_on_disk(files.values())  # what is there now, not what was meant
    _warn_plumbing(report.plumbing, "the pickle says so under 'posepipe_plumbing_run'")
    if not quiet:
        for line in report.summary_lines():
            click.echo(plain(line))
    _echo_skipped(report)
    for path in present:
        click.echo(plain(f"wrote {path}"))
    if lost:
        raise click.ClickException(plain(f"{len(files)} files were written and {len(present)} are on disk: "
                                         f"{', '.join(map(str, lost))} did not survive (replaced or deleted meanwhile)"))


def _echo_skipped(report: "ExportReport") -> None:
    if report.skipped:
        click.echo(plain(f"skipped {len(report.skipped)} video(s):"), err=True)
        for item in report.skipped:
            click.echo(plain(f"  {item.video_id}: {item.reason}"), err=True)


@export_group.command("smpl", renamed={"--out": "--output"}, exit_codes=EXPORT_EXIT_CODES)
@click.argument("output_uri", metavar="OUTPUT")
@click.option("--output", "-o", "output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write <video key>/track_<id>.npz (or .bvh) and tracks_<format>.csv into. Was --out.")
@click.option("--video", "videos", multiple=True, help="Only this video_id (repeatable). Default: every committed video.")
@click.option("--min-frames", type=click.IntRange(min=1), default=10,
              help="Leave out tracks with fewer rows (with 3D, for --format bvh).")
@click.option("--format", "fmt", type=click.Choice(["smpl", "bvh"]), default="smpl",
              help="smpl: AMASS-style .npz of HMR's SMPL parameters; bvh: the H36M-17 3D keypoint skeleton.")
@click.option("--focal", type=click.FloatRange(min=0, min_open=True), default=None,
              help="The camera's focal length in pixels, for the translation. Default: the image diagonal.")
@click.option("--params", type=click.Choice(["hmr", "smplify"]), default="hmr",
              help="Whose SMPL parameters and camera (--format smpl): HMR's (smpl_*), or SMPLify's fit of them "
                   "(smplify_*, from `posepipe run --refine smplify`).")
@quiet_option
def smpl_command(output_uri: str, output: Path, videos: tuple[str, ...], min_frames: int, fmt: str, focal: float | None,
                 params: str, quiet: bool) -> None:
    """Write one animation file per confirmed track of OUTPUT (a folder or s3:// prefix).

    Files go to DIR/<video key>/track_<id>.npz (.bvh), the id in four digits (track_0000.npz), the
    video key being OUTPUT's own for that video (readable stem + hash: no two videos share a
    folder), and DIR/tracks_smpl.csv (tracks_bvh.csv) lists them with their video_id. DIR (the
    --output folder) may not lie in OUTPUT's own folders. A plumbing run's tracks (random weights)
    are exported with a warning and marked ('plumbing_run' in each .npz and in the CSV).
    """
    from posepipe.pipeline.downstream.animation import AnimationError, export_animation
    from posepipe.pipeline.io.destinations import DestinationError
    from posepipe.pipeline.io.readback import NotAnOutputError, ReadbackError, UnknownVideoError

    output, out = output_uri, output  # OUTPUT (what a run wrote), and the folder to write
    try:
        with progress_bar(f"export {fmt}", quiet=quiet) as report_progress:
            report = export_animation(output, out, fmt=fmt, video_ids=list(videos) or None, min_frames=min_frames,
                                      focal=focal, progress=report_progress, params=params)
    except NotAnOutputError as exc:
        raise click.BadParameter(plain(exc), param_hint="OUTPUT") from None
    except UnknownVideoError as exc:
        raise click.BadParameter(plain(exc), param_hint="'--video'") from None
    except DestinationError as exc:
        raise _destination_error(exc) from None
    except (AnimationError, ReadbackError) as exc:
        raise click.ClickException(plain(exc)) from None
    except OSError as exc:
        raise click.ClickException(plain(f"cannot write {exc.filename or out}: {exc.strerror or exc}")) from None
    _warn_plumbing(report.plumbing, "the files say so ('plumbing_run' in each .npz and in the CSV)" if fmt == "smpl"
                   else "the CSV says so in its plumbing_run column (BVH has no room for a note)")
    if not quiet or not report.written:
        for line in report.summary_lines():
            click.echo(plain(line))
    if not report.written:
        raise click.ClickException("no track could be exported; nothing written")
