"""From detections to rows: what the tracker sees, which boxes get 2D/SMPL, the cap, the row key.

ByteTrack's second stage exists for the low-score boxes of partly hidden people, so the tracker
gets every person box down to its floor (``TrackerConfig.low_threshold``, 0.1 as in ByteTrack),
after the detector's NMS at ByteTrack's 0.7 (``--det-nms``), at most `MAX_CANDIDATES` per frame.
Which of them become rows is decided per video, after association:

* a frame's **rows** are the boxes that a confirmed track claimed, best ``bbox_score`` first,
  then the boxes no confirmed track claimed whose score is at least ``--det-conf`` (track_id -1),
  best first, at most ``--max-persons`` in all. So the cap never hides a person from the tracker:
  identities are kept through the crowd, and the cap only decides who is written;
* ``person_index`` is a row's position in that order (0-based): (video_id, frame_index,
  person_index) is the row key. (video_id, frame_index, track_id) is not one: several -1 rows can
  share a frame;
* track ids are renumbered after the cap, consecutively in order of first appearance, so the
  ids in the output are 0 .. num_tracks - 1.

2D keypoints and SMPL are per-frame models, run per shard and batched across frames before the
video's tracking is known (see `pose_candidates`); a kept box that they were not run for is
computed by ``finish_video`` afterwards. A box's keypoints do not depend on where they were
computed, so the rows are the same whatever the shard size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posepipe.pipeline.temporal.tracking import ByteTracker, TrackerConfig, confirmed_only

MAX_CANDIDATES = 300   # person boxes per frame that reach the tracker (after NMS, best first)


def pose_candidates(scores: np.ndarray, det_conf: float, max_persons: int) -> int:
    """How many of one frame's candidates (sorted best first) get 2D/SMPL in the shard: the
    `max_persons` best with a score of at least `det_conf`.

    That is exactly the frame's rows unless a claimed box scores below `det_conf` (a partly hidden
    person continued by ByteTrack's second stage) or, in a frame with more than `max_persons`
    candidates, an unclaimed box outscores a claimed one; those few are computed after tracking.
    """
    return int(min(max_persons, np.count_nonzero(np.asarray(scores) >= det_conf)))


@dataclass
class Selection:
    """The rows of one video, as indices into its candidate arrays, in (frame, person_index) order."""

    rows: np.ndarray          # (R,) int64 candidate index
    track_id: np.ndarray      # (R,) int32, -1 for boxes no confirmed track claimed
    person_index: np.ndarray  # (R,) int32, position of the row in its frame

    @property
    def num_tracks(self) -> int:
        return int(self.track_id.max()) + 1 if len(self.track_id) and self.track_id.max() >= 0 else 0


def track_candidates(frame_index: np.ndarray, boxes: np.ndarray, scores: np.ndarray, frame_times: np.ndarray,
                     fps: float, config: TrackerConfig | None = None) -> np.ndarray:
    """Offline ByteTrack over every frame of a video (empty ones too), on the stream's clock.

    `frame_index`, `boxes`, `scores`: the candidates (any order); `frame_times`: (F,) the time in
    seconds of frames 0 .. F-1. Returns (N,) int64 ids of confirmed tracks (consecutive from 0 in
    order of first appearance), -1 for the others (see `pipeline.temporal.tracking.track_video`).
    """
    tracker = ByteTracker(config or TrackerConfig(), frame_rate=fps if fps > 0 else 30.0)
    n_frames = len(frame_times)
    if len(frame_index) and int(frame_index.max()) >= n_frames:
        raise ValueError(f"candidates reach frame {int(frame_index.max())} but only {n_frames} frame times were given")
    order = np.argsort(frame_index, kind="stable")
    bounds = np.searchsorted(frame_index[order], np.arange(n_frames + 1))
    per_frame, members = [], []
    for f in range(n_frames):
        rows = order[bounds[f]:bounds[f + 1]]
        per_frame.append(tracker.update(boxes[rows], scores[rows], timestamp=float(frame_times[f])))
        members.append(rows)
    ids = np.full(len(frame_index), -1, np.int64)
    for rows, got in zip(members, confirmed_only(per_frame, tracker.confirmed_ids)):
        ids[rows] = got
    return ids


def select_rows(frame_index: np.ndarray, scores: np.ndarray, track_ids: np.ndarray, det_conf: float,
                max_persons: int) -> Selection:
    """The cap after association, the row order and key, and the output's track ids (see the module)."""
    claimed = track_ids >= 0
    eligible = np.flatnonzero(claimed | (scores >= det_conf))
    # per frame: claimed first, then by descending score; ties keep the candidates' order
    order = eligible[np.lexsort((eligible, -scores[eligible], ~claimed[eligible], frame_index[eligible]))]
    frames = frame_index[order]
    starts = np.searchsorted(frames, frames, side="left")
    position = np.arange(len(order)) - starts
    keep = position < max_persons
    rows, position = order[keep], position[keep]
    old = track_ids[rows]
    first_seen = list(dict.fromkeys(old[old >= 0].tolist()))
    lookup = dict(zip(first_seen, range(len(first_seen))))
    new = np.array([lookup.get(t, -1) for t in old.tolist()], np.int64)
    return Selection(rows=rows.astype(np.int64), track_id=new.astype(np.int32), person_index=position.astype(np.int32))


def associate(frame_index: np.ndarray, boxes: np.ndarray, scores: np.ndarray, frame_times: np.ndarray, fps: float,
              config: TrackerConfig | None, det_conf: float, max_persons: int) -> Selection:
    """Track a video's candidates, then choose and key its rows."""
    ids = track_candidates(frame_index, boxes, scores, frame_times, fps, config)
    return select_rows(frame_index, scores, ids, det_conf, max_persons)
