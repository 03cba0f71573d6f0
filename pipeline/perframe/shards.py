"""What a model worker is given and gives back: a shard of one video's frames, and its rows.

The one in-memory row contract between the per-frame stages (pipeline.perframe.worker, .ondevice)
and the temporal ones (pipeline.temporal.finish): `ShardTask` names the frames, `ShardResult` holds
every person box that reaches the tracker and the posed rows with their per-frame model outputs
(`POSE_COLUMNS`), `empty_rows` is a shard with none. The Arrow schema the rows end in is
pipeline.io.schema's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from posepipe.pipeline.io.schema import NUM_BETAS, NUM_KP2D, NUM_SMPL_BODY

# SMPLify's refinement of HMR's SMPL (--refine smplify, pipeline.perframe.refine): NaN in a row it did not refine
# (a job without --refine, a start camera behind the lens), which the written table holds as null.
REFINED_COLUMNS = {"smplify_global_orient": (3,), "smplify_body_pose": (NUM_SMPL_BODY, 3), "smplify_betas": (NUM_BETAS,),
                   "smplify_camera": (3,), "smplify_reprojection_before": (), "smplify_reprojection_after": ()}
# --densepose (pipeline.perframe.densepose): per row, detectron2's stored chart (PNG bytes; None where it drops
# the box) and the integer box it covers. A shard made without it holds none of them (length 0).
DENSEPOSE_COLUMNS = ("densepose_png", "densepose_box_xywh")
# The per-frame model outputs of a row, and their shapes.
POSE_COLUMNS = {"keypoints_2d": (NUM_KP2D, 2), "keypoint_scores": (NUM_KP2D,), "smpl_global_orient": (3,),
                "smpl_body_pose": (NUM_SMPL_BODY, 3), "smpl_betas": (NUM_BETAS,), "smpl_camera": (3,),
                **REFINED_COLUMNS}


@dataclass
class ShardTask:
    video_id: str
    uri: str
    start: int
    stop: int
    attempt: int = 0
    info: dict[str, Any] | None = None   # the probe's VideoInfo.as_dict(): the shard opens without probing


@dataclass
class ShardResult:
    """Dense per-person rows of one shard (N rows), in frame order."""
    video_id: str
    start: int
    stop: int
    frame_index: np.ndarray        # (N,) int32
    timestamp_s: np.ndarray        # (N,) float64
    bbox_xyxy: np.ndarray          # (N, 4) float32
    bbox_score: np.ndarray         # (N,) float32
    keypoints_2d: np.ndarray       # (N, 17, 2)
    keypoint_scores: np.ndarray    # (N, 17)
    smpl_global_orient: np.ndarray  # (N, 3)
    smpl_body_pose: np.ndarray     # (N, 23, 3)
    smpl_betas: np.ndarray         # (N, 10)
    smpl_camera: np.ndarray        # (N, 3)
    frame_timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (stop - start,) every frame's time, s
    # Every person box that reaches the tracker (D >= N, pipeline.temporal.association), frame order, best first
    # within a frame; row i above is candidate `det_rank[i]` of its frame.
    det_frame_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))       # (D,)
    det_bbox_xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # (D, 4)
    det_score: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))           # (D,)
    det_rank: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))              # (N,)
    uri: str = ""                  # what the shard read (finish_video reopens it for boxes kept after tracking)
    frames_decoded: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    device_windows: int = 0        # windows run on the device path (0 on the reference path)
    fallback_windows: dict[str, int] = field(default_factory=dict)  # of those, redone the reference way, by reason
    # DENSEPOSE_COLUMNS: (N,) object (bytes or None) and (N, 4) int32; length 0 without --densepose
    densepose_png: np.ndarray = field(default_factory=lambda: np.zeros(0, object))
    densepose_box_xywh: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int32))
    # REFINED_COLUMNS, (N, ...) float32, NaN where not refined
    smplify_global_orient: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    smplify_body_pose: np.ndarray = field(default_factory=lambda: np.zeros((0, NUM_SMPL_BODY, 3), np.float32))
    smplify_betas: np.ndarray = field(default_factory=lambda: np.zeros((0, NUM_BETAS), np.float32))
    smplify_camera: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    smplify_reprojection_before: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    smplify_reprojection_after: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


def unrefined(rows: dict[str, np.ndarray], n: int | None = None) -> dict[str, np.ndarray]:
    """`rows` (n of them) with REFINED_COLUMNS added as NaN where it has none (rows no refinement ran for)."""
    n = len(rows["frame_index"]) if n is None else n
    return {**{c: np.full((n, *shape), np.nan, np.float32) for c, shape in REFINED_COLUMNS.items()}, **rows}


def empty_rows() -> dict[str, np.ndarray]:
    """A shard's columns with no rows."""
    return {
        "frame_index": np.zeros(0, np.int32), "timestamp_s": np.zeros(0, np.float64),
        "bbox_xyxy": np.zeros((0, 4), np.float32), "bbox_score": np.zeros(0, np.float32),
        **{name: np.zeros((0, *shape), np.float32) for name, shape in POSE_COLUMNS.items()},
        "det_rank": np.zeros(0, np.int32), "det_frame_index": np.zeros(0, np.int32),
        "det_bbox_xyxy": np.zeros((0, 4), np.float32), "det_score": np.zeros(0, np.float32),
    }


__all__ = ["DENSEPOSE_COLUMNS", "POSE_COLUMNS", "REFINED_COLUMNS", "ShardResult", "ShardTask", "empty_rows", "unrefined"]
