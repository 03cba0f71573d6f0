"""Scoring a job's ``poses/`` against ground truth (``posepipe eval OUTPUT --gt GT``, jobs/evaluate.py).

The ground truth's file suffix says what it holds:

``.json`` -- 2D, COCO keypoints format (``images``, ``annotations``, optional ``categories``).
    Each entry of ``images`` names the ``poses/`` frame it is with two extra fields,
    ``"video_id"`` (as in ``poses/``: the path relative to the job's INPUT) and
    ``"frame_index"`` (0-based decoded frame). ``file_name`` is not parsed. Annotations are
    COCO's: ``image_id``, ``bbox`` [x, y, w, h], ``keypoints`` (17 x [x, y, v], COCO-17 order,
    v > 0 = labelled); ``category_id``, ``iscrowd``, ``num_keypoints`` and ``area`` are optional
    (defaults: person, 0, count of v > 0, bbox w x h). PCKh also needs a head size per person:
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

3D errors are taken after centring both skeletons on the pelvis (joint 0) and reported in mm.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from models.skeletons import H36M17_NAMES
from pipeline import metrics
from pipeline.schema import NUM_KP2D, NUM_KP3D, POSES_SCHEMA
from pipeline.sources import is_remote, local_path, redact

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


def read_gt_2d(path: Path, videos: Sequence[str]) -> Gt2D:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _bad_gt(f"{path} is not a JSON file ({error}); pass a COCO keypoints .json") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise _bad_gt(f"{path} needs top-level 'images' and 'annotations' lists (COCO keypoints format)")
    image_key: dict[Any, Key] = {}
    image_ids: dict[Key, Any] = {}
    for image in data["images"]:
        if "video_id" not in image or "frame_index" not in image:
            raise _bad_gt(f"image id={image.get('id')!r} in {path} has no 'video_id'/'frame_index'; every entry "
                          "of 'images' must name its poses/ frame, e.g. "
                          '{"id": 1, "video_id": "clips/a.mp4", "frame_index": 0}')
        key = (str(image["video_id"]), int(image["frame_index"]))
        if key in image_ids:
            raise _bad_gt(f"images {image_ids[key]!r} and {image['id']!r} in {path} are both {key}; list each frame once")
        image_key[image["id"]], image_ids[key] = key, image["id"]
    selected = _select_videos(sorted({v for v, _ in image_ids}), videos)
    images = [im for im in data["images"] if image_key[im["id"]][0] in selected]
    annotations = [a for a in data["annotations"] if a.get("image_id") in image_key and image_key[a["image_id"]][0] in selected]

    keys, boxes, points, heads = [], [], [], []
    for ann in annotations:
        kp, bbox = np.asarray(ann.get("keypoints", ()), np.float64), np.asarray(ann.get("bbox", ()), np.float64)
        if kp.shape != (3 * NUM_KP2D,) or bbox.shape != (4,):
            raise _bad_gt(f"annotation id={ann.get('id')!r} in {path} needs 'keypoints' (17 x [x, y, v] = 51 numbers) "
                          f"and 'bbox' [x, y, w, h]; got {kp.size} and {bbox.size} numbers")
        if ann.get("iscrowd", 0):
            continue
        keys.append(image_key[ann["image_id"]])
        boxes.append([bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]])
        points.append(kp.reshape(NUM_KP2D, 3))
        if "head_size" in ann:
            heads.append(float(ann["head_size"]))
        elif "head_bbox" in ann:
            x, y, w, h = ann["head_bbox"]
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


def read_gt_3d(path: Path, videos: Sequence[str]) -> Gt3D:
    try:
        columns = _read_columns_3d(path)
        n = len(columns["video_id"])
        kp3d = np.asarray(columns["keypoints_3d"], np.float64).reshape(n, NUM_KP3D, 3)
        frame = np.asarray(columns["frame_index"]).astype(np.int64)
        track = None if "track_id" not in columns else np.asarray(columns["track_id"]).astype(np.int64)
        box = None if "bbox_xyxy" not in columns else np.asarray(columns["bbox_xyxy"], np.float64).reshape(n, 4)
    except EvalInputError:
        raise
    except (OSError, ValueError, TypeError, pa.ArrowException) as error:
        raise _bad_gt(f"cannot read {path} as 3D ground truth ({error}); see `pydoc pipeline.evaluation` for the format") from None
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


def read_predictions(output: str, videos: Iterable[str], *, need_2d: bool, need_3d: bool) -> Predictions:
    """The rows of ``OUTPUT/poses`` for ``videos`` (a local folder or a pyarrow-readable URI)."""
    import pyarrow.fs as pafs

    try:
        if is_remote(output):
            filesystem, root = pafs.FileSystem.from_uri(output)
        else:
            filesystem, root = pafs.LocalFileSystem(), str(Path(local_path(output)).resolve())
        poses = f"{root.rstrip('/')}/poses"
        if filesystem.get_file_info(poses).type != pafs.FileType.Directory:
            raise EvalInputError(f"no poses/ folder under {redact(output)}; pass the job's OUTPUT "
                                 "(the folder that holds poses/ and videos/)", "OUTPUT")
        dataset = ds.dataset(poses, filesystem=filesystem, format="parquet", schema=POSES_SCHEMA)
        columns = ["video_id", "frame_index", "track_id", "bbox_xyxy", "bbox_score"]
        columns += ["keypoints_2d", "keypoint_scores"] if need_2d else []
        columns += ["keypoints_3d"] if need_3d else []
        table = dataset.to_table(columns=columns, filter=ds.field("video_id").isin(sorted(videos)))
    except (OSError, pa.ArrowException) as error:
        raise EvalInputError(f"cannot read poses/ under {redact(output)}: {error}", "OUTPUT") from None
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
