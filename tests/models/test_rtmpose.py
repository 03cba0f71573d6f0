"""RTMPose: architecture keys, checkpoint formats, weights records, and golden parity with mmpose 1.3.2
on every stored case (shared/golden/rtmpose_m_coco_256x192)."""
from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch

from posepipe.models import rtmpose
from posepipe.models.checkpoint import CheckpointError, read_checkpoint
from posepipe.models.skeletons import COCO17_NAMES, skeleton_of
from tests.golden import assert_close, generate_state_dict, golden_cases, golden_dir, load_case
from tests.models.mmpose_files import mmpose_0x, mmpose_1x_2023

NAME = "rtmpose_m_coco_256x192"
CPU = torch.device("cpu")


def _manifest() -> list[dict]:
    return json.loads((golden_dir(NAME) / "manifest.json").read_text())


def _fake_state() -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((e["name"], torch.zeros(e["shape"], dtype=torch.int64 if e["dtype"] == "int64" else torch.float32))
                       for e in _manifest())


def _rel(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


# ---------------------------------------------------------------------------------------------
# Golden parity: one predictor per case, loaded from the container mmpose published
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=golden_cases(NAME), ids=lambda p: p.stem)
def golden(request, tmp_path_factory):
    case = load_case(request.param)
    state = generate_state_dict(golden_dir(NAME) / "manifest.json", case)
    path = mmpose_1x_2023(state, tmp_path_factory.mktemp("rtmpose") / rtmpose.WEIGHTS[NAME].filename)
    del state
    predictor = rtmpose.create(rtmpose.WEIGHTS[NAME], rtmpose.convert_checkpoint(read_checkpoint(path)), device=CPU)
    outputs = {
        "raw": predictor.simcc(case["input"]),
        "flip": predictor.simcc(case["input"], flip_test=True),
        "predict_flip": predictor.predict(case["image_bgr"], case["bboxes_xywh"], flip_test=True),
        "predict_noflip": predictor.predict(case["image_bgr"], case["bboxes_xywh"], flip_test=False),
    }
    return case, predictor, outputs


def test_center_scale_crop_and_input(golden):
    case, predictor, _ = golden
    center, scale = predictor.box_to_center_scale(case["bboxes_xywh"])
    assert center.dtype == np.float32 and scale.dtype == np.float32
    np.testing.assert_array_equal(center, case["center"])
    np.testing.assert_array_equal(scale, case["scale"])
    for k, trans in enumerate(predictor.warp_matrices(center, scale)):
        np.testing.assert_allclose(trans, case["trans"][k], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(predictor.crop_images(case["image_bgr"], center, scale), case["crop_bgr"])
    np.testing.assert_allclose(predictor.crop_inputs(case["image_bgr"], center, scale), case["input"], rtol=0, atol=1e-6)


def test_raw_and_flip_averaged_simcc(golden):
    case, _, out = golden
    for (x, y), suffix in ((out["raw"], ""), (out["flip"], "_flip_avg")):
        for got, key in ((x, "simcc_x" + suffix), (y, "simcc_y" + suffix)):
            assert got.shape == case[key].shape
            err = _rel(got, case[key])
            assert err <= 1e-4, f"{key}: max|diff|/max|ref| = {err:.3g}"


def test_decode_reference_vectors(golden):
    """Decoding alone, on the official vectors: argmax, min of the maxima, / 2; exact."""
    case, predictor, _ = golden
    for suffix_in, suffix_out in (("_flip_avg", ""), ("", "_noflip")):
        outputs = np.concatenate([case["simcc_x" + suffix_in], case["simcc_y" + suffix_in]], axis=-1)
        kps, scores = predictor.decode(outputs)
        np.testing.assert_array_equal(kps, case["keypoints_input" + suffix_out])
        np.testing.assert_array_equal(scores, case["scores" + suffix_out])


@pytest.mark.parametrize("flip", [True, False], ids=["flip", "noflip"])
def test_predict_end_to_end(golden, flip):
    case, _, out = golden
    kps, scores = out["predict_flip" if flip else "predict_noflip"]
    suffix = "" if flip else "_noflip"
    assert kps.dtype == np.float32 and scores.dtype == np.float32
    assert_close(kps, case["keypoints" + suffix], "keypoints", rtol=0, atol=1e-3)
    raw_max = np.abs(case["simcc_x"]).max()
    assert_close(scores, case["scores" + suffix], "scores", rtol=0, atol=1e-4 * raw_max)


def test_predict_batch_matches_predict(golden):
    case, predictor, out = golden
    image, boxes = case["image_bgr"], case["bboxes_xywh"]
    results = predictor.predict_batch([image, image[:, ::-1], image], [boxes[-1:], np.zeros((0, 4)), boxes[:2]],
                                      flip_test=True, batch_size=2)
    ref_kps, ref_scores = out["predict_flip"]
    for (kps, scores), sel in ((results[0], slice(-1, None)), (results[2], slice(0, 2))):
        assert_close(kps, ref_kps[sel], "keypoints", rtol=0, atol=1e-3)
        assert_close(scores, ref_scores[sel], "scores", rtol=0, atol=1e-4 * np.abs(ref_scores).max())
    assert results[1][0].shape == (0, 17, 2) and results[1][1].shape == (0, 17)


# ---------------------------------------------------------------------------------------------
# Pure rules on tiny inputs
# ---------------------------------------------------------------------------------------------

def test_simcc_decoding_rules():
    predictor = rtmpose.create(rtmpose.WEIGHTS["rtmpose_t_coco_256x192"], None, device=CPU)
    x = torch.full((1, 17, 384), -1.0)
    y = torch.full((1, 17, 512), -1.0)
    x[0, 0, 10], y[0, 0, 20] = 3.0, 2.0          # score = min(3, 2)
    x[0, 1, 7], x[0, 1, 9] = 1.0, 1.0             # tie: the first bin wins
    y[0, 1, 0] = 5.0
    kps, scores = predictor.decode(torch.cat([x, y], dim=-1))
    assert kps[0, 0].tolist() == [5.0, 10.0] and scores[0, 0] == 2.0
    assert kps[0, 1].tolist() == [3.5, 0.0] and scores[0, 1] == 1.0
    assert kps[0, 2].tolist() == [-0.5, -0.5] and scores[0, 2] == -1.0  # score <= 0 -> (-1, -1), then / 2


def test_flip_reverses_x_bins_and_swaps_joints():
    predictor = rtmpose.create(rtmpose.WEIGHTS["rtmpose_t_coco_256x192"], None, device=CPU)
    raw = torch.zeros((1, 17, 896))
    flipped = torch.zeros((1, 17, 896))
    flipped[0, 1, 0] = 4.0          # left eye, x bin 0 of the mirrored crop
    flipped[0, 1, 384 + 7] = 6.0    # its y bin 7
    avg = predictor._merge_flip(raw, flipped)
    assert avg[0, 2, 383] == 2.0 and avg[0, 2, 384 + 7] == 3.0  # -> right eye, bin 383, y unchanged
    assert float(avg[0, 1].abs().sum()) == 0.0


# ---------------------------------------------------------------------------------------------
# Architecture and checkpoint formats
# ---------------------------------------------------------------------------------------------

def test_state_dict_keys_match_official_manifest():
    manifest = _manifest()
    state = rtmpose.rtmpose(deepen_factor=0.67, widen_factor=0.75).state_dict()
    assert list(state) == [e["name"] for e in manifest]
    for e in manifest:
        assert list(state[e["name"]].shape) == e["shape"], e["name"]
        assert str(state[e["name"]].dtype).replace("torch.", "") == e["dtype"], e["name"]


def test_convert_drops_data_preprocessor_and_reads_only_state_dict(tmp_path):
    state = _fake_state()
    path = mmpose_1x_2023(state, tmp_path / "rtmpose.pth", with_data_preprocessor=True)
    checkpoint = read_checkpoint(path)
    assert rtmpose.checkpoint_format(checkpoint).startswith("mmpose 1.x RTMPose")
    converted = rtmpose.convert_checkpoint(checkpoint)
    assert list(converted) == list(state)
    assert isinstance(checkpoint["meta"]["dataset_meta"]["sigmas"], np.ndarray)  # numpy in meta is read as data


def test_convert_module_prefix_and_0x_names(tmp_path):
    state = _fake_state()
    prefixed = {"state_dict": OrderedDict(("module." + k, v) for k, v in state.items())}
    assert list(rtmpose.convert_checkpoint(prefixed)) == list(state)
    checkpoint = read_checkpoint(mmpose_0x(state, tmp_path / "old.pth"))
    assert rtmpose.checkpoint_format(checkpoint).startswith("mmpose 0.x RTMPose")
    assert list(rtmpose.convert_checkpoint(checkpoint)) == list(state)


def test_other_layouts_are_refused_by_name():
    assert rtmpose.checkpoint_format({"state_dict": {"backbone.conv1.weight": torch.zeros(1)}}) is None
    with pytest.raises(CheckpointError, match="not a RTMPose"):
        rtmpose.convert_checkpoint({"meta": {}, "state_dict": {"backbone.conv1.weight": torch.zeros(1)}})
    with pytest.raises(CheckpointError, match="expected an mmpose checkpoint"):
        rtmpose.convert_checkpoint([torch.zeros(1)])


def test_strict_load_names_mismatched_keys():
    state = _fake_state()
    state.pop("head.gau.res_scale.scale")
    state["head.cls_x.weight"] = torch.zeros(400, 256)
    with pytest.raises(CheckpointError) as info:
        rtmpose.create(rtmpose.WEIGHTS[NAME], state, device=CPU)
    assert "head.gau.res_scale.scale" in str(info.value) and "head.cls_x.weight" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Weights records: every size builds, its geometry and metadata hold
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(rtmpose.WEIGHTS))
def test_weights_entry(name):
    spec = rtmpose.WEIGHTS[name]
    assert spec.name == name and spec.family == "rtmpose" and spec.stage == "pose" and spec.source_format == "mmpose"
    assert spec.url.startswith("https://download.openmmlab.com/mmpose/v1/projects/rtmposev1/")
    assert spec.url.endswith("/" + spec.filename) and f"-{spec.hash_prefix}_" in spec.filename
    assert spec.color == "RGB" and spec.license.startswith("Apache-2.0") and "Jiang et al." in spec.paper
    assert spec.mean == (123.675, 116.28, 103.53) and spec.std == (58.395, 57.12, 57.375)
    if name.endswith("_coco_256x192"):
        assert spec.input_size == (256, 192) and spec.keypoint_names == COCO17_NAMES
        assert 60 < spec.metrics["coco_val2017_AP"] < 80
    else:  # whole-body and animal records: their own skeleton (tests/models/test_wholebody.py, test_ap10k.py)
        skeleton = skeleton_of(spec.keypoint_names)
        assert skeleton is not None and spec.skeleton == skeleton.links
    height, width = spec.input_size
    joints = spec.arch["num_joints"]
    assert joints == len(spec.keypoint_names)
    predictor = rtmpose.create(spec, None, device=CPU)
    assert not predictor.model.training
    simcc_x, simcc_y = predictor.simcc(np.zeros((1, 3, height, width), np.float32), flip_test=True)
    assert simcc_x.shape == (1, joints, 2 * width) and simcc_y.shape == (1, joints, 2 * height)
    assert np.isfinite(simcc_x).all()
