"""Skeleton action-recognition datasets from a posepipe OUTPUT, in the PoseC3D / PYSKL pickle format.

The format (mmaction2 ``tools/data/skeleton/README.md``, PYSKL ``docs/data_format.md``) is one pickle
holding ``{'split': {name: [frame_dir, ...]}, 'annotations': [annotation, ...]}``; mmaction2's
``PoseDataset(ann_file, split=name)`` keeps the annotations whose ``frame_dir`` is listed under
``split[name]``. Each annotation is a plain dict:

==================  ==========================================================================
``frame_dir``       str, unique: the video_id without its extension (``'jump/clip01'``); where that
                    is another video's too (ids that differ only by extension), those keep the full video_id
``label``           int, index into the label map written beside the pickle
``img_shape``       (height, width) of the displayed frame, from the videos table
``original_shape``  the same (height, width); posepipe does not resize
``total_frames``    videos.num_frames (T)
``keypoint``        float32 (M, T, V, C): M persons, T frames, V joints, C coordinates
``keypoint_score``  float32 (M, T, V)
==================  ==========================================================================

Persons (M): the video's confirmed tracks (``track_id >= 0``; -1 rows are boxes no confirmed track
claimed and are left out), ranked by *frames seen x mean bbox score* (a person seen long and
confidently first; ties by smaller track id), at most ``max_persons`` of them: 2 by default, as
mmaction2's and PYSKL's skeleton pipelines expect (``FormatGCNInput(num_person=2)``, and
``PreNormalize3D`` asserts M <= 2); the report counts the tracks left out. A track keeps its
slot through the whole video; frames where it is absent are zeros with score 0, which is what the
pose pipelines of mmaction2/PYSKL treat as missing.

``kind='2d'``: V=17 COCO-17 joints, C=2 pixels (keypoints_2d), score = keypoint_scores.

``kind='3d'``: V=17 H36M-17 joints, C=3 metres in camera axes (x right, y down, z forward), from
the rows that have 3D: each row's pelvis-relative ``keypoints_3d`` placed at its pelvis's position
in the camera frame, HMR's translation (`pipeline.downstream.camera`, focal length the image diagonal unless
``focal`` is given). So two people keep their relative positions, as NTU's Kinect skeletons do,
and no joint is ever at (0, 0, 0): mmaction2's ``PreNormalize3D`` reads an all-zero joint as
missing, and a zero pelvis made it re-centre every other joint but not the pelvis, stretching the
skeleton (pelvis to right hip 0.188 m -> 0.309 m). Absent frames stay all zeros, i.e. missing.
Bone lengths are the lifter's. `write_mmaction_config` writes the graph layout, bone pairs and
``PreNormalize3D`` axes mmaction2 needs for H36M-17 beside the pickle (`pipeline.downstream.mmaction`). mmaction2's and PYSKL's
``GenSkeFeat`` assert that only 2D keypoints come with a ``keypoint_score`` (it would be
concatenated as a third channel), so 3D annotations carry **no** ``keypoint_score`` unless
``with_3d_scores=True``; then it is each H36M joint's 2D confidence mapped from COCO-17
(``H36M_FROM_COCO``: a joint that COCO lacks, e.g. the pelvis, gets the mean of the joints it is made
of), 0 where the person or their 3D is absent. H36M-17 is not one of the built-in GCN graph layouts
(coco, openpose, nturgb+d): give the model a custom layout with 17 nodes and ``H36M17_SKELETON``.

Labels come from the folder holding each video (``jump/clip01.mp4`` -> ``jump``; a video at the top
of INPUT, whose video_id names no folder, takes the name of the folder its file lies in, as stored in
the videos table's ``uri``: ``samples`` for the demo's ``samples/street.mp4``) or from a mapping
``video_id -> label`` (a CSV ``video_id,label``; ids may also be given without extension).
Label names are indexed in sorted order; when every label is an integer it is used as the index
itself. The label map (one name per line, line i = label i) is written beside the pickle.

Splits come from a mapping ``video_id -> split name`` or are drawn by ratio (e.g.
``{'train': 0.8, 'val': 0.2}``), stratified by label: each class is shuffled with
``numpy.random.default_rng(seed)`` (classes in sorted order) and cut by largest-remainder counts, so
the same OUTPUT, labels and seed always give the same split. Without either, every video goes to one
split named ``'all'``.

Videos that are not exported (failed, no confirmed person, no 3D, no label, no split) are listed with
the reason in the report; nothing is skipped silently.

Videos of a random-weights plumbing run (`pipeline.downstream.plumbing`) are exported like any other
and marked: the pickle gets a top-level ``'posepipe_plumbing_run'`` entry (the note and the video_ids;
mmaction2's and PYSKL's loaders read only ``split`` and ``annotations``), the 3D config a comment
line, and ``report.plumbing`` lists them for the command's warning.

The files an export writes (`posec3d_files`: the pickle, ``<out stem>.labels.txt``, and for 3D
``<out stem>.mmaction2.py`` and ``posepipe_h36m.py``) are checked before anything is built
(`check_posec3d_files`): none may lie in OUTPUT's own folders, be an input CSV, or share a name
with another on a case-insensitive disk (`pipeline.downstream.destinations`).

`write_posec3d` writes pickle protocol 4 holding only dicts, lists, tuples, str/int and numeric
arrays, pickled so that NumPy 1.x and 2.x both load them (see `_PortablePickler`).
"""
from __future__ import annotations

import csv
import io
import math
import os
import pickle
import posixpath
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posepipe.models.skeletons import COCO17_NAMES, H36M17_NAMES
from posepipe.pipeline.downstream.plumbing import PLUMBING_NOTE, plumbing_videos
from posepipe.pipeline.io.destinations import Claims, DestinationError, refuse_inside_output
from posepipe.pipeline.io.readback import OutputReader
from posepipe.pipeline.io.schema import NUM_KP2D, NUM_KP3D
from posepipe.pipeline.io.uris import file_uri_path, is_object_uri, scheme_of, split_object_uri

Kind = Literal["2d", "3d"]
PICKLE_PROTOCOL = 4
DEFAULT_SPLIT = "all"
DEFAULT_MAX_PERSONS = 2   # mmaction2/PYSKL: FormatGCNInput(num_person=2); PreNormalize3D asserts M in [1, 2]
PLUMBING_KEY = "posepipe_plumbing_run"

# Each H36M-17 joint's 2D confidence, from the COCO-17 joints it corresponds to (mean where several).
H36M_FROM_COCO: dict[str, tuple[str, ...]] = {
    "pelvis": ("left_hip", "right_hip"),
    "right_hip": ("right_hip",),
    "right_knee": ("right_knee",),
    "right_ankle": ("right_ankle",),
    "left_hip": ("left_hip",),
    "left_knee": ("left_knee",),
    "left_ankle": ("left_ankle",),
    "spine": ("left_shoulder", "right_shoulder", "left_hip", "right_hip"),
    "thorax": ("left_shoulder", "right_shoulder"),
    "neck_nose": ("nose",),
    "head": ("left_eye", "right_eye", "left_ear", "right_ear"),
    "left_shoulder": ("left_shoulder",),
    "left_elbow": ("left_elbow",),
    "left_wrist": ("left_wrist",),
    "right_shoulder": ("right_shoulder",),
    "right_elbow": ("right_elbow",),
    "right_wrist": ("right_wrist",),
}


def _coco_to_h36m_matrix() -> np.ndarray:
    """(17 H36M, 17 COCO) averaging weights; scores_h36m = scores_coco @ W.T."""
    assert tuple(H36M_FROM_COCO) == H36M17_NAMES, "H36M_FROM_COCO must list H36M17_NAMES in order"
    weights = np.zeros((NUM_KP3D, NUM_KP2D), np.float32)
    for row, sources in enumerate(H36M_FROM_COCO.values()):
        for name in sources:
            weights[row, COCO17_NAMES.index(name)] = 1.0 / len(sources)
    return weights


_H36M_FROM_COCO_W = _coco_to_h36m_matrix()


class ExportError(ValueError):
    """The export cannot be built as asked; the message names the option and the fix.

    `option` is the command-line option the bad value came from (``--labels``, ``--splits``,
    ``--split-ratio``), or None when the problem is not one option's."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class Skipped:
    video_id: str
    reason: str


@dataclass
class ExportReport:
    """What an export did: exported and skipped videos, label map, split sizes, persons."""

    output_uri: str
    kind: str
    num_videos: int = 0
    exported: list[str] = field(default_factory=list)            # video ids, annotation order
    skipped: list[Skipped] = field(default_factory=list)
    label_names: list[str] = field(default_factory=list)         # index = label
    split_sizes: dict[str, int] = field(default_factory=dict)
    persons: dict[str, int] = field(default_factory=dict)        # video_id -> M
    dropped_tracks: int = 0                                       # confirmed tracks beyond max_persons
    unmatched: dict[str, list[str]] = field(default_factory=dict)  # 'labels'/'splits' -> ids OUTPUT lacks
    notes: list[str] = field(default_factory=list)
    plumbing: list[str] = field(default_factory=list)             # exported videos of a random-weights run

    def summary_lines(self) -> list[str]:
        lines = [
            f"{len(self.exported)} of {self.num_videos} videos exported ({self.kind}), "
            f"{len(self.label_names)} classes, splits: "
            + (", ".join(f"{k}={v}" for k, v in self.split_sizes.items()) or "none"),
        ]
        if self.persons:
            counts = np.array(list(self.persons.values()))
            lines.append(f"persons per video: min {counts.min()}, max {counts.max()}, mean {counts.mean():.2f}"
                         + (f"; {self.dropped_tracks} tracks beyond --max-persons left out" if self.dropped_tracks else ""))
        lines += self.unmatched_lines()
        lines += self.notes
        return lines

    def unmatched_lines(self) -> list[str]:
        lines = []
        for source, ids in self.unmatched.items():
            shown = ", ".join(ids[:5]) + (f", … ({len(ids) - 5} more)" if len(ids) > 5 else "")
            lines.append(f"{len(ids)} id(s) in the {source} CSV are not videos of this OUTPUT: {shown}")
        return lines


# --------------------------------------------------------------------------- inputs


def parse_split_ratio(text: str) -> dict[str, float]:
    """'train=0.8,val=0.2' -> {'train': 0.8, 'val': 0.2}; fractions must be positive and sum to 1."""
    ratio: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            fraction = float(value) if sep else math.nan
        except ValueError:
            fraction = math.nan
        if not name or not math.isfinite(fraction) or fraction <= 0 or name in ratio:
            raise ExportError(f"--split-ratio {text!r}: write NAME=FRACTION pairs with distinct names, e.g. train=0.8,val=0.2",
                              "--split-ratio")
        ratio[name] = fraction
    try:
        return check_ratio(ratio, f"--split-ratio {text!r}")
    except ExportError as error:
        raise ExportError(str(error), "--split-ratio") from None


def check_ratio(ratio: Mapping[str, float], option: str = "ratio") -> dict[str, float]:
    """Split fractions: at least one, each positive, summing to 1."""
    ratio = {str(k): float(v) for k, v in ratio.items()}
    if not ratio:
        raise ExportError(f"{option}: empty; e.g. train=0.8,val=0.2")
    if any(not math.isfinite(v) or v <= 0 for v in ratio.values()):
        raise ExportError(f"{option}: every fraction must be positive, got {ratio}")
    total = sum(ratio.values())
    if abs(total - 1.0) > 1e-6:
        raise ExportError(f"{option}: the fractions sum to {total:g}, not 1")
    return ratio


def _decode_csv(data: bytes, path: str | os.PathLike[str], option: str) -> str:
    """The text of a CSV that must be UTF-8; anything else is refused naming the line and byte."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ExportError(f"{path} is UTF-16 text; save it as UTF-8 (e.g. 'Save as CSV UTF-8', or "
                          "iconv -f utf-16 -t utf-8)", option)
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise ExportError(f"{path}:{line}: byte {nul} is NUL: this is a binary file, "
                          "not a CSV of video_id,value lines", option)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        at = error.start
        line = data.count(b"\n", 0, at) + 1
        column = at - (data.rfind(b"\n", 0, at) + 1) + 1
        raise ExportError(f"{path}:{line}: byte {at} (0x{data[at]:02x}, column {column} of that line) is not UTF-8; "
                          "the file is in another encoding (Latin-1 or Windows-1252?) or is not text. Save it as "
                          "UTF-8, e.g. iconv -f latin1 -t utf-8", option) from None


def read_csv_mapping(path: str | os.PathLike[str], column: str, option: str | None = None) -> dict[str, str]:
    """`video_id,<column>` rows of a UTF-8 CSV as a dict.

    A header row is optional; when the first row names ``video_id``, the columns are found by name
    (``video_id`` and `column`, or the other one of two columns). Blank lines and lines starting
    with ``#`` are skipped. ExportError (naming the file and line) for: text that is not UTF-8
    (Latin-1, UTF-16, binary), a row without both cells, a video listed twice with different
    values, and a file with no rows. `option` (default ``--<column>s``) is the CLI option named.
    """
    option = option or f"--{column}s"
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ExportError(f"cannot read {path}: {error.strerror or error}", option) from None
    text = _decode_csv(data, path, option)
    mapping: dict[str, str] = {}
    first_line: dict[str, int] = {}
    id_col, value_col = 0, 1
    reader = csv.reader(io.StringIO(text, newline=""))
    header_seen = False
    try:
        for row in reader:
            number = reader.line_num
            cells = [c.strip() for c in row]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if not header_seen:
                header_seen = True
                names = [c.lower() for c in cells]
                if "video_id" in names:
                    id_col, value_col = _header_columns(names, column, path, number, option)
                    continue
            if len(cells) <= max(id_col, value_col) or not cells[id_col] or not cells[value_col]:
                raise ExportError(f"{path}:{number}: expected 'video_id,{column}', got {row!r}", option)
            video_id, value = cells[id_col], cells[value_col]
            if video_id in mapping and mapping[video_id] != value:
                raise ExportError(f"{path}:{number}: {video_id!r} is listed again with {column} {value!r}; line "
                                  f"{first_line[video_id]} gave it {mapping[video_id]!r}. List each video once", option)
            mapping[video_id] = value
            first_line.setdefault(video_id, number)
    except csv.Error as error:
        raise ExportError(f"{path}:{reader.line_num}: not a readable CSV line ({error})", option) from None
    if not mapping:
        what = "is empty" if not text.strip() else f"has no 'video_id,{column}' rows"
        raise ExportError(f"{path} {what}; write one 'video_id,{column}' line per video", option)
    return mapping


def _header_columns(names: list[str], column: str, path: str | os.PathLike[str], number: int, option: str) -> tuple[int, int]:
    """(video_id column, value column) of a header row that names video_id."""
    id_col = names.index("video_id")
    if column in names:
        return id_col, names.index(column)
    others = [i for i, name in enumerate(names) if i != id_col and name]
    if len(others) == 1:
        return id_col, others[0]
    raise ExportError(f"{path}:{number}: the header {names!r} names video_id but no {column!r} column; "
                      f"name the columns video_id,{column}", option)


def _stem(video_id: str) -> str:
    return posixpath.splitext(video_id)[0]


def frame_dirs(video_ids: list[str]) -> dict[str, str]:
    """video_id -> frame_dir, distinct for distinct ids: the id without extension, or the full id
    where that stem is another video's stem or full id (``a.b`` and ``a.c`` keep their ids, and
    then ``a.b.d`` keeps its own too, since its stem ``a.b`` is now taken)."""
    ids = list(dict.fromkeys(video_ids))
    full = {v for v in ids if not _stem(v)}
    while True:  # each round turns at least one stem into a (unique) full id, so it ends
        dirs = {v: v if v in full else _stem(v) for v in ids}
        count: dict[str, int] = {}
        for name in dirs.values():
            count[name] = count.get(name, 0) + 1
        clash = {v for v, name in dirs.items() if count[name] > 1 and v not in full}
        if not clash:
            return dirs
        full |= clash


def _match(mapping: Mapping[str, Any], video_ids: list[str], source: str = "mapping",
           option: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """Resolve a user mapping keyed by video_id (or by video_id without extension, if unambiguous).

    A video that two keys resolve to with different values (``jump/a.mp4,x`` and ``jump/a,y``) is
    an ExportError: which one was meant cannot be guessed."""
    by_stem: dict[str, list[str]] = {}
    for video_id in video_ids:
        by_stem.setdefault(_stem(video_id), []).append(video_id)
    resolved: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    unmatched: list[str] = []
    for key, value in mapping.items():
        key = str(key)
        if key in by_stem.get(_stem(key), []):
            video_id = key
        elif len(by_stem.get(key, [])) == 1:
            video_id = by_stem[key][0]
        else:
            unmatched.append(key)
            continue
        if video_id in resolved and resolved[video_id] != value:
            raise ExportError(f"{video_id!r} is given two different values in the {source}: {resolved[video_id]!r} "
                              f"(as {given_as[video_id]!r}) and {value!r} (as {key!r}); keep one of them", option)
        resolved.setdefault(video_id, value)
        given_as.setdefault(video_id, key)
    return resolved, sorted(unmatched)


MAX_INTEGER_LABEL = 100_000


def _label_index(names: list[Any], option: str | None = None) -> tuple[dict[Any, int], list[str]]:
    """Label values -> int index, and the label map. All-integer labels are their own index."""
    values = list(dict.fromkeys(names))
    if values and all(isinstance(v, (int, np.integer)) or (isinstance(v, str) and re.fullmatch(r"\d+", v)) for v in values):
        index = {v: int(v) for v in values}
        largest = max(index.values())
        if largest > MAX_INTEGER_LABEL or min(index.values()) < 0:
            worst = next(v for v, i in index.items() if i == largest or i < 0)
            raise ExportError(f"label {worst!r}: integer labels are used as the class index itself (the label map "
                              f"lists 0..max), so they must lie in 0..{MAX_INTEGER_LABEL}; renumber the classes from 0, "
                              "or use class names", option)
        return index, [str(i) for i in range(largest + 1)]
    ordered = sorted(str(v) for v in values)
    broken = next((name for name in ordered if name.splitlines() != [name]), None)
    if broken is not None:
        raise ExportError(f"label {broken!r} has a line break in it; the label map beside the pickle is one name "
                          "per line, so rename that class", option)
    return {v: ordered.index(str(v)) for v in values}, ordered


def _apportion(n: int, fractions: list[float]) -> list[int]:
    """Largest-remainder counts summing to n (ties to the earlier split)."""
    exact = [n * f for f in fractions]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(fractions)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def split_by_ratio(labels: Mapping[str, int], ratio: Mapping[str, float], seed: int) -> dict[str, str]:
    """video_id -> split name, stratified by label, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    by_label: dict[int, list[str]] = {}
    for video_id, label in labels.items():
        by_label.setdefault(label, []).append(video_id)
    names, fractions = list(ratio), list(ratio.values())
    assignment: dict[str, str] = {}
    for label in sorted(by_label):
        ids = sorted(by_label[label])
        shuffled = [ids[i] for i in rng.permutation(len(ids))]
        start = 0
        for name, count in zip(names, _apportion(len(ids), fractions)):
            for video_id in shuffled[start:start + count]:
                assignment[video_id] = name
            start += count
    return assignment


# --------------------------------------------------------------------------- arrays


def _to_numpy(column: pa.ChunkedArray, inner: tuple[int, ...]) -> np.ndarray:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    while pa.types.is_fixed_size_list(array.type):
        array = array.flatten()
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, *inner)


@dataclass
class _Persons:
    keypoint: np.ndarray          # (M, T, V, C) float32
    score: np.ndarray             # (M, T, V) float32
    track_ids: list[int]          # slot -> track id
    dropped: int                  # confirmed tracks beyond max_persons


def rank_tracks(track_id: np.ndarray, frame_index: np.ndarray, bbox_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confirmed track ids ordered best first by frames seen x mean bbox score; and those scores."""
    ids, inverse = np.unique(track_id, return_inverse=True)
    if len(ids) == 0:
        return ids, np.zeros(0)
    span = int(frame_index.max()) + 1
    distinct = np.unique(inverse.astype(np.int64) * span + frame_index)
    frames_seen = np.bincount(distinct // span, minlength=len(ids))
    mean_score = np.bincount(inverse, weights=bbox_score, minlength=len(ids)) / np.bincount(inverse, minlength=len(ids))
    rank = frames_seen * mean_score
    order = np.lexsort((ids, -rank))
    return ids[order], rank[order]


def persons_array(table: pa.Table, total_frames: int, kind: Kind, max_persons: int | None,
                  frame_size: tuple[int, int] | None = None, focal: float | None = None) -> _Persons:
    """Dense (M, T, V, C) keypoints and (M, T, V) scores of one video's poses rows.

    3D needs the rows' bbox_xyxy and smpl_camera and `frame_size` (width, height) to place each
    pelvis in the camera frame (see the module)."""
    if kind == "3d":
        table = table.filter(pc.is_valid(table.column("keypoints_3d")))
    track = np.asarray(table.column("track_id").to_numpy(), np.int64)
    frame = np.asarray(table.column("frame_index").to_numpy(), np.int64)
    keep = (track >= 0) & (frame >= 0) & (frame < total_frames)
    table = table.filter(pa.array(keep))
    track, frame = track[keep], frame[keep]
    ranked, _ = rank_tracks(track, frame, np.asarray(table.column("bbox_score").to_numpy(), np.float64))
    kept = ranked if max_persons is None else ranked[:max_persons]
    joints, dims = (NUM_KP3D, 3) if kind == "3d" else (NUM_KP2D, 2)
    keypoint = np.zeros((len(kept), total_frames, joints, dims), np.float32)
    score = np.zeros((len(kept), total_frames, joints), np.float32)
    if len(kept):
        slots = np.full(len(track), -1, np.int64)
        for slot, track_id in enumerate(kept):
            slots[track == track_id] = slot
        mine = slots >= 0
        scores_2d = _to_numpy(table.column("keypoint_scores"), (NUM_KP2D,))[mine]
        if kind == "3d":
            from posepipe.pipeline.downstream.camera import full_frame_translation

            if frame_size is None:
                raise ValueError("kind='3d' needs frame_size=(width, height) to place the pelvis")
            pelvis = full_frame_translation(_to_numpy(table.column("bbox_xyxy"), (4,))[mine],
                                            _to_numpy(table.column("smpl_camera"), (3,))[mine], *frame_size, focal)
            keypoint[slots[mine], frame[mine]] = (_to_numpy(table.column("keypoints_3d"), (NUM_KP3D, 3))[mine]
                                                  + pelvis[:, None, :].astype(np.float32))
            score[slots[mine], frame[mine]] = scores_2d @ _H36M_FROM_COCO_W.T
        else:
            keypoint[slots[mine], frame[mine]] = _to_numpy(table.column("keypoints_2d"), (NUM_KP2D, 2))[mine]
            score[slots[mine], frame[mine]] = scores_2d
    return _Persons(keypoint, score, [int(t) for t in kept], len(ranked) - len(kept))


# --------------------------------------------------------------------------- the dataset


def build_posec3d(
    output_uri: str,
    *,
    kind: Kind = "2d",
    max_persons: int | None = DEFAULT_MAX_PERSONS,
    labels: Mapping[str, str | int] | None = None,
    label_from: Literal["parent", "csv"] | None = None,
    split: Mapping[str, str] | None = None,
    ratio: Mapping[str, float] | None = None,
    seed: int = 0,
    with_3d_scores: bool = False,
    focal: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Any], ExportReport]:
    """The PoseC3D/PYSKL dataset dict of an OUTPUT, and a report of what was exported and skipped.

    `labels`: video_id -> label name or int (label_from='csv', implied when given); otherwise labels
    are the parent folder names (label_from='parent'). `split`: video_id -> split name; or `ratio`:
    split name -> fraction, drawn with `seed`. `max_persons`: M, None for every confirmed track.
    `focal`: the camera's focal length in pixels for 3D (default: the image diagonal).
    `progress(done, total)` is called after each video. See the module docstring for the format.
    """
    if kind not in ("2d", "3d"):
        raise ExportError(f"kind {kind!r}: choose '2d' or '3d'")
    if max_persons is not None and max_persons < 1:
        raise ExportError(f"max_persons {max_persons}: must be at least 1 (or None for every confirmed track)")
    label_from = label_from or ("csv" if labels is not None else "parent")
    if label_from not in ("parent", "csv"):
        raise ExportError(f"label_from {label_from!r}: choose 'parent' or 'csv'")
    if label_from == "csv" and labels is None:
        raise ExportError("label_from='csv' needs labels: a mapping video_id -> label (e.g. from read_csv_mapping)")
    if label_from == "parent" and labels is not None:
        raise ExportError("labels were given but label_from='parent': drop one of them")
    if split is not None and ratio is not None:
        raise ExportError("give either split (video_id -> name) or ratio (name -> fraction), not both")
    if ratio is not None:
        ratio = check_ratio(ratio)
    if ratio is not None and seed < 0:
        raise ExportError(f"seed {seed}: must be 0 or more (numpy's default_rng takes no negative seeds)", "--seed")

    reader = OutputReader(output_uri)
    videos = reader.videos().to_pylist()
    video_ids = [v["video_id"] for v in videos]
    report = ExportReport(output_uri=output_uri, kind=kind, num_videos=len(videos))
    dirs = frame_dirs(video_ids)

    # labels: indexed over every video (or every CSV row), so skipping a video never renumbers classes
    if label_from == "csv":
        assert labels is not None
        raw_label, report.unmatched["labels"] = _match(labels, video_ids, "labels", "--labels")
        index, report.label_names = _label_index(list(labels.values()), "--labels")
    else:
        raw_label = {v["video_id"]: label for v in videos if (label := folder_label(v["video_id"], v.get("uri")))}
        index, report.label_names = _label_index(sorted(set(raw_label.values())))
    split_of: dict[str, str] | None = None
    if split is not None:
        split_of, report.unmatched["splits"] = _match(split, video_ids, "splits", "--splits")
    report.unmatched = {k: v for k, v in report.unmatched.items() if v}

    columns = ["frame_index", "track_id", "bbox_score", "keypoint_scores"]
    columns += ["keypoints_3d", "bbox_xyxy", "smpl_camera"] if kind == "3d" else ["keypoints_2d"]
    annotations: dict[str, dict[str, Any]] = {}
    for done, row in enumerate(videos):
        if progress is not None and done:
            progress(done, len(videos))
        video_id = row["video_id"]
        reason = _reason_to_skip(row, video_id, raw_label, split_of, label_from)
        if reason:
            report.skipped.append(Skipped(video_id, reason))
            continue
        total = int(row["num_frames"])
        table = reader.poses([video_id], columns)
        persons = persons_array(table, total, kind, max_persons, (int(row["width"]), int(row["height"])), focal)
        if not persons.track_ids:
            report.skipped.append(Skipped(video_id, _why_no_person(table, kind, total)))
            continue
        shape = (int(row["height"]), int(row["width"]))
        annotation: dict[str, Any] = {
            "frame_dir": dirs[video_id],
            "label": index[raw_label[video_id]],
            "img_shape": shape,
            "original_shape": shape,
            "total_frames": total,
            "keypoint": persons.keypoint,
        }
        if kind == "2d" or with_3d_scores:
            annotation["keypoint_score"] = persons.score
        annotations[video_id] = annotation
        report.exported.append(video_id)
        report.persons[video_id] = len(persons.track_ids)
        report.dropped_tracks += persons.dropped

    if split_of is None and ratio is not None:
        split_of = split_by_ratio({v: a["label"] for v, a in annotations.items()}, ratio, seed)
    names = list(ratio) if ratio is not None else list(dict.fromkeys((split_of or {}).values()))
    splits: dict[str, list[str]] = {name: [] for name in names} if split_of is not None else {DEFAULT_SPLIT: []}
    for video_id in annotations:
        splits[split_of[video_id] if split_of is not None else DEFAULT_SPLIT].append(dirs[video_id])
    splits = {name: sorted(members) for name, members in splits.items()}
    report.split_sizes = {name: len(members) for name, members in splits.items()}
    if kind == "3d" and not with_3d_scores:
        report.notes.append("3d: no keypoint_score in the annotations (mmaction2/PYSKL GenSkeFeat accepts scores with 2D only)")
    if kind == "3d" and (max_persons is None or max_persons > 2) and any(m > 2 for m in report.persons.values()):
        report.notes.append("3d: some videos have more than 2 persons; mmaction2's PreNormalize3D accepts at most 2 "
                            "(export with --max-persons 2)")
    if progress is not None and videos:
        progress(len(videos), len(videos))
    dataset: dict[str, Any] = {"split": splits, "annotations": list(annotations.values())}
    report.plumbing = sorted(plumbing_videos(output_uri, report.exported)) if report.exported else []
    if report.plumbing:
        dataset[PLUMBING_KEY] = {"note": PLUMBING_NOTE, "video_ids": list(report.plumbing)}
    return dataset, report


def folder_label(video_id: str, uri: str | None) -> str | None:
    """The name of the folder holding a video: its video_id's (``jump/clip01.mp4`` -> ``jump``), or,
    for a video at the top of INPUT, the folder its file lies in (`uri`); None where there is none."""
    if posixpath.dirname(video_id):
        return posixpath.basename(posixpath.dirname(video_id))
    if not uri:
        return None
    if is_object_uri(uri):
        path = split_object_uri(uri)[1]
    elif scheme_of(uri) == "file":
        path = file_uri_path(uri)
    elif scheme_of(uri):
        path = urlsplit(uri).path
    else:
        path = uri.replace(os.sep, "/")
    return posixpath.basename(posixpath.dirname(path)) or None


def _reason_to_skip(row: Mapping[str, Any], video_id: str, raw_label: Mapping[str, Any],
                    split_of: Mapping[str, str] | None, label_from: str) -> str | None:
    if row["status"] != "ok":
        return f"failed in the job: {row.get('error') or 'no reason recorded'}"
    if not row.get("num_frames") or not row.get("width") or not row.get("height"):
        return "the videos table has no frame count or frame size for it"
    if video_id not in raw_label:
        return ("no folder to take the label from (its file lies at the top of its bucket): give --labels"
                if label_from == "parent" else "not in the labels CSV")
    if split_of is not None and video_id not in split_of:
        return "not in the splits CSV"
    return None


def _why_no_person(table: pa.Table, kind: str, total_frames: int) -> str:
    if table.num_rows == 0:
        return "no person detected in any frame"
    track = np.asarray(table.column("track_id").to_numpy())
    if (track < 0).all():
        return "no confirmed track (only track_id -1 detections)"
    if kind == "3d" and table.column("keypoints_3d").null_count == table.num_rows:
        return "no 3D keypoints (was the job run with the 3D lifter?)"
    return f"no confirmed track within the video's {total_frames} frames"


class _PortablePickler(pickle.Pickler):
    """Pickles arrays as ``numpy.ndarray(shape, dtype, bytearray)``, loadable by NumPy 1.x and 2.x.

    NumPy 2 pickles an array through ``numpy._core.multiarray._reconstruct``, a module NumPy before
    1.26 does not have (numpy/numpy#28340; checked: such a pickle fails on 1.24.4 with
    ModuleNotFoundError, this one loads), and mmaction2/PYSKL environments often pin old NumPy. The
    mutable bytearray buffer keeps the loaded arrays writable, as the pose pipelines expect.
    """

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is np.ndarray and obj.dtype.kind in "biuf":
            array = np.ascontiguousarray(obj)
            return np.ndarray, (array.shape, array.dtype.str, bytearray(array.tobytes()))
        return NotImplemented


def dumps_portable(obj: Any) -> bytes:
    """Pickle protocol 4 of plain dicts/lists/tuples and numeric arrays, for NumPy 1.x and 2.x readers."""
    buffer = io.BytesIO()
    _PortablePickler(buffer, protocol=PICKLE_PROTOCOL).dump(obj)
    return buffer.getvalue()


def posec3d_files(out: str | os.PathLike[str], kind: str) -> dict[str, Path]:
    """What an export to `out` writes: the pickle, the label map beside it, and for 3D the mmaction2
    config and the bone transform module (`write_mmaction_config`); by what they are."""
    from posepipe.pipeline.downstream.mmaction import TRANSFORM_MODULE_NAME

    out = Path(out)
    if not out.name or out.name in (".", ".."):
        raise DestinationError(f"--output {str(out)!r} names no file; give the pickle's path, e.g. dataset.pkl", "--output")
    files = {"pickle": out, "label map": out.with_suffix(".labels.txt")}
    if kind == "3d":
        files["mmaction2 config"] = out.with_suffix(".mmaction2.py")
        files["bone transform module"] = out.parent / f"{TRANSFORM_MODULE_NAME}.py"
    return files


def check_posec3d_files(out: str | os.PathLike[str], kind: str, output_uri: str,
                        inputs: Sequence[tuple[str, Path | None]] = ()) -> dict[str, Path]:
    """`posec3d_files`, or `DestinationError` if one lies in OUTPUT's own folders, two are one file
    (``--output posepipe_h36m.py --kind 3d`` would write the pickle and the module to one name), or one is
    an input file (``inputs``: (option, path) pairs such as the --labels CSV)."""
    files = posec3d_files(out, kind)
    claims = Claims()
    for what, path in files.items():
        refuse_inside_output(path, output_uri, option="--output")
        claims.claim(path, f"the {what}", option="--output")
    claims.refuse_inputs(inputs)
    return files


def write_posec3d(dataset: Mapping[str, Any], report: ExportReport, out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write the pickle (protocol 4) and the label map `<out stem>.labels.txt` beside it; both atomically.

    Checked first with `check_posec3d_files` (every file of the export, the 3D config's too)."""
    files = check_posec3d_files(out, report.kind, report.output_uri)
    out, labels_path = files["pickle"], files["label map"]
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, payload in (
        (out, dumps_portable(dict(dataset))),
        (labels_path, "".join(f"{name}\n" for name in report.label_names).encode()),
    ):
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
        try:
            tmp.write_bytes(payload)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return out, labels_path


def write_mmaction_config(report: ExportReport, out: str | os.PathLike[str]) -> list[Path]:
    """Beside a 3D pickle: ``<stem>.mmaction2.py`` (a ready ST-GCN config for H36M-17) and the bone
    transform module ``posepipe_h36m.py`` (`pipeline.downstream.mmaction`); nothing for 2D, whose COCO-17
    layout mmaction2's shipped configs already use."""
    from posepipe.pipeline.downstream.mmaction import TRANSFORM_MODULE, config_text

    if report.kind != "3d":
        return []
    files = check_posec3d_files(out, report.kind, report.output_uri)
    out = files["pickle"]
    written = []
    config = config_text(out.name, len(report.label_names), list(report.split_sizes), files["mmaction2 config"].name)
    if report.plumbing:
        config = f"# {PLUMBING_NOTE}: {len(report.plumbing)} of the pickle's videos. Not for training.\n" + config
    for path, text in ((files["mmaction2 config"], config),
                       (files["bone transform module"], TRANSFORM_MODULE)):
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(path)
    return written
