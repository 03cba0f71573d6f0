"""`posepipe render`: look at what a run found, drawn over the source video."""
from __future__ import annotations

from pathlib import Path

import click

from posepipe.jobs.conventions import Command, quiet_option
from posepipe.jobs.progress import progress_bar
from posepipe.pipeline.run.terminal import plain, say

RENDER_EXIT_CODES = (
    (0, "written; the frame count printed is what the file holds"),
    (2, "a bad option (frame range, file suffix, --output inside OUTPUT's folders or on the source), an unknown "
        "--video, a source that is not the run's video, or OUTPUT that is not a posepipe OUTPUT"),
    (1, "OUTPUT or the source cannot be read or decoded, the video failed in the job, or the file cannot be written"),
)


@click.command("render", cls=Command, renamed={"--out": "--output"}, exit_codes=RENDER_EXIT_CODES)
@click.argument("output_uri", metavar="OUTPUT")
@click.option("--video", "video_id", required=True, help="video_id as in OUTPUT's videos table (path relative to INPUT).")
@click.option("--output", "-o", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="overlay.mp4 (or .mov/.m4v/.avi; H.264), or with --frame frame.png (or .jpg). Was --out.")
@click.option("--frame", "frame_index", type=click.IntRange(min=0), default=None, help="Render this one frame to an image.")
@click.option("--start", type=click.IntRange(min=0), default=None, help="First frame of the video render. Default: 0.")
@click.option("--stop", type=click.IntRange(min=1), default=None,
              help="Frame after the last one of the video render. Default: the video's end.")
@click.option("--3d", "with_3d", is_flag=True, default=False, help="Add a side panel with the 3D skeletons.")
@click.option("--mesh", type=click.Choice(["hmr", "smplify"]), default=None,
              help="Also draw each person's SMPL joints, posed by HMR's (hmr) or SMPLify's (smplify, a run with "
                   "--refine smplify) parameters, where the row's camera projects them; with --3d the panel shows "
                   "them. Needs --smpl-model.")
@click.option("--densepose", "densepose", is_flag=True, default=False,
              help="Lay each person's DensePose body parts over the frame (a run with --densepose).")
@click.option("--smpl-model", envvar="POSEPIPE_SMPL_MODEL", default=None, metavar="PATH",
              help="SMPL's neutral model file, licensed and not stored in OUTPUT, for --mesh ($POSEPIPE_SMPL_MODEL).")
@click.option("--source", default=None, help="Where the video is now, if it moved since the run (path or URI).")
@click.option("--force-source", is_flag=True, default=False,
              help="Draw on the source even if its frame count, size, fps or file name differ from the run's video.")
@quiet_option
def render_command(output_uri: str, video_id: str, output: Path, frame_index: int | None, start: int | None,
                   stop: int | None, with_3d: bool, mesh: str | None, densepose: bool, smpl_model: str | None,
                   source: str | None,
                   force_source: bool, quiet: bool) -> None:
    """Draw OUTPUT's boxes, skeletons and track ids over VIDEO's frames.

    Videos are H.264 (yuv420p, even width and height, MP4 with its index first): browsers, Jupyter
    and VS Code play them. The source video (the run's, or --source) must match the video's record
    in OUTPUT: same frame count, size, fps and, for --source, file name; otherwise the command stops
    with exit code 2. Frames of another size (a stream whose resolution changes) are scaled to fit
    the first frame's size, with black bars. The count printed is the frames the written file holds.
    --output may not lie in OUTPUT's own folders (videos/, poses/, _index/, ...). A render of a
    random-weights plumbing run says so on every frame.
    """
    from posepipe.pipeline.downstream.render import (MeshRequest, RenderError, RenderOptionError, SourceMismatchError,
                                                     render_frame, render_video)
    from posepipe.pipeline.downstream.plumbing import plumbing_videos
    from posepipe.pipeline.io.readback import NotAnOutputError, ReadbackError, UnknownVideoError

    out = output  # the file to write (OUTPUT, what the run wrote, is output_uri)

    if frame_index is not None and (start is not None or stop is not None):
        raise click.UsageError("--frame renders one frame; --start/--stop are for a video render")
    meshed = MeshRequest(mesh, smpl_model) if mesh else None
    try:
        if frame_index is not None:
            path = render_frame(output_uri, video_id, frame_index, out, with_3d, source=source,
                                force_source=force_source, mesh=meshed, densepose=densepose)
            _warn_plumbing(bool(plumbing_videos(output_uri, [video_id])), path)
            click.echo(plain(f"wrote {path} (frame {frame_index} of {video_id})"))
            return
        with progress_bar(f"render {video_id}", quiet=quiet) as report:
            result = render_video(output_uri, video_id, out, with_3d=with_3d, start=start, stop=stop, source=source,
                                  force_source=force_source, progress=report, mesh=meshed, densepose=densepose)
    except NotAnOutputError as exc:
        raise click.BadParameter(plain(exc), param_hint="OUTPUT") from None
    except UnknownVideoError as exc:
        raise click.BadParameter(plain(exc), param_hint="'--video'") from None
    except RenderOptionError as exc:
        raise click.BadParameter(plain(exc), param_hint=f"'{exc.option}'") from None
    except SourceMismatchError as exc:
        raise click.UsageError(plain(exc)) from None
    except (ReadbackError, RenderError) as exc:
        raise click.ClickException(plain(exc)) from None
    except OSError as exc:
        raise click.ClickException(plain(f"cannot write {exc.filename or out}: {exc.strerror or exc}")) from None
    _warn_plumbing(result.plumbing_run, result.path)
    width, height = result.size
    click.echo(plain(f"wrote {result.path}: {result.frames} frames, {width}x{height} at {result.fps:g} fps, {result.codec}"))
    if result.scaled:
        sizes = ", ".join(f"{w}x{h}" for w, h in result.other_sizes)
        click.echo(plain(f"the video's frame size changes mid-stream: {result.scaled} frame(s) of {sizes} were scaled "
                         f"to fit {width}x{height} (aspect ratio kept, black bars)"))


def _warn_plumbing(plumbing_run: bool, path: Path) -> None:
    if plumbing_run:
        say(f"warning: {path} draws a PLUMBING RUN's poses (random weights: meaningless); every frame says so",
            err=True, fg="yellow")
