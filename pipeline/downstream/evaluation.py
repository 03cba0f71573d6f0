"""Scoring a job's ``poses/`` against ground truth (``posepipe eval OUTPUT --gt GT``, jobs/evaluate.py).

The ground truth's file suffix says what it holds:

``.json`` -- 2D, COCO keypoints format (``images``, ``annotations``, optional ``categories``).
    Each entry of ``images`` names the ``poses/`` frame it is with two extra fields,
    ``"video_id"`` (as in ``poses/``: the path relative to the job's INPUT) and
    ``"frame_index"`` (0-based decoded frame, a whole number: ``3`` or ``3.0``; ``"3"`` and ``3.5``
    are refused, not guessed). ``file_name`` is not parsed. Annotations are COCO's: ``image_id``,
    ``bbox`` [x, y, w, h], ``keypoints`` (17 x [x, y, v], COCO-17 order, v > 0 = labelled);
    ``category_id``, ``iscrowd``, ``num_keypoints`` and ``area`` are optional (defaults:
    person, 0, count of v > 0, bbox w x h). PCKh also needs a head size per person:
    ``"head_size"`` in pixels, or ``"head_bbox"`` [x, y, w, h] (MPII: 0.6 x its diagonal).
    Crowd annotations only take part in COCO AP.

``.parquet``, ``.csv``, ``.npz`` -- 3D, one row per person and frame: ``video_id``,
    ``frame_index``, ``keypoints_3d`` (17 x 3, H36M-17 order, metres); optional ``track_id`` and
    ``bbox_xyxy`` (4, pixels). Parquet and NPZ use those names (``keypoints_3d`` nested 17 x 3 or
    flat 51); CSV has one column per coordinate, ``<joint>_x``, ``<joint>_y``, ``<joint>_z`` with
    the H36M-17 joint names (``pelvis_x`` ... ``right_wrist_z``), and ``bbox_x1``, ``bbox_y1``,
    ``bbox_x2``, ``bbox_y2``.

Matching, within each GT frame: by box IoU (Hungarian, pairs below ``--min-iou`` never made)
when the GT has boxes; for 3D GT without boxes, by equal ``track_id`` if the GT has that column
(GT labelled against this job's track ids); otherwise only frames with one GT person and one
prediction are paired (single-person sets such as Human3.6M). A GT person left unmatched counts
as wrong in PCK/PCKh/PCP/PDJ and is reported, not scored, for MPJPE. COCO AP uses every
prediction in the GT frames, scored ``bbox_score x mean(keypoint_scores)``.

GT that names no frame of OUTPUT's committed videos (wrong video_id, frames past the end, videos
that failed) is refused rather than scored as all-wrong; ``frame_index`` (and ``track_id``) must be
whole numbers in every format.

3D errors are taken after centring both skeletons on the pelvis (joint 0) and reported in mm.
"""
from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posepipe.models.skeletons import H36M17_NAMES
from posepipe.pipeline.downstream import metrics
from posepipe.pipeline.io.readback import OutputReader, ReadbackError, describe_known
from posepipe.pipeline.io.schema import NUM_KP2D, NUM_KP3D
from posepipe.pipeline.io.sources import redact

Key = tuple[str, int]
METRICS_2D = ("pck", "pckh", "pcp", "pdj", "coco-ap")
METRICS_3D = ("mpjpe",)
THRESHOLD_METRICS = ("pck", "pckh", "pcp", "pdj")
DEFAULT_ALPHA = {"pck": 0.2, "pckh": 0.5, "pcp": 0.5, "pdj": 0.2}
GT_2D_SUFFIXES = (".json",)
GT_3D_SUFFIXES = (".parquet", ".csv", ".npz")


# --------------------------------------------------------------------------------------------
# Ground truth and predictions as dense arrays


@dataclass(frozen=True)
class Gt2D:
    dataset: dict[str, Any]          # the COCO dict, limited to the selected videos (for COCO AP)
    image_ids: dict[Key, Any]        # (video_id, frame_index) -> COCO image id
    keys: list[Key]                  # per non-crowd annotation
    bbox_xyxy: np.ndarray            # (M, 4)
    keypoints: np.ndarray            # (M, 17, 2)
    visible: np.ndarray              # (M, 17) bool
    head_size: np.ndarray            # (M,) pixels, NaN where the annotation has none


@dataclass(frozen=True)
class Gt3D:
    keys: list[Key]
    keypoints_3d: np.ndarray         # (M, 17, 3)
    track_id: np.ndarray | None      # (M,)
    bbox_xyxy: np.ndarray | None     # (M, 4)


@dataclass(frozen=True)
class Predictions:
    keys: list[Key]
    track_id: np.ndarray             # (N,)
    bbox_xyxy: np.ndarray            # (N, 4)
    bbox_score: np.ndarray           # (N,)
    keypoints_2d: np.ndarray | None  # (N, 17, 2)
    keypoint_scores: np.ndarray | None
    keypoints_3d: np.ndarray | None  # (N, 17, 3), NaN rows where poses/ has null


class EvalInputError(ValueError):
    """The ground truth, a requested video or the job's output is unusable; `option` names the
    command-line argument it came from (`--gt`, `--video`, `OUTPUT`)."""

    def __init__(self, message: str, option: str) -> None:
        super().__init__(message)
        self.option = option


def _bad_gt(message: str) -> EvalInputError:
    return EvalInputError(message, "--gt")


def _whole_number(value: Any) -> int | None:
    """`value` as an int if it is a whole number (an int, or a float such as 3.0), else None.

    Strings ("3"), fractions (3.5), booleans and null are not frame numbers: guessing would
    silently score the wrong frame."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return None


def _numbers(value: Any, size: int) -> np.ndarray | None:
    """`value` as `size` float64 numbers, or None if it is not a list of that many numbers."""
    if not isinstance(value, (list, tuple)) or len(value) != size:
        return None
    if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in value):
        return None
    return np.asarray([math.nan if v is None else v for v in value], np.float64)


def _image_key(image: Any, number: int, path: Path) -> tuple[Any, Key]:
    """(COCO image id, (video_id, frame_index)) of one entry of 'images', checked."""
    example = '{"id": 1, "video_id": "clips/a.mp4", "frame_index": 0}'
    if not isinstance(image, dict):
        raise _bad_gt(f"images[{number}] in {path} is {_short(image)}, not an object; every entry of "
                      f"'images' must be like {example}")
    image_id = image.get("id")
    if isinstance(image_id, bool) or not isinstance(image_id, (int, str)):
        raise _bad_gt(f"images[{number}] in {path} has id {image_id!r}; every image needs an integer 'id' that its "
                      f"annotations' image_id refers to, e.g. {example}")
    if "video_id" not in image or "frame_index" not in image:
        raise _bad_gt(f"image id={image_id!r} in {path} has no 'video_id'/'frame_index'; every entry "
                      f"of 'images' must name its poses/ frame, e.g. {example}")
    video_id = image["video_id"]
    if not isinstance(video_id, str) or not video_id:
        raise _bad_gt(f"image id={image_id!r} in {path} has video_id {video_id!r}; write the video's path relative "
                      "to the job's INPUT as a string, as in OUTPUT's videos table")
    frame = _whole_number(image["frame_index"])
    if frame is None or frame < 0:
        raise _bad_gt(f"image id={image_id!r} in {path} has frame_index {image['frame_index']!r} "
                      f"({type(image['frame_index']).__name__}); frame_index must be the 0-based index of the decoded "
                      'frame as a JSON integer, e.g. "frame_index": 3, not a string or a fraction')
    return image_id, (video_id, frame)


def read_gt_2d(path: Path, videos: Sequence[str]) -> Gt2D:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise _bad_gt(f"{path} is not a JSON file ({error}); pass a COCO keypoints .json") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise _bad_gt(f"{path} needs top-level 'images' and 'annotations' lists (COCO keypoints format)")
    categories = data.get("categories", [])
    if not isinstance(categories, list) or not all(isinstance(c, dict) and "id" in c for c in categories):
        raise _bad_gt(f"'categories' in {path} must be a list of objects with an 'id', e.g. "
                      '[{"id": 1, "name": "person"}]; or leave it out')
    image_key: dict[Any, Key] = {}
    image_ids: dict[Key, Any] = {}
    for number, image in enumerate(data["images"]):
        image_id, key = _image_key(image, number, path)
        if image_id in image_key:
            raise _bad_gt(f"two entries of 'images' in {path} have id {image_id!r}; give each image its own id")
        if key in image_ids:
            raise _bad_gt(f"images {image_ids[key]!r} and {image_id!r} in {path} are both {key}; list each frame once")
        image_key[image_id], image_ids[key] = key, image_id
    if len({type(i) for i in image_key}) > 1:
        raise _bad_gt(f"{path} mixes integer and string image ids; use integers (COCO format)")
    selected = _select_videos(sorted({v for v, _ in image_ids}), videos)
    images = [im for im in data["images"] if image_key[im["id"]][0] in selected]
    annotations = []
    for number, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise _bad_gt(f"annotations[{number}] in {path} is {_short(ann)}, not an object with image_id, bbox and "
                          "keypoints (COCO format)")
        image_id = ann.get("image_id")
        if isinstance(image_id, (int, str)) and image_id in image_key and image_key[image_id][0] in selected:
            annotations.append(ann)

    keys, boxes, points, heads = [], [], [], []
    for ann in annotations:
        kp, bbox = _numbers(ann.get("keypoints"), 3 * NUM_KP2D), _numbers(ann.get("bbox"), 4)
        if kp is None or bbox is None:
            raise _bad_gt(f"annotation id={ann.get('id')!r} in {path} needs 'keypoints' (17 x [x, y, v] = 51 numbers) "
                          f"and 'bbox' [x, y, w, h] (4 numbers); got {_describe(ann.get('keypoints'))} and "
                          f"{_describe(ann.get('bbox'))}")
        if ann.get("iscrowd", 0):
            continue
        keys.append(image_key[ann["image_id"]])
        boxes.append([bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]])
        points.append(kp.reshape(NUM_KP2D, 3))
        if "head_size" in ann:
            head = ann["head_size"]
            if isinstance(head, bool) or not isinstance(head, (int, float)):
                raise _bad_gt(f"annotation id={ann.get('id')!r} in {path} has head_size {head!r}; write the head "
                              "size in pixels as a number, or leave it out")
            heads.append(float(head))
        elif "head_bbox" in ann:
            head_box = _numbers(ann["head_bbox"], 4)
            if head_box is None:
                raise _bad_gt(f"annotation id={ann.get('id')!r} in {path} has head_bbox {_describe(ann['head_bbox'])}; "
                              "write [x, y, w, h] (4 numbers, pixels), or leave it out")
            x, y, w, h = head_box
            heads.append(float(metrics.mpii_head_size(np.array([x, y, x + w, y + h]))[0]))
        else:
            heads.append(math.nan)
    kps = np.asarray(points, np.float64).reshape(-1, NUM_KP2D, 3)
    return Gt2D(
        dataset={**data, "images": images, "annotations": annotations},
        image_ids={k: v for k, v in image_ids.items() if k[0] in selected},
        keys=keys,
        bbox_xyxy=np.asarray(boxes, np.float64).reshape(-1, 4),
        keypoints=kps[..., :2],
        visible=kps[..., 2] > 0,
        head_size=np.asarray(heads, np.float64),
    )


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        kinds = sorted({type(v).__name__ for v in value})
        return f"a list of {len(value)} ({', '.join(kinds) or 'empty'})"
    return "nothing" if value is None else f"a {type(value).__name__}"


REQUIRED_3D = ("video_id", "frame_index", "keypoints_3d")


def _require(present: Iterable[str], path: Path, what: str = "column") -> None:
    missing = [c for c in REQUIRED_3D if c not in set(present)]
    if missing:
        raise _bad_gt(f"{path} lacks {what}(s) {', '.join(missing)}; 3D GT needs {', '.join(REQUIRED_3D)} "
                      "(and optionally track_id, bbox_xyxy)")


def _flat_numbers(column: pa.ChunkedArray, width: int, name: str, path: Path) -> np.ndarray:
    """A (nested) list column as float64 (N, width)."""
    values = column
    while pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type):
        values = pc.list_flatten(values)
    flat = np.asarray(values.to_numpy(), np.float64)
    if flat.size != width * len(column):
        raise _bad_gt(f"{path}: column {name} must hold {width} numbers in every row")
    return flat.reshape(len(column), width)


def _read_columns_3d(path: Path) -> dict[str, np.ndarray]:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        if not zipfile.is_zipfile(path):
            raise _bad_gt(f"{path} is not an .npz archive (a zip of .npy arrays, as numpy.savez writes); "
                          "see `pydoc pipeline.downstream.evaluation` for the 3D formats")
        with np.load(path, allow_pickle=False) as npz:
            columns = {k: npz[k] for k in npz.files}
        _require(columns, path, "array")
        columns["video_id"] = columns["video_id"].astype(str).astype(object)
        return columns
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        _require(table.column_names, path)
        columns = {"keypoints_3d": _flat_numbers(table.column("keypoints_3d"), NUM_KP3D * 3, "keypoints_3d", path)}
        if "bbox_xyxy" in table.column_names:
            columns["bbox_xyxy"] = _flat_numbers(table.column("bbox_xyxy"), 4, "bbox_xyxy", path)
    else:
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={"video_id": pa.string()}))
        coords = [f"{joint}_{axis}" for joint in H36M17_NAMES for axis in "xyz"]
        missing = [c for c in coords if c not in table.column_names]
        if missing:
            raise _bad_gt(f"{path} lacks CSV column(s) {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}; "
                          "3D CSV GT has one column per coordinate: pelvis_x, pelvis_y, ... right_wrist_z")
        _require([*table.column_names, "keypoints_3d"], path)
        columns = {"keypoints_3d": np.stack([table.column(c).to_numpy() for c in coords], axis=1)}
        box = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"]
        if all(c in table.column_names for c in box):
            columns["bbox_xyxy"] = np.stack([table.column(c).to_numpy() for c in box], axis=1)
    columns["video_id"] = np.asarray(table.column("video_id").cast(pa.string()).to_pylist(), dtype=object)
    columns["frame_index"] = table.column("frame_index").to_numpy()
    if "track_id" in table.column_names:
        columns["track_id"] = table.column("track_id").to_numpy()
    return columns


def _integer_column(values: np.ndarray, name: str, path: Path, minimum: int | None) -> np.ndarray:
    """A GT column of whole numbers as int64; anything else (strings, fractions, NaN, booleans) is refused."""
    values = np.asarray(values)
    bad: np.ndarray | None = None
    if values.dtype.kind in "iu":
        bad = np.zeros(len(values), bool)
    elif values.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(values) | (values != np.round(values))
    if bad is None:
        raise _bad_gt(f"{path}: column {name} holds {_kind(values)} (e.g. {values[:1].tolist()!r}), not numbers; "
                      f"store {name} as integers" + (" (0-based decoded frame numbers)" if name == "frame_index" else ""))
    if minimum is not None:
        bad = bad | (np.nan_to_num(values, nan=minimum) < minimum)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        rule = "a whole number" + (f" >= {minimum}" if minimum is not None else "")
        if name == "frame_index":
            rule += ", the 0-based index of the decoded frame"
        raise _bad_gt(f"{path}: {name} is {values[row].item()!r} in row {row} (0-based; {int(bad.sum())} such row(s)); "
                      f"{name} must be {rule}")
    return values.astype(np.int64)


def _kind(values: np.ndarray) -> str:
    return {"U": "strings", "S": "bytes", "O": "strings or objects", "b": "booleans"}.get(values.dtype.kind, str(values.dtype))


def read_gt_3d(path: Path, videos: Sequence[str]) -> Gt3D:
    try:
        columns = _read_columns_3d(path)
        n = len(columns["video_id"])
        kp3d = np.asarray(columns["keypoints_3d"], np.float64).reshape(n, NUM_KP3D, 3)
        frame = _integer_column(columns["frame_index"], "frame_index", path, 0)
        track = None if "track_id" not in columns else _integer_column(columns["track_id"], "track_id", path, None)
        box = None if "bbox_xyxy" not in columns else np.asarray(columns["bbox_xyxy"], np.float64).reshape(n, 4)
    except EvalInputError:
        raise
    except (OSError, ValueError, TypeError, pa.ArrowException) as error:
        raise _bad_gt(f"cannot read {path} as 3D ground truth ({error}); see `pydoc pipeline.downstream.evaluation` for the format") from None
    if not np.isfinite(kp3d).all():
        bad = int((~np.isfinite(kp3d)).any(axis=(1, 2)).sum())
        raise _bad_gt(f"{path}: keypoints_3d is NaN/inf in {bad} row(s); drop those rows from the GT")
    selected = _select_videos(sorted(set(columns["video_id"])), videos)
    keep = np.array([v in selected for v in columns["video_id"]], dtype=bool)
    return Gt3D(keys=[(str(v), int(f)) for v, f in zip(columns["video_id"][keep], frame[keep])],
                keypoints_3d=kp3d[keep],
                track_id=None if track is None else track[keep],
                bbox_xyxy=None if box is None else box[keep])


def _select_videos(available: list[str], requested: Sequence[str]) -> set[str]:
    if not requested:
        return set(available)
    unknown = [v for v in requested if v not in available]
    if unknown:
        shown = ", ".join(available[:10]) + (" ..." if len(available) > 10 else "")
        raise EvalInputError(f"{', '.join(unknown)} not in the ground truth; its videos are: {shown or '(none)'}",
                             "--video")
    return set(requested)


def _dense(column: pa.ChunkedArray, shape: tuple[int, ...]) -> np.ndarray:
    """A fixed-size-list column as float64 (N, *shape); null rows are NaN."""
    out = np.full((len(column), *shape), np.nan)
    valid = column.is_valid()
    values = column.filter(valid)
    for _ in shape:  # one list level per dimension
        values = pc.list_flatten(values)
    out[np.asarray(valid.to_numpy(zero_copy_only=False), bool)] = np.asarray(values.to_numpy(), np.float64).reshape(-1, *shape)
    return out


def open_output(output: str) -> OutputReader:
    """The job's OUTPUT (a local folder or s3:// prefix) with its videos table read; EvalInputError('OUTPUT') if unusable."""
    try:
        reader = OutputReader(output)
        reader.videos()
    except ReadbackError as error:
        raise EvalInputError(str(error), "OUTPUT") from None
    return reader


def check_selection(keys: Sequence[Key], reader: OutputReader, path: Path) -> None:
    """Refuse GT that names no frame of OUTPUT's videos: every score would be empty or 0, which reads as a result.

    `keys` are the (video_id, frame_index) of the GT persons to score. At least one must be a frame
    (0 <= frame_index < num_frames) of a video that OUTPUT holds and processed ok."""
    if not keys:
        raise _bad_gt(f"{path} has no person to score in the selected videos (no non-crowd annotation or row); "
                      "add annotations, or check --video")
    rows = {r["video_id"]: r for r in reader.videos().to_pylist()}
    frames = {v: int(r["num_frames"] or 0) for v, r in rows.items() if r["status"] == "ok"}
    if any(0 <= f < frames.get(v, 0) for v, f in keys):
        return
    gt_videos = sorted({v for v, _ in keys})
    where = redact(reader.uri)
    present = [v for v in gt_videos if v in rows]
    if not present:
        raise _bad_gt(f"none of the {len(gt_videos)} video(s) in {path} ({_shown(gt_videos)}) is in {where}, so "
                      f"nothing would be scored; {describe_known(gt_videos[0], list(rows))}. The GT's video_id must "
                      "be the video's path relative to the job's INPUT, exactly as in OUTPUT's videos table")
    failed = [v for v in present if v not in frames]
    if len(failed) == len(present):
        raise _bad_gt(f"the GT's video(s) {_shown(failed)} in {path} failed in the job that wrote {where}, so there "
                      "are no predictions to score; rerun the job for them or pick other videos")
    ranges = []
    for video in [v for v in present if v in frames][:3]:
        named = sorted(f for v, f in keys if v == video)
        ranges.append(f"{video} has frames 0..{frames.get(video, 0) - 1} and the GT names {named[0]}..{named[-1]}")
    raise _bad_gt(f"no frame in {path} is a frame of its video in {where}: {'; '.join(ranges)}. frame_index is "
                  "the 0-based index of the decoded frame, as in OUTPUT's poses/")


def _shown(ids: Sequence[str], limit: int = 5) -> str:
    return ", ".join(ids[:limit]) + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")


def read_predictions(output: str | OutputReader, videos: Iterable[str], *, need_2d: bool, need_3d: bool) -> Predictions:
    """The ``poses/`` rows of ``videos`` in OUTPUT (a local folder, an s3:// prefix, or an open reader).

    Only committed videos count (those with a ``videos/`` row; see `pipeline.io.readback`); videos
    OUTPUT does not hold give no rows."""
    reader = output if isinstance(output, OutputReader) else open_output(output)
    known = set(reader.video_ids())
    columns = ["video_id", "frame_index", "track_id", "bbox_xyxy", "bbox_score"]
    columns += ["keypoints_2d", "keypoint_scores"] if need_2d else []
    columns += ["keypoints_3d"] if need_3d else []
    try:
        table = reader.poses(sorted(v for v in set(videos) if v in known), columns)
    except ReadbackError as error:
        raise EvalInputError(str(error), "OUTPUT") from None
    keys = list(zip(table.column("video_id").to_pylist(), table.column("frame_index").to_numpy().astype(np.int64).tolist()))
    return Predictions(
        keys=keys,
        track_id=table.column("track_id").to_numpy().astype(np.int64),
        bbox_xyxy=_dense(table.column("bbox_xyxy"), (4,)),
        bbox_score=table.column("bbox_score").to_numpy().astype(np.float64),
        keypoints_2d=_dense(table.column("keypoints_2d"), (NUM_KP2D, 2)) if need_2d else None,
        keypoint_scores=_dense(table.column("keypoint_scores"), (NUM_KP2D,)) if need_2d else None,
        keypoints_3d=_dense(table.column("keypoints_3d"), (NUM_KP3D, 3)) if need_3d else None,
    )


# --------------------------------------------------------------------------------------------
# Matching


def _group(keys: Sequence[Key]) -> dict[Key, np.ndarray]:
    rows: dict[Key, list[int]] = {}
    for i, key in enumerate(keys):
        rows.setdefault(key, []).append(i)
    return {k: np.asarray(v, np.int64) for k, v in rows.items()}


Pairer = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (pred rows, gt rows) -> (M, 2) local pairs


def match_rows(gt_keys: Sequence[Key], pred_keys: Sequence[Key], pair: Pairer) -> tuple[np.ndarray, int]:
    """For each GT row the prediction row paired with it (-1: none), and how many prediction
    rows in GT frames were left unpaired."""
    matched = np.full(len(gt_keys), -1, np.int64)
    by_frame = _group(pred_keys)
    spare = 0
    for key, gt_rows in _group(gt_keys).items():
        pred_rows = by_frame.get(key, np.empty(0, np.int64))
        pairs = pair(pred_rows, gt_rows) if len(pred_rows) else np.empty((0, 2), np.int64)
        matched[gt_rows[pairs[:, 1]]] = pred_rows[pairs[:, 0]]
        spare += len(pred_rows) - len(pairs)
    return matched, spare


def by_box(pred_boxes: np.ndarray, gt_boxes: np.ndarray, min_iou: float) -> Pairer:
    return lambda p, g: metrics.match_persons(pred_boxes[p], gt_boxes[g], min_iou)


def by_track(pred_track: np.ndarray, gt_track: np.ndarray) -> Pairer:
    def pair(p: np.ndarray, g: np.ndarray) -> np.ndarray:
        first = {}
        for j, t in enumerate(pred_track[p].tolist()):
            first.setdefault(t, j)
        pairs = [(first[t], i) for i, t in enumerate(gt_track[g].tolist()) if t in first and t >= 0]
        return np.asarray(pairs, np.int64).reshape(-1, 2)
    return pair


def single_person(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    return np.array([[0, 0]], np.int64) if len(p) == 1 and len(g) == 1 else np.empty((0, 2), np.int64)


# --------------------------------------------------------------------------------------------
# Scoring


@dataclass(frozen=True)
class Score:
    name: str
    value: float
    kind: str      # 'ratio', 'ap' or 'mm': how to print it
    setting: str


def evaluate_2d(gt: Gt2D, pred: Predictions, wanted: Sequence[str], alpha: dict[str, float],
                norm: str, min_iou: float) -> tuple[list[Score], dict[str, int]]:
    assert pred.keypoints_2d is not None and pred.keypoint_scores is not None
    matched, spare = match_rows(gt.keys, pred.keys, by_box(pred.bbox_xyxy, gt.bbox_xyxy, min_iou))
    guess = np.full_like(gt.keypoints, np.nan)
    guess[matched >= 0] = pred.keypoints_2d[matched[matched >= 0]]
    scores: list[Score] = []
    if "pck" in wanted:
        size = metrics.bbox_norm(gt.bbox_xyxy) if norm == "bbox" else metrics.torso_norm(gt.keypoints, gt.visible)
        scores.append(Score("pck", metrics.pck(guess, gt.keypoints, gt.visible, size, alpha["pck"]), "ratio",
                            f"alpha={alpha['pck']:g}, norm={norm}"))
    if "pckh" in wanted:
        scores.append(Score("pckh", metrics.pckh(guess, gt.keypoints, gt.visible, gt.head_size, alpha["pckh"]),
                            "ratio", f"alpha={alpha['pckh']:g}, norm=head"))
    if "pcp" in wanted:
        scores.append(Score("pcp", metrics.pcp(guess, gt.keypoints, gt.visible, alpha=alpha["pcp"]), "ratio",
                            f"alpha={alpha['pcp']:g}, strict, 8 limbs"))
    if "pdj" in wanted:
        torso = metrics.torso_norm(gt.keypoints, gt.visible)
        scores.append(Score("pdj", metrics.pdj(guess, gt.keypoints, gt.visible, torso, alpha["pdj"]), "ratio",
                            f"alpha={alpha['pdj']:g}, norm=torso"))
    if "coco-ap" in wanted:
        person = next((c["id"] for c in gt.dataset.get("categories", []) if c.get("name") == "person"), 1)
        results = []
        for i, key in enumerate(pred.keys):
            if key not in gt.image_ids:
                continue
            xys = np.concatenate([pred.keypoints_2d[i], pred.keypoint_scores[i][:, None]], axis=1)
            results.append({"image_id": gt.image_ids[key], "category_id": person,
                            "keypoints": [float(v) for v in xys.reshape(-1)],
                            "score": float(pred.bbox_score[i] * np.mean(pred.keypoint_scores[i]))})
        for name, value in metrics.coco_keypoint_ap(gt.dataset, results).items():
            scores.append(Score(name, value, "ap", "OKS, COCO sigmas"))
    counts = {"gt_frames": len(gt.image_ids), "gt_persons": len(gt.keys), "matched": int((matched >= 0).sum()),
              "unmatched_gt": int((matched < 0).sum()), "unmatched_predictions": spare}
    return scores, counts


def evaluate_3d(gt: Gt3D, pred: Predictions, min_iou: float) -> tuple[list[Score], dict[str, int]]:
    assert pred.keypoints_3d is not None
    if gt.bbox_xyxy is not None:
        pair, how = by_box(pred.bbox_xyxy, gt.bbox_xyxy, min_iou), f"box IoU >= {min_iou:g}"
    elif gt.track_id is not None:
        pair, how = by_track(pred.track_id, gt.track_id), "track_id"
    else:
        pair, how = single_person, "single person per frame"
    matched, spare = match_rows(gt.keys, pred.keys, pair)
    have = matched >= 0
    have[have] = np.isfinite(pred.keypoints_3d[matched[have]]).all(axis=(1, 2))
    guess = pred.keypoints_3d[matched[have]]
    truth = gt.keypoints_3d[have]
    guess, truth = guess - guess[:, :1], truth - truth[:, :1]
    to_mm = 1000.0
    nan = float("nan")
    any_ = bool(have.any())
    scores = [
        Score("mpjpe", metrics.mpjpe(guess, truth) * to_mm if any_ else nan, "mm", f"pelvis-centred, match: {how}"),
        Score("p_mpjpe", metrics.p_mpjpe(guess, truth) * to_mm if any_ else nan, "mm", "Procrustes: scale+rotation+translation"),
        Score("n_mpjpe", metrics.n_mpjpe(guess, truth) * to_mm if any_ else nan, "mm", "scale only"),
    ]
    counts = {"gt_frames": len(set(gt.keys)), "gt_persons": len(gt.keys), "matched": int((matched >= 0).sum()),
              "evaluated": int(have.sum()), "matched_without_3d": int((matched >= 0).sum() - have.sum()),
              "unmatched_gt": int((matched < 0).sum()), "unmatched_predictions": spare}
    return scores, counts
