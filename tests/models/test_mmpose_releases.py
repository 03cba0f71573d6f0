"""The new families through the public API exactly as users call it: `load_model(name, weights=PATH)` on
files laid out as mmpose published them, compared with mmpose's outputs; what the loader reports about
such a file; and the paragraph for a file of another family."""
from __future__ import annotations

import hashlib
import json
import warnings
from collections import OrderedDict

import pytest
import torch

from posepipe.models import CATALOGUE, get_weights, load_model, read_weights
from posepipe.models.checkpoint import CheckpointError
from tests.golden import GOLDEN, assert_official_outputs, case_and_state, golden_cases
from tests.models.mmpose_files import mmpose_0x, mmpose_1x_2023

# Each family's file as released: RTMPose by mmengine in 2023, the others by mmcv (0.x names).
WRITERS = {
    "rtmpose_m_coco_256x192": mmpose_1x_2023,
    "simplebaseline_res50_coco_256x192": mmpose_0x,
    "rle_res50_coco_256x192": mmpose_0x,
    "simplebaseline3d_h36m": lambda state, path: mmpose_0x(state, path, year=2021),
}


def _cases():
    params = [pytest.param(name, path, id=f"{name}-{path.stem}") for name in WRITERS for path in golden_cases(name)]
    return params or [pytest.param(None, None, marks=pytest.mark.skip("golden vectors not present"))]


@pytest.mark.parametrize("name,case_path", _cases())
def test_release_file_through_load_model(name, case_path, tmp_path):
    case, state = case_and_state(GOLDEN / name / "manifest.json", case_path)
    path = WRITERS[name](state, tmp_path / get_weights(name).filename)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loading a genuine release warns about nothing
        predictor = load_model(name, weights=path)
    assert_official_outputs(name, predictor, case)
    assert predictor.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def _fake(name: str) -> "OrderedDict[str, torch.Tensor]":
    manifest = json.loads((GOLDEN / name / "manifest.json").read_text())
    return OrderedDict((e["name"], torch.zeros(e["shape"], dtype=torch.int64 if e["dtype"] == "int64" else torch.float32))
                       for e in manifest)


@pytest.mark.skipif(not (GOLDEN / "rle_res50_coco_256x192").is_dir(), reason="golden manifests not present")
def test_loader_reports_renames_and_what_it_left_out(tmp_path):
    name = "rle_res50_coco_256x192"
    path = mmpose_0x(_fake(name), tmp_path / "rle.pth", with_data_preprocessor=True)
    _, report = read_weights(name, path)
    assert report.layout.startswith("mmpose 0.x RLE")
    flow = [k for k in report.dropped if k.startswith("keypoint_head.loss.flow_model.")]
    assert len(flow) == 75 and {"data_preprocessor.mean", "data_preprocessor.std"} <= set(report.dropped)
    assert report.renamed == 2 and report.tensors == 395 - 75 and report.ignored == ("meta",)

    name = "rtmpose_m_coco_256x192"
    _, report = read_weights(name, mmpose_1x_2023(_fake(name), tmp_path / "rtm.pth"))
    assert report.layout.startswith("mmpose 1.x RTMPose") and report.renamed == 0 and report.dropped == ()
    assert set(report.ignored) == {"meta", "ema_state_dict", "message_hub", "param_schedulers"}


@pytest.mark.skipif(not (GOLDEN / "rtmpose_m_coco_256x192").is_dir(), reason="golden manifests not present")
@pytest.mark.parametrize("given,expected,says", [
    ("rtmpose_m_coco_256x192", "simplebaseline_res50_coco_256x192", "mmpose 1.x RTMPose"),
    ("simplebaseline_res50_coco_256x192", "rle_res50_coco_256x192", "mmpose 0.x SimpleBaseline"),
    ("simplebaseline3d_h36m", "rtmpose_m_coco_256x192", "mmpose 0.x SimpleBaseline3D"),
])
def test_another_familys_file_says_whose_it_is(given, expected, says, tmp_path):
    writer = mmpose_1x_2023 if given.startswith("rtmpose") else mmpose_0x
    path = writer(_fake(given), tmp_path / "weights.pth")
    with pytest.raises(CheckpointError) as info:
        load_model(expected, weights=path)
    text = str(info.value)
    assert text.startswith(f"{expected}: ") and "\n" not in text
    assert f"it is laid out as {says}" in text
    owners = [n for n, s in CATALOGUE.items() if s.family == get_weights(given).family]
    assert f"--weights {owners[0]}=PATH" in text
