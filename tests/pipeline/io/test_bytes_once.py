"""A job over a long remote video with many small shards and two workers reads the object about once.

The input is served by real servers on loopback: the tests' HTTP file server, and moto behind a proxy
that counts what it sends. Bytes *sent by the server* are measured, not bytes the client kept.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests import media
from tests.servers import S3_ENV_UNSET, counting_proxy, make_bucket, moto_s3_server, s3_env, serve_directory

pytestmark = pytest.mark.slow
FAST = ["--random-weights", "--max-persons", "1", "--no-flip-test"]
ROWS = "SELECT frame_index, track_id, bbox_xyxy, keypoints_2d FROM read_parquet('{}/poses/**/*.parquet') ORDER BY ALL"


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("long")
    # H.264 with B-frames, a keyframe every 12 frames: 96 frames make 8 GOPs, 16 shards of 6 asked.
    return media.write_clip(folder / "long.mp4", media.source_frames(96, (320, 240)), codec="libx264", gop=12)


def posepipe(*args: str, env: dict[str, str] | None = None) -> dict:
    """`posepipe run` as a user runs it: a subprocess with its own local Ray."""
    command = [str(Path(sys.executable).with_name("posepipe")), "run", *args, "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout[done.stdout.index("{"):])


def job_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in S3_ENV_UNSET and k != "RAY_ADDRESS"}
    env["POSEPIPE_CACHE"] = str(tmp_path / "cache")
    return env


def in_process(*args: str) -> dict:
    """`posepipe run` in this process, on the tests' local Ray (two workers: it has two CPUs)."""
    from click.testing import CliRunner

    from posepipe.jobs.cli import main

    result = CliRunner().invoke(main, ["run", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{"):])


def test_http_and_s3_jobs_read_the_object_about_once_with_rows_unchanged(ray_local, long_clip, tmp_path):
    size = long_clip.stat().st_size
    common = ["--shard-frames", "6", "--num-workers", "2", *FAST]
    env = job_env(tmp_path)

    in_process(str(long_clip), "--output", str(tmp_path / "local"), *common)
    local_rows = duckdb.sql(ROWS.format(tmp_path / "local")).fetchall()
    assert local_rows

    with serve_directory(long_clip.parent) as http:
        summary = in_process(f"{http.url}/long.mp4", "--output", str(tmp_path / "http"), *common)
        served_http = http.bytes_served
    assert summary["ok"] == 1 and summary["frames"] == 96
    assert served_http / size < 1.1, served_http / size
    assert duckdb.sql(ROWS.format(tmp_path / "http")).fetchall() == local_rows

    # S3 through a counting proxy: the job runs as a subprocess with its own Ray, whose workers see
    # the proxy as their AWS endpoint.
    with moto_s3_server() as s3, counting_proxy(s3.endpoint_url) as proxy:
        make_bucket(s3.endpoint_url, "media")
        from tests.servers import s3_client

        s3_client(s3.endpoint_url).upload_file(str(long_clip), "media", "cams/long.mp4")
        summary = posepipe("s3://media/cams/long.mp4", "--output", str(tmp_path / "s3"), *common,
                           env={**env, **s3_env(proxy.url)})
        object_gets = [r for r in proxy.requests if r[0] == "GET" and "long.mp4" in r[1]]
    assert summary["ok"] == 1
    assert all(rng and not rng.endswith("-") for _, _, rng in object_gets)  # bounded ranges only
    assert proxy.bytes_sent / size < 1.1, proxy.bytes_sent / size
    assert duckdb.sql(ROWS.format(tmp_path / "s3")).fetchall() == local_rows
