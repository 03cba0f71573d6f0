"""Our tracker against supervision's ByteTrack on the same detections; prints JSON (and a table with --table).

    python bytetrack_compare.py [--seeds 5] [--table]

Runs in a venv with supervision and motmetrics (tests/pipeline/temporal/test_tracking_compare.py builds
it); imports posepipe's tracker and the generated crowds (tests/pipeline/temporal/crowds.py) from the
repository. Both trackers get ByteTrack's MOT17 settings: high score 0.5, new tracks from 0.6,
low floor 0.1, match ceiling 0.8, a 30-frame lost buffer at 30 fps.

* ``posepipe``: `pipeline.temporal.tracking.track_video` as ``finish_video`` runs it (offline: confirmed
  tracks only, their first row included; lost tracks re-found where last seen);
* ``posepipe_plain``: the same tracker without re-finding at the last box (closer to ByteTrack);
* ``supervision``: ``supervision.ByteTrack`` (an independent implementation of the paper), online;
* ``posepipe_0.3``: ours fed only boxes scoring 0.3 or more, as the pipeline did before (its
  detector threshold), which starves ByteTrack's second stage.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
# This venv has no posepipe installed: the checkout's folders are its packages, as the install maps them.
if "posepipe" not in sys.modules:
    import types

    sys.modules["posepipe"] = types.ModuleType("posepipe")
    sys.modules["posepipe"].__path__ = [str(ROOT)]

from posepipe.pipeline.temporal.tracking import TrackerConfig, iou_matrix, track_video  # noqa: E402
from tests.pipeline.temporal.crowds import FPS, SCENARIOS, mot_metrics  # noqa: E402


def ours(frames, refind: bool = True, floor: float = 0.0) -> list[np.ndarray]:
    """Ids per detection; with `floor`, only boxes scoring at least that reach the tracker."""
    kept = [s >= floor for _, _, s in frames]
    got = track_video(((b[k], s[k]) for (_, b, s), k in zip(frames, kept)), TrackerConfig(refind_at_last_box=refind), FPS)
    out = []
    for k, g in zip(kept, got):
        ids = np.full(len(k), -1, np.int64)
        ids[k] = g
        out.append(ids)
    return out


def supervision_ids(frames) -> list[np.ndarray]:
    import supervision as sv

    tracker = sv.ByteTrack(track_activation_threshold=0.5, lost_track_buffer=30, minimum_matching_threshold=0.8,
                           frame_rate=int(FPS), minimum_consecutive_frames=1)
    out = []
    for _, boxes, scores in frames:
        dets = sv.Detections(xyxy=boxes.astype(np.float32).reshape(-1, 4), confidence=scores.astype(np.float32),
                             class_id=np.zeros(len(scores), int))
        tracked = tracker.update_with_detections(dets)
        ids = np.full(len(scores), -1, np.int64)
        if len(tracked):
            # supervision returns the detections it tracked (their own boxes): find them in the input
            same = iou_matrix(tracked.xyxy, boxes.astype(np.float32)) > 0.999
            for row, tid in zip(same, tracked.tracker_id):
                if row.any():
                    ids[int(np.argmax(row))] = int(tid)
        out.append(ids)
    return out


def compare(seeds: int) -> dict:
    warnings.filterwarnings("ignore")
    result: dict = {}
    for name, make in SCENARIOS.items():
        totals: dict = {}
        for seed in range(seeds):
            frames = make(seed)
            for tracker, ids in (("posepipe", ours(frames)), ("posepipe_plain", ours(frames, refind=False)),
                                 ("supervision", supervision_ids(frames)), ("posepipe_0.3", ours(frames, floor=0.3))):
                m = mot_metrics(frames, ids, tracker)
                t = totals.setdefault(tracker, {"mota": [], "idf1": [], "switches": 0})
                t["mota"].append(m["mota"])
                t["idf1"].append(m["idf1"])
                t["switches"] += m["switches"]
        result[name] = {k: {"mota": float(np.mean(v["mota"])), "idf1": float(np.mean(v["idf1"])), "switches": v["switches"]}
                        for k, v in totals.items()}
    return result


def table(result: dict, seeds: int) -> str:
    lines = [f"| scenario ({seeds} seeds) | tracker | MOTA | IDF1 | ID switches |", "|---|---|---|---|---|"]
    for name, trackers in result.items():
        for tracker, m in trackers.items():
            lines.append(f"| {name} | {tracker} | {m['mota']:.3f} | {m['idf1']:.3f} | {m['switches']} |")
    return "\n".join(lines)


def plot(result: dict, seeds: int, path: str) -> None:
    """IDF1 and identity switches per scenario and tracker, as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, trackers = list(result), list(next(iter(result.values())))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), dpi=100)
    for ax, metric, label in ((axes[0], "idf1", "IDF1 (higher is better)"), (axes[1], "switches", "ID switches (lower is better)")):
        for i, tracker in enumerate(trackers):
            ax.bar(np.arange(len(names)) + (i - 1.5) * 0.2, [result[n][tracker][metric] for n in names], 0.2, label=tracker)
        ax.set_xticks(np.arange(len(names)), names)
        ax.set_title(label, fontsize=10)
    axes[0].set_ylim(0.8, 1.0)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"Same detections, generated crowds ({seeds} seeds each): posepipe vs supervision's ByteTrack", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    seeds = int(sys.argv[sys.argv.index("--seeds") + 1]) if "--seeds" in sys.argv else 5
    result = compare(seeds)
    if "--table" in sys.argv:
        print(table(result, seeds))
    if "--plot" in sys.argv:
        plot(result, seeds, sys.argv[sys.argv.index("--plot") + 1])
    print(json.dumps(result))
