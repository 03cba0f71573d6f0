"""Every new model family through `posepipe run` on a real local Ray, read back with DuckDB.

Random weights keep these quick and need no downloads (tests/models/ checks each family against
mmpose's outputs); here the point is that `--pose-model` / `--lifter` reach the workers and that each
family's rows land in the Parquet tables with the shapes and provenance the schema promises.
"""
from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner

from posepipe.jobs.cli import main
from tests import media
from tests.lifting import assert_3d_is_the_lifters

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return media.street_clip(tmp_path_factory.mktemp("families") / "walk.mp4", n=10)


@pytest.mark.parametrize("pose_model,lifter", [
    ("rtmpose_m_coco_256x192", "simplebaseline3d_h36m"),
    ("simplebaseline_res50_coco_256x192", "videopose3d_243_coco"),
    ("rle_res50_coco_256x192", "simplebaseline3d_h36m"),
])
def test_run_with_each_family(ray_local, clip, tmp_path, pose_model, lifter):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "run", str(clip), "--output", str(out), "--random-weights", "--max-persons", "1",
        "--pose-model", pose_model, "--lifter", lifter, "--json",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["ok"] == 1 and summary["rows"] > 0

    con = duckdb.connect()
    poses = f"read_parquet('{out}/poses/**/*.parquet')"
    rows = con.sql(f"SELECT keypoints_2d, keypoint_scores, keypoints_3d, track_id FROM {poses}").fetchall()
    assert len(rows) == summary["rows"] and len(rows) <= 10  # --max-persons 1 on 10 frames
    for keypoints_2d, scores, keypoints_3d, track_id in rows:
        assert np.asarray(keypoints_2d).shape == (17, 2) and np.isfinite(np.asarray(keypoints_2d)).all()
        assert np.asarray(scores).shape == (17,) and np.isfinite(np.asarray(scores)).all()
        if track_id >= 0:  # lifted rows: 17 H36M joints
            k3 = np.asarray(keypoints_3d)
            assert k3.shape == (17, 3) and np.isfinite(k3).all()
    assert any(r[3] >= 0 for r in rows)
    assert_3d_is_the_lifters(out, lifter)  # the chosen lifter's answer, pelvis at the origin
    meta = json.loads(con.sql(f"SELECT value FROM parquet_kv_metadata('{next((out / 'poses').rglob('*.parquet'))}') "
                              "WHERE key = 'posepipe.provenance'").fetchall()[0][0])
    assert meta["models"]["pose"]["name"] == pose_model and meta["models"]["lifter"]["name"] == lifter
