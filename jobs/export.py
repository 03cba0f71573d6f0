"""`posepipe export`: datasets for downstream training, built from a finished OUTPUT."""
from __future__ import annotations

from pathlib import Path

import click

from posepipe.pipeline.io.destinations import DestinationError, count_on_disk
from posepipe.pipeline.downstream.export import (
    DEFAULT_MAX_PERSONS, ExportError, ExportReport, build_posec3d, check_posec3d_files, parse_split_ratio,
    read_csv_mapping, write_mmaction_config, write_posec3d,
)
from posepipe.pipeline.io.readback import NotAnOutputError, ReadbackError, UnknownVideoError, open_store
from posepipe.pipeline.run.terminal import plain


def _refuse_non_output(output: str) -> None:
    """Exit 2 unless OUTPUT is a posepipe OUTPUT (`pipeline.io.readback.open_store`)."""
    try:
        open_store(output)
    except NotAnOutputError as exc:
        raise click.BadParameter(plain(exc), param_hint="OUTPUT") from None
    except ReadbackError as exc:
        raise click.ClickException(plain(exc)) from None


def _destination_error(exc: DestinationError) -> click.ClickException:
    if exc.option:
        return click.BadParameter(plain(exc), param_hint=f"'{exc.option}'")
    return click.ClickException(plain(exc))


@click.group("export")
def export_group() -> None:
    """Export OUTPUT's poses to training formats."""


@export_group.command("posec3d")
@click.argument("output")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Pickle to write (the label map goes beside it as <name>.labels.txt).")
@click.option("--kind", type=click.Choice(["2d", "3d"]), default="2d", show_default=True,
              help="2d: COCO-17 pixels + scores; 3d: H36M-17 metres, pelvis-relative.")
@click.option("--max-persons", type=click.IntRange(min=0), default=DEFAULT_MAX_PERSONS, show_default=True,
              help="Keep the M best tracks per video (frames seen x mean box score), as mmaction2's skeleton "
                   "pipelines expect 2; 0 keeps every confirmed track.")
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CSV video_id,label (names or integers). Default: the parent folder of each video.")
@click.option("--splits", "splits_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CSV video_id,split.")
@click.option("--split-ratio", default=None, help="Random splits stratified by label, e.g. train=0.8,val=0.2.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of --split-ratio.")
@click.option("--3d-scores", "with_3d_scores", is_flag=True, default=False,
              help="With --kind 3d, add keypoint_score (mapped 2D confidences); mmaction2/PYSKL GCN pipelines reject it.")
def posec3d_command(output: str, out: Path, kind: str, max_persons: int | None, labels_csv: Path | None,
                    splits_csv: Path | None, split_ratio: str | None, seed: int, with_3d_scores: bool) -> None:
    """Write a PoseC3D/PYSKL skeleton pickle from OUTPUT (a folder or s3:// prefix)."""
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
        dataset, report = build_posec3d(
            output, kind=kind, max_persons=max_persons or None, labels=labels, split=splits, ratio=ratio, seed=seed,
            with_3d_scores=with_3d_scores,
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
    for line in report.summary_lines():
        click.echo(plain(line))
    _echo_skipped(report)
    for path in present:
        click.echo(plain(f"wrote {path}"))
    if lost:
        raise click.ClickException(plain(f"{len(files)} files were written and {len(present)} are on disk: "
                                         f"{', '.join(map(str, lost))} did not survive (replaced or deleted meanwhile)"))


def _echo_skipped(report: ExportReport) -> None:
    if report.skipped:
        click.echo(plain(f"skipped {len(report.skipped)} video(s):"), err=True)
        for item in report.skipped:
            click.echo(plain(f"  {item.video_id}: {item.reason}"), err=True)


@export_group.command("smpl")
@click.argument("output")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write <video key>/track_<id>.npz (or .bvh) and tracks_<format>.csv into.")
@click.option("--video", "videos", multiple=True, help="Only this video_id (repeatable). Default: every committed video.")
@click.option("--min-frames", type=click.IntRange(min=1), default=10, show_default=True,
              help="Leave out tracks with fewer rows (with 3D, for --format bvh).")
@click.option("--format", "fmt", type=click.Choice(["smpl", "bvh"]), default="smpl", show_default=True,
              help="smpl: AMASS-style .npz of HMR's SMPL parameters; bvh: the H36M-17 3D keypoint skeleton.")
@click.option("--focal", type=click.FloatRange(min=0, min_open=True), default=None,
              help="The camera's focal length in pixels, for the translation. Default: the image diagonal.")
def smpl_command(output: str, out: Path, videos: tuple[str, ...], min_frames: int, fmt: str, focal: float | None) -> None:
    """Write one animation file per confirmed track of OUTPUT (a folder or s3:// prefix).

    Files go to OUT/<video key>/track_<id>.npz (.bvh), the video key being OUTPUT's own for that
    video (readable stem + hash: no two videos share a folder), and OUT/tracks_smpl.csv
    (tracks_bvh.csv) lists them with their video_id. OUT may not lie in OUTPUT's own folders.
    """
    from posepipe.pipeline.downstream.animation import AnimationError, export_animation

    try:
        report = export_animation(output, out, fmt=fmt, video_ids=list(videos) or None, min_frames=min_frames, focal=focal)
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
    for line in report.summary_lines():
        click.echo(plain(line))
    if not report.written:
        raise click.ClickException("no track could be exported; nothing written")
