"""The public API exactly as users (and the acceptance checks) call it: `load_model(name, weights=PATH)`
on checkpoint files in each model's official container format, compared with the official outputs."""
from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest
import torch

from posepipe.models import CATALOGUE, RandomWeightsWarning, load_model
from posepipe.models.checkpoint import CheckpointError
from posepipe.models.download import WeightsUnavailable
from tests.golden import GOLDEN, assert_official_outputs, generate_state_dict, golden_cases, load_case

OFFICIAL = ("yolox_s", "hrnet_w32_coco_256x192", "videopose3d_243_coco", "hmr_spin_resnet50")


def _official_file(name: str, case: dict, tmp_path) -> str:
    sd = generate_state_dict(GOLDEN / name / "manifest.json", case)
    container = {
        "yolox_s": lambda: {"model": sd, "start_epoch": 300, "optimizer": None, "amp": None},
        "hrnet_w32_coco_256x192": lambda: sd,
        "videopose3d_243_coco": lambda: {"epoch": 80, "lr": 2e-4, "optimizer": {"state": {}, "param_groups": []},
                                         "model_pos": sd, "random_state": np.random.RandomState(1234)},  # numpy 2 spelling
        "hmr_spin_resnet50": lambda: {"model": sd, "optimizer": {}, "epoch": 0},
    }[name]()
    path = tmp_path / f"{name}.pth"
    torch.save(container, path)
    return str(path)


@pytest.mark.parametrize("name,case_path", [
    pytest.param(name, path, id=f"{name}-{path.stem}") for name in OFFICIAL for path in golden_cases(name)
] or [pytest.param(None, None, marks=pytest.mark.skip("no golden vectors"))])
def test_official_container_through_load_model(name, case_path, tmp_path):
    case = load_case(case_path)
    predictor = load_model(name, weights=_official_file(name, case, tmp_path))
    assert_official_outputs(name, predictor, case)
    assert len(predictor.weights_sha256) == 64


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


def _one_paragraph(exc: BaseException, name: str, path) -> str:
    text = str(exc)
    assert isinstance(exc, (CheckpointError, WeightsUnavailable)), repr(exc)
    assert text.startswith(f"{name}: ") and str(path) in text, text
    assert "\n" not in text and "Traceback" not in text and len(text) < 1200, text
    return text


@pytest.mark.parametrize("make,says", [
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: p.write_bytes(_zip_bytes()[: len(_zip_bytes()) // 2]), "cut short"),
    (lambda p: p.write_text("<html><head><title>404 Not Found</title></head><body>nginx</body></html>"),
     "HTML page (title: '404 Not Found')"),
    (lambda p: _plain_zip(p), "zip archive that is not a torch checkpoint"),
    (lambda p: torch.save([torch.zeros(1)], p), "expected a dict checkpoint, got list"),
    (lambda p: torch.save({"model": _Evil()}, p), "refused to load"),
])
def test_bad_files_get_one_paragraph_naming_model_and_file(tmp_path, make, says):
    path = tmp_path / "yolox_s.pth"
    make(path)
    with pytest.raises(CheckpointError) as info:
        load_model("yolox_s", weights=path)
    assert says in _one_paragraph(info.value, "yolox_s", path)


def test_another_models_checkpoint_says_whose_it_is_and_which_keys(tmp_path):
    """--weights yolox_s=<an HRNet file>: names the HRNet layout, the YOLOX keys missing, the keys unexpected."""
    path = tmp_path / "hrnet_w32_coco_256x192-c78dce93_20200708.pth"
    hrnet_keys = ["conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "final_layer.weight", "final_layer.bias"]
    torch.save({"meta": {"epoch": 210}, "state_dict": {f"backbone.{k}" if not k.startswith("final") else
                                                         f"keypoint_head.{k}": torch.zeros(1) for k in hrnet_keys}}, path)
    with pytest.raises(CheckpointError) as info:
        load_model("yolox_s", weights=path)
    text = _one_paragraph(info.value, "yolox_s", path)
    assert "not a YOLOX checkpoint" in text and "mmpose 0.x HRNet" in text
    assert "YOLOX keys missing: 462, e.g. backbone.backbone.stem.conv.conv.weight" in text
    assert "Keys the model does not have: 5, e.g. backbone.conv1.weight" in text
    assert "--weights hrnet_w32_coco_256x192=PATH" in text


def test_right_names_wrong_shapes_are_listed(tmp_path):
    from posepipe.models.yolox import build_yolox

    path = tmp_path / "yolox_s.pth"
    torch.save({"model": build_yolox(depth=0.33, width=0.375).state_dict()}, path)  # yolox_tiny's shapes
    with pytest.raises(CheckpointError) as info:
        load_model("yolox_s", weights=path)
    text = _one_paragraph(info.value, "yolox_s", path)
    assert "shape mismatches: backbone.backbone.stem.conv.conv.weight: file (24, 12, 3, 3) vs model (32, 12, 3, 3)" in text
    assert "missing keys" not in text and "unexpected keys" not in text


def test_missing_weights_are_one_paragraph_too(tmp_path):
    with pytest.raises(WeightsUnavailable) as info:
        load_model("hmr_spin_resnet50", weights=tmp_path / "model_checkpoint.pt")
    _one_paragraph(info.value, "hmr_spin_resnet50", tmp_path / "model_checkpoint.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, ("true",))


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(64, 64)}}, buffer)
    return buffer.getvalue()


def _plain_zip(path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("yolox_s/weights.txt", "see the release page")


def test_catalogue_entries_are_complete():
    for name, spec in CATALOGUE.items():
        assert spec.name == name and spec.url.startswith(("http://", "https://")) and spec.license and spec.paper
