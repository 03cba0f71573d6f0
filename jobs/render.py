"""`posepipe render`: look at what a run found, drawn over the source video."""
from __future__ import annotations

from pathlib import Path

import click

from posepipe.pipeline.io.readback import NotAnOutputError, ReadbackError, UnknownVideoError
from posepipe.pipeline.downstream.render import RenderError, RenderOptionError, SourceMismatchError, render_frame, render_video
from posepipe.pipeline.run.terminal import plain


@click.command("render")
@click.argument("output")
@click.option("--video", "video_id", required=True, help="video_id as in OUTPUT's videos table (path relative to INPUT).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="overlay.mp4 (or .mov/.m4v/.avi); with --frame, frame.png (or .jpg).")
@click.option("--frame", "frame_index", type=click.IntRange(min=0), default=None, help="Render this one frame to an image.")
@click.option("--start", type=click.IntRange(min=0), default=None, help="First frame of the video render.")
@click.option("--stop", type=click.IntRange(min=1), default=None, help="Frame after the last one of the video render.")
@click.option("--3d", "with_3d", is_flag=True, default=False, help="Add a side panel with the 3D skeletons.")
@click.option("--source", default=None, help="Where the video is now, if it moved since the run (path or URI).")
@click.option("--force-source", is_flag=True, default=False,
              help="Draw on the source even if its frame count, size, fps or file name differ from the run's video.")
def render_command(output: str, video_id: str, out: Path, frame_index: int | None, start: int | None,
                   stop: int | None, with_3d: bool, source: str | None, force_source: bool) -> None:
    """Draw OUTPUT's boxes, skeletons and track ids over VIDEO's frames.

    The source video (the run's, or --source) must match the video's record in OUTPUT: same frame
    count, size, fps and, for --source, file name; otherwise the command stops with exit code 2.
    Frames of another size (a stream whose resolution changes) are scaled to fit the first
    frame's size, with black bars. The count printed is the frames the written file holds.
    --out may not lie in OUTPUT's own folders (videos/, poses/, _index/, ...).
    """
    if frame_index is not None and (start is not None or stop is not None):
        raise click.UsageError("--frame renders one frame; --start/--stop are for a video render")
    try:
        if frame_index is not None:
            path = render_frame(output, video_id, frame_index, out, with_3d, source=source, force_source=force_source)
            click.echo(plain(f"wrote {path} (frame {frame_index} of {video_id})"))
            return
        result = render_video(output, video_id, out, with_3d=with_3d, start=start, stop=stop, source=source,
                              force_source=force_source)
    except NotAnOutputError as exc:
        raise click.BadParameter(plain(exc), param_hint="OUTPUT") from None
    except UnknownVideoError as exc:
        raise click.BadParameter(plain(exc), param_hint="--video") from None
    except RenderOptionError as exc:
        raise click.BadParameter(plain(exc), param_hint=f"'{exc.option}'") from None
    except SourceMismatchError as exc:
        raise click.UsageError(plain(exc)) from None
    except (ReadbackError, RenderError) as exc:
        raise click.ClickException(plain(exc)) from None
    except OSError as exc:
        raise click.ClickException(plain(f"cannot write {exc.filename or out}: {exc.strerror or exc}")) from None
    width, height = result.size
    click.echo(plain(f"wrote {result.path}: {result.frames} frames, {width}x{height} at {result.fps:g} fps"))
    if result.scaled:
        sizes = ", ".join(f"{w}x{h}" for w, h in result.other_sizes)
        click.echo(plain(f"the video's frame size changes mid-stream: {result.scaled} frame(s) of {sizes} were scaled "
                         f"to fit {width}x{height} (aspect ratio kept, black bars)"))
