"""The output layout: atomic parts, commit rows, listing back; local and S3."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from posepipe.pipeline.io.store import Store, part_name, video_key
from posepipe.pipeline.io.schema import POSES_SCHEMA, poses_table, videos_table
from tests.servers import make_bucket


def _rows(n: int) -> dict:
    rng = np.random.default_rng(0)
    return {"video_id": "a/b.mp4", "frame_index": np.arange(n), "timestamp_s": np.arange(n) / 10,
            "track_id": np.zeros(n), "bbox_xyxy": rng.random((n, 4)), "bbox_score": rng.random(n),
            "keypoints_2d": rng.random((n, 17, 2)), "keypoint_scores": rng.random((n, 17))}


def test_video_key_is_safe_and_unique():
    assert video_key("a/b c.mp4") != video_key("a_b c.mp4")
    assert "/" not in video_key("x/../../etc/passwd")
    assert part_name(0, 256) == "part-000000000-000000256.parquet"


def test_local_write_is_atomic_and_listed(tmp_path):
    out = Store(str(tmp_path))
    table = poses_table(_rows(5), {b"k": b"v"})
    out.write_table("poses/k1/part-1.parquet", table)
    assert [p.name for p in (tmp_path / "poses/k1").iterdir()] == ["part-1.parquet"]  # no temp left
    back = pq.read_table(tmp_path / "poses/k1/part-1.parquet")
    assert back.schema.equals(POSES_SCHEMA, check_metadata=False)
    assert back.schema.metadata[b"k"] == b"v"
    out.write_table("videos/k1.parquet", videos_table([{"video_id": "v", "uri": "u", "status": "ok"}]))
    assert set(out.completed_videos()) == {"v"}
    out.remove_prefix("poses/k1")
    assert out.list_parquet("poses") == []


def test_s3_output_roundtrip(s3_server):
    make_bucket(s3_server.endpoint_url, "out-bucket")
    out = Store("s3://out-bucket/run1")
    out.write_table("poses/k/part-a.parquet", poses_table(_rows(3)))
    out.write_table("videos/k.parquet", videos_table([{"video_id": "v.mp4", "uri": "s3://x/v.mp4", "status": "ok"}]))
    assert out.list_parquet("poses") == ["k/part-a.parquet"]
    assert out.read_table("poses/k/part-a.parquet").num_rows == 3
    assert out.completed_videos()["v.mp4"]["status"] == "ok"
    out.remove_prefix("poses/k")
    assert out.list_parquet("poses") == []


def test_a_job_end_cleans_a_killed_jobs_leftovers_and_leaves_a_running_jobs_parts(tmp_path):
    """A job records which videos it may write (its intent) and renews it while it runs. A later
    job's end, even one with nothing to do, deletes the parts no commit row names in the folders of
    a job that did not end (intent not renewed for INTENT_STALE_S), but not in a running job's."""
    import os
    import time

    from posepipe.pipeline.io.store import INDEX_DIR, INTENT_STALE_S

    def part(video_id: str, attempt: str) -> str:
        return f"poses/{video_key(video_id)}/{part_name(0, 5, attempt)}"

    def age(intent_files: list) -> None:
        old = time.time() - INTENT_STALE_S - 60
        for path in intent_files:
            os.utime(path, (old, old))

    def parts() -> list[str]:
        return sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "poses").rglob("*.parquet"))

    table = poses_table(_rows(5), {})
    killed = Store(str(tmp_path))          # committed a/b.mp4, was killed while redoing it
    killed.begin_job(["a/b.mp4"])
    killed.write_table(part("a/b.mp4", "aaaaaaaaaaaa"), table)
    killed.write_table(f"videos/{video_key('a/b.mp4')}.parquet", videos_table(
        [{"video_id": "a/b.mp4", "uri": "/in/a/b.mp4", "status": "ok", "commit_attempt": "aaaaaaaaaaaa"}]))
    killed.write_table(part("a/b.mp4", "bbbbbbbbbbbb"), table)
    age(list((tmp_path / INDEX_DIR).glob("intent-*")))
    running = Store(str(tmp_path))         # another job on the same OUTPUT, mid-write, not committed yet
    running.begin_job(["c.mp4"])
    running.write_table(part("c.mp4", "cccccccccccc"), table)

    Store(str(tmp_path)).finish_job([])    # a rerun that found everything complete
    assert parts() == sorted([part("a/b.mp4", "aaaaaaaaaaaa"), part("c.mp4", "cccccccccccc")])
    assert len(list((tmp_path / INDEX_DIR).glob("intent-*"))) == 1  # the running job's stays

    age(list((tmp_path / INDEX_DIR).glob("intent-*")))  # that job died without ending
    assert Store(str(tmp_path)).finish_job([]) == 1
    assert parts() == [part("a/b.mp4", "aaaaaaaaaaaa")]
    assert not list((tmp_path / INDEX_DIR).glob("intent-*"))
