"""Shared by tests/models/test_wholebody.py and test_ap10k.py: the golden cases made by
mmpose_skeletons_reference.py (tests/models/golden_<name>/), each model loaded by ``load_model`` from a file
laid out as mmpose published it, and the comparisons their README documents."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from posepipe.models import get_weights, load_model
from tests.golden import assert_close, generate_state_dict, load_case
from tests.models.mmpose_files import mmpose_0x, mmpose_1x_2023

HERE = Path(__file__).resolve().parent

# The documented tolerances (golden_<name>/README.md): keypoints atol in image px; raw outputs and scores
# relative to the largest reference value.
TOLERANCES = {
    "rtmpose_m_coco_wholebody_256x192": {"keypoints_atol": 1e-3, "outputs_rel": 1e-4, "scores_rel": 1e-4},
    "rtmpose_m_ap10k_256x256": {"keypoints_atol": 1e-3, "outputs_rel": 1e-4, "scores_rel": 1e-4},
    "hrnet_w32_ap10k_256x256": {"keypoints_atol": 1e-3, "outputs_rel": 2e-5, "scores_rel": 2e-5},
}


def golden_folder(name: str) -> Path:
    return HERE / f"golden_{name}"


def cases(name: str) -> list[Path]:
    """Every case_seed*.npz of a model (cases made later with another seed are picked up too)."""
    return sorted(golden_folder(name).glob("case_seed*.npz"))


def release_file(name: str, case: dict, folder: Path) -> Path:
    """The case's weights (the golden rule, the case's seed) in the official file's container: mmpose 1.x
    (2023, EMA entries beside the state dict) for RTMPose, mmpose 0.x (2021, keypoint_head.*) for HRNet."""
    state = generate_state_dict(golden_folder(name) / "manifest.json", case)
    path = folder / get_weights(name).filename
    if name.startswith("hrnet"):
        return mmpose_0x(state, path, year=2021)
    return mmpose_1x_2023(state, path)


def load_release(name: str, case_path: Path, folder: Path):
    """(case, predictor loaded by load_model from the release file, the file)."""
    case = load_case(case_path)
    path = release_file(name, case, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a genuine release loads without a warning
        predictor = load_model(name, weights=path)
    return case, predictor, path


def relative(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out.astype(np.float64) - ref).max() / np.abs(ref).max())


def assert_predict(name: str, predictor, case: dict) -> None:
    """`predict(image_bgr, bboxes_xywh, flip_test=...)` gives mmpose's keypoints and scores, both modes."""
    tol = TOLERANCES[name]
    for flip, suffix in ((True, ""), (False, "_noflip")):
        keypoints, scores = predictor.predict(case["image_bgr"], case["bboxes_xywh"], flip_test=flip)
        assert keypoints.dtype == np.float32 and scores.dtype == np.float32
        assert_close(keypoints, case["keypoints" + suffix], f"{name} keypoints{suffix}", rtol=0,
                     atol=tol["keypoints_atol"])
        limit = tol["scores_rel"] * float(np.abs(case["scores" + suffix]).max())
        assert_close(scores, case["scores" + suffix], f"{name} scores{suffix}", rtol=0, atol=limit)


def assert_device_path(name: str, predictor, case: dict) -> None:
    """`predict_frames` (the pipeline's device path, here on the CPU) gives `predict`'s keypoints and scores."""
    image = torch.from_numpy(case["image_bgr"])[None]
    boxes = torch.from_numpy(case["bboxes_xywh"])
    frame_of_box = torch.zeros(len(boxes), dtype=torch.long)
    for flip in (True, False):
        ref_kps, ref_scores = predictor.predict(case["image_bgr"], case["bboxes_xywh"], flip_test=flip)
        out = predictor.predict_frames(image, frame_of_box, boxes, flip_test=flip)
        assert out.keypoints.shape == ref_kps.shape and not bool(out.overflow)
        assert_close(out.keypoints.numpy(), ref_kps, f"{name} predict_frames keypoints", rtol=0,
                     atol=TOLERANCES[name]["keypoints_atol"])
        limit = TOLERANCES[name]["scores_rel"] * float(np.abs(ref_scores).max())
        assert_close(out.scores.numpy(), ref_scores, f"{name} predict_frames scores", rtol=0, atol=limit)


__all__ = [
    "TOLERANCES", "assert_device_path", "assert_predict", "cases", "golden_folder", "load_release", "relative",
    "release_file",
]
