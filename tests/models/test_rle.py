"""RLE: architecture keys, checkpoint formats (the training-only flow dropped by name), the weights
record, and golden parity with mmpose 1.3.2 on every stored case (shared/golden/rle_res50_coco_256x192)."""
from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch

from posepipe.models import rle
from posepipe.models.checkpoint import CheckpointError, read_checkpoint
from tests.golden import assert_close, generate_state_dict, golden_cases, golden_dir, load_case
from tests.models.mmpose_files import mmpose_0x

NAME = "rle_res50_coco_256x192"
CPU = torch.device("cpu")


def _manifest() -> list[dict]:
    return json.loads((golden_dir(NAME) / "manifest.json").read_text())


def _fake_state() -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((e["name"], torch.zeros(e["shape"], dtype=torch.int64 if e["dtype"] == "int64" else torch.float32))
                       for e in _manifest())


def _rel(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module", params=golden_cases(NAME), ids=lambda p: p.stem)
def golden(request, tmp_path_factory):
    case = load_case(request.param)
    state = generate_state_dict(golden_dir(NAME) / "manifest.json", case)
    path = mmpose_0x(state, tmp_path_factory.mktemp("rle") / rle.WEIGHTS[NAME].filename)  # the 2022 file
    del state
    predictor = rle.create(rle.WEIGHTS[NAME], rle.convert_checkpoint(read_checkpoint(path)), device=CPU)
    outputs = {
        "raw": predictor.raw_outputs(case["input"]),
        "noflip": predictor.regress(case["input"]),
        "flip": predictor.regress(case["input"], flip_test=True),
        "predict_flip": predictor.predict(case["image_bgr"], case["bboxes_xywh"], flip_test=True),
        "predict_noflip": predictor.predict(case["image_bgr"], case["bboxes_xywh"], flip_test=False),
    }
    return case, predictor, outputs


def test_center_scale_crop_and_input(golden):
    case, predictor, _ = golden
    center, scale = predictor.box_to_center_scale(case["bboxes_xywh"])
    np.testing.assert_array_equal(center, case["center"])
    np.testing.assert_array_equal(scale, case["scale"])
    np.testing.assert_array_equal(predictor.crop_images(case["image_bgr"], center, scale), case["crop_bgr"])
    np.testing.assert_allclose(predictor.crop_inputs(case["image_bgr"], center, scale), case["input"], rtol=0, atol=1e-6)


def test_raw_sigmoid_and_flip_average(golden):
    case, _, out = golden
    for key, ref in (("raw", "rle_raw"), ("noflip", "rle_noflip"), ("flip", "rle_flip_avg")):
        err = _rel(out[key], case[ref])
        assert err <= 1e-5, f"{ref}: max|diff|/max|ref| = {err:.3g}"


def test_decode_reference_outputs(golden):
    """RegressionLabel decoding alone: mu * (192, 256) in float64, scores mean(1 - sigma)."""
    case, predictor, _ = golden
    for key, suffix in (("rle_flip_avg", ""), ("rle_noflip", "_noflip")):
        kps, scores = predictor.decode(case[key])
        assert kps.dtype == np.float64
        np.testing.assert_array_equal(kps, case["keypoints_input" + suffix])
        assert_close(scores, case["scores" + suffix], "scores", rtol=0, atol=2e-6)


@pytest.mark.parametrize("flip", [True, False], ids=["flip", "noflip"])
def test_predict_end_to_end(golden, flip):
    case, _, out = golden
    kps, scores = out["predict_flip" if flip else "predict_noflip"]
    suffix = "" if flip else "_noflip"
    assert kps.dtype == np.float32 and scores.dtype == np.float32
    assert_close(kps, case["keypoints" + suffix], "keypoints", rtol=0, atol=2e-2)
    assert_close(scores, case["scores" + suffix], "scores", rtol=0, atol=2e-6)


def test_flip_mirrors_shifts_and_swaps_before_the_sigmoid():
    predictor = rle.create(rle.WEIGHTS[NAME], None, device=CPU)
    raw = torch.zeros((1, 17, 4))
    flipped = torch.zeros((1, 17, 4))
    flipped[0, 1] = torch.tensor([0.25, 0.5, 2.0, -2.0])   # left eye of the mirrored crop
    avg = predictor._merge_flip(raw, flipped)
    expected_x = ((1.0 - 0.25) - 1.0 / 192 + 0.0) * 0.5
    assert avg[0, 2, 0].item() == pytest.approx(expected_x, abs=1e-7)       # -> the right eye
    assert avg[0, 2, 2].item() == pytest.approx((torch.sigmoid(torch.tensor(2.0)).item() + 0.5) * 0.5)


def test_state_dict_and_the_training_only_flow():
    manifest = _manifest()
    model_keys = list(rle.rle(depth=50).state_dict())
    assert model_keys == [e["name"] for e in manifest if not e["name"].startswith("head.loss_module.")]
    state = _fake_state()
    converted = rle.convert_checkpoint({"meta": {}, "state_dict": state})
    assert list(converted) == model_keys  # exactly the 75 flow tensors are left out
    assert len(state) - len(converted) == 75


def test_convert_0x_names(tmp_path):
    state = _fake_state()
    checkpoint = read_checkpoint(mmpose_0x(state, tmp_path / "old.pth"))
    assert any(k.startswith("keypoint_head.loss.flow_model.") for k in checkpoint["state_dict"])
    assert rle.checkpoint_format(checkpoint).startswith("mmpose 0.x RLE")
    assert list(rle.convert_checkpoint(checkpoint)) == list(rle.rle().state_dict())
    with pytest.raises(CheckpointError, match="not a RLE"):
        rle.convert_checkpoint({"state_dict": {"backbone.layer1.0.conv1.weight": torch.zeros(1)}})


def test_weights_entry():
    spec = rle.WEIGHTS[NAME]
    assert spec.family == "rle" and spec.stage == "pose" and spec.source_format == "mmpose"
    assert spec.url.endswith("/" + spec.filename) and f"-{spec.hash_prefix}_" in spec.filename
    assert spec.metrics["coco_val2017_AP"] == 70.6 and "ICCV 2021" in spec.paper
    out = rle.create(spec, None, device=CPU).regress(np.zeros((2, 3, 256, 192), np.float32), flip_test=True)
    assert out.shape == (2, 17, 4) and ((out[..., 2:] > 0) & (out[..., 2:] < 1)).all()
