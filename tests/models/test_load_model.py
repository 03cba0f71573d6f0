"""The public API exactly as users (and the acceptance checks) call it: `load_model(name, weights=PATH)`
on checkpoint files in each model's official container format, compared with the official outputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models import CATALOGUE, RandomWeightsWarning, load_model
from models.checkpoint import CheckpointError
from models.download import WeightsUnavailable
from tests.golden import GOLDEN, generate_state_dict, golden_cases, load_case


def _official_file(name: str, case: dict, tmp_path) -> str:
    sd = generate_state_dict(GOLDEN / name / "manifest.json", case)
    container = {
        "yolox_s": lambda: {"model": sd, "start_epoch": 300, "optimizer": None, "amp": None},
        "hrnet_w32_coco_256x192": lambda: sd,
        "videopose3d_243_coco": lambda: {"epoch": 80, "lr": 2e-4, "optimizer": {"state": {}, "param_groups": []},
                                         "model_pos": sd, "random_state": np.random.RandomState(1234).get_state()},
        "hmr_spin_resnet50": lambda: {"model": sd, "optimizer": {}, "epoch": 0},
    }[name]()
    path = tmp_path / f"{name}.pth"
    torch.save(container, path)
    return str(path)


def _cases(name: str):
    return [pytest.param(p, id=p.stem) for p in golden_cases(name)] or [pytest.param(None, marks=pytest.mark.skip("no golden"))]


@pytest.mark.parametrize("case_path", _cases("yolox_s"))
def test_yolox_through_load_model(case_path, tmp_path):
    case = load_case(case_path)
    det = load_model("yolox_s", weights=_official_file("yolox_s", case, tmp_path))
    dets = det.detect(case["image_bgr"], conf_threshold=float(case["conf_thre"]), nms_threshold=float(case["nms_thre"]))
    ref = case["dets"]
    assert dets.shape == ref.shape
    np.testing.assert_array_equal(dets[:, 6], ref[:, 6])
    np.testing.assert_allclose(dets[:, :4], ref[:, :4], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dets[:, 4:6], ref[:, 4:6], atol=2e-5)
    assert len(det.weights_sha256) == 64


@pytest.mark.parametrize("case_path", _cases("hrnet_w32_coco_256x192"))
def test_hrnet_through_load_model(case_path, tmp_path):
    case = load_case(case_path)
    pose = load_model("hrnet_w32_coco_256x192", weights=_official_file("hrnet_w32_coco_256x192", case, tmp_path))
    keypoints, scores = pose.predict(case["image_bgr"], case["bboxes_xywh"], flip_test=True)
    np.testing.assert_allclose(keypoints, case["keypoints"], atol=1e-3)
    assert np.abs(scores - case["scores"]).max() <= 1e-5 * np.abs(case["scores"]).max()


@pytest.mark.parametrize("case_path", _cases("videopose3d_243_coco"))
def test_videopose3d_through_load_model(case_path, tmp_path):
    case = load_case(case_path)
    lifter = load_model("videopose3d_243_coco", weights=_official_file("videopose3d_243_coco", case, tmp_path))
    assert lifter.receptive_field == 243
    pred = lifter.lift(case["keypoints_px"], width=int(case["width"]), height=int(case["height"]), flip_augment=True)
    np.testing.assert_allclose(pred, case["pred_tta"], rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("case_path", _cases("hmr_spin_resnet50"))
def test_hmr_through_load_model(case_path, tmp_path):
    case = load_case(case_path)
    hmr = load_model("hmr_spin_resnet50", weights=_official_file("hmr_spin_resnet50", case, tmp_path))
    out = hmr.predict(case["image_bgr"], case["bbox_xyxy"][None])
    np.testing.assert_allclose(out["rotmat"], case["pred_rotmat"], atol=5e-5)
    np.testing.assert_allclose(out["betas"], case["pred_betas"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["camera"], case["pred_camera"], rtol=1e-4, atol=1e-4)


def test_random_weights_only_by_name_and_loudly():
    with pytest.warns(RandomWeightsWarning, match="RANDOM"):
        det = load_model("yolox_nano", random_weights=True)
    assert det.weights_sha256 is None


def test_missing_file_names_the_model_and_the_fix(tmp_path):
    with pytest.raises(WeightsUnavailable) as info:
        load_model("yolox_s", weights=str(tmp_path / "nope.pth"))
    assert "yolox_s" in str(info.value) and "--weights" in str(info.value)


def test_wrong_checkpoint_names_missing_keys(tmp_path):
    torch.save({"model": {"backbone.backbone.stem.conv.conv.weight": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="missing keys"):
        load_model("yolox_s", weights=str(tmp_path / "bad.pth"))


def test_catalogue_entries_are_complete():
    for name, spec in CATALOGUE.items():
        assert spec.name == name and spec.url.startswith(("http://", "https://")) and spec.license and spec.paper
