"""Generated crowds with ground truth, and MOT metrics (motmetrics) of a tracker's output on them.

Used by tests/pipeline/temporal/test_association.py (tracking every box, then capping, against the old
cap-then-track) and by tests/pipeline/temporal/bytetrack_compare.py (our tracker against supervision's
ByteTrack on the same detections, in its own venv). Needs only numpy (and motmetrics to score).

A scenario is a list of frames ``(gt_ids (N,), boxes_xyxy (N, 4), scores (N,))``; gt id -1 marks a
false positive. Detections of a person behind a nearer one (IoU above ``hidden_iou``) get a low
score (0.15-0.45, what occluded people get from a real detector, ByteTrack's premise) or are missed.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

Frame = tuple[np.ndarray, np.ndarray, np.ndarray]
FPS = 30.0


def person(cx: float, cy: float, w: float, h: float) -> np.ndarray:
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def render(num_frames: int, paths: dict[int, Callable[[int], np.ndarray | None]], depth: dict[int, float], *,
           seed: int, width: float = 960, hidden_iou: float = 0.25, miss_hidden: float = 0.05, miss: float = 0.01,
           noise: float = 1.5, false_positives: float = 0.2) -> list[Frame]:
    """Detections of people moving along `paths` (box or None when off screen) at `depth` (larger
    is nearer the camera): boxes clipped to the image, jittered, shuffled; occlusion lowers scores."""
    rng = np.random.default_rng(seed)
    frames: list[Frame] = []
    for t in range(num_frames):
        present = {k: b for k, fn in paths.items() if (b := fn(t)) is not None}
        gts, boxes, scores = [], [], []
        for k, box in present.items():
            box = box.copy()
            box[[0, 2]] = box[[0, 2]].clip(0, width)
            if box[2] - box[0] < 8:
                continue
            nearer = [b for j, b in present.items() if depth[j] > depth[k]]
            hidden = bool(nearer) and _iou(box[None], np.stack(nearer)).max() > hidden_iou
            if rng.random() < (miss_hidden if hidden else miss):
                continue
            gts.append(k)
            boxes.append(box + rng.normal(0, noise, 4))
            scores.append(rng.uniform(0.15, 0.45) if hidden else rng.uniform(0.6, 0.95))
        if rng.random() < false_positives:  # low-score clutter away from people (a bag, a sign)
            gts.append(-1)
            boxes.append(person(rng.uniform(40, width - 40), 60, 40, 90))
            scores.append(rng.uniform(0.1, 0.35))
        order = rng.permutation(len(gts))
        frames.append((np.array(gts, np.int64)[order], np.array(boxes, np.float64).reshape(-1, 4)[order],
                       np.array(scores, np.float64)[order]))
    return frames


def overtaking(seed: int) -> list[Frame]:
    """Three pairs walk right; the rear one of each overtakes the front one from behind, hidden for
    ~50 frames (longer than ByteTrack's 30-frame lost buffer); two people walk left further back."""
    j = np.random.default_rng(seed).uniform(-0.2, 0.2, 8)
    paths = {}
    for pair in range(3):
        paths[2 * pair] = lambda t, p=pair: person(40 + 300 * p + (2.0 + j[2 * p]) * t, 340, 56, 160)
        paths[2 * pair + 1] = lambda t, p=pair: person(-10 + 300 * p + (3.4 + j[2 * p + 1]) * t, 330, 54, 150)
    paths[6] = lambda t: person(900 - (3.0 + j[6]) * t, 290, 44, 120)
    paths[7] = lambda t: person(780 - (3.0 + j[7]) * t, 290, 44, 120)
    return render(150, paths, {0: 3, 2: 3, 4: 3, 1: 2, 3: 2, 5: 2, 6: 1, 7: 1}, seed=seed)


def crossing(seed: int) -> list[Frame]:
    """Five people walk right on a near line and five walk left on a far line; every near-far pair
    crosses, the far one hidden for ~15 frames each time."""
    rng = np.random.default_rng(seed)
    paths, depth = {}, {}
    for k in range(5):
        v = 4.0 + rng.uniform(-0.1, 0.1)
        paths[k] = lambda t, k=k, v=v: person(30 + 110 * k - 400 + v * t, 350, 60, 170)
        depth[k] = 2
        w = 4.0 + rng.uniform(-0.1, 0.1)
        paths[5 + k] = lambda t, k=k, w=w: person(930 - 110 * k + 400 - w * t, 320, 52, 145)
        depth[5 + k] = 1
    return render(220, paths, depth, seed=seed)


def reentry(seed: int) -> list[Frame]:
    """Four people walk out through the image edges, turn round outside and come back after 5-20
    frames; two others cross in front of them."""
    rng = np.random.default_rng(seed)
    paths, depth = {}, {}
    for k in range(4):
        turn = int(rng.integers(25, 45))
        side = 1 if k % 2 else -1
        x0 = 960 - 120 - 60 * k if side > 0 else 120 + 60 * k
        paths[k] = lambda t, k=k, turn=turn, side=side, x0=x0: person(x0 + side * 7 * (min(t, turn) - max(t - turn, 0)), 300 + 20 * k, 60, 160)
        depth[k] = 1 + k % 2
    paths[4] = lambda t: person(100 + 6 * t, 380, 70, 190)
    paths[5] = lambda t: person(860 - 6 * t, 380, 70, 190)
    depth[4] = depth[5] = 5
    return render(100, paths, depth, seed=seed)


def plaza(seed: int) -> list[Frame]:
    """Twenty people wander a plaza (smooth random velocities, 2-6 px per frame), nearer the bottom
    the bigger; occlusions come and go everywhere."""
    rng = np.random.default_rng(seed)
    n, frames = 20, 200
    pos = np.stack([rng.uniform(60, 900, n), rng.uniform(200, 460, n)], axis=1)
    vel = rng.normal(0, 2.5, (n, 2)) * [1.0, 0.3]
    track = np.zeros((frames, n, 2))
    for t in range(frames):
        vel = 0.97 * vel + rng.normal(0, 0.25, (n, 2)) * [1.0, 0.3]
        pos = pos + vel
        bounce = (pos[:, 0] < 30) | (pos[:, 0] > 930)
        vel[bounce, 0] *= -1
        pos[:, 1] = pos[:, 1].clip(180, 480)
        track[t] = pos
    size = lambda y: 0.35 * y  # noqa: E731 - nearer (lower) people are taller
    paths = {k: (lambda t, k=k: person(track[t, k, 0], track[t, k, 1], 0.4 * size(track[t, k, 1]), size(track[t, k, 1])))
             for k in range(n)}
    return render(frames, paths, {k: float(track[:, k, 1].mean()) for k in range(n)}, seed=seed)


SCENARIOS: dict[str, Callable[[int], list[Frame]]] = {
    "overtaking": overtaking, "crossing": crossing, "reentry": reentry, "plaza": plaza,
}


def mot_metrics(frames: list[Frame], ids: list[np.ndarray], name: str = "tracker") -> dict[str, float]:
    """MOTA, IDF1, identity switches (motmetrics' definitions) of per-detection ids (-1: no track).

    Ground truth is every person's detected box (false positives excluded); hypotheses are the
    detections a track claimed, with the track's id; a pair matches at IoU >= 0.5.
    """
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=True)
    for (gts, boxes, _), got in zip(frames, ids):
        truth = gts >= 0
        claimed = got >= 0
        distance = 1.0 - _iou(boxes[truth], boxes[claimed])
        distance[distance > 0.5] = np.nan
        acc.update(gts[truth].tolist(), got[claimed].tolist(), distance)
    summary = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "num_switches", "num_false_positives",
                                                         "num_misses", "num_unique_objects"], name=name)
    row = summary.iloc[0]
    return {"mota": float(row["mota"]), "idf1": float(row["idf1"]), "switches": int(row["num_switches"]),
            "false_positives": int(row["num_false_positives"]), "misses": int(row["num_misses"]),
            "people": int(row["num_unique_objects"])}
