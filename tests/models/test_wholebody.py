"""RTMPose-m COCO-WholeBody (133 keypoints): the catalogue record, the release layout, and parity with mmpose
1.3.2 run as installed on every case in tests/models/golden_rtmpose_m_coco_wholebody_256x192 (made by
mmpose_skeletons_reference.py), through ``load_model(...).predict(image_bgr, bboxes_xywh, flip_test=...)``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from posepipe.models import get_weights, read_weights
from posepipe.models.skeletons import COCO17_NAMES, WHOLEBODY133, flip_indices
from tests.golden import assert_close
from tests.models.skeleton_golden import (OUTPUTS_REL, assert_device_path, assert_predict, case_id, cases,
                                          load_release, needs, relative)

NAME = "rtmpose_m_coco_wholebody_256x192"


@pytest.fixture(scope="module", params=cases(NAME), ids=case_id)
def golden(request, tmp_path_factory):
    return load_release(NAME, request.param, tmp_path_factory.mktemp("wholebody"))


def test_record_is_the_model_zoo_file():
    spec = get_weights(NAME)
    assert spec.url.endswith("/rtmpose-m_simcc-coco-wholebody_pt-aic-coco_270e-256x192-cd5e845c_20230123.pth")
    assert spec.hash_prefix == "cd5e845c" and spec.input_size == (256, 192) and spec.arch["num_joints"] == 133
    assert spec.keypoint_names == WHOLEBODY133.joint_names and spec.skeleton == WHOLEBODY133.links
    assert spec.keypoint_names[:17] == COCO17_NAMES  # tracking, lifting and HMR read the first 17
    assert spec.metrics["coco_wholebody_val_whole_AP"] == 58.2


def test_release_layout_is_read_as_mmpose_reads_it(golden):
    case, predictor, path = golden
    _, report = read_weights(NAME, path)
    assert report.layout.startswith("mmpose 1.x RTMPose") and "'ema_state_dict'" in report.layout
    assert report.tensors == 362 and report.dropped == ()
    assert predictor.num_joints == 133 and predictor.weights is get_weights(NAME)


def test_flip_test_uses_the_skeletons_pairs(golden):
    case, predictor, _ = golden
    needs(case, "flip_indices")
    assert predictor.flip_indices == case["flip_indices"].tolist() == WHOLEBODY133.flip_indices


def test_center_scale_and_raw_outputs(golden):
    """The crop geometry exactly; the SimCC vectors of the sampled joints, raw and flip-averaged."""
    case, predictor, _ = golden
    needs(case, "center", "scale", "sample_joints", "simcc_x", "simcc_x_flip_avg")
    center, scale = predictor.box_to_center_scale(case["bboxes_xywh"])
    np.testing.assert_array_equal(center, case["center"])
    np.testing.assert_array_equal(scale, case["scale"])
    inputs = predictor.crop_inputs(case["image_bgr"], center, scale)
    joints = case["sample_joints"]
    for flip, suffix in ((False, ""), (True, "_flip_avg")):
        x, y = predictor.simcc(inputs, flip_test=flip)
        for got, key in ((x[:, joints], "simcc_x" + suffix), (y[:, joints], "simcc_y" + suffix)):
            err = relative(got, case[key])
            assert err <= OUTPUTS_REL[NAME], f"{key}: max|diff|/max|ref| = {err:.3g}"


def test_decoding_the_reference_vectors(golden):
    case, predictor, _ = golden
    needs(case, "sample_joints", "simcc_x", "simcc_x_flip_avg", "keypoints_input", "keypoints_input_noflip")
    joints = case["sample_joints"]
    for suffix_in, suffix_out in (("_flip_avg", ""), ("", "_noflip")):
        kps, _ = predictor.decode(np.concatenate([case["simcc_x" + suffix_in], case["simcc_y" + suffix_in]], axis=-1))
        np.testing.assert_array_equal(kps, case["keypoints_input" + suffix_out][:, joints])


def test_predict_end_to_end(golden):
    case, predictor, _ = golden
    assert_predict(NAME, predictor, case)


def test_device_path_matches_predict(golden):
    case, predictor, _ = golden
    assert_device_path(NAME, predictor, case)


def test_name_based_flip_pairs_would_be_caught(golden):
    """Pairs from the joint names alone leave the face unmirrored: the parity check sees it."""
    case, predictor, _ = golden
    wrong = torch.tensor(flip_indices(WHOLEBODY133.joint_names))
    saved, predictor._flip_index = predictor._flip_index, wrong
    try:
        keypoints, _ = predictor.predict(case["image_bgr"], case["bboxes_xywh"], flip_test=True)
    finally:
        predictor._flip_index = saved
    face = slice(23, 91)
    assert np.abs(keypoints[:, face] - case["keypoints"][:, face]).max() > 1.0
    assert_close(keypoints[:, :23], case["keypoints"][:, :23], "body and feet", rtol=0, atol=1e-3)
