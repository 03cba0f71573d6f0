"""`posepipe run` end to end on a real local Ray: real decoding, real Parquet read back by DuckDB.

Random weights keep these fast and need no downloads; `test_official_format_weights` runs the
same job on checkpoint files in each model's official container format.
"""
from __future__ import annotations

import json
from pathlib import Path

import boto3
import duckdb
import pytest
import torch
from click.testing import CliRunner

from posepipe.jobs.cli import main
from posepipe.pipeline.options import DEFAULT_MODELS
from tests import media
from tests.lifting import assert_3d_is_the_lifters
from tests.servers import make_bucket

pytestmark = pytest.mark.slow
FAST = ["--random-weights", "--max-persons", "2", "--no-flip-test"]
POSE_COLUMNS = {
    "video_id": "VARCHAR", "frame_index": "INTEGER", "timestamp_s": "DOUBLE", "track_id": "INTEGER",
    # Parquet has no fixed-size list type: DuckDB reads them as lists (pyarrow keeps the sizes).
    "bbox_xyxy": "FLOAT[]", "bbox_score": "FLOAT", "keypoints_2d": "FLOAT[][]", "keypoint_scores": "FLOAT[]",
    "keypoints_3d": "FLOAT[][]", "smpl_global_orient": "FLOAT[]", "smpl_body_pose": "FLOAT[][]",
    "smpl_betas": "FLOAT[]", "smpl_camera": "FLOAT[]",
}


def run_cli(*args: str):
    result = CliRunner().invoke(main, ["run", *args, "--json"], catch_exceptions=False)
    summary = json.loads(result.stdout[result.stdout.index("{"):]) if "{" in result.stdout else None
    return result, summary


@pytest.fixture(scope="module")
def job_input(tmp_path_factory):
    d = tmp_path_factory.mktemp("input")
    media.street_clip(d / "street" / "walk.mp4", n=10)
    media.street_clip(d / "street" / "walk_vfr_src.mp4", n=12)
    media.vfr_clip(d / "street" / "vfr.mp4", d / "street" / "walk_vfr_src.mp4")
    (d / "street" / "walk_vfr_src.mp4").unlink()
    kinds = media.broken_files(d / "broken")
    return d, kinds


def test_folder_job_writes_queryable_parquet_and_records_failures(ray_local, job_input, tmp_path):
    src, kinds = job_input
    out = tmp_path / "out"
    result, summary = run_cli(str(src), "--output", str(out), "--shard-frames", "4", *FAST)
    assert result.exit_code == 3, result.output  # documented: some videos failed
    assert summary["ok"] == 2 and summary["failed"] == len(kinds) and summary["plumbing_run_random_weights"]

    con = duckdb.connect()
    poses = f"read_parquet('{out}/poses/**/*.parquet')"
    columns = {r[0]: r[1] for r in con.sql(f"DESCRIBE SELECT * FROM {poses}").fetchall()}
    for name, type_ in POSE_COLUMNS.items():
        assert columns.get(name) == type_, (name, columns.get(name))
    lengths = con.sql(f"SELECT DISTINCT len(bbox_xyxy), len(keypoints_2d), len(keypoints_2d[1]), len(keypoint_scores), "
                      f"len(smpl_body_pose), len(smpl_betas) FROM {poses}").fetchall()
    assert lengths == [(4, 17, 2, 17, 23, 10)]
    per_video = dict(con.sql(f"SELECT video_id, count(DISTINCT frame_index) FROM {poses} GROUP BY 1").fetchall())
    assert per_video == {"street/walk.mp4": 10, "street/vfr.mp4": 12}  # random weights see people everywhere
    assert con.sql(f"SELECT max(n) FROM (SELECT count(*) n FROM {poses} GROUP BY video_id, frame_index)").fetchall()[0][0] <= 2
    # Timestamps come from the stream: the VFR clip's later frames are 0.3 s apart.
    stamps = [r[0] for r in con.sql(f"SELECT DISTINCT timestamp_s FROM {poses} WHERE video_id='street/vfr.mp4' ORDER BY 1").fetchall()]
    assert stamps[-1] == pytest.approx(2.1, abs=1e-3)
    # Tracked rows carry 3D: the lifter's answer for the track's 2D, pelvis at the origin.
    tracked = con.sql(f"SELECT count(*), count(keypoints_3d) FROM {poses} WHERE track_id >= 0").fetchall()[0]
    assert tracked[0] > 0 and tracked[0] == tracked[1]
    assert_3d_is_the_lifters(out, DEFAULT_MODELS["lifter"])

    videos = {r[0]: r[1:] for r in con.sql(
        f"SELECT video_id, status, error, num_frames, width, height FROM read_parquet('{out}/videos/*.parquet')").fetchall()}
    assert videos["street/walk.mp4"] == ("ok", None, 10, 384, 288)
    for name in kinds:
        status, error = videos[f"broken/{name}"][:2]
        assert status == "failed" and error and "Traceback" not in error
    assert "no video stream" in videos["broken/audio_only.mp4"][1]

    meta = json.loads(con.sql(f"SELECT value FROM parquet_kv_metadata('{next((out / 'poses').rglob('*.parquet'))}') "
                              "WHERE key = 'posepipe.provenance'").fetchall()[0][0])
    assert meta["plumbing_run_random_weights"] is True and meta["models"]["pose"]["name"] == "hrnet_w32_coco_256x192"

    # A second run skips what is complete, retries the failures, and never duplicates rows.
    rows_before = con.sql(f"SELECT count(*) FROM {poses}").fetchall()[0][0]
    result, summary = run_cli(str(src), "--output", str(out), "--shard-frames", "4", *FAST)
    assert summary["skipped_complete"] == 2 and summary["failed"] == len(kinds) and summary["frames"] == 0
    assert con.sql(f"SELECT count(*) FROM {poses}").fetchall()[0][0] == rows_before
    dupes = con.sql(f"SELECT count(*) FROM (SELECT video_id, frame_index, bbox_xyxy, count(*) c FROM {poses} GROUP BY ALL HAVING c > 1)").fetchall()[0][0]
    assert dupes == 0


def test_rerun_with_other_shard_size_after_force_has_no_stale_parts(ray_local, job_input, tmp_path):
    src, _ = job_input
    out = tmp_path / "out"
    one = src / "street" / "walk.mp4"
    run_cli(str(one), "--output", str(out), "--shard-frames", "3", *FAST)
    first = duckdb.sql(f"SELECT frame_index, bbox_xyxy, keypoints_2d, track_id FROM read_parquet('{out}/poses/**/*.parquet') ORDER BY ALL").fetchall()
    result, summary = run_cli(str(one), "--output", str(out), "--shard-frames", "10", "--force", *FAST)
    assert summary["ok"] == 1 and result.exit_code == 0
    assert len(list((out / "poses").rglob("*.parquet"))) == 1
    second = duckdb.sql(f"SELECT frame_index, bbox_xyxy, keypoints_2d, track_id FROM read_parquet('{out}/poses/**/*.parquet') ORDER BY ALL").fetchall()
    assert first == second  # shard size does not change the answer


def test_no_people_clip_is_ok_with_zero_rows(ray_local, tmp_path):
    clip = media.blank_clip(tmp_path / "in" / "wall.mp4")
    # Random weights see "people" in anything; an impossible threshold stands in for an empty scene.
    result, summary = run_cli(str(clip), "--output", str(tmp_path / "out"), "--det-conf", "1.0", *FAST)
    assert result.exit_code == 0 and summary["ok"] == 1 and summary["rows"] == 0
    row = duckdb.sql(f"SELECT status, num_rows, num_tracks FROM read_parquet('{tmp_path}/out/videos/*.parquet')").fetchall()[0]
    assert row == ("ok", 0, 0)
    # Still a dataset: the README's first query works and finds nobody (it raised "No files found").
    people = duckdb.sql(f"SELECT count(DISTINCT frame_index) FROM read_parquet('{tmp_path}/out/poses/**/*.parquet')")
    assert people.fetchall() == [(0,)]
    columns = {r[0] for r in duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{tmp_path}/out/poses/**/*.parquet')").fetchall()}
    assert set(POSE_COLUMNS) <= columns


def test_s3_input_and_output(ray_local, s3_server, job_input, tmp_path):
    src, _ = job_input
    make_bucket(s3_server.endpoint_url, "media")
    s3 = boto3.session.Session().client("s3")
    s3.upload_file(str(src / "street" / "walk.mp4"), "media", "videos/cam1/walk.mp4")
    s3.put_object(Bucket="media", Key="videos/cam1/bad.mp4", Body=b"not a video")
    result, summary = run_cli("s3://media/videos", "--output", "s3://media/poses-out", "--shard-frames", "5", *FAST)
    assert result.exit_code == 3 and summary["ok"] == 1 and summary["failed"] == 1
    local = tmp_path / "download"
    for obj in s3.list_objects_v2(Bucket="media", Prefix="poses-out/")["Contents"]:
        if obj["Key"].endswith("/"):
            continue  # an empty "folder" marker: pyarrow's S3 layer leaves one where it deleted a folder's last object
        target = local / obj["Key"]
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file("media", obj["Key"], str(target))
    n_frames = duckdb.sql(f"SELECT count(DISTINCT frame_index) FROM read_parquet('{local}/poses-out/poses/**/*.parquet')").fetchall()[0][0]
    assert n_frames == 10
    status = dict(duckdb.sql(f"SELECT video_id, status FROM read_parquet('{local}/poses-out/videos/*.parquet')").fetchall())
    assert status == {"cam1/walk.mp4": "ok", "cam1/bad.mp4": "failed"}
    # (s3:// URIs cannot carry credentials: they are refused. Credentials in URIs that can carry
    # them, http(s) user info and pre-signed queries, are checked in test_hostile.py.)


def test_bad_options_are_refused_before_work(tmp_path):
    runner = CliRunner()
    for args, needle in [(["--shard-frames", "0"], "--shard-frames"), (["--weights", "nope"], "NAME=URI"),
                         (["--weights", "yolox_m=/x.pth"], "--weights"), (["--device", "tpu"], "--device"),
                         (["--detector", "hrnet_w32_coco_256x192"], "--detector")]:
        result = runner.invoke(main, ["run", str(tmp_path), "--output", str(tmp_path / "o"), *args])
        assert result.exit_code == 2 and needle in result.output, (args, result.output)
    assert not (tmp_path / "o").exists()


def test_missing_weights_stop_the_job_with_a_plain_message(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEPIPE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "in").mkdir()
    media.street_clip(tmp_path / "in" / "a.mp4", n=2)
    result = CliRunner().invoke(main, ["run", str(tmp_path / "in"), "--output", str(tmp_path / "o"),
                                       "--weights", f"yolox_s={tmp_path}/missing.pth"])
    assert result.exit_code == 4
    assert "yolox_s" in result.output and "--weights" in result.output and "--random-weights" in result.output
    assert not (tmp_path / "o" / "poses").exists()


def test_official_format_weights(ray_local, job_input, tmp_path):
    """Checkpoint files in each model's official container, passed with --weights, load and run."""
    from tests.golden import GOLDEN, generate_state_dict, load_case

    names = ["yolox_s", "hrnet_w32_coco_256x192", "videopose3d_243_coco", "hmr_spin_resnet50"]
    if not all((GOLDEN / n / "case_seed0.npz").exists() for n in names):
        pytest.skip("golden manifests absent")
    args = []
    for name in names:
        case = load_case(GOLDEN / name / "case_seed0.npz")
        sd = generate_state_dict(GOLDEN / name / "manifest.json", case)
        container = {"yolox_s": lambda: {"model": sd, "start_epoch": 300},
                     "hrnet_w32_coco_256x192": lambda: sd,
                     "videopose3d_243_coco": lambda: {"model_pos": sd, "epoch": 80, "lr": 1e-4,
                                                      "random_state": __import__("numpy").random.RandomState(0).get_state()},
                     "hmr_spin_resnet50": lambda: {"model": sd, "optimizer": {}}}[name]()
        torch.save(container, tmp_path / f"{name}.pth")
        args += ["--weights", f"{name}={tmp_path / name}.pth"]
    out = tmp_path / "out"
    result, summary = run_cli(str(job_input[0] / "street" / "walk.mp4"), "--output", str(out), "--det-conf", "0.25",
                              "--max-persons", "2", "--no-flip-test", *args)
    assert result.exit_code == 0, result.output
    assert summary["plumbing_run_random_weights"] is False
    meta = pq_meta(out)
    assert all(len(m["sha256"]) == 64 for m in meta["models"].values())


def pq_meta(out: Path) -> dict:
    import pyarrow.parquet as pq

    first = next((out / "videos").glob("*.parquet"))
    return json.loads(pq.read_schema(first).metadata[b"posepipe.provenance"])


def test_rerun_explains_what_it_skips_and_redoes(ray_local, tmp_path):
    """The fingerprint covers precision and code; a replaced input file (same name) is redone."""
    src = tmp_path / "in"
    media.street_clip(src / "a.mp4", n=3)
    media.street_clip(src / "b.mp4", n=3)
    out = str(tmp_path / "out")
    assert run_cli(str(src), "--output", out, *FAST)[0].exit_code == 0
    import os
    import time

    media.street_clip(src / "b.mp4", n=4)  # re-encoded under the same name
    os.utime(src / "b.mp4", ns=(time.time_ns(), time.time_ns() + 10**9))
    result, summary = run_cli(str(src), "--output", out, "--explain-skip", *FAST)
    decisions = {d["video_id"]: d["decision"] for d in summary["explain"]}
    assert decisions["a.mp4"].startswith("skipped") and "input changed" in decisions["b.mp4"]
    assert summary["skipped_complete"] == 1 and summary["ok"] == 1
    result, summary = run_cli(str(src), "--output", out, "--explain-skip", "--half", *FAST)  # precision changes rows
    assert summary["skipped_complete"] == 0 and all("precision" in d["decision"] for d in summary["explain"])
