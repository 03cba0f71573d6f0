"""The one place that defines posepipe's output tables (Arrow schemas) and their provenance.

Every batch is cast to these schemas before it is written. Units and joint orders are documented
in the field metadata so that `DESCRIBE`/`parquet-tools` users see them without the README.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = "2"   # 2: person_index (the row key); track ids only for confirmed tracks
NUM_KP2D = 17   # COCO-17
NUM_KP3D = 17   # H36M-17
NUM_SMPL_BODY = 23
NUM_BETAS = 10


def _f32_list(size: int) -> pa.DataType:
    return pa.list_(pa.float32(), size)


def _field(name: str, type_: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


POSES_SCHEMA = pa.schema([
    _field("video_id", pa.string(), "input file path relative to the job's INPUT", nullable=False),
    _field("frame_index", pa.int32(), "0-based decoded frame index", nullable=False),
    _field("timestamp_s", pa.float64(), "presentation time of the frame in seconds, from the stream", nullable=False),
    _field("track_id", pa.int32(), "identity of the person through the video, 0 .. num_tracks-1 (-1: a box no confirmed track claimed; several may share a frame)", nullable=False),
    _field("person_index", pa.int32(), "0-based position of the person in the frame (tracked people first, then by bbox_score); "
           "(video_id, frame_index, person_index) is the row key", nullable=False),
    _field("bbox_xyxy", _f32_list(4), "person box x1, y1, x2, y2 in pixels of the displayed frame", nullable=False),
    _field("bbox_score", pa.float32(), "the person's score, by mode: with a detector (top-down pose models) the "
           "detector's obj*cls for the person class; with a detector-free --pose-model the model's own person "
           "score: RTMO's sigmoid of its person logit for its box, Associative Embedding's mean of the 17 grouped "
           "joints' heatmap values (missing joints count 0) for the box spanning its 17 keypoints", nullable=False),
    _field("keypoints_2d", pa.list_(_f32_list(2), NUM_KP2D), "17x2 COCO-17 keypoints (x, y) in pixels", nullable=False),
    _field("keypoint_scores", _f32_list(NUM_KP2D), "17 keypoint confidences of the pose model (heatmap maxima for heatmap models; RTMO's visibility "
           "probabilities; Associative Embedding's heatmap values, negative for joints filled in by tag)", nullable=False),
    _field("keypoints_3d", pa.list_(_f32_list(3), NUM_KP3D), "17x3 H36M-17 joints in metres, camera frame, relative to the pelvis; "
           "null where track_id = -1 (lifting needs a track's sequence)"),
    _field("smpl_global_orient", _f32_list(3), "SMPL root orientation, axis-angle (radians)"),
    _field("smpl_body_pose", pa.list_(_f32_list(3), NUM_SMPL_BODY), "SMPL 23 body joint rotations, axis-angle (radians)"),
    _field("smpl_betas", _f32_list(NUM_BETAS), "SMPL shape coefficients"),
    _field("smpl_camera", _f32_list(3), "weak-perspective camera s, tx, ty of the HMR crop"),
    # --refine smplify (pipeline.perframe.refine): null in a job without it and in a row it could not refine
    # (HMR's camera behind the lens: random weights only); HMR's smpl_* columns above stay as HMR gave them.
    _field("smplify_global_orient", _f32_list(3), "SMPLify's fitted SMPL root orientation, axis-angle (radians), "
           "started from smpl_global_orient (SPIN's SMPLify against this row's keypoints_2d)"),
    _field("smplify_body_pose", pa.list_(_f32_list(3), NUM_SMPL_BODY), "SMPLify's fitted 23 body joint rotations, "
           "axis-angle (radians)"),
    _field("smplify_betas", _f32_list(NUM_BETAS), "SMPLify's fitted SMPL shape coefficients"),
    _field("smplify_camera", _f32_list(3), "SMPLify's fitted camera as a weak-perspective s, tx, ty of the same HMR "
           "crop as smpl_camera: the perspective fit's translation (tx, ty, 2*5000/(224*s)) at focal 5000 px in the "
           "224 px crop of side max(w, h) around the box centre"),
    _field("smplify_reprojection_before", pa.float32(), "score-weighted mean distance in frame pixels between "
           "keypoints_2d and the SMPL joints they stand for (15 keypoints: the hips are left out, as SMPLify does), "
           "with HMR's parameters and camera"),
    _field("smplify_reprojection_after", pa.float32(), "the same distance with SMPLify's fitted parameters and camera"),
])

VIDEOS_SCHEMA = pa.schema([
    _field("video_id", pa.string(), "input file path relative to the job's INPUT", nullable=False),
    _field("uri", pa.string(), "where the video was read from: an absolute local path, s3://BUCKET/KEY with the key "
           "verbatim (not URL-encoded), or a URL without its query; never credentials", nullable=False),
    _field("status", pa.string(), "'ok' or 'failed'", nullable=False),
    _field("error", pa.string(), "why the video failed, for a person to read; null when ok"),
    _field("num_frames", pa.int64(), "decoded frame count"),
    _field("fps", pa.float64(), "average frame rate reported by the stream"),
    _field("width", pa.int32(), "frame width as displayed (after rotation metadata)"),
    _field("height", pa.int32(), "frame height as displayed (after rotation metadata)"),
    _field("duration_s", pa.float64(), "stream duration in seconds"),
    _field("num_rows", pa.int64(), "rows this video contributed to poses/"),
    _field("num_tracks", pa.int32(), "distinct confirmed track ids"),
    _field("job_fingerprint", pa.string(), "hash of everything that changes results (options, weights, precision, code "
           "version); a rerun with the same one and the same input_identity skips the video"),
    _field("input_identity", pa.string(), "the input as it was read: size and ETag (object stores) or modification time "
           "(files); a different one means the file was replaced, and a rerun redoes it"),
    _field("commit_attempt", pa.string(), "the finish attempt this row commits: the video's rows are the poses parts "
           "whose file name ends in -<commit_attempt>.parquet (others are an unfinished or superseded attempt's)"),
])


# --densepose (pipeline.perframe.densepose): one row per poses row, same key, in densepose/ beside poses/.
DENSEPOSE_SCHEMA = pa.schema([
    _field("video_id", pa.string(), "input file path relative to the job's INPUT", nullable=False),
    _field("frame_index", pa.int32(), "0-based decoded frame index", nullable=False),
    _field("timestamp_s", pa.float64(), "presentation time of the frame in seconds, as in poses/", nullable=False),
    _field("track_id", pa.int32(), "the poses row's track_id", nullable=False),
    _field("person_index", pa.int32(), "the poses row's person_index: (video_id, frame_index, person_index) is the "
           "row key, the same as poses/'s", nullable=False),
    _field("bbox_xyxy", _f32_list(4), "the person box DensePose ran on (the poses row's), pixels of the displayed frame",
           nullable=False),
    _field("chart_box_xywh", pa.list_(pa.int32(), 4), "x, y, width, height in frame pixels of the box the chart covers "
           "(detectron2's make_int_box of the box it reports: truncated to integers, width and height at least 1); "
           "null where detectron2 drops the box (nothing of it inside the frame)"),
    _field("iuv_png", pa.binary(), "the chart as detectron2 stores it (quantize_densepose_chart_result, then "
           "compress_quantized_densepose_chart_result without its base64): an RGB PNG of chart_box_xywh's size whose "
           "planes are I (0 background, 1..24 the body-surface chart), U*255 and V*255 as uint8; decode with "
           "posepipe.pipeline.downstream.densepose.decode_iuv; null where chart_box_xywh is"),
])


def provenance_metadata(provenance: Mapping[str, Any]) -> dict[bytes, bytes]:
    """Schema-level metadata: posepipe version, models and weight hashes, job options."""
    return {
        b"posepipe.schema_version": SCHEMA_VERSION.encode(),
        b"posepipe.provenance": json.dumps(provenance, sort_keys=True, default=str).encode(),
    }


def _nested(values: np.ndarray, type_: pa.DataType, inner_sizes: tuple[int, ...]) -> pa.Array:
    """Fixed-size-list arrays from a dense float32 numpy block without a Python loop."""
    flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1), type=pa.float32())
    array: pa.Array = flat
    for size in reversed(inner_sizes):
        array = pa.FixedSizeListArray.from_arrays(array, size)
    return array.cast(type_)


def poses_table(rows: Mapping[str, np.ndarray], metadata: Mapping[bytes, bytes] | None = None) -> pa.Table:
    """Build the poses table from dense column arrays (N rows); optional 3D/SMPL may be NaN-free or None."""
    n = len(rows["frame_index"])
    if rows.get("person_index") is None:  # the key by row order within each frame, for callers that give none
        rows = {**rows, "person_index": _position_in_frame(np.asarray(rows["frame_index"]))}
    columns: list[pa.Array] = []
    for field in POSES_SCHEMA:
        value = rows.get(field.name)
        if value is None:
            columns.append(pa.nulls(n, type=field.type))
            continue
        if pa.types.is_fixed_size_list(field.type):
            sizes: list[int] = []
            t = field.type
            while pa.types.is_fixed_size_list(t):
                sizes.append(t.list_size)
                t = t.value_type
            arr = _nested(np.asarray(value), field.type, tuple(sizes))
            mask = rows.get(f"{field.name}__valid")
            if mask is not None:  # rows without that output (e.g. no 3D for a one-frame blip)
                arr = pa.FixedSizeListArray.from_arrays(arr.values, field.type.list_size, mask=pa.array(~np.asarray(mask, bool)))
            columns.append(arr)
        elif field.name == "video_id":
            columns.append(pa.array(value, type=pa.string()) if not isinstance(value, str) else pa.array([value] * n, pa.string()))
        else:
            mask = rows.get(f"{field.name}__valid")
            columns.append(pa.array(np.asarray(value), type=field.type,
                                    mask=None if mask is None else ~np.asarray(mask, bool)))
    schema = POSES_SCHEMA.with_metadata(metadata) if metadata else POSES_SCHEMA
    return pa.Table.from_arrays(columns, schema=schema)


def _position_in_frame(frame_index: np.ndarray) -> np.ndarray:
    """0, 1, 2 ... for the rows of each frame, in the order given."""
    order = np.argsort(frame_index, kind="stable")
    sorted_frames = frame_index[order]
    position = np.empty(len(frame_index), np.int32)
    position[order] = np.arange(len(order)) - np.searchsorted(sorted_frames, sorted_frames, side="left")
    return position


def videos_table(records: list[Mapping[str, Any]], metadata: Mapping[bytes, bytes] | None = None) -> pa.Table:
    schema = VIDEOS_SCHEMA.with_metadata(metadata) if metadata else VIDEOS_SCHEMA
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in VIDEOS_SCHEMA} for r in records], schema=schema)


def densepose_table(rows: Mapping[str, Any], metadata: Mapping[bytes, bytes] | None = None) -> pa.Table:
    """The densepose table from N rows: video_id (str or N), frame_index, timestamp_s, track_id,
    person_index, bbox_xyxy (N, 4), chart_box_xywh (N, 4) int, iuv_png (N,) bytes or None (no chart)."""
    n = len(rows["frame_index"])
    png = list(rows["iuv_png"])
    has = np.array([p is not None for p in png], bool)
    video_id = rows["video_id"]
    box = np.asarray(rows["chart_box_xywh"], np.int32).reshape(n, 4)
    columns = [
        pa.array([video_id] * n if isinstance(video_id, str) else list(video_id), pa.string()),
        pa.array(np.asarray(rows["frame_index"], np.int32)),
        pa.array(np.asarray(rows["timestamp_s"], np.float64)),
        pa.array(np.asarray(rows["track_id"], np.int32)),
        pa.array(np.asarray(rows["person_index"], np.int32)),
        _nested(np.asarray(rows["bbox_xyxy"], np.float32).reshape(n, 4), _f32_list(4), (4,)),
        pa.FixedSizeListArray.from_arrays(pa.array(box.reshape(-1), pa.int32()), 4, mask=pa.array(~has)),
        pa.array(png, pa.binary()),
    ]
    schema = DENSEPOSE_SCHEMA.with_metadata(metadata) if metadata else DENSEPOSE_SCHEMA
    return pa.Table.from_arrays(columns, schema=schema)
