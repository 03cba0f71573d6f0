"""Detector-free pose models (Associative Embedding, RTMO, DEKR) in a job: no detector runs, the model's own boxes
and scores reach the tracker, and tracking, lifting, SMPL and the exports work on them unchanged.

The job tests are real: `posepipe run` through click on a real local Ray, a clip of real crowded street
footage (vtest.avi), Parquet read back with DuckDB, `posepipe export posec3d` on the output. With
`--random-weights` these models are biased to find "persons" (models/associative_embedding.py and
models/rtmo.py `create`, as YOLOX's person logit is raised): what is tested is the plumbing.
"""
from __future__ import annotations

import json
import pickle
import warnings

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner

from posepipe.models import CATALOGUE, DETECTOR_FREE
from posepipe.pipeline.options import DEFAULT_MODELS, DETECTOR_FREE_POSE_MODELS, JobOptions, OptionError
from tests import media

AE, RTMO, DEKR = "ae_hrnet_w32_coco_512x512", "rtmo_s_coco_640x640", "dekr_hrnet_w32_coco_512x512"


def _options(pose: str, **kw) -> JobOptions:
    return JobOptions(input="in", output="out", models=dict(DEFAULT_MODELS, pose=pose, lifter="simplebaseline3d_h36m"), **kw)


# ---------------------------------------------------------------------------------------------
# Options: --detector is irrelevant, and the job records that it has none
# ---------------------------------------------------------------------------------------------

def test_the_light_list_is_the_catalogues():
    assert DETECTOR_FREE_POSE_MODELS == DETECTOR_FREE == {AE, RTMO, DEKR}
    assert all(CATALOGUE[name].stage == "pose" for name in DETECTOR_FREE)


@pytest.mark.parametrize("pose", [AE, RTMO, DEKR])
def test_a_detector_free_pose_model_drops_the_detector(pose):
    options = _options(pose)
    assert options.detector_free and "detector" not in options.models
    options.validate(CATALOGUE)
    # --detector is irrelevant: another detector (even a wrong name) changes nothing
    other = JobOptions(input="in", output="out", models=dict(DEFAULT_MODELS, detector="yolox_x", pose=pose,
                                                                   lifter="simplebaseline3d_h36m"))
    assert other.models == options.models
    assert other.fingerprint({}, code="c") == options.fingerprint({}, code="c")
    # and the fingerprint records a job without a detector: not the top-down job's
    topdown = _options("rtmpose_m_coco_256x192")
    assert "detector" in topdown.models and not topdown.detector_free
    assert topdown.fingerprint({}, code="c") != options.fingerprint({}, code="c")
    # weights for a detector the job does not use are refused, naming the option
    with pytest.raises(OptionError) as info:
        _options(pose, weights={"yolox_s": "/w.pth"}).validate(CATALOGUE)
    assert info.value.option == "--weights" and "not a model this job uses" in str(info.value)


# ---------------------------------------------------------------------------------------------
# The worker, without Ray: candidates, rows and the kept-box question
# ---------------------------------------------------------------------------------------------

def test_worker_rows_are_the_models_persons(tmp_path):
    from posepipe.pipeline.perframe.worker import PoseWorker

    options = _options(RTMO, random_weights=True, max_persons=3, flip_test=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        worker = PoseWorker(options, threads=2)
    assert worker.detector is None and not worker.use_device_path
    assert set(worker.weight_hashes()) == {RTMO, "hmr_spin_resnet50"}
    frames = media.source_frames(2)
    h, w = frames[0].shape[:2]
    timings = {"decode": 0.0, "detect": 0.0, "pose2d": 0.0, "smpl": 0.0}
    rows = worker.reference_frames(frames, np.arange(2), np.arange(2) / 10, w, h, timings)
    assert timings["detect"] == 0.0 and timings["pose2d"] > 0
    found = worker.pose.predict_images(frames, flip_test=False)
    for f, people in enumerate(found):
        mine = rows["det_frame_index"] == f
        # every person the model found with a box of at least 2 px inside the frame reaches the tracker
        boxes = people["bboxes_xyxy"].copy()
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        inside = ((boxes[:, 2:] - boxes[:, :2]) >= 2).all(1)
        assert mine.sum() == inside.sum() > 0
        assert set(map(tuple, rows["det_bbox_xyxy"][mine])) == set(map(tuple, boxes[inside]))
        np.testing.assert_array_equal(np.sort(rows["det_score"][mine]), np.sort(people["scores"][inside]))
        # rows: the best 3, each with the keypoints the model found with its box
        posed = np.flatnonzero(rows["frame_index"] == f)
        assert len(posed) == 3
        for r in posed:
            person = np.flatnonzero((boxes == rows["bbox_xyxy"][r]).all(1))[0]
            np.testing.assert_array_equal(rows["keypoints_2d"][r], people["keypoints"][person])
            np.testing.assert_array_equal(rows["keypoint_scores"][r], people["keypoint_scores"][person])
            assert rows["bbox_score"][r] == people["scores"][person]
    # A box tracking keeps that the shard did not pose gets the same keypoints from pose_boxes
    # (the frame is decoded again and the model asked for the person of that box).
    clip = media.write_clip(tmp_path / "two.mp4", frames)
    from posepipe.pipeline.io.video import open_video

    with open_video(str(clip)) as video:
        info = video.info.as_dict()
        decoded = [f for _, window, _ in video.frames(0, 2, window=2) for f in window]
    again = worker.pose.predict_images(decoded, flip_test=False)
    pick = np.array([len(again[0]["scores"]) - 1])
    box = again[0]["bboxes_xyxy"][pick].clip(0, [w, h, w, h])
    extra = worker.pose_boxes(str(clip), info, np.array([0]), box.astype(np.float32))
    np.testing.assert_array_equal(extra["keypoints_2d"][0], again[0]["keypoints"][pick[0]])


# ---------------------------------------------------------------------------------------------
# The option through a real job: tracks, lifting, SMPL, the export
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("pose", [RTMO, AE, DEKR])
def test_run_with_a_detector_free_model(ray_local, tmp_path, pose):
    from posepipe.jobs.cli import main

    clip = media.street_clip(tmp_path / "in" / "crowd.mp4", n=3)  # vtest.avi: a crowded street
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "run", str(clip.parent), "--output", str(out), "--random-weights", "--max-persons", "2", "--no-flip-test",
        "--pose-model", pose, "--lifter", "simplebaseline3d_h36m", "--json",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["ok"] == 1 and summary["rows"] > 0
    con = duckdb.connect()
    poses = f"read_parquet('{out}/poses/**/*.parquet')"
    rows = con.sql(f"SELECT frame_index, track_id, bbox_xyxy, bbox_score, keypoints_2d, keypoint_scores, keypoints_3d, "
                   f"smpl_betas FROM {poses} ORDER BY frame_index, person_index").fetchall()
    assert len(rows) == summary["rows"] <= 3 * 2
    assert {r[0] for r in rows} == {0, 1, 2}
    tracked = [r for r in rows if r[1] >= 0]
    assert tracked, "tracking confirmed no track on the model's own boxes"
    for frame, track, box, score, kp, kps, kp3d, betas in rows:
        kp = np.asarray(kp)
        assert kp.shape == (17, 2) and np.isfinite(kp).all() and np.asarray(kps).shape == (17,)
        x1, y1, x2, y2 = box
        assert 0 <= x1 < x2 <= 384 and 0 <= y1 < y2 <= 288 and 0 < score <= 1
        assert betas is not None and len(betas) == 10
        if track >= 0:
            assert np.isfinite(np.asarray(kp3d)).all()
        if pose in (AE, DEKR):  # the box is the keypoints' extent, clipped to the frame
            np.testing.assert_allclose(box, [*np.clip(kp.min(0), 0, [384, 288]), *np.clip(kp.max(0), 0, [384, 288])],
                                       atol=1e-3)
    part = next((out / "poses").rglob("*.parquet"))
    meta = json.loads(con.sql(f"SELECT value FROM parquet_kv_metadata('{part}') WHERE key = 'posepipe.provenance'")
                      .fetchall()[0][0])
    assert meta["models"]["pose"]["name"] == pose and "detector" not in meta["models"]
    assert "detector" not in meta["options"]["models"]

    dest = tmp_path / "dataset.pkl"
    exported = CliRunner().invoke(main, ["export", "posec3d", str(out), "--output", str(dest)], catch_exceptions=False)
    assert exported.exit_code == 0, exported.output
    data = pickle.loads(dest.read_bytes())
    (annotation,) = data["annotations"]
    assert annotation["keypoint"].shape[1:] == (3, 17, 2) and tuple(annotation["img_shape"]) == (288, 384)
