"""AP-10K animal pose: RTMPose-m and HRNet-W32 (mmpose's top-down path), 256x256: the catalogue records, the
release layouts, and parity with mmpose 1.3.2 run as installed on every case in tests/models/golden_<name>
(made by mmpose_skeletons_reference.py), through ``load_model(...).predict(image_bgr, bboxes_xywh, flip_test=...)``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from posepipe.models import get_weights, read_weights
from posepipe.models.checkpoint import CheckpointError
from posepipe.models.hrnet_mmpose import convert_checkpoint
from posepipe.models.skeletons import AP10K17, flip_indices
from tests.models.skeleton_golden import (OUTPUTS_REL, assert_device_path, assert_predict, case_id, cases,
                                          load_release, needs, relative)

NAMES = ("rtmpose_m_ap10k_256x256", "hrnet_w32_ap10k_256x256")
PARAMS = [(name, path) for name in NAMES for path in cases(name)]


@pytest.fixture(scope="module", params=PARAMS, ids=lambda p: f"{p[0]}-{case_id(p[1])}")
def golden(request, tmp_path_factory):
    name, path = request.param
    return (name, *load_release(name, path, tmp_path_factory.mktemp(name)))


def test_records_are_the_model_zoo_files():
    rtm, hrnet = get_weights(NAMES[0]), get_weights(NAMES[1])
    assert rtm.url.endswith("/rtmpose-m_simcc-ap10k_pt-aic-coco_210e-256x256-7a041aa1_20230206.pth")
    assert hrnet.url == ("https://download.openmmlab.com/mmpose/animal/hrnet/"
                         "hrnet_w32_ap10k_256x256-18aac840_20211029.pth")
    for spec in (rtm, hrnet):
        assert spec.input_size == (256, 256) and spec.keypoint_names == AP10K17.joint_names
        assert spec.skeleton == AP10K17.links and spec.metrics["ap10k_val_AP"] == 72.2
    assert hrnet.family == "hrnet_mmpose" and rtm.family == "rtmpose"


def test_release_layout_is_read_as_mmpose_reads_it(golden):
    name, case, predictor, path = golden
    _, report = read_weights(name, path)
    if name.startswith("hrnet"):
        assert report.layout.startswith("mmpose 0.x top-down HRNet") and report.tensors == 1754
    else:
        assert report.layout.startswith("mmpose 1.x RTMPose") and report.tensors == 362
    assert report.dropped == () and predictor.num_joints == 17


def test_flip_test_uses_the_skeletons_pairs(golden):
    name, case, predictor, _ = golden
    needs(case, "flip_indices")
    assert predictor.flip_indices == case["flip_indices"].tolist() == AP10K17.flip_indices
    assert flip_indices(AP10K17.joint_names) == list(range(17))  # L_/R_ names: by name nothing would swap


def test_center_scale_and_raw_outputs(golden):
    """The crop geometry exactly; the raw and flip-averaged outputs of the sampled joints."""
    name, case, predictor, _ = golden
    needs(case, "center", "scale", "sample_joints", *(("heatmaps",) if name.startswith("hrnet") else ("simcc_x",)))
    center, scale = predictor.box_to_center_scale(case["bboxes_xywh"])
    np.testing.assert_array_equal(center, case["center"])
    np.testing.assert_array_equal(scale, case["scale"])
    inputs = predictor.crop_inputs(case["image_bgr"], center, scale)
    joints = case["sample_joints"]
    for flip, suffix in ((False, ""), (True, "_flip_avg")):
        out = predictor.outputs(inputs, flip_test=flip)[:, joints]
        if name.startswith("hrnet"):
            pairs = [(out, "heatmaps" + suffix)]
        else:
            bins = predictor.bins_x
            pairs = [(out[..., :bins], "simcc_x" + suffix), (out[..., bins:], "simcc_y" + suffix)]
        for got, key in pairs:
            err = relative(got, case[key])
            assert err <= OUTPUTS_REL[name], f"{name} {key}: max|diff|/max|ref| = {err:.3g}"


def test_decoding_the_reference_outputs(golden):
    name, case, predictor, _ = golden
    needs(case, "sample_joints", "keypoints_input", "keypoints_input_noflip")
    joints = case["sample_joints"]
    for suffix_in, suffix_out in (("_flip_avg", ""), ("", "_noflip")):
        if name.startswith("hrnet"):
            outputs = case["heatmaps" + suffix_in]
        else:
            outputs = np.concatenate([case["simcc_x" + suffix_in], case["simcc_y" + suffix_in]], axis=-1)
        kps, _ = predictor.decode(outputs)
        np.testing.assert_allclose(kps, case["keypoints_input" + suffix_out][:, joints], rtol=0, atol=1e-4)


def test_predict_end_to_end(golden):
    name, case, predictor, _ = golden
    assert_predict(name, predictor, case)


def test_device_path_matches_predict(golden):
    name, case, predictor, _ = golden
    assert_device_path(name, predictor, case)


def test_name_based_flip_pairs_would_be_caught(golden):
    name, case, predictor, _ = golden
    saved, predictor._flip_index = predictor._flip_index, torch.arange(17)
    try:
        keypoints, _ = predictor.predict(case["image_bgr"], case["bboxes_xywh"], flip_test=True)
    finally:
        predictor._flip_index = saved
    assert np.abs(keypoints - case["keypoints"]).max() > 1.0


def test_hrnet_refuses_a_head_that_is_not_one_1x1_row_per_joint():
    state = {"backbone.stage4.0.fuse_layers.0.1.0.weight": torch.zeros(32, 64, 1, 1),
             "head.final_layer.weight": torch.zeros(17, 32, 3, 3), "head.final_layer.bias": torch.zeros(17)}
    with pytest.raises(CheckpointError, match="not a top-down HRNet checkpoint"):
        convert_checkpoint({"meta": {}, "state_dict": state})
