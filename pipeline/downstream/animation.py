"""Animation exports of an OUTPUT's tracks: AMASS-style SMPL ``.npz`` files, or BVH skeletons.

``posepipe export smpl OUT --output DIR`` writes one file per confirmed track (``track_id >= 0``)
with at least ``min_frames`` rows, named ``<video key>/track_<id>.npz`` (or ``.bvh``) under DIR, the
id written with four digits (``track_0000.npz``, ``track_0012.npz``: they sort in track order), and
``tracks_smpl.csv`` (``tracks_bvh.csv``) listing them: ``video_id,track_id,file,frames,fps``.

Tracks of a random-weights plumbing run (`pipeline.downstream.plumbing`) are exported like any other,
marked where the format has room: an ``.npz`` gets a ``plumbing_run`` entry (the note, as a string)
and the CSV a ``plumbing_run`` column (``true`` on their lines); BVH has no place for a note, so the
CSV beside it and the command's warning say it.
The video key is the one OUTPUT's own ``poses/<video key>/`` uses (`pipeline.io.store.video_key`:
the id made file-name safe and cut to 80 characters, then ``-`` and a hash of the whole id), so
two videos never share a folder: not ``Clip.mp4`` and ``clip.mp4`` on a case-insensitive disk,
not ``a.mp4`` and ``a.mov``, not the S3 keys ``a//b.mp4`` and ``a/b.mp4``. Names are claimed before
anything is written and the files are counted on disk afterwards (`pipeline.downstream.destinations`):
the summary counts what is there, and DIR may not lie in OUTPUT's own folders.

**SMPL (.npz, AMASS's layout)**, what AMASS loaders (``human_body_prior``, aitviewer, the SMPL
Blender add-on) read with ``numpy.load``:

==================  =========================================================================
``poses``           (T, 72) float64 axis-angle: ``smpl_global_orient`` then ``smpl_body_pose``
``betas``           (10,) float64: the track's mean ``smpl_betas``
``trans``           (T, 3) float64 metres: where HMR's camera puts the body (`pipeline.downstream.camera`,
                    focal length the image diagonal unless given)
``mocap_framerate`` float: the video's frame rate
``gender``          ``'neutral'`` (HMR regresses the neutral SMPL model)
==================  =========================================================================

Axes are AMASS's: z up. HMR's rotations and translation are in the camera frame (x right, y
down, z forward); both are turned by ``R = [[1, 0, 0], [0, 0, 1], [0, -1, 0]]`` (camera forward
becomes +y, camera up becomes +z), so a person standing in the video stands in the file. SMPL
rotates the body about its rest pelvis J0, not about the origin, so turning the world exactly
also moves ``trans`` by ``(R - I) J0``; J0 depends on the shape, and posepipe uses the neutral
model's at betas = 0 (`SMPL_NEUTRAL_PELVIS`): other shapes are off by a constant of a few mm.

Frames are resampled onto a regular clock at ``mocap_framerate`` from the first to the last row
of the track, using the rows' timestamps: a frame between two rows (a gap in the track, or a
variable-frame-rate stream) gets each joint's rotation by spherical interpolation and the
translation by linear interpolation. A track seen in every frame of a constant-rate video keeps
its values exactly.

**BVH** (``fmt='bvh'``): the H36M-17 keypoints_3d skeleton, every joint a BVH joint (leaves end
in a zero-length End Site), centimetres, the same z-up axes, the root positioned where
HMR's camera puts the pelvis. Offsets are the track's median bone lengths along a fixed rest pose
(`REST_DIRECTIONS`: standing, arms down, facing -y; the hips, spine, shoulders and neck keep the
track's own median angles about the pelvis and thorax). Each frame's joint rotations turn the rest
bones onto the observed ones: the pelvis by its hips and spine, the thorax by its shoulders and
neck, every other joint by the shortest rotation that aligns its bone (no twist about the bone,
which keypoints cannot show). So a rigid skeleton is reproduced exactly by forward kinematics; the
lifter's bones, whose lengths vary a little, are reproduced in direction. Channels are
``Zrotation Xrotation Yrotation`` (intrinsic, R = Rz Rx Ry, degrees), as most BVH files use.
"""
from __future__ import annotations

import csv
import io
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pyarrow as pa
from scipy.spatial.transform import Rotation, Slerp

from posepipe.models.skeletons import H36M17_NAMES, H36M17_PARENTS
from posepipe.pipeline.downstream.camera import full_frame_translation
from posepipe.pipeline.downstream.plumbing import PLUMBING_NOTE, plumbing_videos
from posepipe.pipeline.io.destinations import Claims, count_on_disk, refuse_inside_output
from posepipe.pipeline.io.store import video_key
from posepipe.pipeline.io.readback import OutputReader, UnknownVideoError

OPTION = "--output"   # the command-line option DIR came from, for messages
Format = Literal["smpl", "bvh"]
DEFAULT_MIN_FRAMES = 10
# camera (x right, y down, z forward) -> AMASS world (z up)
CAMERA_TO_WORLD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
# rest pelvis joint of SMPL's neutral model at betas = 0 (J_regressor @ v_template), metres, SMPL's frame
SMPL_NEUTRAL_PELVIS = np.array([-0.00179506, -0.22333345, 0.02821913])

# BVH rest pose, world axes (x: the person's left, y: behind them, z: up), unit bone directions
REST_DIRECTIONS: dict[str, tuple[float, float, float]] = {
    "right_hip": (-1, 0, 0), "right_knee": (0, 0, -1), "right_ankle": (0, 0, -1),
    "left_hip": (1, 0, 0), "left_knee": (0, 0, -1), "left_ankle": (0, 0, -1),
    "spine": (0, 0, 1), "thorax": (0, 0, 1), "neck_nose": (0, 0, 1), "head": (0, 0, 1),
    "left_shoulder": (1, 0, 0), "left_elbow": (0, 0, -1), "left_wrist": (0, 0, -1),
    "right_shoulder": (-1, 0, 0), "right_elbow": (0, 0, -1), "right_wrist": (0, 0, -1),
}
CHILDREN = {j: [c for c, p in enumerate(H36M17_PARENTS) if p == j] for j in range(len(H36M17_NAMES))}


class AnimationError(ValueError):
    """The export cannot be made as asked (an unknown video, nothing to export)."""


SUFFIX = {"smpl": ".npz", "bvh": ".bvh"}


def manifest_name(fmt: str) -> str:
    """The CSV beside the track files that lists them (one per format: both can share DIR)."""
    return f"tracks_{fmt}.csv"


def track_path(out_dir: str | os.PathLike[str], video_id: str, track_id: int, fmt: str) -> Path:
    """Where one track's file goes under DIR: ``<video key>/track_<id>`` (see the module)."""
    return Path(out_dir) / video_key(video_id) / f"track_{track_id:04d}{SUFFIX[fmt]}"


@dataclass
class AnimationReport:
    output_uri: str
    fmt: str
    written: list[Path] = field(default_factory=list)     # track files on disk after writing, in order
    skipped: list[tuple[str, int, str]] = field(default_factory=list)   # (video_id, track_id, why)
    videos: int = 0
    manifest: Path | None = None
    plumbing: list[str] = field(default_factory=list)   # videos whose rows a random-weights run wrote

    def summary_lines(self) -> list[str]:
        lines = [f"{len(self.written)} track file(s) ({self.fmt}) from {self.videos} video(s)"
                 + (f", listed in {self.manifest}" if self.manifest is not None else "")]
        if self.skipped:
            lines.append(f"{len(self.skipped)} track(s) left out: " + "; ".join(
                f"{v} track {t}: {why}" for v, t, why in self.skipped[:5]) + (" …" if len(self.skipped) > 5 else ""))
        return lines


# --------------------------------------------------------------------------- SMPL


def _regular_clock(times: np.ndarray, fps: float) -> np.ndarray:
    """Regular sample times at `fps` from the first to the last row (within rounding of the last)."""
    steps = int(np.floor((times[-1] - times[0]) * fps + 1e-6))
    return times[0] + np.arange(steps + 1) / fps


def _resample_rotations(times: np.ndarray, rotvecs: np.ndarray, clock: np.ndarray) -> np.ndarray:
    """(N, J, 3) axis-angle rows at `times` -> (len(clock), J, 3) by per-joint slerp."""
    if len(times) == 1:
        return np.repeat(rotvecs, len(clock), axis=0)
    out = np.empty((len(clock), rotvecs.shape[1], 3))
    at = np.clip(clock, times[0], times[-1])
    for j in range(rotvecs.shape[1]):
        out[:, j] = Slerp(times, Rotation.from_rotvec(rotvecs[:, j]))(at).as_rotvec()
        # keep the sampled rows bit-exact where the clock hits a row
    exact = np.isclose(clock[:, None], times[None, :], rtol=0, atol=1e-9)
    hit, row = np.nonzero(exact)
    out[hit] = rotvecs[row]
    return out


def _resample_linear(times: np.ndarray, values: np.ndarray, clock: np.ndarray) -> np.ndarray:
    flat = values.reshape(len(times), -1)
    return np.stack([np.interp(clock, times, flat[:, i]) for i in range(flat.shape[1])], 1).reshape(len(clock), *values.shape[1:])


# --params: whose SMPL parameters and camera an export takes, by column prefix: HMR's regression, or
# SMPLify's fit of it to the 2D keypoints (`posepipe run --refine smplify`).
PARAM_COLUMNS = {"hmr": "smpl", "smplify": "smplify"}


def smpl_motion(rows: pa.Table, fps: float, width: int, height: int, focal: float | None = None, *,
                params: str = "hmr") -> dict[str, np.ndarray]:
    """One track's rows (any order) -> the AMASS-style arrays (see the module), from HMR's parameters or
    (`params="smplify"`) SMPLify's."""
    prefix = PARAM_COLUMNS[params]
    rows = rows.sort_by("frame_index")
    times = np.asarray(rows.column("timestamp_s").to_numpy(), np.float64)
    keep = np.concatenate([[True], np.diff(times) > 1e-9])  # one row per instant
    times = times[keep]
    orient = _fixed(rows, f"{prefix}_global_orient", (3,))[keep]
    body = _fixed(rows, f"{prefix}_body_pose", (23, 3))[keep]
    betas = _fixed(rows, f"{prefix}_betas", (10,))[keep]
    trans_cam = full_frame_translation(_fixed(rows, "bbox_xyxy", (4,))[keep], _fixed(rows, f"{prefix}_camera", (3,))[keep],
                                       width, height, focal)
    # world axes: the root turns with the world, and SMPL's translation moves by (R - I) J0
    root = Rotation.from_matrix(CAMERA_TO_WORLD[None] @ Rotation.from_rotvec(orient).as_matrix()).as_rotvec()
    trans = trans_cam @ CAMERA_TO_WORLD.T + (CAMERA_TO_WORLD - np.eye(3)) @ SMPL_NEUTRAL_PELVIS
    clock = _regular_clock(times, fps)
    pose = _resample_rotations(times, np.concatenate([root[:, None], body], axis=1), clock)
    return {
        "poses": pose.reshape(len(clock), 72),
        "betas": betas.mean(axis=0),
        "trans": _resample_linear(times, trans, clock),
        "mocap_framerate": np.float64(fps),
        "gender": np.array("neutral"),
    }


def _fixed(table: pa.Table, name: str, inner: tuple[int, ...]) -> np.ndarray:
    array = table.column(name).combine_chunks()
    if array.null_count:
        raise AnimationError(f"column {name} has nulls in rows that should have it")
    while pa.types.is_fixed_size_list(array.type) or pa.types.is_list(array.type):
        array = array.flatten()
    return np.asarray(array.to_numpy(zero_copy_only=False), np.float64).reshape(-1, *inner)


# --------------------------------------------------------------------------- BVH


def _basis(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """(..., 3, 3) orthonormal frames, columns: primary, the part of secondary orthogonal to it, their cross."""
    a = primary / np.linalg.norm(primary, axis=-1, keepdims=True)
    b = secondary - (secondary * a).sum(-1, keepdims=True) * a
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.stack([a, b, np.cross(a, b)], axis=-1)


def _shortest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations turning unit vectors a onto b by the smallest angle."""
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    axis = np.cross(a, b)
    sin = np.linalg.norm(axis, axis=-1, keepdims=True)
    cos = (a * b).sum(-1, keepdims=True)
    angle = np.arctan2(sin, cos)
    fallback = np.cross(a, np.where(np.abs(a[..., :1]) < 0.9, [1.0, 0, 0], [0, 1.0, 0]))  # 180 degrees: any normal
    axis = np.where(sin > 1e-12, axis / np.maximum(sin, 1e-300), fallback / np.linalg.norm(fallback, axis=-1, keepdims=True))
    return Rotation.from_rotvec((axis * angle).reshape(-1, 3)).as_matrix().reshape(*a.shape[:-1], 3, 3)


def skeleton_rotations(joints: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(T, 17, 3) world joint positions and (17, 3) rest offsets -> (T, 17, 3, 3) global rotations."""
    n = H36M17_NAMES.index
    bone = lambda c: joints[:, c] - joints[:, H36M17_PARENTS[c]]  # noqa: E731
    glob = np.zeros((len(joints), 17, 3, 3))
    glob[:] = np.eye(3)
    for j in range(17):  # parents come first in H36M order
        kids = CHILDREN[j]
        parent = np.eye(3)[None] if H36M17_PARENTS[j] < 0 else glob[:, H36M17_PARENTS[j]]
        if not kids:
            glob[:, j] = parent
        elif len(kids) == 1:
            rest = parent @ offsets[kids[0]]
            glob[:, j] = _shortest(rest, bone(kids[0])) @ parent
        else:  # pelvis (hips, spine), thorax (shoulders, neck): the frame of the side line and the up bone
            left, right = (n("left_hip"), n("right_hip")) if j == n("pelvis") else (n("left_shoulder"), n("right_shoulder"))
            up = n("spine") if j == n("pelvis") else n("neck_nose")
            observed = _basis(bone(up), joints[:, left] - joints[:, right])
            rest = _basis(offsets[up], offsets[left] - offsets[right])
            glob[:, j] = observed @ rest.T
    return glob


def bvh_text(joints_world_m: np.ndarray, fps: float) -> str:
    """A BVH file of (T, 17, 3) H36M-17 joint positions in metres, world axes (see the module)."""
    cm = np.asarray(joints_world_m, np.float64) * 100.0
    lengths = np.median(np.linalg.norm(cm[:, 1:] - cm[:, list(H36M17_PARENTS[1:])], axis=-1), axis=0)
    offsets = np.zeros((17, 3))
    for j in range(1, 17):
        offsets[j] = np.asarray(REST_DIRECTIONS[H36M17_NAMES[j]], float) * lengths[j - 1]
    # The pelvis's and thorax's children keep the track's own (median) geometry in those joints' frames,
    # so forward kinematics reproduces a rigid skeleton exactly.
    n = H36M17_NAMES.index
    rest_basis = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # columns: up = z, left = x, y
    for j, (left, right, up) in ((n("pelvis"), ("left_hip", "right_hip", "spine")),
                                 (n("thorax"), ("left_shoulder", "right_shoulder", "neck_nose"))):
        frame = _basis(cm[:, n(up)] - cm[:, j], cm[:, n(left)] - cm[:, n(right)])
        for child in CHILDREN[j]:
            local = np.einsum("tji,tj->ti", frame, cm[:, child] - cm[:, j])
            offsets[child] = rest_basis @ np.median(local, axis=0)
    glob = skeleton_rotations(cm, offsets)
    local = glob.copy()
    for j in range(1, 17):
        local[:, j] = np.swapaxes(glob[:, H36M17_PARENTS[j]], -1, -2) @ glob[:, j]
    euler = Rotation.from_matrix(local.reshape(-1, 3, 3)).as_euler("ZXY", degrees=True).reshape(len(cm), 17, 3)

    lines = ["HIERARCHY"]

    def write(j: int, depth: int) -> None:
        pad = "  " * depth
        kind = "ROOT" if H36M17_PARENTS[j] < 0 else "JOINT"
        lines.append(f"{pad}{kind} {H36M17_NAMES[j]}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}  OFFSET {offsets[j][0]:.6f} {offsets[j][1]:.6f} {offsets[j][2]:.6f}")
        channels = "6 Xposition Yposition Zposition Zrotation Xrotation Yrotation" if kind == "ROOT" else "3 Zrotation Xrotation Yrotation"
        lines.append(f"{pad}  CHANNELS {channels}")
        for child in CHILDREN[j]:
            write(child, depth + 1)
        if not CHILDREN[j]:
            lines.extend([f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET 0.000000 0.000000 0.000000", f"{pad}  }}"])
        lines.append(f"{pad}}}")

    write(0, 0)
    order = []

    def visit(j: int) -> None:
        order.append(j)
        for child in CHILDREN[j]:
            visit(child)

    visit(0)
    lines += ["MOTION", f"Frames: {len(cm)}", f"Frame Time: {1.0 / fps:.8f}"]
    for t in range(len(cm)):
        values = list(cm[t, 0]) + [v for j in order for v in euler[t, j]]
        lines.append(" ".join(f"{v:.6f}" for v in values))
    return "\n".join(lines) + "\n"


def skeleton_motion(rows: pa.Table, fps: float, width: int, height: int, focal: float | None = None) -> np.ndarray:
    """One track's rows with 3D -> (T, 17, 3) joint positions in metres, world axes, regular clock."""
    rows = rows.sort_by("frame_index")
    times = np.asarray(rows.column("timestamp_s").to_numpy(), np.float64)
    keep = np.concatenate([[True], np.diff(times) > 1e-9])
    times = times[keep]
    pelvis = full_frame_translation(_fixed(rows, "bbox_xyxy", (4,))[keep], _fixed(rows, "smpl_camera", (3,))[keep],
                                    width, height, focal)
    joints_cam = _fixed(rows, "keypoints_3d", (17, 3))[keep] + pelvis[:, None, :]
    return _resample_linear(times, joints_cam @ CAMERA_TO_WORLD.T, _regular_clock(times, fps))


# --------------------------------------------------------------------------- the export


def export_animation(output_uri: str, out_dir: str | os.PathLike[str], *, fmt: Format = "smpl",
                     video_ids: list[str] | None = None, min_frames: int = DEFAULT_MIN_FRAMES,
                     focal: float | None = None, progress: Callable[[int, int], None] | None = None,
                     params: str = "hmr") -> AnimationReport:
    """Write one file per confirmed track of OUTPUT's committed videos (or `video_ids`) under `out_dir`.

    `progress(done, total)` is called after each video.

    `AnimationError` if a file written is not on disk at the end (the report counts what is);
    `DestinationError` if `out_dir` lies in OUTPUT's own folders or two files would share a name."""
    if fmt not in ("smpl", "bvh"):
        raise AnimationError(f"format {fmt!r}: choose 'smpl' or 'bvh'")
    if min_frames < 1:
        raise AnimationError(f"min_frames {min_frames}: must be at least 1")
    if params not in PARAM_COLUMNS:
        raise AnimationError(f"params {params!r}: choose {' or '.join(map(repr, PARAM_COLUMNS))}")
    if params != "hmr" and fmt != "smpl":
        raise AnimationError("--params chooses SMPL parameters: it applies to --format smpl only")
    prefix = PARAM_COLUMNS[params]
    reader = OutputReader(output_uri)
    out_dir = Path(out_dir)
    refuse_inside_output(out_dir, reader.uri, option=OPTION)
    known = reader.video_ids()
    wanted = list(dict.fromkeys(known if video_ids is None else video_ids))
    missing = sorted(set(wanted) - set(known))
    if missing:
        raise UnknownVideoError(missing, known, reader.uri)
    claims = Claims()
    manifest = claims.claim(out_dir / manifest_name(fmt), "the list of track files", option=OPTION)
    for video_id in wanted:  # one folder per video, all claimed before the first file is written
        claims.claim(out_dir / video_key(video_id), f"the tracks of {video_id!r}", option=None)
    report = AnimationReport(output_uri=output_uri, fmt=fmt)
    columns = ["frame_index", "timestamp_s", "track_id", "bbox_xyxy", f"{prefix}_camera"]
    columns += [f"{prefix}_global_orient", f"{prefix}_body_pose", f"{prefix}_betas"] if fmt == "smpl" else ["keypoints_3d"]
    written: list[tuple[str, int, Path, int, float]] = []   # video_id, track_id, path, frames, fps
    report.plumbing = sorted(plumbing_videos(output_uri, wanted))
    for done, (video_id, table) in enumerate(reader.iter_poses(wanted, columns), 1):
        if progress is not None and done > 1:
            progress(done - 1, len(wanted))
        row = reader.video_row(video_id)
        if row["status"] != "ok":
            report.skipped.append((video_id, -1, f"failed in the job: {row.get('error')}"))
            continue
        report.videos += 1
        fps = float(row["fps"]) if row.get("fps") else 30.0
        track = np.asarray(table.column("track_id").to_numpy())
        if params == "smplify" and table.num_rows and table.column("smplify_betas").null_count == table.num_rows:
            report.skipped.append((video_id, -1, "no SMPLify parameters: the job ran without --refine smplify"))
            continue
        for track_id in sorted(int(t) for t in np.unique(track[track >= 0])):
            rows = table.filter(pa.array(track == track_id))
            if fmt == "bvh":
                rows = rows.filter(rows.column("keypoints_3d").is_valid())
            if params == "smplify":  # rows SMPLify could not refine (HMR's camera behind the lens) have none
                rows = rows.filter(rows.column("smplify_betas").is_valid())
            if rows.num_rows < min_frames:
                report.skipped.append((video_id, track_id, f"{rows.num_rows} row(s) < --min-frames {min_frames}"))
                continue
            path = claims.claim(track_path(out_dir, video_id, track_id, fmt), f"track {track_id} of {video_id!r}",
                                option=None)
            if fmt == "smpl":
                arrays = smpl_motion(rows, fps, int(row["width"]), int(row["height"]), focal, params=params)
                if params != "hmr":  # which fit the file holds (HMR's files keep AMASS's five keys)
                    arrays["params"] = np.array(params)
                if video_id in report.plumbing:
                    arrays["plumbing_run"] = np.array(PLUMBING_NOTE)
                _write(path, lambda tmp: np.savez(tmp, **arrays))
                frames = len(arrays["poses"])
            else:
                joints = skeleton_motion(rows, fps, int(row["width"]), int(row["height"]), focal)
                text = bvh_text(joints, fps)
                _write(path, lambda tmp: tmp.write_text(text))
                frames = len(joints)
            written.append((video_id, track_id, path, frames, fps))
    if progress is not None and wanted:
        progress(len(wanted), len(wanted))
    present, lost = count_on_disk(entry[2] for entry in written)
    report.written = present
    if lost:
        raise AnimationError(f"{len(written)} track file(s) were written and {len(present)} are on disk under "
                             f"{out_dir}: {', '.join(map(str, lost[:3]))}{' …' if len(lost) > 3 else ''} did not "
                             "survive (replaced or deleted while the export ran)")
    if written:
        table_text = io.StringIO(newline="")
        out = csv.writer(table_text, lineterminator="\n")
        marked = bool(report.plumbing)
        out.writerow(["video_id", "track_id", "file", "frames", "fps"] + (["plumbing_run"] if marked else []))
        for video_id, track_id, path, frames, fps in written:
            flag = ["true" if video_id in report.plumbing else "false"] if marked else []
            out.writerow([video_id, track_id, path.relative_to(out_dir).as_posix(), frames, f"{fps:g}", *flag])
        text = table_text.getvalue()
        report.manifest = _write(manifest, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return report


def _write(path: Path, writer) -> Path:  # noqa: ANN001 - a callable taking the temp path
    """Write through a temp file beside `path` and rename: no half-written file is ever visible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}"
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
