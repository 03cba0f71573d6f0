"""ByteTracker on generated trajectories: people crossing, occluded, leaving and re-entering.

Each scenario is a list of frames ``(gt_ids, boxes_xyxy, scores)``; the tracker sees only boxes
and scores, and ``identity_switches`` compares its ids with the ground truth over time.
"""
from __future__ import annotations

import copy
import pickle
from typing import Callable

import numpy as np
import pytest

from posepipe.pipeline.temporal.tracking import (
    ByteTracker,
    KalmanFilterXYAH,
    TrackerConfig,
    iou_matrix,
    linear_assignment,
    track_video,
    xyah_to_xyxy,
    xyxy_to_xyah,
)

Frame = tuple[np.ndarray, np.ndarray, np.ndarray]  # gt ids (N,), boxes (N, 4), scores (N,)
IMAGE_WIDTH = 640


def person(cx: float, cy: float, w: float = 60.0, h: float = 160.0) -> np.ndarray:
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def make_frames(num_frames: int, people: dict[int, Callable[[int], tuple[np.ndarray, float] | None]],
                noise: float = 0.0, seed: int = 0) -> list[Frame]:
    """``people[gt](t)`` gives (box, score) or None when that person is not detected at t.

    Detections are shuffled within each frame and jittered by ``noise`` pixels (seeded).
    """
    rng = np.random.default_rng(seed)
    frames = []
    for t in range(num_frames):
        rows = [(gt, *det) for gt, fn in people.items() if (det := fn(t)) is not None]
        order = rng.permutation(len(rows))
        gts = np.array([rows[i][0] for i in order], dtype=np.int64)
        boxes = np.array([rows[i][1] for i in order], dtype=np.float64).reshape(-1, 4)
        boxes = boxes + rng.normal(0.0, noise, boxes.shape) if noise else boxes
        scores = np.array([rows[i][2] for i in order], dtype=np.float64)
        frames.append((gts, boxes, scores))
    return frames


def run(frames: list[Frame], config: TrackerConfig = TrackerConfig(), frame_rate: float = 30.0) -> list[np.ndarray]:
    out = track_video(((boxes, scores) for _, boxes, scores in frames), config, frame_rate)
    for (gts, _, _), ids in zip(frames, out):
        assert ids.dtype == np.int64 and ids.shape == gts.shape
    return out


def identity_switches(gt_per_frame: list[np.ndarray], ids_per_frame: list[np.ndarray]) -> int:
    """How often a link between a ground-truth person and a track id changes, from either side.

    A person whose id changes counts 1, an id that moves to another person counts 1; rows with
    id -1 are skipped (a gap, not a switch). Two people swapping ids count 4.
    """
    id_of: dict[int, int] = {}
    gt_of: dict[int, int] = {}
    switches = 0
    for gts, ids in zip(gt_per_frame, ids_per_frame):
        for gt, tid in zip(gts.tolist(), ids.tolist()):
            if tid < 0:
                continue
            switches += gt in id_of and id_of[gt] != tid
            switches += tid in gt_of and gt_of[tid] != gt
            id_of[gt], gt_of[tid] = tid, gt
    return switches


def ids_of(frames: list[Frame], out: list[np.ndarray], gt: int) -> list[int]:
    return [int(ids[gts == gt][0]) for (gts, _, _), ids in zip(frames, out) if (gts == gt).any()]


def assert_tracked(frames: list[Frame], out: list[np.ndarray], people: int) -> None:
    """No identity switch, each person one id, and every confident detection has one."""
    gts = [g for g, _, _ in frames]
    assert identity_switches(gts, out) == 0, [ids.tolist() for ids in out]
    for gt in range(people):
        got = {i for i in ids_of(frames, out, gt) if i >= 0}
        assert len(got) == 1, (gt, ids_of(frames, out, gt))
    for (_, _, scores), ids in zip(frames, out):
        assert (ids[scores >= 0.6] >= 0).all(), (scores.tolist(), ids.tolist())


# ---------------------------------------------------------------------------------------------
# The helper itself


def test_identity_switches_counts_changes_from_both_sides():
    gt = [np.array([0, 1])] * 3
    assert identity_switches(gt, [np.array([5, 6])] * 3) == 0
    assert identity_switches(gt, [np.array([5, 6]), np.array([-1, 6]), np.array([5, -1])]) == 0
    assert identity_switches(gt, [np.array([5, 6]), np.array([6, 5]), np.array([6, 5])]) == 4
    assert identity_switches(gt, [np.array([5, 6]), np.array([7, 6]), np.array([7, 6])]) == 1


# ---------------------------------------------------------------------------------------------
# Scenarios


# Seed 11 lost B for good under ByteTrack's tracked-vs-lost duplicate removal (see the module).
@pytest.mark.parametrize("seed", [1, 11])
@pytest.mark.parametrize("a_enters", [0, 8])  # at 8, the hidden person's track is the older one
@pytest.mark.parametrize("occlusion", ["both_seen", "back_low_score", "back_missing"])
def test_two_people_crossing_keep_their_ids(occlusion, a_enters, seed):
    # A walks right, B walks left, B passes behind A; boxes overlap for ~10 frames, fully at t=30.
    def back(t: int, box: np.ndarray) -> tuple[np.ndarray, float] | None:
        overlap = iou_matrix(box[None], person(100 + 6 * t, 300, 64, 160)[None])[0, 0]
        if occlusion == "back_low_score" and overlap > 0.3:
            return box, 0.3
        if occlusion == "back_missing" and overlap > 0.3:
            return None
        return box, 0.8

    people = {
        0: lambda t: (person(100 + 6 * t, 300, 64, 160), 0.9) if t >= a_enters else None,
        1: lambda t: back(t, person(460 - 6 * t, 310, 58, 150)),
    }
    frames = make_frames(60, people, noise=1.5, seed=seed)
    out = run(frames)
    assert_tracked(frames, out, people=2)
    assert sorted(set(np.concatenate(out).tolist()) - {-1}) == [0, 1]
    if occlusion == "back_missing":
        assert sum(1 not in gts for gts, _, _ in frames) >= 5


def test_occluded_for_ten_frames_keeps_id():
    people = {
        0: lambda t: None if 20 <= t < 30 else (person(80 + 4 * t, 240), 0.9),
        1: lambda t: (person(560, 260, 50, 140), 0.85),  # someone standing still elsewhere
    }
    frames = make_frames(50, people, noise=1.0, seed=2)
    out = run(frames)
    assert_tracked(frames, out, people=2)
    assert [len(ids) for ids in out[20:30]] == [1] * 10


@pytest.mark.parametrize("turn, unseen", [(20, 3), (22, 7), (26, 15)])
def test_leaving_and_reentering_the_frame_keeps_id(turn, unseen):
    # Walks out through the right edge (box clipped by the image), turns round outside, comes back.
    def walker(t: int) -> tuple[np.ndarray, float] | None:
        cx = 500 + 8 * min(t, turn) - 8 * max(t - turn, 0)
        box = person(cx, 250)
        box[2] = min(box[2], IMAGE_WIDTH)
        return (box, 0.85) if box[2] - box[0] >= 20 else None

    frames = make_frames(2 * turn, {0: walker}, noise=1.0, seed=3)
    assert sum(len(g) == 0 for g, _, _ in frames) == unseen
    out = run(frames)
    assert_tracked(frames, out, people=1)
    # ByteTrack alone loses them: its prediction keeps walking (and shrinking) outwards.
    plain = run(frames, TrackerConfig(refind_at_last_box=False))
    assert identity_switches([g for g, _, _ in frames], plain) == 1


def test_low_score_detection_during_partial_occlusion_keeps_track():
    partial = range(20, 28)
    people = {0: lambda t: (person(100 + 5 * t, 300), 0.3 if t in partial else 0.9)}
    frames = make_frames(40, people, noise=1.0, seed=4)
    out = run(frames)
    assert_tracked(frames, out, people=1)
    assert all(ids[0] == 0 for ids in out)  # the low-score rows are reported too (second stage)

    # Without the second stage those rows have no id; the track is lost, then found again.
    no_second_stage = run(frames, TrackerConfig(low_threshold=0.4))
    assert [int(ids[0]) for ids in no_second_stage[18:30]] == [0, 0] + [-1] * 8 + [0, 0]


def test_many_noisy_walkers_with_dropouts_have_no_switches():
    rng = np.random.default_rng(5)
    starts = [(60 + 120 * k, 150 + 70 * (k % 2)) for k in range(5)]
    velocity = rng.uniform(-2, 2, size=(5, 2))
    dropped = rng.random((80, 5)) < 0.1
    scores = rng.uniform(0.15, 1.0, size=(80, 5))

    def walker(k: int) -> Callable[[int], tuple[np.ndarray, float] | None]:
        def at(t: int) -> tuple[np.ndarray, float] | None:
            if dropped[t, k] and t > 0:
                return None
            cx, cy = starts[k][0] + velocity[k, 0] * t, starts[k][1] + velocity[k, 1] * t
            return person(cx, cy, 50, 130), (0.95 if t == 0 else float(scores[t, k]))
        return at

    frames = make_frames(80, {k: walker(k) for k in range(5)}, noise=3.0, seed=6)
    out = run(frames)
    assert identity_switches([g for g, _, _ in frames], out) == 0
    assert sorted(set(np.concatenate(out).tolist()) - {-1}) == list(range(5))
    # A detection between the thresholds gets an id when its person was tracked the frame before
    # (the second stage only continues tracked tracks, it never re-finds lost ones).
    for (prev_gts, _, _), prev_ids, (gts, _, s), ids in zip(frames, out, frames[1:], out[1:]):
        tracked_before = set(prev_gts[prev_ids >= 0].tolist())
        continued = np.isin(gts, list(tracked_before)) & (s > 0.1) & (s <= 0.5)
        assert (ids[continued] >= 0).all(), (gts.tolist(), s.tolist(), ids.tolist())


# ---------------------------------------------------------------------------------------------
# Determinism, snapshots, ids


def _random_video(seed: int = 7) -> list[Frame]:
    rng = np.random.default_rng(seed)
    people = {k: (lambda t, k=k: None if rng.random() < 0.15 else
                  (person(80 + 100 * k + 3 * t, 200 + 20 * k), float(rng.uniform(0.05, 1.0))))
              for k in range(6)}
    return make_frames(60, people, noise=4.0, seed=seed)


def test_same_input_gives_same_ids():
    frames = _random_video()
    first, second = run(frames), run(frames)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_snapshot_continues_like_the_original():
    frames = _random_video()
    online = ByteTracker()
    expected = [online.update(boxes, scores) for _, boxes, scores in frames]
    tracker = ByteTracker()
    for _, boxes, scores in frames[:30]:
        tracker.update(boxes, scores)
    for snapshot in (copy.deepcopy(tracker), pickle.loads(pickle.dumps(tracker))):
        got = [snapshot.update(boxes, scores) for _, boxes, scores in frames[30:]]
        assert all(np.array_equal(a, b) for a, b in zip(expected[30:], got))


def test_ids_are_consecutive_from_first_id_in_creation_order():
    frames = _random_video()
    base = run(frames)
    shifted = track_video(((b, s) for _, b, s in frames), first_id=1000)
    assert all(np.array_equal(np.where(a >= 0, a + 1000, -1), b) for a, b in zip(base, shifted))
    seen = [int(i) for ids in base for i in ids if i >= 0]
    first_seen = list(dict.fromkeys(seen))
    assert first_seen == list(range(len(first_seen)))


def test_unconfirmed_track_is_minus_one_offline_and_takes_no_id():
    # Frame 0: one person. Frame 3: a spurious box (never seen again). Frame 6: a second person.
    people = {
        0: lambda t: (person(100, 200), 0.9),
        1: lambda t: (person(400, 200), 0.9) if t == 3 else None,
        2: lambda t: (person(300, 300), 0.9) if t >= 6 else None,
    }
    frames = make_frames(10, people)
    out = run(frames)
    assert ids_of(frames, out, 1) == [-1]      # never confirmed: -1, as the docs say
    assert ids_of(frames, out, 2) == [1] * 4   # its first row included; ids stay consecutive
    # Online, the spurious box got id 1 in its frame and the second person id 2.
    tracker = ByteTracker()
    online = [tracker.update(b, s) for _, b, s in frames]
    assert ids_of(frames, online, 1) == [1] and ids_of(frames, online, 2) == [2] * 4
    assert tracker.confirmed_ids == {0, 2}


# ---------------------------------------------------------------------------------------------
# Edge cases


def test_empty_frames_are_valid_and_tracks_survive_them():
    tracker = ByteTracker()
    empty = tracker.update(np.zeros((0, 4)), np.zeros(0))
    assert empty.shape == (0,) and empty.dtype == np.int64
    assert tracker.update(np.empty(0), []).shape == (0,)
    box = person(100, 100)[None]
    assert tracker.update(box, [0.9]).tolist() == [0]  # born after frame 1: reported at once
    assert tracker.update(box, [0.9]).tolist() == [0]  # confirmed
    for _ in range(5):
        assert tracker.update(np.zeros((0, 4)), np.zeros(0)).shape == (0,)
    assert tracker.update(box, [0.9]).tolist() == [0]


def test_scores_below_thresholds_get_no_id_and_start_no_track():
    tracker = ByteTracker()
    box = person(100, 100)[None]
    assert tracker.update(box, [0.05]).tolist() == [-1]  # below low_threshold: ignored
    assert tracker.update(box, [0.3]).tolist() == [-1]   # low score, no track to continue
    assert tracker.update(box, [0.55]).tolist() == [-1]  # high, but below new_track_threshold
    assert tracker.update(box, [0.6]).tolist() == [0]
    assert tracker.update(box, [0.7]).tolist() == [0]
    assert tracker.update(box, [0.05]).tolist() == [-1]  # ignored even next to its track
    assert tracker.update(box, [0.8]).tolist() == [0]
    assert tracker.update(box, [0.3]).tolist() == [0]    # low score continues a tracked track


def test_a_track_not_confirmed_in_the_next_frame_is_dropped():
    tracker = ByteTracker()
    tracker.update(np.zeros((0, 4)), np.zeros(0))
    box = person(100, 100)[None]
    assert tracker.update(box, [0.9]).tolist() == [0]
    tracker.update(np.zeros((0, 4)), np.zeros(0))
    assert tracker.update(box, [0.9]).tolist() == [1]
    # A track born in the very first frame is confirmed at once (ByteTrack) and survives a gap.
    tracker = ByteTracker()
    assert tracker.update(box, [0.9]).tolist() == [0]
    tracker.update(np.zeros((0, 4)), np.zeros(0))
    assert tracker.update(box, [0.9]).tolist() == [0]


def test_degenerate_and_small_boxes_are_ignored():
    boxes = np.array([[0, 0, 0, 10], [0, 0, 10, -5], [0, 0, 5, 5], [50, 50, 90, 150]], dtype=float)
    assert ByteTracker().update(boxes, np.full(4, 0.9)).tolist() == [-1, -1, 0, 1]
    tracker = ByteTracker(TrackerConfig(min_box_area=25.0))
    assert tracker.update(boxes, np.full(4, 0.9)).tolist() == [-1, -1, -1, 0]


@pytest.mark.parametrize("missing, same_id", [(5, True), (6, False)])
def test_lost_buffer_scales_with_frame_rate(missing, same_id):
    tracker = ByteTracker(TrackerConfig(max_lost_frames=10), frame_rate=15.0)
    assert tracker.max_time_lost == 5
    box = person(200, 200)[None]
    assert tracker.update(box, [0.9]).tolist() == [0]
    assert tracker.update(box, [0.9]).tolist() == [0]
    for _ in range(missing):
        tracker.update(np.zeros((0, 4)), np.zeros(0))
    assert tracker.update(box, [0.9]).tolist() == ([0] if same_id else [1])


@pytest.mark.parametrize("boxes, scores, message", [
    (np.zeros((2, 5)), np.zeros(2), "shape \\(N, 4\\)"),
    (np.zeros((2, 4)), np.zeros(3), "scores must have shape \\(2,\\)"),
    (np.array([[0, 0, np.nan, 1.0]]), np.ones(1), "rows \\[0\\]"),
    (np.zeros((1, 4)), np.array([np.inf]), "finite"),
])
def test_bad_detections_are_rejected(boxes, scores, message):
    with pytest.raises(ValueError, match=message):
        ByteTracker().update(boxes, scores)


@pytest.mark.parametrize("kwargs, field", [
    ({"high_threshold": 1.5}, "high_threshold"),
    ({"low_threshold": 0.6}, "low_threshold"),
    ({"new_track_threshold": 0.4}, "new_track_threshold"),
    ({"match_iou_threshold": 1.0}, "match_iou_threshold"),
    ({"second_match_iou_threshold": 0.0}, "second_match_iou_threshold"),
    ({"unconfirmed_match_iou_threshold": float("nan")}, "unconfirmed_match_iou_threshold"),
    ({"max_lost_frames": -1}, "max_lost_frames"),
    ({"max_lost_frames": 2.5}, "max_lost_frames"),
    ({"min_box_area": -1.0}, "min_box_area"),
    ({"fuse_score": 1}, "fuse_score"),
    ({"refind_at_last_box": "yes"}, "refind_at_last_box"),
])
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TrackerConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [{"frame_rate": 0.0}, {"first_id": -1}, {"first_id": 1.5}])
def test_tracker_arguments_are_validated(kwargs):
    with pytest.raises(ValueError):
        ByteTracker(**kwargs)


# ---------------------------------------------------------------------------------------------
# Building blocks


def test_linear_assignment_maximises_margin_under_the_ceiling():
    # Filtering a plain Hungarian solution would pair (0, 1) and (1, 0) (total 1.0 < 0.1 + 0.9);
    # with a 0.8 ceiling the margins are 0.7 for (0, 0) alone versus 0.3 + 0.3: ByteTrack keeps (0, 0).
    matches, rows, cols = linear_assignment(np.array([[0.1, 0.5], [0.5, 0.9]]), 0.8)
    assert matches.tolist() == [[0, 0]] and rows.tolist() == [1] and cols.tolist() == [1]
    matches, rows, cols = linear_assignment(np.zeros((0, 3)), 0.8)
    assert matches.shape == (0, 2) and rows.tolist() == [] and cols.tolist() == [0, 1, 2]
    matches, _, _ = linear_assignment(np.array([[0.9, 0.2, 0.95]]), 0.8)
    assert matches.tolist() == [[0, 1]]


def test_iou_matrix_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 10]], dtype=float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=float)
    np.testing.assert_allclose(iou_matrix(a, b), [[50 / 150, 0, 1], [0, 0, 0]])
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_kalman_filter_learns_constant_velocity():
    kf = KalmanFilterXYAH()
    box = person(100, 200)
    mean, cov = kf.initiate(xyxy_to_xyah(box[None]))
    np.testing.assert_allclose(xyah_to_xyxy(mean), box[None])
    assert mean[0, 4:].tolist() == [0, 0, 0, 0]
    for t in range(1, 30):
        mean, cov = kf.predict(mean, cov)
        mean, cov = kf.update(mean, cov, xyxy_to_xyah(person(100 + 5 * t, 200 - 2 * t)[None]))
    np.testing.assert_allclose(mean[0, 4:6], [5, -2], atol=0.2)
    np.testing.assert_allclose(cov[0], cov[0].T, atol=1e-9)
    assert (np.linalg.eigvalsh(cov[0]) > 0).all()
    predicted, _ = kf.predict(mean, cov)
    np.testing.assert_allclose(predicted[0, :2], [100 + 5 * 30, 200 - 2 * 30], atol=1.0)


# ---------------------------------------------------------------------------------------------
# Time: the Kalman step follows the stream's timestamps


def test_kalman_predict_over_dt_equals_repeated_steps_in_the_mean():
    kf = KalmanFilterXYAH()
    mean, cov = kf.initiate(xyxy_to_xyah(person(100, 200)[None]))
    mean[0, 4:6] = [3.0, -1.0]
    two, cov_two = kf.predict(mean, cov, dt=2.0)
    once, _ = kf.predict(*kf.predict(mean, cov))
    np.testing.assert_allclose(two, once)
    assert np.trace(cov_two[0]) > np.trace(kf.predict(mean, cov)[1][0])
    same, same_cov = kf.predict(mean, cov, dt=1.0)
    ref, ref_cov = kf.predict(mean, cov)
    assert np.array_equal(same, ref) and np.array_equal(same_cov, ref_cov)


def _vfr_walker(times: np.ndarray, speed_px_s: float = 300.0) -> list[Frame]:
    """One narrow person (30 px) walking at constant speed, sampled at the given (irregular) times."""
    return [(np.array([0]), person(80 + speed_px_s * t, 240, 30, 120)[None], np.array([0.9])) for t in times]


def test_variable_frame_rate_is_tracked_on_the_real_time_axis():
    # 30 fps nominal; frames 0-19 at 1/30 s, then the next frames come 4/30 s apart. A narrow
    # person moving 10 px a frame moves 40 px between the late frames: the frame-count prediction
    # lands 30 px short (no overlap with the 30 px box), the timestamp one on target.
    times = np.concatenate([np.arange(20) / 30, 19 / 30 + np.arange(1, 15) * 4 / 30])
    frames = _vfr_walker(times)
    boxes = ((b, s) for _, b, s in frames)
    with_time = track_video(boxes, frame_rate=30.0, timestamps=times)
    assert identity_switches([g for g, _, _ in frames], with_time) == 0
    assert {int(i[0]) for i in with_time} == {0}
    frame_count = track_video(((b, s) for _, b, s in frames), frame_rate=30.0)
    # On the warped time axis the track is lost at the stall; every later box starts a track that
    # the next box misses again, so none is ever confirmed.
    assert [int(i[0]) for i in frame_count] == [0] * 20 + [-1] * 14


def test_constant_rate_timestamps_give_bytetracks_answer():
    frames = _random_video()
    times = np.arange(len(frames)) / 25.0 + 3.0
    a = track_video(((b, s) for _, b, s in frames), frame_rate=25.0)
    b = track_video(((b, s) for _, b, s in frames), frame_rate=25.0, timestamps=times)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("gap_s, same_id", [(1.1, True), (1.2, False)])
def test_lost_tracks_expire_after_seconds_not_frames(gap_s, same_id):
    # max_lost_frames=30 is one second whatever the frame rate, plus the one frame step in which
    # ByteTrack can still re-find a track: a 10 fps stream with no frames for gap_s seconds keeps
    # the id up to 1.1 s, as when 10 empty frames come in between.
    tracker = ByteTracker(TrackerConfig(max_lost_frames=30), frame_rate=10.0)
    box = person(200, 200)[None]
    assert tracker.update(box, [0.9], timestamp=0.0).tolist() == [0]
    assert tracker.update(box, [0.9], timestamp=0.1).tolist() == [0]
    tracker.update(np.zeros((0, 4)), np.zeros(0), timestamp=0.2)  # lost from here
    assert tracker.update(box, [0.9], timestamp=0.1 + gap_s).tolist() == ([0] if same_id else [1])


def test_timestamps_must_not_go_back():
    tracker = ByteTracker()
    tracker.update(np.zeros((0, 4)), np.zeros(0), timestamp=1.0)
    tracker.update(np.zeros((0, 4)), np.zeros(0), timestamp=1.0)  # a repeated time is a zero step
    with pytest.raises(ValueError, match="before the previous frame"):
        tracker.update(np.zeros((0, 4)), np.zeros(0), timestamp=0.5)
    with pytest.raises(ValueError, match="finite"):
        tracker.update(np.zeros((0, 4)), np.zeros(0), timestamp=float("nan"))
