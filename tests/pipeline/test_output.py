"""The output layout: atomic parts, commit rows, listing back; local and S3."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from posepipe.pipeline.io.output import Output, part_name, video_key
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
    out = Output(str(tmp_path))
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
    out = Output("s3://out-bucket/run1")
    out.write_table("poses/k/part-a.parquet", poses_table(_rows(3)))
    out.write_table("videos/k.parquet", videos_table([{"video_id": "v.mp4", "uri": "s3://x/v.mp4", "status": "ok"}]))
    assert out.list_parquet("poses") == ["k/part-a.parquet"]
    assert out.read_table("poses/k/part-a.parquet").num_rows == 3
    assert out.completed_videos()["v.mp4"]["status"] == "ok"
    out.remove_prefix("poses/k")
    assert out.list_parquet("poses") == []
