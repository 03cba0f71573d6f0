"""Shared by tests/models/test_wholebody.py and test_ap10k.py: the golden cases made by
mmpose_skeletons_reference.py (tests/models/golden_<name>/), each model loaded by ``load_model`` from a file
laid out as mmpose published it, and the comparisons their README documents."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from posepipe.models import get_weights, load_model
from tests.golden import (GOLDEN, TOPDOWN_TOLERANCES, assert_close, assert_topdown_outputs, generate_state_dict,
                          load_case)
from tests.models.mmpose_files import mmpose_0x, mmpose_1x_2023

HERE = Path(__file__).resolve().parent

# The documented tolerances (golden_<name>/README.md): keypoints and scores in tests/golden.py's
# TOPDOWN_TOLERANCES (keypoints atol in image px, scores relative to the largest reference score); the raw
# and flip-averaged outputs relative to the largest reference value.
OUTPUTS_REL = {
    "rtmpose_m_coco_wholebody_256x192": 1e-4, "rtmpose_m_ap10k_256x256": 1e-4, "hrnet_w32_ap10k_256x256": 2e-5,
}


def golden_folder(name: str) -> Path:
    return HERE / f"golden_{name}"


def cases(name: str) -> list[Path]:
    """Every case_seed*.npz of a model: ours (tests/models/golden_<name>/) and any in ../shared/golden/<name>/
    (cases made later with another seed are picked up too); each beside its manifest.json."""
    return sorted(golden_folder(name).glob("case_seed*.npz")) + sorted((GOLDEN / name).glob("case_seed*.npz"))


def case_id(path: Path) -> str:
    return f"{'shared' if path.is_relative_to(GOLDEN) else 'repo'}-{path.stem}"


def needs(case: dict, *keys: str) -> None:
    """Skip a check that needs intermediate arrays a case does not hold (the end-to-end check needs none)."""
    missing = [k for k in keys if k not in case]
    if missing:
        pytest.skip(f"this case has no {', '.join(missing)}")


def release_file(name: str, case: dict, folder: Path, manifest: Path) -> Path:
    """The case's weights (the golden rule, the case's seed) in the official file's container: mmpose 1.x
    (2023, EMA entries beside the state dict) for RTMPose, mmpose 0.x (2021, keypoint_head.*) for HRNet."""
    state = generate_state_dict(manifest, case)
    path = folder / get_weights(name).filename
    if name.startswith("hrnet"):
        return mmpose_0x(state, path, year=2021)
    return mmpose_1x_2023(state, path)


def load_release(name: str, case_path: Path, folder: Path):
    """(case, predictor loaded by load_model from the release file, the file)."""
    case = load_case(case_path)
    path = release_file(name, case, folder, case_path.parent / "manifest.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a genuine release loads without a warning
        predictor = load_model(name, weights=path)
    return case, predictor, path


def relative(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out.astype(np.float64) - ref).max() / np.abs(ref).max())


def assert_predict(name: str, predictor, case: dict) -> None:
    """`predict(image_bgr, bboxes_xywh, flip_test=...)` gives mmpose's keypoints and scores, both modes."""
    assert_topdown_outputs(name, predictor, case)


def assert_device_path(name: str, predictor, case: dict) -> None:
    """`predict_frames` (the pipeline's device path, here on the CPU) gives mmpose's keypoints and scores too."""
    image = torch.from_numpy(case["image_bgr"])[None]
    boxes = torch.from_numpy(case["bboxes_xywh"])
    frame_of_box = torch.zeros(len(boxes), dtype=torch.long)
    tol = TOPDOWN_TOLERANCES[name]
    for flip, suffix in ((True, ""), (False, "_noflip")):
        out = predictor.predict_frames(image, frame_of_box, boxes, flip_test=flip)
        assert not bool(out.overflow)
        ref_kps, ref_scores = case["keypoints" + suffix], case["scores" + suffix]
        assert_close(out.keypoints.numpy(), ref_kps, f"{name} predict_frames keypoints{suffix}", rtol=0,
                     atol=tol["keypoints_atol"])
        limit = tol["scores_rel"] * float(np.abs(ref_scores).max())
        assert_close(out.scores.numpy(), ref_scores, f"{name} predict_frames scores{suffix}", rtol=0, atol=limit)


__all__ = [
    "OUTPUTS_REL", "assert_device_path", "assert_predict", "case_id", "cases", "golden_folder", "load_release", "needs",
    "relative", "release_file",
]
