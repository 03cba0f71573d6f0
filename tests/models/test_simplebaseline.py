"""SimpleBaseline: architecture keys, checkpoint formats, the weights record, and golden parity with
mmpose 1.3.2 on every stored case (shared/golden/simplebaseline_res50_coco_256x192)."""
from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch

from posepipe.models import simplebaseline
from posepipe.models.checkpoint import CheckpointError, read_checkpoint
from posepipe.models.skeletons import COCO17_NAMES
from tests.golden import assert_close, generate_state_dict, golden_cases, golden_dir, load_case
from tests.models.mmpose_files import mmpose_0x

NAME = "simplebaseline_res50_coco_256x192"
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
    # The 2022 file: mmpose 0.x head names, and data_preprocessor buffers as mmengine re-saves have them.
    path = mmpose_0x(state, tmp_path_factory.mktemp("sb") / simplebaseline.WEIGHTS[NAME].filename,
                     with_data_preprocessor=True)
    del state
    converted = simplebaseline.convert_checkpoint(read_checkpoint(path))
    predictor = simplebaseline.create(simplebaseline.WEIGHTS[NAME], converted, device=CPU)
    outputs = {
        "heatmaps": predictor.heatmaps(case["input"]),
        "heatmaps_flip": predictor.heatmaps(case["input"], flip_test=True),
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


def test_raw_and_flip_averaged_heatmaps(golden):
    case, _, out = golden
    for got, key in ((out["heatmaps"], "heatmaps"), (out["heatmaps_flip"], "heatmaps_flip_avg")):
        assert got.shape == case[key].shape
        err = _rel(got, case[key])
        assert err <= 2e-5, f"{key}: max|diff|/max|ref| = {err:.3g}"


def test_decode_reference_heatmaps(golden):
    """MSRAHeatmap decoding alone, on the official heatmaps: exact."""
    case, predictor, _ = golden
    for key, suffix in (("heatmaps_flip_avg", ""), ("heatmaps", "_noflip")):
        kps, scores = predictor.decode(case[key])
        np.testing.assert_array_equal(kps, case["keypoints_input" + suffix])
        np.testing.assert_array_equal(scores, case["scores" + suffix])


@pytest.mark.parametrize("flip", [True, False], ids=["flip", "noflip"])
def test_predict_end_to_end(golden, flip):
    case, _, out = golden
    kps, scores = out["predict_flip" if flip else "predict_noflip"]
    suffix = "" if flip else "_noflip"
    assert kps.dtype == np.float32 and scores.dtype == np.float32
    assert_close(kps, case["keypoints" + suffix], "keypoints", rtol=0, atol=1e-3)
    hm_max = np.abs(case["heatmaps_flip_avg" if flip else "heatmaps"]).max()
    assert_close(scores, case["scores" + suffix], "scores", rtol=0, atol=2e-5 * hm_max)


def test_predict_batch_matches_predict(golden):
    case, predictor, out = golden
    image, boxes = case["image_bgr"], case["bboxes_xywh"]
    results = predictor.predict_batch([image, image], [boxes[1:], boxes[:1]], flip_test=True, batch_size=2)
    ref_kps, _ = out["predict_flip"]
    assert_close(results[0][0], ref_kps[1:], "keypoints", rtol=0, atol=1e-3)
    assert_close(results[1][0], ref_kps[:1], "keypoints", rtol=0, atol=1e-3)


def test_mmpose_decoding_rules():
    """mmpose, not HRNet: maxval <= 0 -> (-1, -1); x and y border tests separate; x4 to crop pixels."""
    predictor = simplebaseline.create(simplebaseline.WEIGHTS[NAME], None, device=CPU)
    hm = np.full((1, 17, 64, 48), -1.0, dtype=np.float32)
    hm[0, 0, 10, 20] = 5.0; hm[0, 0, 10, 21] = 1.0; hm[0, 0, 11, 20] = 2.0   # +x, +y
    hm[0, 1, 1, 20] = 5.0; hm[0, 1, 1, 21] = 1.0; hm[0, 1, 2, 20] = 1.0     # y = 1: x steps, y does not
    hm[0, 2, 30, 47] = 5.0; hm[0, 2, 31, 47] = 1.0                          # x = 47: y steps, x does not
    kps, scores = predictor.decode(hm)
    assert kps[0, 0].tolist() == [20.25 * 4, 10.25 * 4]
    assert kps[0, 1].tolist() == [20.25 * 4, 1.0 * 4]
    assert kps[0, 2].tolist() == [47.0 * 4, 30.25 * 4]
    assert kps[0, 3].tolist() == [-4.0, -4.0] and scores[0, 3] == -1.0


def test_state_dict_keys_match_official_manifest():
    manifest = _manifest()
    state = simplebaseline.simplebaseline(depth=50).state_dict()
    assert list(state) == [e["name"] for e in manifest]
    for e in manifest:
        assert list(state[e["name"]].shape) == e["shape"], e["name"]


def test_convert_layouts(tmp_path):
    state = _fake_state()
    checkpoint = read_checkpoint(mmpose_0x(state, tmp_path / "old.pth", with_data_preprocessor=True))
    assert simplebaseline.checkpoint_format(checkpoint).startswith("mmpose 0.x SimpleBaseline")
    assert list(simplebaseline.convert_checkpoint(checkpoint)) == list(state)
    assert simplebaseline.checkpoint_format({"meta": {}, "state_dict": state}).startswith("mmpose 1.x SimpleBaseline")
    # 0.x heads with extra convs stored final_layer as a Sequential: final_layer.N.* is final_layer.* here.
    old = OrderedDict((k.replace("head.final_layer.", "head.final_layer.0."), v) for k, v in state.items())
    assert list(simplebaseline.convert_checkpoint({"state_dict": old})) == list(state)
    with pytest.raises(CheckpointError, match="not a SimpleBaseline"):
        simplebaseline.convert_checkpoint({"state_dict": {"head.fc.weight": torch.zeros(1)}})


def test_weights_entry():
    spec = simplebaseline.WEIGHTS[NAME]
    assert spec.family == "simplebaseline" and spec.stage == "pose" and spec.source_format == "mmpose"
    assert spec.url.endswith("/" + spec.filename) and f"-{spec.hash_prefix}_" in spec.filename
    assert spec.input_size == (256, 192) and spec.keypoint_names == COCO17_NAMES
    assert spec.metrics["coco_val2017_AP"] == 71.8 and "Xiao et al." in spec.paper
    predictor = simplebaseline.create(spec, None, device=CPU)
    assert predictor.heatmap_size == (64, 48)
    out = predictor.heatmaps(np.zeros((1, 3, 64, 32), np.float32))  # geometry on a tiny input
    assert out.shape == (1, 17, 16, 8) and np.isfinite(out).all()
