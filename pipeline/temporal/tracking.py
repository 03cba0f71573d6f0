"""ByteTrack-style multi-person tracking: a stable ``track_id`` per person through one video.

ByteTrack (Zhang et al., ECCV 2022, ifzhang/ByteTrack ``yolox/tracker``) associates every
detection box, not only confident ones: high-score boxes are matched to tracks first, then the
tracks left over are matched to low-score boxes (typically partially occluded people), and only
unmatched high-score boxes start new tracks. Motion is a constant-velocity Kalman filter on
(centre x, centre y, aspect w/h, height); association is IoU with the Kalman prediction, solved
as a linear assignment with a cost ceiling.

What differs from the reference implementation, on purpose:

* Output is per input detection (same order): its track id, or -1. ByteTrack returns tracks.
* ``ByteTracker.update`` (online) reports a new track's id for the detection that created it, in
  the frame it is created; ByteTrack hides a track born after frame 1 until it is matched again.
  ``track_video`` (offline, what the pipeline uses) knows the future: it reports an id only for
  tracks that were *confirmed* (matched again in a later frame, or born in the first frame), for
  every detection of the track including the one that started it, and -1 for a detection whose
  track was never confirmed (a one-frame blip), as ByteTrack's output would. Its ids are
  consecutive from ``first_id`` in order of first appearance, so ``max(id) + 1 - first_id`` is the
  number of confirmed tracks.
* Time is the stream's: ``update(..., timestamp=)`` runs the Kalman prediction over the real time
  since the previous frame, in units of ``1 / frame_rate`` (a frame that comes twice as late is
  predicted two frame steps ahead, with twice the process noise), and a lost track expires after
  ``max_lost_frames / 30`` seconds, not after a count of frames. Without timestamps every frame
  is ``1 / frame_rate`` after the previous one, which is ByteTrack exactly. ByteTrack assumes a
  constant frame rate; variable-frame-rate video would otherwise be tracked on a warped time axis.
* Ids come from a counter owned by the tracker, not a process-wide class counter as in
  ByteTrack's ``BaseTrack``; two trackers fed the same input give the same ids.
* A lost track may also be re-found at the box where it was last seen (``refind_at_last_box``),
  after ByteTrack's stages and before new tracks are born; its motion then restarts from the
  new box. ByteTrack only compares a lost track's Kalman prediction, which keeps walking (and,
  through the aspect velocity, shrinking) while the person is unseen, so someone who steps out
  through the image edge and back in, or stops behind an obstacle, gets a new id.
* No tracked-vs-lost duplicate removal (ByteTrack's ``remove_duplicate_stracks``). It deletes
  whichever of two overlapping tracks is younger, and a person hidden behind another is exactly
  a lost track whose prediction overlaps a tracked one: it deleted the hidden person, or, when
  the hidden one was older, the visible one, whose detections the hidden track then took. Lost
  tracks now only expire after the buffer.
* Unconfirmed tracks get a Kalman predict step like every other track before being updated
  (ByteTrack skips it; their position is unchanged either way since their velocity is zero).
* Removed tracks are forgotten instead of kept in an ever-growing list.
* Boxes with non-positive width or height, or area <= ``min_box_area``, are ignored (-1)
  rather than tracked and filtered on output.
* IoU uses continuous coordinates (area = w * h), not cython_bbox's ``+1`` pixel convention.

The tracker's state is plain data (a frozen config, numpy arrays, dataclasses, ints), so
``copy.deepcopy`` or pickle snapshots it and the copy continues exactly as the original would.
"""
from __future__ import annotations

import enum
import math
import numbers
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class TrackerConfig:
    """Thresholds of the tracker; defaults are ByteTrack's MOT17 settings.

    The three ``*_iou_threshold`` fields are ceilings on a *cost*, ``1 - IoU`` (times the
    detection score when ``fuse_score``), as ByteTrack's ``match_thresh``: 0.8 accepts a pair
    with IoU >= 0.2 (at score 1).
    """

    high_threshold: float = 0.5        # score > this: first-stage detection (ByteTrack track_thresh)
    low_threshold: float = 0.1         # low_threshold < score <= high_threshold: second stage
    new_track_threshold: float = 0.6   # unmatched first-stage detections at least this start a track
    match_iou_threshold: float = 0.8   # first stage: tracked + lost tracks vs high-score boxes
    second_match_iou_threshold: float = 0.5      # second stage: still-unmatched tracked vs low-score boxes
    unconfirmed_match_iou_threshold: float = 0.7  # newborn tracks vs leftover high-score boxes
    max_lost_frames: int = 30          # frames a lost track is kept for re-identification, at 30 fps
    min_box_area: float = 0.0          # boxes with area <= this are ignored
    fuse_score: bool = True            # cost = 1 - IoU * score in the first and unconfirmed stages
    refind_at_last_box: bool = True    # lost tracks may also be re-found where they were last seen

    def __post_init__(self) -> None:
        for name in ("high_threshold", "low_threshold", "new_track_threshold"):
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"TrackerConfig.{name} must be a score in [0, 1], got {value!r}")
        if not self.low_threshold < self.high_threshold:
            raise ValueError(
                f"TrackerConfig.low_threshold ({self.low_threshold}) must be below high_threshold "
                f"({self.high_threshold}); lower low_threshold or raise high_threshold"
            )
        if not self.new_track_threshold >= self.high_threshold:
            raise ValueError(
                f"TrackerConfig.new_track_threshold ({self.new_track_threshold}) must be at least "
                f"high_threshold ({self.high_threshold}): only high-score detections start tracks"
            )
        for name in ("match_iou_threshold", "second_match_iou_threshold", "unconfirmed_match_iou_threshold"):
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 < value < 1.0:
                raise ValueError(
                    f"TrackerConfig.{name} is a ceiling on the cost 1 - IoU and must lie in (0, 1), "
                    f"got {value!r}; 0.8 accepts IoU >= 0.2"
                )
        if not _is_int(self.max_lost_frames) or self.max_lost_frames < 0:
            raise ValueError(f"TrackerConfig.max_lost_frames must be an int >= 0, got {self.max_lost_frames!r}")
        if not _is_real(self.min_box_area) or self.min_box_area < 0:
            raise ValueError(f"TrackerConfig.min_box_area must be a finite number >= 0, got {self.min_box_area!r}")
        for name in ("fuse_score", "refind_at_last_box"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TrackerConfig.{name} must be a bool, got {getattr(self, name)!r}")


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------
# Geometry


def xyxy_to_xyah(boxes: np.ndarray) -> np.ndarray:
    """(K, 4) corners -> (K, 4) centre x, centre y, aspect w / h, height."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return np.stack([boxes[:, 0] + w / 2, boxes[:, 1] + h / 2, w / h, h], axis=1)


def xyah_to_xyxy(xyah: np.ndarray) -> np.ndarray:
    """(K, >=4) Kalman means -> (K, 4) corners."""
    h = xyah[:, 3]
    w = xyah[:, 2] * h
    return np.stack([xyah[:, 0] - w / 2, xyah[:, 1] - h / 2, xyah[:, 0] + w / 2, xyah[:, 1] + h / 2], axis=1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes; degenerate boxes have IoU 0."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


# --------------------------------------------------------------------------------------------
# Kalman filter


@dataclass(frozen=True)
class KalmanFilterXYAH:
    """Constant-velocity Kalman filter on (x, y, a, h, vx, vy, va, vh), batched over tracks.

    ByteTrack's (from DeepSORT) noise model: position and velocity noise are proportional to
    the box height, the aspect ratio gets small fixed noise.
    """

    std_weight_position: float = 1.0 / 20
    std_weight_velocity: float = 1.0 / 160

    def initiate(self, measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(K, 4) xyah measurements -> means (K, 8) with zero velocity, covariances (K, 8, 8)."""
        h = measurements[:, 3]
        p, v = self.std_weight_position, self.std_weight_velocity
        std = np.stack([2 * p * h, 2 * p * h, np.full_like(h, 1e-2), 2 * p * h,
                        10 * v * h, 10 * v * h, np.full_like(h, 1e-5), 10 * v * h], axis=1)
        mean = np.concatenate([measurements, np.zeros_like(measurements)], axis=1)
        return mean, _diag(std**2)

    def predict(self, mean: np.ndarray, covariance: np.ndarray, dt: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """`dt` frame steps ahead (1: ByteTrack's one frame); process noise scaled by the (pre-step)
        height, and by `dt` (a random walk's variance grows linearly with time)."""
        h = mean[:, 3]
        p, v = self.std_weight_position, self.std_weight_velocity
        std = np.stack([p * h, p * h, np.full_like(h, 1e-2), p * h,
                        v * h, v * h, np.full_like(h, 1e-5), v * h], axis=1)
        motion = _MOTION if dt == 1.0 else np.eye(8) + dt * np.eye(8, k=4)
        noise = std**2 if dt == 1.0 else std**2 * dt
        mean = mean @ motion.T
        covariance = motion @ covariance @ motion.T + _diag(noise)
        return mean, covariance

    def project(self, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """State -> measurement space, adding measurement noise."""
        h = mean[:, 3]
        p = self.std_weight_position
        std = np.stack([p * h, p * h, np.full_like(h, 1e-1), p * h], axis=1)
        return mean[:, :4], covariance[:, :4, :4] + _diag(std**2)

    def update(self, mean: np.ndarray, covariance: np.ndarray,
               measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Correct (K, 8) means and (K, 8, 8) covariances with (K, 4) xyah measurements."""
        projected_mean, projected_cov = self.project(mean, covariance)
        cross = covariance[:, :, :4]  # P H^T, (K, 8, 4)
        # K = P H^T S^-1, with S symmetric: K^T = S^-1 (P H^T)^T.
        gain = np.linalg.solve(projected_cov, cross.transpose(0, 2, 1)).transpose(0, 2, 1)
        innovation = measurements - projected_mean
        mean = mean + np.einsum("kij,kj->ki", gain, innovation)
        covariance = covariance - gain @ projected_cov @ gain.transpose(0, 2, 1)
        return mean, covariance


_MOTION = np.eye(8) + np.eye(8, k=4)


def _diag(values: np.ndarray) -> np.ndarray:
    out = np.zeros(values.shape + (values.shape[-1],), dtype=np.float64)
    idx = np.arange(values.shape[-1])
    out[..., idx, idx] = values
    return out


# --------------------------------------------------------------------------------------------
# Assignment


def linear_assignment(cost: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-cost matching where a pair is only worth making if its cost is <= ``threshold``.

    Same optimum as ByteTrack's ``lap.lapjv(cost, extend_cost=True, cost_limit=threshold)``:
    it maximises the total margin ``threshold - cost`` over accepted pairs, so one forced pair
    above the ceiling never pushes good pairs apart (which filtering a plain Hungarian
    solution afterwards can do). Returns (matches (K, 2) [row, col], unmatched rows,
    unmatched cols), both unmatched lists ascending.
    """
    cost = np.asarray(cost, dtype=np.float64)
    n_rows, n_cols = cost.shape
    if cost.size == 0:
        return np.empty((0, 2), dtype=np.int64), np.arange(n_rows), np.arange(n_cols)
    allowed = cost <= threshold
    rows, cols = linear_sum_assignment(np.where(allowed, cost - threshold, 0.0))
    keep = allowed[rows, cols]
    matches = np.stack([rows[keep], cols[keep]], axis=1).astype(np.int64)
    unmatched_rows = np.setdiff1d(np.arange(n_rows), matches[:, 0])
    unmatched_cols = np.setdiff1d(np.arange(n_cols), matches[:, 1])
    return matches, unmatched_rows, unmatched_cols


# --------------------------------------------------------------------------------------------
# Tracks and the tracker


class TrackState(enum.IntEnum):
    TRACKED = 1  # matched in the last frame it was processed
    LOST = 2     # unmatched, kept for max_time_lost frames for re-identification


@dataclass(eq=False)
class Track:
    """One person's track: plain data, updated in place by ``ByteTracker``."""

    track_id: int
    mean: np.ndarray        # (8,) Kalman mean: x, y, aspect, h and their velocities
    covariance: np.ndarray  # (8, 8)
    score: float            # score of the last matched detection
    last_box: np.ndarray    # (4,) xyxy of the last matched detection
    start_frame: int        # frame index (1-based) it was created in
    last_frame: int         # frame index it was last matched in
    last_time: float = 0.0  # stream time (s) of the frame it was last matched in
    state: TrackState = TrackState.TRACKED
    confirmed: bool = False  # matched again after its birth (or born in the first frame)

    @property
    def xyxy(self) -> np.ndarray:
        return xyah_to_xyxy(self.mean[None])[0]


@dataclass(eq=False)
class ByteTracker:
    """Tracks people through one video, frame by frame, in order.

    ``update`` returns, for each input detection, the id of the track it belongs to or -1.
    Ids are consecutive ints from ``first_id`` in order of track creation, reported from the
    frame a track is born (``confirmed_ids`` says which were confirmed; ``track_video`` reports
    only those); a lost track keeps its id for ``config.max_lost_frames / 30`` seconds
    (``int(frame_rate / 30 * config.max_lost_frames)`` frames at a constant rate).
    """

    config: TrackerConfig = field(default_factory=TrackerConfig)
    frame_rate: float = 30.0
    first_id: int = 0
    # State (plain data, so deepcopy / pickle snapshot it):
    kalman: KalmanFilterXYAH = field(default_factory=KalmanFilterXYAH, init=False, repr=False)
    frame_index: int = field(default=0, init=False)  # frames processed so far
    time: float = field(default=0.0, init=False)     # stream time (s) of the last frame processed
    next_id: int = field(init=False)
    confirmed_ids: set[int] = field(default_factory=set, init=False, repr=False)  # ever confirmed
    tracked: list[Track] = field(default_factory=list, init=False, repr=False)  # TRACKED, by id
    lost: list[Track] = field(default_factory=list, init=False, repr=False)     # LOST, by id

    def __post_init__(self) -> None:
        if not isinstance(self.config, TrackerConfig):
            raise TypeError(f"config must be a TrackerConfig, got {type(self.config).__name__}")
        if not _is_real(self.frame_rate) or self.frame_rate <= 0:
            raise ValueError(f"frame_rate must be a positive number of frames per second, got {self.frame_rate!r}")
        if not _is_int(self.first_id) or self.first_id < 0:
            raise ValueError(f"first_id must be an int >= 0 (-1 means 'no track'), got {self.first_id!r}")
        self.first_id = int(self.first_id)
        self.next_id = self.first_id

    @property
    def max_time_lost(self) -> int:
        """Frames a track may go unmatched before it is dropped (ByteTrack's buffer_size)."""
        return int(self.frame_rate / 30.0 * self.config.max_lost_frames)

    def update(self, boxes_xyxy: np.ndarray, scores: np.ndarray, timestamp: float | None = None) -> np.ndarray:
        """Process the next frame's detections; returns (N,) int64 track ids, -1 for none.

        `timestamp`: the frame's presentation time in seconds (not before the previous frame's);
        None: ``1 / frame_rate`` after the previous frame. Give it for every frame or for none.
        """
        boxes, scores = _check_detections(boxes_xyxy, scores)
        cfg = self.config
        now = self.time + 1.0 / self.frame_rate if timestamp is None else float(timestamp)
        if not math.isfinite(now):
            raise ValueError(f"timestamp must be a finite number of seconds, got {timestamp!r}")
        if self.frame_index and now < self.time:
            raise ValueError(f"timestamp {now!r} s is before the previous frame's ({self.time!r} s); "
                             "frames must come in presentation order")
        # Frame steps since the previous frame, for the Kalman prediction; ByteTrack's 1 at a constant rate.
        dt = 1.0 if timestamp is None or not self.frame_index else (now - self.time) * self.frame_rate
        self.time = now
        self.frame_index += 1
        frame = self.frame_index
        ids = np.full(len(scores), -1, dtype=np.int64)

        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        usable = (w > 0) & (h > 0) & (w * h > cfg.min_box_area)
        high = np.flatnonzero(usable & (scores > cfg.high_threshold))
        low = np.flatnonzero(usable & (scores > cfg.low_threshold) & (scores <= cfg.high_threshold))

        # A lost track is dropped at the end of the frame in which it has been unseen for longer than
        # the buffer, and may still be re-found in the next frame (ByteTrack). After a gap in the
        # stream there was no such frame: drop it here if it would have been dropped then.
        self.lost = [t for t in self.lost if (now - t.last_time) * self.frame_rate <= self.max_time_lost + 1 + 1e-6]
        self._predict(dt)
        unconfirmed = [t for t in self.tracked if not t.confirmed]
        pool = [t for t in self.tracked if t.confirmed] + self.lost

        # Stage 1: confirmed and lost tracks (at their predicted boxes) vs high-score detections.
        matches, pool_left, high_left = linear_assignment(
            _cost(_predicted_boxes(pool), boxes[high], scores[high], cfg.fuse_score), cfg.match_iou_threshold)
        self._update([pool[t] for t in matches[:, 0]], high[matches[:, 1]], boxes, scores, ids)
        high = high[high_left]

        # Stage 2: tracks still unmatched (not lost ones) vs low-score detections, IoU only.
        remaining = [pool[t] for t in pool_left if pool[t].state == TrackState.TRACKED]
        matches, remaining_left, _ = linear_assignment(
            _cost(_predicted_boxes(remaining), boxes[low], scores[low], False), cfg.second_match_iou_threshold)
        self._update([remaining[t] for t in matches[:, 0]], low[matches[:, 1]], boxes, scores, ids)
        for t in remaining_left:
            remaining[t].state = TrackState.LOST

        # Stage 3: newborn tracks vs high-score detections nobody took; unmatched ones die.
        matches, unconfirmed_left, high_left = linear_assignment(
            _cost(_predicted_boxes(unconfirmed), boxes[high], scores[high], cfg.fuse_score),
            cfg.unconfirmed_match_iou_threshold)
        self._update([unconfirmed[t] for t in matches[:, 0]], high[matches[:, 1]], boxes, scores, ids)
        dead = {id(unconfirmed[t]) for t in unconfirmed_left}
        high = high[high_left]

        # Stage 3b (not in ByteTrack): a lost track may also be re-found where it was last seen,
        # for people who stop, turn round or step back in through the image edge while unseen.
        if cfg.refind_at_last_box:
            lost = [t for t in pool if t.state == TrackState.LOST]
            last_boxes = np.stack([t.last_box for t in lost]) if lost else np.empty((0, 4))
            matches, _, high_left = linear_assignment(
                _cost(last_boxes, boxes[high], scores[high], cfg.fuse_score), cfg.match_iou_threshold)
            self._restart([lost[t] for t in matches[:, 0]], high[matches[:, 1]], boxes, scores, ids)
            high = high[high_left]

        # Stage 4: confident detections nobody took start tracks, in input order.
        born = high[scores[high] >= cfg.new_track_threshold]
        means, covs = self.kalman.initiate(xyxy_to_xyah(boxes[born]))
        for d, mean, cov in zip(born.tolist(), means, covs):
            self.tracked.append(Track(self.next_id, mean, cov, float(scores[d]), boxes[d].copy(),
                                      start_frame=frame, last_frame=frame, last_time=now, confirmed=frame == 1))
            if frame == 1:
                self.confirmed_ids.add(self.next_id)
            ids[d] = self.next_id
            self.next_id += 1

        # Stage 5: unconfirmed tracks left unmatched and lost tracks past the buffer go.
        everything = sorted((t for t in self.tracked + self.lost if id(t) not in dead), key=lambda t: t.track_id)
        self.tracked = [t for t in everything if t.state == TrackState.TRACKED]
        # Frames elapsed by the clock (an integer at a constant rate; the tolerance absorbs rounding).
        self.lost = [t for t in everything
                     if t.state == TrackState.LOST and (now - t.last_time) * self.frame_rate <= self.max_time_lost + 1e-6]
        return ids

    def _predict(self, dt: float = 1.0) -> None:
        tracks = self.tracked + self.lost
        if not tracks:
            return
        mean = np.stack([t.mean for t in tracks])
        cov = np.stack([t.covariance for t in tracks])
        # A lost track keeps its position velocity but stops growing or shrinking (ByteTrack).
        mean[[t.state != TrackState.TRACKED for t in tracks], 7] = 0.0
        mean, cov = self.kalman.predict(mean, cov, dt)
        for t, m, c in zip(tracks, mean, cov):
            t.mean, t.covariance = m, c

    def _update(self, tracks: list[Track], rows: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                ids: np.ndarray) -> None:
        """Kalman-correct matched tracks with their detections and report their ids."""
        if not tracks:
            return
        mean, cov = self.kalman.update(np.stack([t.mean for t in tracks]),
                                       np.stack([t.covariance for t in tracks]),
                                       xyxy_to_xyah(boxes[rows]))
        self._matched(tracks, rows, mean, cov, boxes, scores, ids)

    def _restart(self, tracks: list[Track], rows: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                 ids: np.ndarray) -> None:
        """Re-found away from its prediction: the old velocity is wrong, start the motion afresh."""
        if not tracks:
            return
        mean, cov = self.kalman.initiate(xyxy_to_xyah(boxes[rows]))
        self._matched(tracks, rows, mean, cov, boxes, scores, ids)

    def _matched(self, tracks: list[Track], rows: np.ndarray, mean: np.ndarray, cov: np.ndarray,
                 boxes: np.ndarray, scores: np.ndarray, ids: np.ndarray) -> None:
        for t, d, m, c in zip(tracks, rows.tolist(), mean, cov):
            t.mean, t.covariance = m, c
            t.score = float(scores[d])
            t.last_box = boxes[d].copy()
            t.last_frame = self.frame_index
            t.last_time = self.time
            t.state = TrackState.TRACKED
            t.confirmed = True
            self.confirmed_ids.add(t.track_id)
            ids[d] = t.track_id


def _predicted_boxes(tracks: list[Track]) -> np.ndarray:
    return xyah_to_xyxy(np.stack([t.mean for t in tracks])) if tracks else np.empty((0, 4))


def _cost(track_boxes: np.ndarray, boxes: np.ndarray, scores: np.ndarray, fuse: bool) -> np.ndarray:
    """ByteTrack's association cost: 1 - IoU, or 1 - IoU * detection score when fused."""
    iou = iou_matrix(track_boxes, boxes)
    return 1.0 - (iou * scores[None, :] if fuse else iou)


def _check_detections(boxes_xyxy: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if boxes.ndim == 1 and boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes_xyxy must have shape (N, 4), got {boxes.shape}")
    if scores.shape != (boxes.shape[0],):
        raise ValueError(f"scores must have shape ({boxes.shape[0]},) to match boxes_xyxy, got {scores.shape}")
    bad = ~(np.isfinite(boxes).all(axis=1) & np.isfinite(scores))
    if bad.any():
        raise ValueError(f"detections must be finite; rows {np.flatnonzero(bad).tolist()} are not")
    return boxes, scores


def track_video(
    frames: Iterable[tuple[np.ndarray, np.ndarray]],
    config: TrackerConfig = TrackerConfig(),
    frame_rate: float = 30.0,
    first_id: int = 0,
    timestamps: Iterable[float] | None = None,
) -> list[np.ndarray]:
    """Track (boxes_xyxy, scores) per frame, in frame order, offline; returns the ids per frame.

    Only confirmed tracks have ids, on every one of their detections (the first included); a
    detection whose track was never confirmed gets -1. Ids are consecutive from `first_id` in order
    of first appearance. `timestamps`: each frame's time in seconds (see `ByteTracker.update`).
    """
    tracker = ByteTracker(config, frame_rate, first_id)
    times = iter(timestamps) if timestamps is not None else None
    raw = [tracker.update(boxes, scores, None if times is None else next(times)) for boxes, scores in frames]
    return confirmed_only(raw, tracker.confirmed_ids, first_id)


def confirmed_only(ids_per_frame: list[np.ndarray], confirmed: set[int], first_id: int = 0) -> list[np.ndarray]:
    """Online ids -> offline ids: -1 for tracks never confirmed, the others renumbered consecutively
    from `first_id` in order of first appearance."""
    flat = np.concatenate(ids_per_frame) if ids_per_frame else np.zeros(0, np.int64)
    kept = flat[np.isin(flat, np.fromiter(confirmed, np.int64, len(confirmed)))]
    order = list(dict.fromkeys(kept.tolist()))
    lookup = {old: first_id + new for new, old in enumerate(order)}
    return [np.array([lookup.get(int(i), -1) for i in ids], dtype=np.int64) for ids in ids_per_frame]
