"""A video's temporal work, off the model workers: its shards' candidates -> tracks -> kept rows -> 3D -> Parquet.

Model workers (pipeline.perframe.worker) do per-frame work only, so a GPU never waits on tracking,
lifting or Parquet writing. A `VideoFinisher` holds the 2D-to-3D lifter on the CPU (a small
temporal convolution: thousands of frames/s there) and, per video, tracks every candidate box in
frame order, lifts each track and writes the video's parts and commit row. The few boxes that
tracking keeps but no shard computed 2D/SMPL for go back to a model worker (`pose_boxes`).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from posepipe.pipeline.faults import injected_fault
from posepipe.pipeline.perframe.shards import DENSEPOSE_COLUMNS, POSE_COLUMNS, REFINED_COLUMNS, ShardResult, empty_rows
from posepipe.pipeline.options import JobOptions

log = logging.getLogger(__name__)

# (uri, info, frame_index, boxes_xyxy) -> {column: array} for those boxes (PoseWorker.pose_boxes)
PoseBoxes = Callable[[str, Mapping[str, Any], np.ndarray, np.ndarray], "dict[str, np.ndarray]"]


class ModelWorkerLost(RuntimeError):
    """The model worker asked for a few kept boxes' 2D/SMPL died meanwhile: not the video's fault."""

    transient = True  # the driver retries the finish (pipeline.run.scheduler.is_transient)


@dataclass
class VideoResult:
    video_id: str
    record: dict[str, Any]
    rows: int


class VideoFinisher:
    """Holds the lifter (CPU); `finish_video` is its one unit of work. The runner wraps it in a
    Ray actor; tests and the benchmark use it directly."""

    def __init__(self, options: JobOptions, *, threads: int | None = None, lifter: Any = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(max(1, int(threads)))
        self.options = options
        self.lifter = lifter if lifter is not None else load_lifter(options)
        self.pid = os.getpid()

    def finish_video(self, video: Mapping[str, Any], shards: Sequence[Any], output_uri: str,
                     metadata: Mapping[bytes, bytes], pose_boxes: PoseBoxes | Any = None) -> VideoResult:
        """Track and lift a whole video from its shards' rows, then write its Parquet parts and row.

        `pose_boxes` computes 2D/SMPL for kept boxes no shard ran them for: a `PoseWorker` (its
        method is used), a Ray actor handle of one, or a plain function."""
        from posepipe.pipeline.io.store import Store, part_name, video_key
        from posepipe.pipeline.io.schema import densepose_table, poses_table, videos_table

        results = [_resolve(s) for s in shards]
        results.sort(key=lambda r: r.start)
        info = video["info"]
        columns = ("frame_index", "timestamp_s", "bbox_xyxy", "bbox_score", "keypoints_2d", "keypoint_scores",
                   "smpl_global_orient", "smpl_body_pose", "smpl_betas", "smpl_camera", "person_index")
        if self.options.refine:  # SMPLify's columns; null in a row it did not refine (and in a job without it)
            columns += tuple(REFINED_COLUMNS)
        rows = associate_rows(results, info, video["uri"], self.options, _pose_boxes_call(pose_boxes))
        track_ids = rows["track_id"]
        kp3d, valid3d = lift_tracks(self.lifter, rows["frame_index"], track_ids, rows["keypoints_2d"],
                                    info["width"], info["height"], self.options.flip_augment_3d)
        out = Store(output_uri)
        key = video_key(video["video_id"])
        # Parts are named for this attempt and nothing is deleted here: a superseded attempt (a
        # finish whose reply was lost, still running somewhere) can never remove what this one
        # commits. The row names the attempt; the driver removes other attempts' parts once no
        # worker is left that could write (pipeline.run.runner, end of job).
        attempt = video.get("attempt")
        total = 0
        for r in results:
            sel = (rows["frame_index"] >= r.start) & (rows["frame_index"] < r.stop)
            part = {c: rows[c][sel] for c in columns}
            part.update({f"{c}__valid": ~np.isnan(part[c].reshape(len(part[c]), -1)).any(axis=1)
                         for c in REFINED_COLUMNS if c in part})
            part.update(video_id=video["video_id"], track_id=track_ids[sel], keypoints_3d=kp3d[sel],
                        keypoints_3d__valid=valid3d[sel])
            table = poses_table(part, metadata)
            # A video with nobody in it still gets one (empty) part: a job that found no person is
            # still a dataset with the full schema, and `read_parquet('OUT/poses/**/*.parquet')` works.
            write = table.num_rows or (total == 0 and r is results[-1])
            if write:
                out.write_table(f"poses/{key}/{part_name(r.start, r.stop, attempt)}", table)
            if write and self.options.densepose:  # the same rows' charts, the same part name: one commit for both
                charts = densepose_table({"video_id": video["video_id"], "track_id": track_ids[sel],
                                          "iuv_png": rows["densepose_png"][sel], "chart_box_xywh": rows["densepose_box_xywh"][sel],
                                          **{c: part[c] for c in ("frame_index", "timestamp_s", "person_index", "bbox_xyxy")}},
                                         metadata)
                out.write_table(f"densepose/{key}/{part_name(r.start, r.stop, attempt)}", charts)
            total += table.num_rows
        record = {
            "video_id": video["video_id"], "uri": video["uri"], "status": "ok", "error": None,
            "num_frames": info["num_frames"], "fps": info["fps"], "width": info["width"], "height": info["height"],
            "duration_s": info["duration_s"], "num_rows": total,
            "num_tracks": int(len(np.unique(track_ids[track_ids >= 0]))), "job_fingerprint": video["fingerprint"],
            "input_identity": video.get("input_identity"), "commit_attempt": attempt,
        }
        injected_fault("finish", video["video_id"])  # parts written, commit row not yet
        out.write_table(f"videos/{key}.parquet", videos_table([record], metadata))
        return VideoResult(video_id=video["video_id"], record=record, rows=total)


def load_lifter(options: JobOptions) -> Any:
    """The job's lifter on the CPU, in fp32: it is small, and its input (whole tracks) lives there."""
    import warnings

    from posepipe.models import RandomWeightsWarning, load_model
    from posepipe.models.download import WeightsWarning

    name = options.models["lifter"]
    kwargs: dict[str, Any] = {"device": "cpu", "half": False, "random_weights": options.random_weights}
    if not options.random_weights:
        kwargs["weights"] = options.weights.get(name)
    with warnings.catch_warnings():
        # The driver loaded this same file first and showed these, once, loudly.
        warnings.simplefilter("ignore", RandomWeightsWarning)
        warnings.simplefilter("ignore", WeightsWarning)
        return load_model(name, **kwargs)


def _pose_boxes_call(pose_boxes: Any) -> PoseBoxes | None:
    if pose_boxes is None or callable(pose_boxes) and not hasattr(pose_boxes, "pose_boxes"):
        return pose_boxes
    method = pose_boxes.pose_boxes
    if not hasattr(method, "remote"):
        return method  # a PoseWorker in this process

    def remote(uri: str, info: Mapping[str, Any], frame_index: np.ndarray, boxes: np.ndarray) -> dict[str, np.ndarray]:
        import ray

        try:
            return ray.get(method.remote(uri, dict(info), frame_index, boxes))
        except ray.exceptions.RayActorError as exc:
            raise ModelWorkerLost(f"the model worker computing kept boxes' 2D/SMPL was lost: {exc}") from None

    return remote


def associate_rows(results: Sequence[Any], info: Mapping[str, Any], uri: str, opts: JobOptions,
                   pose_boxes: PoseBoxes | None) -> dict[str, np.ndarray]:
    """The video's rows after tracking all its candidates (pipeline.temporal.association), with 2D/SMPL
    from the shards, or from `pose_boxes` for the few kept boxes the shards did not run them for."""
    from posepipe.pipeline.io.video import grid_timestamps, valid_timestamps
    from posepipe.pipeline.temporal.association import associate

    empty = empty_rows()
    det = {c: np.concatenate([getattr(r, c) for r in results]) if results else empty[c]
           for c in ("det_frame_index", "det_bbox_xyxy", "det_score", "det_rank", "frame_index")}
    n_frames = max([r.stop for r in results] + [int(det["det_frame_index"].max()) + 1 if len(det["det_frame_index"]) else 0])
    # Presentation times are trusted only if the whole video's are (AVI and some raw streams
    # carry none, or decode-order ones): else every frame is timed frame_index / fps.
    frame_times = grid_timestamps(np.arange(n_frames), info["fps"])
    if valid_timestamps(np.concatenate([r.frame_timestamps for r in results]) if results else np.zeros(0)):
        for r in results:
            frame_times[r.start:r.start + len(r.frame_timestamps)] = r.frame_timestamps
        frame_times = np.maximum.accumulate(frame_times)
    selection = associate(det["det_frame_index"], det["det_bbox_xyxy"], det["det_score"], frame_times, info["fps"],
                          opts.tracker_config(), opts.det_conf, opts.max_persons)
    kept = selection.rows
    # which shard row (if any) holds each candidate's 2D/SMPL
    computed = np.full(len(det["det_score"]), -1, np.int64)
    first_of_frame = np.searchsorted(det["det_frame_index"], det["frame_index"], side="left")
    computed[first_of_frame + det["det_rank"]] = np.arange(len(det["det_rank"]))
    source = computed[kept]
    missing = np.flatnonzero(source < 0)
    extra = {c: np.zeros((0, *shape), np.float32) for c, shape in POSE_COLUMNS.items()}
    if len(missing):
        if pose_boxes is None:
            raise RuntimeError(f"{len(missing)} kept boxes need 2D/SMPL and no model worker was given")
        extra = pose_boxes(next((r.uri for r in results if r.uri), uri), info,
                           det["det_frame_index"][kept[missing]], det["det_bbox_xyxy"][kept[missing]])
        log.info("%d of %d rows kept after tracking had no 2D/SMPL from their shard; a model worker computed them",
                 len(missing), len(kept))
    frame = det["det_frame_index"][kept]
    rows = {"frame_index": frame.astype(np.int32), "timestamp_s": frame_times[frame],
            "bbox_xyxy": det["det_bbox_xyxy"][kept], "bbox_score": det["det_score"][kept],
            "track_id": selection.track_id, "person_index": selection.person_index}
    for c in POSE_COLUMNS:
        shard_rows = np.concatenate([_column(r, c) for r in results]) if results else empty[c]
        column = np.zeros((len(kept), *shard_rows.shape[1:]), np.float32)
        column[source >= 0] = shard_rows[source[source >= 0]]
        column[missing] = extra[c] if c in extra else np.nan  # a pose_boxes that refines nothing: unrefined
        rows[c] = column
    if opts.densepose:
        for c in DENSEPOSE_COLUMNS:
            parts = [getattr(r, c) for r in results]
            if any(len(p) != len(r.frame_index) for p, r in zip(parts, results)) or c not in extra and len(missing):
                raise RuntimeError(f"--densepose: a model worker returned rows without {c}; every worker of a job "
                                   "must run with the job's options")
            shard_rows = np.concatenate(parts) if parts else np.zeros((0, 4), np.int32)
            column = (np.empty(len(kept), object) if c == "densepose_png"
                      else np.zeros((len(kept), 4), np.int32))
            column[source >= 0] = shard_rows[source[source >= 0]]
            if len(missing):
                column[missing] = extra[c]
            rows[c] = column
    return rows


def _column(result: Any, name: str) -> np.ndarray:
    """A shard's column; a refined one it does not hold (a shard made without refinement) is NaN."""
    value = getattr(result, name)
    if name in REFINED_COLUMNS and len(value) != len(result.frame_index):
        return np.full((len(result.frame_index), *REFINED_COLUMNS[name]), np.nan, np.float32)
    return value


def _resolve(item: Any) -> Any:
    if isinstance(item, ShardResult):
        return item
    import ray

    return ray.get(item)


def assign_tracks(frame_index: np.ndarray, boxes: np.ndarray, scores: np.ndarray, fps: float,
                  config: Any = None, frame_times: np.ndarray | None = None) -> np.ndarray:
    """Offline tracking over every frame of the video in order (empty frames included): ids of
    confirmed tracks, -1 for the rest (pipeline.temporal.association.track_candidates)."""
    from posepipe.pipeline.io.video import grid_timestamps
    from posepipe.pipeline.temporal.association import track_candidates

    if frame_times is None:
        frame_times = grid_timestamps(np.arange(int(frame_index.max()) + 1 if len(frame_index) else 0), fps)
    return track_candidates(frame_index, boxes, scores, frame_times, fps, config).astype(np.int32)


def lift_tracks(lifter: Any, frame_index: np.ndarray, track_ids: np.ndarray, keypoints_2d: np.ndarray,
                width: int, height: int, flip_augment: bool) -> tuple[np.ndarray, np.ndarray]:
    """3D for every tracked row: each track's 2D sequence (gaps filled by linear interpolation,
    edge-padded only at the track's true ends) goes through the lifter; outputs are root-relative."""
    n = len(frame_index)
    out = np.zeros((n, 17, 3), np.float32)
    valid = np.zeros(n, bool)
    tracks = sorted(int(t) for t in np.unique(track_ids) if t >= 0)
    sequences, members = [], []
    for t in tracks:
        rows = np.flatnonzero(track_ids == t)
        rows = rows[np.argsort(frame_index[rows], kind="stable")]
        frames = frame_index[rows]
        span = np.arange(frames[0], frames[-1] + 1)
        seq = np.empty((len(span), 17, 2), np.float32)
        for j in range(17):
            for c in range(2):
                seq[:, j, c] = np.interp(span, frames, keypoints_2d[rows, j, c])
        sequences.append(seq)
        members.append((rows, frames - frames[0]))
    if sequences:
        lifted = lifter.lift_batch(sequences, width, height, flip_augment=flip_augment)
        for (rows, offsets), pred in zip(members, lifted):
            pred = pred - pred[:, :1, :]  # root-relative: the pelvis is the origin
            out[rows] = pred[offsets]
            valid[rows] = True
    return out, valid
