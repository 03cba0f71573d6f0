"""SimpleBaseline3D: architecture keys, the 2021 container, the weights record, and golden parity with
mmpose 1.3.2's lifter chain on every stored case (shared/golden/simplebaseline3d_h36m)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from posepipe.models import simplebaseline3d as sb3d
from posepipe.models.checkpoint import CheckpointError, read_checkpoint
from posepipe.models.skeletons import H36M17_NAMES
from tests.golden import assert_close, generate_state_dict, golden_cases, golden_dir, load_case
from tests.models.mmpose_files import mmpose_0x

NAME = "simplebaseline3d_h36m"


def _manifest() -> list[dict]:
    return json.loads((golden_dir(NAME) / "manifest.json").read_text())


@pytest.fixture(scope="module", params=golden_cases(NAME), ids=lambda p: p.stem)
def golden(request, tmp_path_factory):
    case = load_case(request.param)
    state = generate_state_dict(golden_dir(NAME) / "manifest.json", case)
    path = mmpose_0x(state, tmp_path_factory.mktemp("sb3d") / sb3d.WEIGHTS[NAME].filename, year=2021)
    checkpoint = read_checkpoint(path)
    assert "keypoint_head.conv.weight" in checkpoint["state_dict"]  # as the 2021 file stores its head
    return case, sb3d.create(sb3d.WEIGHTS[NAME], sb3d.convert_checkpoint(checkpoint))


def _persons(case: dict) -> range:
    return range(case["keypoints_coco_px"].shape[1])


def test_tables_are_the_configs(golden):
    case, lifter = golden
    for ours, key in ((lifter._kp_mean, "keypoints_mean"), (lifter._kp_std, "keypoints_std"),
                      (lifter._target_mean, "target_mean"), (lifter._target_std, "target_std")):
        np.testing.assert_array_equal(ours, case[key])
    np.testing.assert_array_equal(np.float32(sb3d.H36M_BBOX_CENTER), case["stats_bbox_center"])
    assert np.float32(sb3d.H36M_BBOX_SCALE) == case["stats_bbox_scale"]


def test_conversion_boxes_normalisation_and_input(golden):
    case, lifter = golden
    for n in _persons(case):
        kp = case["keypoints_coco_px"][:, n]
        np.testing.assert_array_equal(sb3d.coco_to_h36m(kp), case["keypoints_h36m_px"][:, n])
        np.testing.assert_array_equal(sb3d.keypoint_boxes(kp), case["bboxes_xyxy"][:, n])
        norm = sb3d.normalize_to_h36m_box(case["keypoints_h36m_px"][:, n], case["bboxes_xyxy"][:, n])
        assert_close(norm, case["keypoints_h36m_normpose"][:, n], "normpose", rtol=0, atol=1e-4)
        x = lifter.model_input(kp, int(case["width"]), int(case["height"]))
        assert_close(x, case["input"][:, n], "input", rtol=0, atol=1e-6)
        x = lifter.model_input(kp, int(case["width"]), int(case["height"]), norm_pose_2d=False)
        assert_close(x, case["input_nonorm"][:, n], "input_nonorm", rtol=0, atol=1e-6)


def test_network_and_decoding(golden):
    case, lifter = golden
    for n in _persons(case):
        raw = lifter.raw_outputs(case["input"][:, n])
        assert_close(raw, case["output_raw"][:, n], "output_raw", rtol=1e-4, atol=2e-5)
        assert_close(lifter.decode(case["output_raw"][:, n]), case["keypoints_3d"][:, n], "decode", rtol=1e-6, atol=1e-7)


def test_lift_end_to_end(golden):
    case, lifter = golden
    w, h = int(case["width"]), int(case["height"])
    for n in _persons(case):
        kp = case["keypoints_coco_px"][:, n]
        out = lifter.lift(kp, width=w, height=h, flip_augment=False)
        assert out.dtype == np.float32 and out.shape == case["keypoints_3d"][:, n].shape
        assert_close(out, case["keypoints_3d"][:, n], "keypoints_3d", rtol=1e-4, atol=2e-5)
        assert (out[:, 0] == 0).all()
        with_boxes = lifter.lift(kp, w, h, bboxes_xyxy=case["bboxes_xyxy"][:, n])
        assert_close(with_boxes, case["keypoints_3d"][:, n], "keypoints_3d (given boxes)", rtol=1e-4, atol=2e-5)
        nonorm = lifter.lift(kp, w, h, norm_pose_2d=False)
        assert_close(nonorm, case["keypoints_3d_nonorm"][:, n], "keypoints_3d_nonorm", rtol=1e-4, atol=2e-5)


def test_lift_batch_and_the_uniform_interface(golden):
    case, lifter = golden
    kp = case["keypoints_coco_px"][:, 0]
    w, h = int(case["width"]), int(case["height"])
    assert lifter.receptive_field == 1 and lifter.pad == 0 and lifter.causal_shift == 0
    parts = lifter.lift_batch([kp[:5], kp[5:], kp[:1]], w, h, flip_augment=True)  # no flip TTA: same output
    assert [len(p) for p in parts] == [5, len(kp) - 5, 1]
    assert_close(np.concatenate(parts[:2]), case["keypoints_3d"][:, 0], "lift_batch", rtol=1e-4, atol=2e-5)
    padded = lifter.lift(kp, w, h, pad_before=2, pad_after=1)
    assert len(padded) == len(kp) + 3 and (padded[0] == padded[2]).all()
    assert lifter.lift_batch([], w, h) == []


@pytest.mark.parametrize("bad", [np.zeros((4, 16, 2)), np.zeros((0, 17, 2)), np.full((2, 17, 2), np.nan)])
def test_bad_keypoints_are_refused(golden, bad):
    _, lifter = golden
    with pytest.raises(ValueError):
        lifter.lift(bad, 100, 100)


def test_state_dict_keys_and_layouts(tmp_path):
    manifest = _manifest()
    state = sb3d.simplebaseline3d().state_dict()
    assert list(state) == [e["name"] for e in manifest]
    checkpoint = read_checkpoint(mmpose_0x(state, tmp_path / "lifter.pth", year=2021))
    assert sb3d.checkpoint_format(checkpoint).startswith("mmpose 0.x SimpleBaseline3D")
    assert list(sb3d.convert_checkpoint(checkpoint)) == list(state)
    with pytest.raises(CheckpointError, match="not a SimpleBaseline3D"):
        sb3d.convert_checkpoint({"state_dict": {"expand_conv.weight": torch.zeros(1)}})


def test_weights_entry():
    spec = sb3d.WEIGHTS[NAME]
    assert spec.family == "simplebaseline3d" and spec.stage == "lifter" and spec.source_format == "mmpose"
    assert spec.url.endswith("/" + spec.filename) and f"-{spec.hash_prefix}_" in spec.filename
    assert spec.keypoint_names == H36M17_NAMES and spec.metrics["h36m_mpjpe_mm"] == 43.4
    lifter = sb3d.create(spec, None)
    out = lifter.lift(np.random.default_rng(0).uniform(0, 200, (3, 17, 2)), 200, 200)
    assert out.shape == (3, 17, 3) and np.isfinite(out).all()
