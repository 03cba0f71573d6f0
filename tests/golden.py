"""Shared helpers for golden parity tests: regenerate the official weights from a manifest.

The rule is in ../shared/golden/README.md; iterate the manifest (official order), never our own
modules, because each tensor's seed is its index there.
"""
from __future__ import annotations

import functools
import json
import math
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

# ../shared beside the checkout; POSEPIPE_SHARED where it travels elsewhere (infra/gpu/measure.sh).
SHARED = Path(os.environ.get("POSEPIPE_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
GOLDEN = SHARED / "golden"
MEDIA = SHARED / "media"
SPECIAL_HMR = {"init_pose": "mean_params/pose", "init_shape": "mean_params/shape", "init_cam": "mean_params/cam"}


def golden_dir(name: str) -> Path:
    path = GOLDEN / name
    if not path.is_dir():
        pytest.skip(f"golden vectors not present at {path}")
    return path


def golden_cases(name: str) -> list[Path]:
    """Every case_seed*.npz of a model (hidden cases dropped in later are picked up too)."""
    path = GOLDEN / name
    return sorted(path.glob("case_seed*.npz")) if path.is_dir() else []


def generate_state_dict(manifest_path: Path, case: dict) -> "OrderedDict[str, torch.Tensor]":
    manifest = json.loads(Path(manifest_path).read_text())
    seed = int(case["seed"])
    state: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for i, entry in enumerate(manifest):
        name, shape = entry["name"], tuple(entry["shape"])
        leaf = name.rsplit(".", 1)[-1]
        rng = np.random.default_rng([seed, i])
        if f"buffer/{name}" in case:  # constant buffers and the few leaves the rule does not name: as is
            state[name] = torch.from_numpy(np.ascontiguousarray(case[f"buffer/{name}"]).reshape(shape))
            continue
        if name in SPECIAL_HMR and SPECIAL_HMR[name] in case:
            value = np.asarray(case[SPECIAL_HMR[name]], dtype=np.float32).reshape(shape)
        elif leaf == "num_batches_tracked":
            state[name] = torch.tensor(0, dtype=torch.int64)
            continue
        elif leaf == "running_var":
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == "running_mean":
            value = rng.normal(0.0, 0.1, shape)
        elif len(shape) >= 2:
            value = rng.normal(0.0, 1.0, shape) * math.sqrt(1.0 / math.prod(shape[1:]))
        elif leaf == "weight":
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == "bias":
            value = rng.normal(0.0, 0.1, shape)
        else:
            raise AssertionError(f"no rule for manifest entry {name}")
        value = np.asarray(value).astype(np.float32)
        multiplier = f"weight_multiplier/{name}"
        if multiplier in case:
            value = value * np.float32(case[multiplier])
        state[name] = torch.from_numpy(np.ascontiguousarray(value))
    return state


def load_case(npz_path: Path) -> dict:
    with np.load(npz_path) as data:
        return {k: data[k] for k in data.files}


@functools.lru_cache(maxsize=None)
def case_and_state(manifest_path: Path, case_path: Path) -> tuple[dict, "OrderedDict[str, torch.Tensor]"]:
    """A case and its regenerated weights, once per session (the state dicts are large)."""
    case = load_case(case_path)
    return case, generate_state_dict(manifest_path, case)


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str, *, rtol: float, atol: float) -> None:
    """allclose with the shape checked first; a failure prints the largest difference and the new value."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol,
                               err_msg=f"{what}: max |diff| {diff.max(initial=0):.3g}, new value:\n{actual!r}")


def assert_official_outputs(name: str, predictor, case: dict) -> None:
    """A loaded catalogue model reproduces a golden case's official outputs end to end (public API only)."""
    if name == "yolox_s":
        dets = predictor.detect(case["image_bgr"], conf_threshold=float(case["conf_thre"]),
                                nms_threshold=float(case["nms_thre"]))
        ref = case["dets"]
        assert dets.shape == ref.shape, f"{name}: {dets.shape} detections vs {ref.shape}"
        np.testing.assert_array_equal(dets[:, 6], ref[:, 6])
        np.testing.assert_allclose(dets[:, :4], ref[:, :4], rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(dets[:, 4:6], ref[:, 4:6], atol=2e-5)
    elif name == "hrnet_w32_coco_256x192":
        keypoints, scores = predictor.predict(case["image_bgr"], case["bboxes_xywh"], flip_test=True)
        np.testing.assert_allclose(keypoints, case["keypoints"], atol=1e-3)
        assert np.abs(scores - case["scores"]).max() <= 1e-5 * np.abs(case["scores"]).max()
    elif name == "videopose3d_243_coco":
        assert predictor.receptive_field == 243
        pred = predictor.lift(case["keypoints_px"], width=int(case["width"]), height=int(case["height"]),
                              flip_augment=True)
        np.testing.assert_allclose(pred, case["pred_tta"], rtol=1e-4, atol=2e-5)
    elif name == "hmr_spin_resnet50":
        out = predictor.predict(case["image_bgr"], case["bbox_xyxy"][None])
        np.testing.assert_allclose(out["rotmat"], case["pred_rotmat"], atol=5e-5)
        np.testing.assert_allclose(out["betas"], case["pred_betas"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(out["camera"], case["pred_camera"], rtol=1e-4, atol=1e-4)
    elif name in TOPDOWN_TOLERANCES:
        assert_topdown_outputs(name, predictor, case)
    elif name == "simplebaseline3d_h36m":
        assert predictor.receptive_field == 1
        for n in range(case["keypoints_coco_px"].shape[1]):
            pred = predictor.lift(case["keypoints_coco_px"][:, n], width=int(case["width"]), height=int(case["height"]),
                                  flip_augment=False)
            assert_close(pred, case["keypoints_3d"][:, n], f"{name} keypoints_3d person {n}", rtol=1e-4, atol=2e-5)
    else:
        raise AssertionError(f"no end-to-end golden check for {name}")


# The mmpose 2D families' documented tolerances (their golden READMEs): keypoints atol in px, and
# scores either relative to max |raw output| or absolute.
TOPDOWN_TOLERANCES = {
    "rtmpose_m_coco_256x192": {"keypoints_atol": 1e-3, "scores_rel": 1e-4},
    "simplebaseline_res50_coco_256x192": {"keypoints_atol": 1e-3, "scores_rel": 2e-5},
    "rle_res50_coco_256x192": {"keypoints_atol": 2e-2, "scores_atol": 2e-6},
    # whole-body and animal skeletons (tests/models/golden_<name>/README.md)
    "rtmpose_m_coco_wholebody_256x192": {"keypoints_atol": 1e-3, "scores_rel": 1e-4},
    "rtmpose_m_ap10k_256x256": {"keypoints_atol": 1e-3, "scores_rel": 1e-4},
    "hrnet_w32_ap10k_256x256": {"keypoints_atol": 1e-3, "scores_rel": 2e-5},
}


def assert_topdown_outputs(name: str, predictor, case: dict) -> None:
    """`predict(image, boxes, flip_test=...)` gives the npz's keypoints/scores, with and without flip test."""
    tol = TOPDOWN_TOLERANCES[name]
    for flip, suffix in ((True, ""), (False, "_noflip")):
        keypoints, scores = predictor.predict(case["image_bgr"], case["bboxes_xywh"], flip_test=flip)
        ref_kps, ref_scores = case["keypoints" + suffix], case["scores" + suffix]
        assert keypoints.dtype == np.float32 and scores.dtype == np.float32
        assert_close(keypoints, ref_kps, f"{name} keypoints{suffix}", rtol=0, atol=tol["keypoints_atol"])
        if "scores_rel" in tol:
            limit = tol["scores_rel"] * float(np.abs(ref_scores).max())
        else:
            limit = tol["scores_atol"]
        assert_close(scores, ref_scores, f"{name} scores{suffix}", rtol=0, atol=limit)
