"""Drawing OUTPUT's poses over the source video: boxes, COCO-17 skeletons, track labels, a 3D panel.

Every person is drawn in its track's colour (`track_color`: a fixed hue per id, grey for the
unconfirmed id -1), so the same person keeps one colour through the video and across renders. A
keypoint is drawn when its score is at least `KEYPOINT_THRESHOLD`, a bone when both ends are. The
label above a box reads ``#<track id> <bbox score>``.

With ``with_3d`` a square side panel (as tall as the frame) shows the H36M-17 skeletons of that
frame as an orthographic front view of the camera frame (x right, y down, depth dropped), left
limbs lighter. The joints are pelvis-relative, so each track gets its own column (fixed over the
rendered range, ordered by track id) with its pelvis at the column centre, at a fixed
metres-to-pixels scale so that motion and size read true over time.

With ``mesh`` ("hmr" or "smplify", and the user's SMPL model file) each person's SMPL joints, posed by
HMR's or SMPLify's parameters (`pipeline.downstream.mesh`), are drawn over the frame where the row's
camera projects them (thin lines in the track's lighter colour, beside the 2D skeleton: the gap is the
fit's reprojection error), and the 3D panel shows those 24 joints instead of the lifter's.

With ``densepose`` (a run with ``--densepose``) each person's DensePose chart is laid over the frame
under the skeletons: every pixel the chart gives to a body part (I in 1..24) is blended with that
part's colour (`DENSEPOSE_COLORS`, OpenCV's PARULA map over the 24 parts, as detectron2's fine
segmentation view draws them).

The source video is found through the videos table's ``uri`` (pass ``source`` when it moved) and
decoded with `pipeline.io.video.open_video`. Before anything is drawn, the source is checked against
the video's ``videos`` row: a different frame count, frame size or frame rate, or (for ``source``)
a different file name than the video_id's, means the poses would be drawn over another video, so
`SourceMismatchError` is raised; ``force_source=True`` draws anyway. Frames are written as PNG (or
JPEG, by extension); videos as H.264 through PyAV (`H264Writer`), at the video's frame rate, in the
form every player takes: yuv420p (4:2:0, so width and height are made even by a black pixel row or
column), High profile, and for MP4/MOV/M4V the index (``moov``) before the data (``+faststart``), so
a browser starts playing before the file has arrived. (OpenCV's writer gave MPEG-4 Part 2,
``mp4v``, which browsers, Jupyter and VS Code do not play.) Files appear whole (temp + rename).

**A random-weights plumbing run's rows** (`pipeline.downstream.plumbing`) are drawn with
``PLUMBING_NOTE`` written across the bottom of every frame, so no picture of meaningless poses passes
for a real one.

**A video whose frame size changes mid-stream** (a concatenated or spliced stream): the output
has one size, the video's first frame's (the size the videos table records; plus the 3D panel),
whatever frame ``start`` picks. Each frame is drawn at the size it is decoded at (the size the
run's poses are in), and a frame of another size is then scaled to fit, its aspect ratio kept,
centred on black bars. (Where `pipeline.io.video` already scales every frame to the first size,
as the run then saw them, nothing is left to fit.) A video stream has one size: a writer given
frames of another either drops them (OpenCV's did, without a word) or fails. The result says how
many frames were scaled.

**What is reported is what the file holds**: after writing, the video file is read back and its
frames counted (its coded video packets); a count short of the frames drawn is a `RenderError`
and nothing is written. The output may not lie in OUTPUT's own folders
(`pipeline.downstream.destinations`), nor be the source video.
"""
from __future__ import annotations

import colorsys
import os
import posixpath
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posepipe.models.skeletons import COCO17_SKELETON, H36M17_LEFT, H36M17_RIGHT, H36M17_SKELETON
from posepipe.models.skeletons import SMPL_JOINT_NAMES
from posepipe.pipeline.downstream.densepose import NUM_CHARTS, DensePoseChart, decode_row
from posepipe.pipeline.downstream.mesh import SHAPES as MESH_SHAPES
from posepipe.pipeline.downstream.mesh import MeshError, mesh_columns, mesh_joints
from posepipe.pipeline.downstream.plumbing import PLUMBING_NOTE, plumbing_videos
from posepipe.pipeline.io.destinations import DestinationError, refuse_inside_output
from posepipe.pipeline.io.readback import OutputReader
from posepipe.pipeline.io.redaction import scrub
from posepipe.pipeline.io.sources import local_path, redact, scheme_of
from posepipe.pipeline.io.uris import file_uri_path, is_object_uri, split_object_uri
from posepipe.pipeline.io.video import VideoError, VideoInfo, open_video

KEYPOINT_THRESHOLD = 0.3
PANEL_HEIGHT_M = 2.2          # metres shown over the 3D panel's height
UNCONFIRMED_COLOR = (160, 160, 160)
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi")
# H.264 encoders in the order tried: FFmpeg's x264 (PyAV's wheels carry it), then Cisco's OpenH264
# (an FFmpeg built without GPL parts). Every one writes a stream any H.264 decoder plays.
H264_ENCODERS = ("libx264", "libopenh264")
H264_OPTIONS = {"libx264": {"crf": "20", "preset": "veryfast", "profile": "high"}, "libopenh264": {}}
FASTSTART_SUFFIXES = (".mp4", ".m4v", ".mov")
OPTION = "--output"   # the command-line option the output path came from, for messages
_GOLDEN = 0.618033988749895


class RenderError(RuntimeError):
    """The render cannot be made (failed video, source not decodable, bad range); the message says why."""


class RenderOptionError(RenderError):
    """A bad value of one option (a frame range outside the video, an output suffix); `option` names it."""

    def __init__(self, message: str, option: str) -> None:
        super().__init__(message)
        self.option = option


class SourceMismatchError(RenderError):
    """The source video is not the one OUTPUT's rows came from: frame count, size, rate or name differ."""


FPS_TOLERANCE = 5e-4   # relative; the run and the render read the rate with the same decoder
DENSEPOSE_ALPHA = 0.6  # weight of a part's colour over the frame's pixel
# BGR colour of DensePose part I (row 0, the background, is never drawn)
DENSEPOSE_COLORS = cv2.applyColorMap(
    np.round(np.arange(NUM_CHARTS + 1) * 255 / NUM_CHARTS).astype(np.uint8)[:, None], cv2.COLORMAP_PARULA)[:, 0]


def draw_densepose(image: np.ndarray, charts: list[DensePoseChart]) -> np.ndarray:
    """Blend each chart's body parts over a BGR frame in place (clipped to the frame); returns it."""
    height, width = image.shape[:2]
    for chart in charts:
        x, y, w, h = chart.box_xywh
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
        if x1 <= x0 or y1 <= y0:
            continue
        parts = chart.i[y0 - y:y1 - y, x0 - x:x1 - x]
        on = parts > 0
        region = image[y0:y1, x0:x1]
        blended = region[on] * (1 - DENSEPOSE_ALPHA) + DENSEPOSE_COLORS[parts[on]] * DENSEPOSE_ALPHA
        region[on] = np.round(blended).astype(np.uint8)
    return image


def track_color(track_id: int) -> tuple[int, int, int]:
    """A stable BGR colour per track id: hues spaced by the golden ratio; grey for -1."""
    if track_id < 0:
        return UNCONFIRMED_COLOR
    r, g, b = colorsys.hsv_to_rgb((0.1 + track_id * _GOLDEN) % 1.0, 0.85, 1.0)
    return int(round(b * 255)), int(round(g * 255)), int(round(r * 255))


@dataclass
class FramePoses:
    """The poses rows of one frame, as numpy arrays (P persons)."""

    track_id: np.ndarray       # (P,) int
    bbox: np.ndarray           # (P, 4) x1 y1 x2 y2
    bbox_score: np.ndarray     # (P,)
    keypoints: np.ndarray      # (P, 17, 2) pixels
    scores: np.ndarray         # (P, 17)
    keypoints_3d: np.ndarray | None = None   # (P, J, 3) metres, NaN where a row has no 3D (the panel's joints)
    mesh_2d: np.ndarray | None = None        # (P, 24, 2) SMPL joints projected into the frame (--mesh)


@dataclass(frozen=True)
class PanelSkeleton:
    """What the 3D panel draws: bones (child, parent) and which joints are left and right."""

    bones: tuple[tuple[int, int], ...]
    left: frozenset[int]
    right: frozenset[int]
    title: str


LIFTER_PANEL = PanelSkeleton(H36M17_SKELETON, frozenset(H36M17_LEFT), frozenset(H36M17_RIGHT),
                             "3D front view (orthographic)")


def smpl_panel(parents: tuple[int, ...], source: str) -> PanelSkeleton:
    """The panel for SMPL's 24 joints, from the model file's kinematic tree."""
    names = SMPL_JOINT_NAMES
    return PanelSkeleton(tuple((j, p) for j, p in enumerate(parents) if p >= 0),
                         frozenset(j for j, n in enumerate(names) if n.startswith("left")),
                         frozenset(j for j, n in enumerate(names) if n.startswith("right")),
                         f"SMPL joints ({source}), front view")


def draw_poses(image: np.ndarray, poses: FramePoses, threshold: float = KEYPOINT_THRESHOLD,
               mesh_bones: tuple[tuple[int, int], ...] = ()) -> np.ndarray:
    """Draw boxes, skeletons and labels in place on a BGR frame; returns it."""
    for p in range(len(poses.track_id)):
        color = track_color(int(poses.track_id[p]))
        if poses.mesh_2d is not None and np.isfinite(poses.mesh_2d[p]).all():
            light = tuple(int(c + (255 - c) * 0.6) for c in color)
            joints = np.round(poses.mesh_2d[p]).astype(int)
            for child, parent in mesh_bones:
                cv2.line(image, tuple(joints[child]), tuple(joints[parent]), light, 1, cv2.LINE_AA)
            for j in range(len(joints)):
                cv2.circle(image, tuple(joints[j]), 2, light, -1, cv2.LINE_AA)
        x1, y1, x2, y2 = (int(round(v)) for v in poses.bbox[p])
        cv2.rectangle(image, (x1, y1), (x2, y2), color, 1, cv2.LINE_AA)
        points = np.round(poses.keypoints[p]).astype(int)
        visible = poses.scores[p] >= threshold
        for a, b in COCO17_SKELETON:
            if visible[a] and visible[b]:
                cv2.line(image, tuple(points[a]), tuple(points[b]), color, 2, cv2.LINE_AA)
        for j in np.flatnonzero(visible):
            cv2.circle(image, tuple(points[j]), 3, color, -1, cv2.LINE_AA)
        _label(image, f"#{int(poses.track_id[p])} {float(poses.bbox_score[p]):.2f}", (x1, y1), color)
    return image


def _label(image: np.ndarray, text: str, corner: tuple[int, int], color: tuple[int, int, int]) -> None:
    font, scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1
    (w, h), base = cv2.getTextSize(text, font, scale, thickness)
    x = min(max(corner[0], 0), max(image.shape[1] - w - 2, 0))
    y = corner[1] - h - base - 2
    if y < 0:  # no room above the box: inside it, at the top
        y = corner[1]
    cv2.rectangle(image, (x, y), (x + w + 2, y + h + base + 2), color, -1)
    ink = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
    cv2.putText(image, text, (x + 1, y + h + 1), font, scale, ink, thickness, cv2.LINE_AA)


def draw_3d_panel(height: int, poses: FramePoses | None, columns: list[int],
                  skeleton: PanelSkeleton = LIFTER_PANEL) -> np.ndarray:
    """A height x height panel: each track in `columns` drawn in its own column, front view."""
    panel = np.full((height, height, 3), 24, np.uint8)
    cv2.putText(panel, skeleton.title, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (200, 200, 200), 1, cv2.LINE_AA)
    if poses is None or poses.keypoints_3d is None or not columns:
        return panel
    slot = height / len(columns)
    scale = min(height / PANEL_HEIGHT_M, slot / 1.0)   # pixels per metre; a body ~1 m wide fits its slot
    for p in range(len(poses.track_id)):
        track = int(poses.track_id[p])
        joints = poses.keypoints_3d[p]
        if track not in columns or not np.isfinite(joints).all():
            continue
        centre = np.array([(columns.index(track) + 0.5) * slot, height / 2])
        uv = np.round((joints[:, :2] - joints[0, :2]) * scale + centre).astype(int)  # pelvis at the slot centre
        color = track_color(track)
        light = tuple(int(c + (255 - c) * 0.5) for c in color)
        for child, parent in skeleton.bones:
            side = light if child in skeleton.left else color
            cv2.line(panel, tuple(uv[child]), tuple(uv[parent]), side, 2, cv2.LINE_AA)
        for j in range(len(uv)):
            cv2.circle(panel, tuple(uv[j]), 2, light if j in skeleton.left else color if j in skeleton.right else (230, 230, 230), -1, cv2.LINE_AA)
        cv2.putText(panel, f"#{track}", (int(centre[0]) - 10, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
    return panel


# --------------------------------------------------------------------------- from OUTPUT


@dataclass
class _Loaded:
    uri: str
    fps: float
    num_frames: int
    frames: dict[int, FramePoses]
    columns_3d: list[int]
    video_id: str = ""
    size: tuple[int, int] = (0, 0)        # (width, height) in the videos table
    source_given: bool = False
    force_source: bool = False
    source_size: tuple[int, int] = (0, 0)  # (width, height) of the source's first frame, once opened
    plumbing_run: bool = False             # a random-weights run wrote these rows: every frame says so
    panel: PanelSkeleton = LIFTER_PANEL    # what the 3D panel draws
    charts: dict[int, list[DensePoseChart]] | None = None   # --densepose: each frame's charts
    mesh_bones: tuple[tuple[int, int], ...] = ()   # SMPL's bones over the frame (--mesh)


@dataclass(frozen=True)
class MeshRequest:
    """render --mesh: whose SMPL parameters to draw ("hmr" or "smplify") and the user's SMPL model file."""

    source: str
    smpl_model: str | None


def _load(output_uri: str, video_id: str, start: int, stop: int | None, with_3d: bool, source: str | None,
          force_source: bool = False, range_option: str = "--start/--stop", mesh: MeshRequest | None = None,
          densepose: bool = False) -> _Loaded:
    reader = OutputReader(output_uri)
    row = reader.video_row(video_id)  # UnknownVideoError lists the known ids
    if row["status"] != "ok":
        raise RenderError(f"{video_id} failed in the job ({row.get('error') or 'no reason recorded'}); there is nothing to render")
    num_frames = int(row["num_frames"] or 0)
    stop = num_frames if stop is None else min(stop, num_frames)
    if not 0 <= start < num_frames:
        raise RenderOptionError(f"frame {start} is outside {video_id}'s frames 0..{num_frames - 1}", range_option)
    if start >= stop:
        raise RenderOptionError(f"frames {start}..{stop - 1} are an empty range: --stop is the frame after the last "
                                f"one and must be greater than --start ({video_id} has frames 0..{num_frames - 1})",
                                range_option)
    columns = ["frame_index", "track_id", "bbox_xyxy", "bbox_score", "keypoints_2d", "keypoint_scores"]
    try:
        extra = mesh_columns(mesh.source) if mesh else []
    except MeshError as exc:
        raise RenderOptionError(str(exc), "--mesh") from None
    table = reader.poses([video_id], columns + extra + (["keypoints_3d"] if with_3d and not mesh else []))
    frame = table.column("frame_index").to_numpy()
    table = table.filter(pa.array((frame >= start) & (frame < stop)))

    def dense(name: str, inner: tuple[int, ...]) -> np.ndarray:
        """A fixed-size-list column as (N, *inner) float32, NaN in rows where it is null."""
        array = table.column(name).combine_chunks()
        valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), bool)
        out = np.full((len(array), *inner), np.nan, np.float32)
        flat = array.filter(pc.is_valid(array))
        while pa.types.is_fixed_size_list(flat.type):
            flat = flat.flatten()
        out[valid] = np.asarray(flat.to_numpy(zero_copy_only=False), np.float32).reshape(-1, *inner)
        return out

    frame = table.column("frame_index").to_numpy()
    track = table.column("track_id").to_numpy()
    arrays = {
        "bbox": dense("bbox_xyxy", (4,)), "keypoints": dense("keypoints_2d", (17, 2)),
        "scores": dense("keypoint_scores", (17,)), "bbox_score": table.column("bbox_score").to_numpy(),
    }
    k3d = dense("keypoints_3d", (17, 3)) if with_3d and not mesh else None
    mesh_2d, panel, bones = None, LIFTER_PANEL, ()
    if mesh:
        params = {name.partition("_")[2]: dense(name, MESH_SHAPES[name.partition("_")[2]]) for name in extra}
        if len(table) and not np.isfinite(params["betas"]).all(axis=1).any():
            what = ("ran without --refine smplify (or refined none of its rows): rerun it with --refine smplify, or "
                    "draw HMR's with --mesh hmr") if mesh.source == "smplify" else "has no HMR parameters in its rows"
            raise RenderOptionError(f"{video_id} {what}", "--mesh")
        try:
            drawn = mesh_joints(mesh.smpl_model or "", arrays["bbox"], params)
        except MeshError as exc:
            raise RenderOptionError(str(exc), "--smpl-model") from None
        mesh_2d, panel = drawn.joints_2d, smpl_panel(drawn.parents, mesh.source)
        bones = panel.bones
        if with_3d:
            k3d = drawn.joints_3d
    frames: dict[int, FramePoses] = {}
    values, firsts, counts = np.unique(frame, return_index=True, return_counts=True)
    for f, first, count in zip(values.tolist(), firsts.tolist(), counts.tolist()):
        rows = slice(first, first + count)  # readback sorts rows by frame: each frame is one run
        frames[f] = FramePoses(track[rows], arrays["bbox"][rows], arrays["bbox_score"][rows], arrays["keypoints"][rows],
                                    arrays["scores"][rows], None if k3d is None else k3d[rows],
                                    None if mesh_2d is None else mesh_2d[rows])
    columns_3d: list[int] = []
    if k3d is not None:
        has = np.isfinite(k3d).all(axis=(1, 2))
        columns_3d = sorted(int(t) for t in np.unique(track[has]))
    charts = _charts(reader, video_id, start, stop, has_rows=bool(int(row["num_rows"] or 0))) if densepose else None
    return _Loaded(source or row["uri"], float(row["fps"] or 0.0), num_frames, frames, columns_3d, video_id,
                   (int(row["width"] or 0), int(row["height"] or 0)), source is not None, force_source,
                   plumbing_run=bool(plumbing_videos(output_uri, [video_id])), panel=panel, mesh_bones=bones,
                   charts=charts)


def _charts(reader: OutputReader, video_id: str, start: int, stop: int, has_rows: bool) -> dict[int, list[DensePoseChart]]:
    """The DensePose charts of frames [start, stop), by frame; an error when the run made none."""
    table = reader.densepose([video_id])
    if has_rows and not len(table):
        raise RenderOptionError(f"{video_id} has no DensePose rows: its run was made without --densepose; rerun it "
                                "with --densepose (and --force) to draw the body surface", "--densepose")
    frame = table.column("frame_index").to_numpy()
    table = table.filter(pa.array((frame >= start) & (frame < stop)))
    charts: dict[int, list[DensePoseChart]] = {}
    for row in table.to_pylist():
        chart = decode_row(row)
        if chart is not None:   # detectron2 dropped the box: nothing to draw
            charts.setdefault(chart.frame_index, []).append(chart)
    return charts


def _compose(image: np.ndarray, poses: FramePoses | None, loaded: _Loaded, with_3d: bool, index: int = -1) -> np.ndarray:
    if loaded.charts:
        draw_densepose(image, loaded.charts.get(index, []))
    if poses is not None:
        draw_poses(image, poses, mesh_bones=loaded.mesh_bones)
    if with_3d:
        image = np.concatenate([image, draw_3d_panel(image.shape[0], poses, loaded.columns_3d, loaded.panel)], axis=1)
    if loaded.plumbing_run:
        draw_watermark(image, PLUMBING_NOTE)
    return image


WATERMARK_COLOR = (0, 0, 255)   # BGR red on a black band


def draw_watermark(image: np.ndarray, text: str) -> np.ndarray:
    """`text` in red on a black band across the bottom of `image`, sized to the image's width (in place).
    Where the whole note would be too small to read, its first words are drawn ("PLUMBING RUN")."""
    height, width = image.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    words = text.split()
    candidates = [text, text.split(",")[0], " ".join(words[:2]).rstrip(":,")]
    for note in candidates:
        (w, _), _ = cv2.getTextSize(note, font, 1.0, 1)
        scale = min(1.0, 0.95 * width / max(w, 1))
        if scale >= 0.45:
            break
    scale = max(scale, 0.3)
    thickness = 2 if scale >= 0.8 else 1
    (w, h), base = cv2.getTextSize(note, font, scale, thickness)
    top = max(0, height - h - base - 6)
    image[top:] = 0
    cv2.putText(image, note, (max(0, (width - w) // 2), height - base - 3), font, scale, WATERMARK_COLOR, thickness,
                cv2.LINE_AA)
    return image


def _file_stem(uri_or_path: str) -> str:
    """The file name without its extension: an object key's last segment as written (`clip#1` of
    s3://b/clip#1.mp4), a URL path's, or a local path's."""
    if is_object_uri(uri_or_path):
        path = split_object_uri(uri_or_path)[1]
    elif scheme_of(uri_or_path) == "file":
        path = file_uri_path(uri_or_path)
    else:
        path = urlsplit(uri_or_path).path if scheme_of(uri_or_path) else uri_or_path
    return posixpath.splitext(posixpath.basename(path.replace("\\", "/")))[0]


def _check_source(info: VideoInfo, loaded: _Loaded) -> None:
    """SourceMismatchError unless the decoded source looks like the video the rows came from."""
    problems = []
    if info.num_frames != loaded.num_frames:
        problems.append(f"frame count {info.num_frames} (the run read {loaded.num_frames})")
    if all(loaded.size) and (info.width, info.height) != loaded.size:
        problems.append(f"size {info.width}x{info.height} (the run read {loaded.size[0]}x{loaded.size[1]})")
    if loaded.fps > 0 and abs(info.fps - loaded.fps) > FPS_TOLERANCE * loaded.fps:
        problems.append(f"frame rate {info.fps:g} fps (the run read {loaded.fps:g})")
    if loaded.source_given and _file_stem(loaded.uri) != _file_stem(loaded.video_id):
        problems.append(f"file name {_file_stem(loaded.uri)!r} (the video_id's is {_file_stem(loaded.video_id)!r})")
    if not problems or loaded.force_source:
        return
    what = f"--source {redact(loaded.uri)}" if loaded.source_given else f"the file at {redact(loaded.uri)}"
    raise SourceMismatchError(
        f"{what} is not the video {loaded.video_id!r} that OUTPUT's poses came from: {'; '.join(problems)}. "
        "Drawing these poses over it would show them on another video. Pass the file the job read with --source, "
        "or add --force-source if this is the same video renamed or re-encoded."
    )




def _without_secrets(text: str, uri: str) -> str:
    """`text` with its URIs scrubbed, and without `uri`'s user info and (for a URL) its query, wherever
    a library quoted them without the scheme (urllib3 quotes a request's path and query). An object
    key's '#' or '?' are characters of the key, not secrets."""
    text = scrub(text)
    if is_object_uri(uri):
        authority = uri.split("//", 1)[1].partition("/")[0]
        secrets = [authority.rpartition("@")[0] + "@"] if "@" in authority else []
    else:
        parts = urlsplit(uri)
        secrets = [f"?{parts.query}" if parts.query else "", f"#{parts.fragment}" if parts.fragment else "",
                   parts.netloc.rpartition("@")[0] + "@" if "@" in parts.netloc else ""]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "")
    return text


def _decode(loaded: _Loaded, start: int, stop: int):  # noqa: ANN202 - generator of (index, frame)
    try:
        with open_video(loaded.uri) as stream:
            _check_source(stream.info, loaded)
            loaded.source_size = (stream.info.width, stream.info.height)
            for indices, batch, _ in stream.frames(start, stop):
                yield from zip(indices.tolist(), batch)
    except VideoError as exc:
        reason = _without_secrets(str(exc), loaded.uri)
        raise RenderError(f"cannot decode the source video {redact(loaded.uri)}: {reason}. "
                          "Pass --source (source=) if it moved") from None


def _refuse_bad_destination(out: Path, output_uri: str, loaded: _Loaded) -> None:
    if scheme_of(loaded.uri) in ("", "file") and out.resolve() == Path(local_path(loaded.uri)).resolve():
        raise RenderOptionError(f"{out} is the source video itself; write the render elsewhere", OPTION)
    try:
        refuse_inside_output(out, output_uri, option=OPTION)
    except DestinationError as exc:
        raise RenderOptionError(str(exc), OPTION) from None


def fit_frame(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`image` scaled to fit (width, height) `size` with its aspect ratio kept, centred on black."""
    width, height = size
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    scale = min(width / w, height / h)
    new_w, new_h = max(1, min(width, round(w * scale))), max(1, min(height, round(h * scale)))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = np.zeros((height, width, 3), np.uint8)
    x, y = (width - new_w) // 2, (height - new_h) // 2
    canvas[y:y + new_h, x:x + new_w] = resized
    return canvas


def count_video_frames(path: str | os.PathLike[str]) -> int:
    """Frames a written video file holds: its video stream's coded packets, read back with PyAV."""
    return read_back(path)[0]


def even_size(size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) rounded up to even numbers: 4:2:0 chroma covers 2x2 pixel blocks."""
    return size[0] + size[0] % 2, size[1] + size[1] % 2


class H264Writer:
    """BGR uint8 frames of one size into an H.264 video that browsers play (see the module).

    Frames of an odd width or height get one black column or row; `size` is the size written.
    `close()` flushes the encoder and writes the container's index; use it as a context manager."""

    def __init__(self, path: str | os.PathLike[str], fps: float, size: tuple[int, int], suffix: str | None = None) -> None:
        import av

        suffix = (suffix or Path(path).suffix).lower()
        self.codec = _h264_encoder()
        self.size = even_size(size)
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(30)
        fmt = {".mov": "mov", ".avi": "avi"}.get(suffix, "mp4")   # .m4v is MP4 (FFmpeg's "m4v" is raw MPEG-4)
        options = {"movflags": "+faststart"} if suffix in FASTSTART_SUFFIXES else {}
        self.container = av.open(str(path), "w", format=fmt, options=options)
        try:
            self.stream = self.container.add_stream(self.codec, rate=rate, options=dict(H264_OPTIONS.get(self.codec, {})))
            self.stream.width, self.stream.height = self.size
            self.stream.pix_fmt = "yuv420p"
            self.stream.codec_context.time_base = 1 / rate
        except Exception:
            self.container.close()
            raise
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        import av

        height, width = image.shape[:2]
        if even_size((width, height)) != self.size:  # a bug upstream (fit_frame skipped): never a silent drop
            raise RenderError(f"a {width}x{height} frame reached the writer of a {self.size[0]}x{self.size[1]} video; "
                              "frames of another size must be fitted first")
        if (width, height) != self.size:
            image = cv2.copyMakeBorder(image, 0, self.size[1] - height, 0, self.size[0] - width, cv2.BORDER_CONSTANT, value=0)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        frame.pts = self.frames
        frame.time_base = self.stream.codec_context.time_base
        self.container.mux(self.stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        if self.container is None:
            return
        try:
            self.container.mux(self.stream.encode(None))
        finally:
            self.container.close()
            self.container = None

    def __enter__(self) -> "H264Writer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _h264_encoder() -> str:
    import av

    for name in H264_ENCODERS:
        try:
            av.codec.Codec(name, "w")
        except (av.error.FFmpegError, ValueError):  # UnknownCodecError is a ValueError
            continue
        return name
    raise RenderError(f"this PyAV's FFmpeg has no H.264 encoder ({', '.join(H264_ENCODERS)}); install PyAV's "
                      "own wheel (pip install --force-reinstall av), which carries libx264")


def _temp_beside(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent / f".{path.stem}.{uuid.uuid4().hex}{path.suffix}"


def render_frame(output_uri: str, video_id: str, frame_index: int, out_png: str | os.PathLike[str],
                 with_3d: bool = False, *, source: str | None = None, force_source: bool = False,
                 mesh: MeshRequest | None = None, densepose: bool = False) -> Path:
    """Draw one frame of `video_id` with its poses to an image file (PNG/JPEG by extension)."""
    out = Path(out_png)
    if out.suffix.lower() not in FRAME_SUFFIXES:
        raise RenderOptionError(f"{out}: write a frame to one of {', '.join(FRAME_SUFFIXES)}", OPTION)
    loaded = _load(output_uri, video_id, frame_index, frame_index + 1, with_3d, source, force_source, "--frame", mesh,
                   densepose)
    _refuse_bad_destination(out, output_uri, loaded)
    decoded = list(_decode(loaded, frame_index, frame_index + 1))
    if not decoded:
        raise RenderError(f"frame {frame_index} of {redact(loaded.uri)} did not decode")
    image = _compose(decoded[0][1], loaded.frames.get(frame_index), loaded, with_3d, frame_index)
    tmp = _temp_beside(out)
    try:
        if not cv2.imwrite(str(tmp), image):
            raise RenderError(f"OpenCV could not write {out}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    if not out.is_file():
        raise RenderError(f"{out} is not on disk after writing it (removed meanwhile?)")
    return out


@dataclass(frozen=True)
class RenderedVideo:
    path: Path
    frames: int             # frames the written file holds (read back), not frames meant
    fps: float
    size: tuple[int, int]   # (width, height)
    scaled: int = 0         # frames of another size, scaled to fit `size`
    other_sizes: tuple[tuple[int, int], ...] = ()   # those frames' (width, height) as decoded, with the panel
    codec: str = "h264"     # the written stream's codec, as read back
    plumbing_run: bool = False   # the rows are a random-weights run's: every frame is watermarked


def render_video(output_uri: str, video_id: str, out_path: str | os.PathLike[str], *, with_3d: bool = False,
                 start: int | None = None, stop: int | None = None, source: str | None = None,
                 force_source: bool = False, progress: Callable[[int, int], None] | None = None,
                 mesh: MeshRequest | None = None, densepose: bool = False) -> RenderedVideo:
    """Draw frames [start, stop) of `video_id` with its poses into an H.264 video at the video's fps.

    `progress(done, total)` is called after each frame written."""
    out = Path(out_path)
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        raise RenderOptionError(f"{out}: write a video to one of {', '.join(VIDEO_SUFFIXES)}", OPTION)
    start = start or 0
    loaded = _load(output_uri, video_id, start, stop, with_3d, source, force_source, mesh=mesh, densepose=densepose)
    _refuse_bad_destination(out, output_uri, loaded)
    stop = loaded.num_frames if stop is None else min(stop, loaded.num_frames)
    fps = loaded.fps if loaded.fps > 0 else 30.0
    tmp = _temp_beside(out)
    writer: H264Writer | None = None
    count, scaled, size = 0, 0, (0, 0)
    others: dict[tuple[int, int], None] = {}
    try:
        for index, frame in _decode(loaded, start, stop):
            image = _compose(frame, loaded.frames.get(index), loaded, with_3d, index)
            if writer is None:
                # The video's first frame size (as the run recorded it), whatever frame --start picks.
                width, height = loaded.source_size if all(loaded.source_size) else (frame.shape[1], frame.shape[0])
                size = (width + (height if with_3d else 0), height)
                writer = H264Writer(tmp, fps, size, suffix=out.suffix)
            if (image.shape[1], image.shape[0]) != size:
                others[(image.shape[1], image.shape[0])] = None
                image = fit_frame(image, size)
                if loaded.plumbing_run:  # the note stays legible on a scaled frame
                    draw_watermark(image, PLUMBING_NOTE)
                scaled += 1
            writer.write(image)
            count += 1
            if progress is not None:
                progress(count, stop - start)
        if writer is None:
            raise RenderError(f"no frame of {redact(loaded.uri)} decoded in {start}..{stop}")
        codec, size = writer.codec, writer.size
        writer.close()
        writer = None
        held, written_codec = read_back(tmp)
        if held != count:
            raise RenderError(f"the video writer kept {held} of the {count} frames drawn ({out.suffix}, {codec}); "
                              f"nothing was written to {out}")
        os.replace(tmp, out)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    if not out.is_file():
        raise RenderError(f"{out} is not on disk after writing it (removed meanwhile?)")
    return RenderedVideo(out, held, fps, size, scaled, tuple(others), written_codec, loaded.plumbing_run)


def read_back(path: str | os.PathLike[str]) -> tuple[int, str]:
    """(frames, codec name) of a written video file's first video stream, read back with PyAV."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return 0, ""
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size), stream.codec_context.name
    except av.error.FFmpegError as exc:
        raise RenderError(f"the video written to {path} cannot be read back: {exc}") from None
