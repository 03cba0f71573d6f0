"""A small, seeded posepipe OUTPUT written by the real writer, for readback/export/render tests.

Rows are built with the real schema (`pipeline.io.schema`) and written where and how a run's finish
writes them (`pipeline.io.store`: `video_key`, attempt-named `part_name`, `Store.write_table`, and
a videos row naming its `commit_attempt`), so a change to the writer is seen by the readers' tests.
Beside them lies what a crashed or superseded attempt leaves, which readers must not see.

    spec = fake_output(tmp_path / "out")      # writes videos/ and poses/ as a run would
    spec.videos["jump/a.mp4"].tracks          # {track_id: [frames]} that were written

Keypoints are a closed-form function of (video, track, frame, joint) (`expected_keypoints`), so a
test can check any exported cell without re-deriving it from the files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from posepipe.pipeline.io.schema import poses_table, provenance_metadata, videos_table

PART_FRAMES = 4


@dataclass
class FakeVideo:
    video_id: str
    num_frames: int
    width: int = 320
    height: int = 240
    fps: float = 10.0
    status: str = "ok"
    error: str | None = None
    tracks: dict[int, list[int]] = field(default_factory=dict)       # track id -> frames seen
    bbox_scores: dict[int, float] = field(default_factory=dict)      # track id -> its bbox score
    no_3d: set[tuple[int, int]] = field(default_factory=set)          # (track, frame) rows without 3D
    uri: str | None = None


def expected_keypoints(video_index: int, track: int, frame: int) -> np.ndarray:
    """(17, 2) pixels of one person in one frame: distinct per video, track, frame and joint."""
    joint = np.arange(17, dtype=np.float32)
    x = 20 + 10 * track + 2 * frame + 5 * (joint % 5) + video_index
    y = 30 + 8 * joint + frame
    return np.stack([x, y], axis=1).astype(np.float32)


def expected_scores(track: int, frame: int) -> np.ndarray:
    return (0.5 + 0.02 * np.arange(17) + 0.001 * frame + 0.0001 * track).astype(np.float32)


def expected_3d(video_index: int, track: int, frame: int) -> np.ndarray:
    joint = np.arange(17, dtype=np.float32)
    # metres, roughly pelvis-relative like the lifter's output: within a metre of the origin
    return np.stack([0.02 * joint - 0.16 + 0.001 * track, 0.4 - 0.05 * joint + 0.01 * frame, 0.001 * video_index + 0 * joint], 1).astype(np.float32)


def expected_camera(track: int, frame: int) -> np.ndarray:
    """HMR's crop camera (s, tx, ty) of a row."""
    return np.array([0.9 + 0.01 * track, 0.02 * frame - 0.05, 0.1], np.float32)


def expected_bbox(video_index: int, track: int, frame: int) -> np.ndarray:
    kp = expected_keypoints(video_index, track, frame)
    return np.array([kp[:, 0].min() - 4, kp[:, 1].min() - 4, kp[:, 0].max() + 4, kp[:, 1].max() + 4], np.float32)


def default_videos() -> list[FakeVideo]:
    return [
        # three tracks, one with gaps; rank by frames x mean score: 3 (10 x .9), 5 (5 x .8), 7 (10 x .3)
        FakeVideo("jump/a.mp4", 10, tracks={3: list(range(10)), 5: [2, 3, 4, 7, 8], 7: list(range(10)), -1: [5]},
                  bbox_scores={3: 0.9, 5: 0.8, 7: 0.3, -1: 0.2}, no_3d={(3, 0)}),
        FakeVideo("jump/b.mp4", 6, tracks={0: [0, 1, 2, 3, 4, 5]}, bbox_scores={0: 0.7}),
        FakeVideo("run/c.mp4", 8, width=640, height=360, tracks={1: [0, 1, 2], 2: [4, 5, 6, 7]}, bbox_scores={1: 0.9, 2: 0.9}),
        FakeVideo("run/empty.mov", 5),                                   # decoded, nobody in it
        FakeVideo("run/broken.mp4", 0, status="failed", error="not a readable video container (empty, truncated or not a video)"),
    ]


@dataclass
class FakeOutput:
    root: Path
    videos: dict[str, FakeVideo]
    index: dict[str, int]              # video_id -> video_index used in the closed forms


def video_rows(video: FakeVideo, video_index: int) -> pa.Table:
    rows = [(t, f) for t, frames in sorted(video.tracks.items()) for f in frames]
    rows.sort(key=lambda r: (r[1], r[0] < 0, r[0]))  # tracked people first in a frame, as a run writes them
    n = len(rows)
    kp = np.zeros((n, 17, 2), np.float32)
    sc = np.zeros((n, 17), np.float32)
    k3 = np.zeros((n, 17, 3), np.float32)
    bbox = np.zeros((n, 4), np.float32)
    for i, (t, f) in enumerate(rows):
        kp[i] = expected_keypoints(video_index, t, f)
        sc[i] = expected_scores(t, f)
        k3[i] = expected_3d(video_index, t, f)
        bbox[i] = expected_bbox(video_index, t, f)
    frames = np.array([f for _, f in rows], np.int32)
    person_index = np.zeros(n, np.int32)
    for i in range(1, n):
        person_index[i] = person_index[i - 1] + 1 if frames[i] == frames[i - 1] else 0
    return poses_table({
        "video_id": np.array([video.video_id] * n, dtype=object),
        "frame_index": frames,
        "timestamp_s": frames / video.fps,
        "track_id": np.array([t for t, _ in rows], np.int32),
        "person_index": person_index,
        "bbox_xyxy": bbox,
        "bbox_score": np.array([video.bbox_scores.get(t, 0.5) for t, _ in rows], np.float32),
        "keypoints_2d": kp,
        "keypoint_scores": sc,
        "keypoints_3d": k3,
        "keypoints_3d__valid": np.array([(t, f) not in video.no_3d for t, f in rows], bool),
        "smpl_camera": np.array([expected_camera(t, f) for t, f in rows], np.float32).reshape(n, 3),
    }, metadata=provenance_metadata({"test": "fake_output"}))


def attempt_of(video_id: str) -> str:
    """The finish attempt that committed `video_id` here: 12 hex digits, as a run names them."""
    import hashlib

    return hashlib.sha1(video_id.encode()).hexdigest()[:12]


def fake_output(root: Path, videos: list[FakeVideo] | None = None, *, junk: bool = True) -> FakeOutput:
    """Write OUTPUT/videos/<key>.parquet and OUTPUT/poses/<key>/part-*.parquet like a run does."""
    from posepipe.pipeline.io.store import Store, part_name, video_key

    videos = default_videos() if videos is None else videos
    root.mkdir(parents=True, exist_ok=True)
    out = Store(str(root))
    index = {v.video_id: i for i, v in enumerate(videos)}
    for i, video in enumerate(videos):
        key = video_key(video.video_id)
        attempt = attempt_of(video.video_id)
        if video.status == "ok":
            table = video_rows(video, i)
            frames = table.column("frame_index").to_numpy()
            for start in range(0, max(video.num_frames, 1), PART_FRAMES):
                stop = min(start + PART_FRAMES, video.num_frames)
                part = table.filter(pa.array((frames >= start) & (frames < stop)))
                out.write_table(f"poses/{key}/{part_name(start, stop, attempt)}", part)
        record = {
            "video_id": video.video_id, "uri": video.uri or f"/data/in/{video.video_id}", "status": video.status,
            "error": video.error, "num_frames": video.num_frames if video.status == "ok" else None,
            "fps": video.fps if video.status == "ok" else None,
            "width": video.width if video.status == "ok" else None,
            "height": video.height if video.status == "ok" else None,
            "duration_s": video.num_frames / video.fps if video.status == "ok" else None,
            "num_rows": sum(len(f) for f in video.tracks.values()), "num_tracks": len([t for t in video.tracks if t >= 0]),
            "job_fingerprint": "fake", "commit_attempt": attempt if video.status == "ok" else None,
        }
        out.write_table(f"videos/{key}.parquet", videos_table([record], metadata=provenance_metadata({"test": "fake_output"})))
    if junk:
        # what readers must ignore: a temp file mid-rename, a marker, a note, an uncommitted video,
        # and a committed video's part from another finish attempt (one whose commit never came)
        shown = next(v for v in videos if v.status == "ok" and v.tracks)
        first = root / "poses" / video_key(shown.video_id)
        committed = sorted(first.glob("part-*.parquet"))[0]
        (first / committed.name.replace(attempt_of(shown.video_id), "0123456789ab")).write_bytes(committed.read_bytes())
        (first / ".part-000000004-000000008.parquet.0123abcd.tmp").write_bytes(b"half a file")
        (first / "_SUCCESS").write_bytes(b"")
        (root / "poses" / "README.txt").write_text("not a table")
        (root / "videos" / ".x.parquet").write_bytes(b"garbage")
        ghost = FakeVideo("jump/in_progress.mp4", 4, tracks={0: [0, 1, 2, 3]})
        (root / "poses" / "ghost").mkdir()
        pq.write_table(video_rows(ghost, 99), root / "poses" / "ghost" / "part-000000000-000000004.parquet")
    return FakeOutput(root, {v.video_id: v for v in videos}, index)


def upload_tree(root: Path, endpoint_url: str, bucket: str, prefix: str) -> None:
    """Copy a local OUTPUT to s3://bucket/prefix on a test server."""
    from tests.servers import s3_client

    client = s3_client(endpoint_url)  # one client: creating one per object costs ~0.1 s each
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(root).as_posix()}", Body=path.read_bytes())


def write_video(path: Path, *, width: int, height: int, frames: int, fps: float, background: int = 40) -> Path:
    """A small mp4v video whose frame i is a flat grey of level background + i."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for i in range(frames):
        writer.write(np.full((height, width, 3), background + i, np.uint8))
    writer.release()
    return path
