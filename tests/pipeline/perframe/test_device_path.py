"""The device path (pipeline.perframe.ondevice) against the reference path, on real footage, as the
worker runs them: same candidates for the tracker, same rows, keypoints and SMPL within the README's
tolerances. On CPU tensors here (CI has no GPU); on CUDA as well where there is one.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from posepipe.pipeline.io.video import probe_video, shard_bounds
from posepipe.pipeline.perframe.shards import ShardTask
from posepipe.pipeline.perframe.worker import PoseWorker
from posepipe.pipeline.options import JobOptions
from tests.media import street_clip

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# What the README promises (Per-frame work on the device): measured differences are printed.
BOX_PX = 1e-3
KEYPOINT_PX_MEDIAN, KEYPOINT_SHARE_EXACT = 1e-3, 0.98
SMPL_ABS = 1e-3


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    # 768x576 street footage (vtest.avi when ../shared is here, drawn walkers otherwise), 12 frames.
    return street_clip(tmp_path_factory.mktemp("device-path") / "street.mp4", n=12, size=(768, 576))


def shard_rows(worker: PoseWorker, clip, on_device: bool):
    worker.options = dataclasses.replace(worker.options, device_path=on_device)
    probe = probe_video(str(clip))
    shards = [worker.process_shard(ShardTask("street.mp4", str(clip), a, b, info=probe.info.as_dict()), header=probe.header)
              for a, b in shard_bounds(probe.info, 12)]
    return {k: np.concatenate([getattr(s, k) for s in shards]) for k in
            ("det_frame_index", "det_bbox_xyxy", "det_score", "det_rank", "frame_index", "bbox_xyxy",
             "keypoints_2d", "keypoint_scores", "smpl_global_orient", "smpl_body_pose", "smpl_betas", "smpl_camera")}, shards


@pytest.mark.parametrize("device", DEVICES)
def test_device_path_rows_match_the_reference_path(clip, device):
    options = JobOptions(input=str(clip), output="unused", random_weights=True, max_persons=3, device=device)
    worker = PoseWorker(options, threads=2)
    assert worker.use_device_path is (device == "cuda")  # the default: device path on a GPU only
    reference, _ = shard_rows(worker, clip, False)
    on_device, shards = shard_rows(worker, clip, True)
    assert {"device_detect", "device_pose2d", "device_smpl", "host_select"} <= set(shards[0].timings)

    # The tracker's input: every candidate box, in the same frames and order.
    assert len(reference["det_score"]) > 0 and len(reference["frame_index"]) > 0
    np.testing.assert_array_equal(on_device["det_frame_index"], reference["det_frame_index"])
    np.testing.assert_array_equal(on_device["det_rank"], reference["det_rank"])
    box_err = np.abs(on_device["det_bbox_xyxy"] - reference["det_bbox_xyxy"]).max()
    score_err = np.abs(on_device["det_score"] - reference["det_score"]).max()
    # The rows: the same boxes posed, with the same keypoints and SMPL.
    np.testing.assert_array_equal(on_device["frame_index"], reference["frame_index"])
    kp_err = np.abs(on_device["keypoints_2d"] - reference["keypoints_2d"]).max(axis=-1)
    smpl_err = max(np.abs(on_device[c] - reference[c]).max() for c in
                   ("smpl_global_orient", "smpl_body_pose", "smpl_betas", "smpl_camera"))
    print(f"\n{device}: {len(reference['frame_index'])} rows, {len(reference['det_score'])} candidates; "
          f"boxes max|diff| {box_err:.3g} px, scores {score_err:.3g}; keypoints median {np.median(kp_err):.3g} px, "
          f"exact {np.mean(kp_err == 0):.3f}, max {kp_err.max():.3g} px; SMPL max|diff| {smpl_err:.3g}")
    assert box_err <= BOX_PX and score_err <= 1e-5
    assert np.median(kp_err) <= KEYPOINT_PX_MEDIAN and np.mean(kp_err <= 1e-3) >= KEYPOINT_SHARE_EXACT
    assert np.abs(on_device["keypoint_scores"] - reference["keypoint_scores"]).max() <= 1e-3
    assert smpl_err <= SMPL_ABS


def test_windows_that_leave_the_device_path_are_counted_and_still_exact(clip):
    """A frame with more candidates than the device NMS considers goes the reference way: the rows do
    not change, and the shard says how many windows did so and why (the summary and bench show it)."""
    options = JobOptions(input=str(clip), output="unused", random_weights=True, max_persons=3, device="cpu")
    worker = PoseWorker(options, threads=2)
    reference, _ = shard_rows(worker, clip, False)
    windows = worker.device_windows()
    on_device, shards = shard_rows(worker, clip, True)
    assert sum(s.device_windows for s in shards) == 2 and not any(s.fallback_windows for s in shards)
    windows.candidates = 8  # far fewer than random weights put over the floor
    capped, shards = shard_rows(worker, clip, True)
    assert sum(s.device_windows for s in shards) == 2
    assert sum(s.fallback_windows.get("nms_not_exact", 0) for s in shards) == 2
    for key in ("det_frame_index", "det_rank", "frame_index"):
        np.testing.assert_array_equal(capped[key], reference[key])
    np.testing.assert_array_equal(capped["keypoints_2d"], reference["keypoints_2d"])
