"""Pose accuracy metrics on plain numpy arrays: 2D (PCK, PCKh, PCP, PDJ, OKS, COCO AP) and 3D (MPJPE).

Every function takes dense arrays and returns Python floats (or per-joint numpy arrays); nothing
here reads files. ``pipeline/downstream/evaluation.py`` matches ``poses/`` rows to ground truth and calls these.

Conventions, chosen to agree with the reference each metric is usually quoted from:

* PCK (mmpose ``keypoint_pck_accuracy``): a keypoint is correct when
  ``|pred - gt| / norm < alpha``; the result is the mean of the per-joint accuracies.
* PCKh (MPII): the same test with ``norm`` = head size; the result is pooled over all keypoints
  (correct / counted), i.e. joints weighted by their GT count, as MPII's total is.
* PDJ (DeepPose, Toshev & Szegedy 2014): the same test with ``norm`` = torso diameter, pooled.
* PCP, pooled over limbs. "strict PCP" (default; Ferrari et al. 2008): a limb is correct when
  *each* predicted endpoint is within ``alpha`` x the GT limb length of its GT endpoint. The
  looser "average" variant (``mode="average"``): the mean of the two endpoint errors is within it.
* A keypoint takes part only where ``visible`` is true, its GT is finite and its sample's
  normaliser is finite and > 0 (mmpose drops samples with a zero normaliser the same way). A
  limb takes part only when both GT endpoints do and its GT length is > 0.
* A NaN prediction (e.g. a GT person no prediction was matched to) takes part and is wrong.
* Thresholds are strict (``<``), as in mmpose. Nothing to evaluate gives NaN, not 0.

3D errors follow VideoPose3D ``common/loss.py``: MPJPE is the mean Euclidean joint distance
("protocol #1"); P-MPJPE aligns each sample to its GT with the similarity transform (scale,
rotation, translation) that minimises the squared error, with reflections excluded ("protocol
#2"); N-MPJPE rescales each sample by the least-squares scale only. All are in the input's units
(metres in ``poses/``); the caller centres both on the root joint first if it wants root-relative
errors.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
from os import PathLike
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from posepipe.models.skeletons import COCO17_SIGMAS
from posepipe.pipeline.temporal.tracking import iou_matrix, linear_assignment

# Limb segments of COCO-17 for PCP, as (joint a, joint b). COCO has no head-top or neck
# keypoints, so the classic head and torso "parts" are left out: these are the 8 limbs.
COCO17_PCP_LIMB_NAMES: tuple[str, ...] = (
    "left_upper_arm", "right_upper_arm", "left_lower_arm", "right_lower_arm",
    "left_upper_leg", "right_upper_leg", "left_lower_leg", "right_lower_leg",
)
COCO17_PCP_LIMBS: tuple[tuple[int, int], ...] = (
    (5, 7), (6, 8), (7, 9), (8, 10), (11, 13), (12, 14), (13, 15), (14, 16),
)
COCO17_LEFT_SHOULDER = 5
COCO17_RIGHT_HIP = 12

COCO_KEYPOINT_STATS: tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


# --------------------------------------------------------------------------------------------
# Shapes


def _points(name: str, value: np.ndarray, dims: int | None = None) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 3 or (dims is not None and array.shape[2] != dims):
        want = f"(N, K, {dims})" if dims else "(N, K, D)"
        raise ValueError(f"{name} must have shape {want}, got {array.shape}")
    return array


def _same_shape(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {pred.shape} vs {gt.shape}")


def _mask(name: str, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(value, dtype=bool)
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    return array


def _per_sample(name: str, value: np.ndarray | float, n: int) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    array = np.full(n, float(array)) if array.ndim == 0 else array
    if array.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {array.shape}")
    return array


# --------------------------------------------------------------------------------------------
# Normalisers


def bbox_norm(gt_bboxes_xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) GT boxes x1, y1, x2, y2 -> (N,) longer box side, mmpose's PCK ``bbox`` normaliser."""
    boxes = np.asarray(gt_bboxes_xyxy, dtype=np.float64).reshape(-1, 4)
    return np.max(boxes[:, 2:] - boxes[:, :2], axis=1)


def torso_norm(gt: np.ndarray, visible: np.ndarray | None = None, *,
               left_shoulder: int = COCO17_LEFT_SHOULDER, right_hip: int = COCO17_RIGHT_HIP) -> np.ndarray:
    """(N, K, 2) GT keypoints -> (N,) torso diameter: distance from left shoulder to right hip.

    This is DeepPose's torso diameter, with the COCO-17 joint indices by default (5, 12). Where
    either joint is not visible the result is NaN, so the sample takes no part in the metric
    (mmpose instead falls back to the predicted torso, which lets the prediction grade itself).
    """
    points = _points("gt", gt)
    size = np.linalg.norm(points[:, left_shoulder] - points[:, right_hip], axis=-1)
    if visible is not None:
        seen = _mask("visible", visible, points.shape[:2])
        size = np.where(seen[:, left_shoulder] & seen[:, right_hip], size, np.nan)
    return size


def mpii_head_size(head_boxes_xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) head boxes -> (N,) MPII head segment length: 0.6 x the box diagonal."""
    boxes = np.asarray(head_boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    return 0.6 * np.linalg.norm(boxes[:, 2:] - boxes[:, :2], axis=1)


# --------------------------------------------------------------------------------------------
# Keypoint thresholds: PCK, PCKh, PDJ


def _correct(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, norm: np.ndarray | float,
             alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(correct (N, K), counted (N, K)): which keypoints count and which of those are right."""
    pred, gt = _points("pred", pred), _points("gt", gt)
    _same_shape(pred, gt)
    n, k = gt.shape[:2]
    seen = _mask("visible", visible, (n, k))
    scale = _per_sample("norm", norm, n)
    usable = np.isfinite(scale) & (scale > 0)
    counted = seen & usable[:, None] & np.isfinite(gt).all(axis=-1)
    safe = np.where(usable, scale, 1.0)
    with np.errstate(invalid="ignore"):
        distance = np.linalg.norm(pred - gt, axis=-1) / safe[:, None]
        correct = counted & (distance < alpha)  # NaN predictions compare False: a miss
    return correct, counted


def _ratio(correct: np.ndarray, counted: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    hits = correct.sum(axis=axis, dtype=np.float64)
    total = counted.sum(axis=axis, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(total > 0, hits / np.where(total > 0, total, 1.0), np.nan)
    return float(ratio) if axis is None else ratio


def pck_per_joint(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, norm: np.ndarray,
                  alpha: float = 0.2) -> np.ndarray:
    """(K,) fraction of each joint's counted keypoints within ``alpha * norm``; NaN if none counted."""
    return _ratio(*_correct(pred, gt, visible, norm, alpha), axis=0)


def pck(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, norm: np.ndarray, alpha: float = 0.2) -> float:
    """Percentage of correct keypoints, mmpose style: the mean of the per-joint accuracies.

    pred, gt: (N, K, 2); visible: (N, K) bool; norm: (N,) per-sample size, e.g. ``bbox_norm``
    or ``torso_norm``. Joints with nothing counted are left out of the mean.
    """
    per_joint = pck_per_joint(pred, gt, visible, norm, alpha)
    return float(np.nanmean(per_joint)) if np.isfinite(per_joint).any() else float("nan")


def pckh_per_joint(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, head_sizes: np.ndarray,
                   alpha: float = 0.5) -> np.ndarray:
    """(K,) PCKh of each joint; ``head_sizes`` (N,) as ``mpii_head_size`` computes them."""
    return _ratio(*_correct(pred, gt, visible, head_sizes, alpha), axis=0)


def pckh(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, head_sizes: np.ndarray,
         alpha: float = 0.5) -> float:
    """PCKh@alpha, MPII style: correct keypoints / counted keypoints over all joints (pooled)."""
    return _ratio(*_correct(pred, gt, visible, head_sizes, alpha))


def pdj(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, torso_diameter: np.ndarray,
        alpha: float = 0.2) -> float:
    """Percent of detected joints (DeepPose): within ``alpha`` x torso diameter, pooled over joints."""
    return _ratio(*_correct(pred, gt, visible, torso_diameter, alpha))


# --------------------------------------------------------------------------------------------
# Limbs: PCP


def _limbs_correct(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, limbs: Sequence[tuple[int, int]],
                   alpha: float, mode: str) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = _points("pred", pred), _points("gt", gt)
    _same_shape(pred, gt)
    seen = _mask("visible", visible, gt.shape[:2]) & np.isfinite(gt).all(axis=-1)
    pairs = np.asarray(limbs, dtype=np.int64).reshape(-1, 2)
    a, b = pairs[:, 0], pairs[:, 1]
    length = np.linalg.norm(gt[:, a] - gt[:, b], axis=-1)                           # (N, L)
    counted = seen[:, a] & seen[:, b] & (length > 0)
    error_a = np.linalg.norm(pred[:, a] - gt[:, a], axis=-1)
    error_b = np.linalg.norm(pred[:, b] - gt[:, b], axis=-1)
    limit = alpha * length
    with np.errstate(invalid="ignore"):
        if mode == "strict":
            hit = (error_a < limit) & (error_b < limit)
        elif mode == "average":
            hit = (error_a + error_b) / 2 < limit
        else:
            raise ValueError(f"mode must be 'strict' or 'average', got {mode!r}")
    return counted & hit, counted


def pcp_per_limb(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray,
                 limbs: Sequence[tuple[int, int]] = COCO17_PCP_LIMBS, alpha: float = 0.5,
                 mode: Literal["strict", "average"] = "strict") -> np.ndarray:
    """(L,) PCP of each limb (see ``pcp``); NaN for a limb never counted."""
    return _ratio(*_limbs_correct(pred, gt, visible, limbs, alpha, mode), axis=0)


def pcp(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray,
        limbs: Sequence[tuple[int, int]] = COCO17_PCP_LIMBS, alpha: float = 0.5,
        mode: Literal["strict", "average"] = "strict") -> float:
    """Percentage of correct parts, pooled over all counted limbs.

    ``mode="strict"`` (default, Ferrari et al.): a limb is correct when *each* predicted endpoint
    is within ``alpha`` x the GT limb length of its GT endpoint. ``mode="average"`` (the looser
    variant some papers report as PCP): the mean of the two endpoint errors is within it.
    """
    return _ratio(*_limbs_correct(pred, gt, visible, limbs, alpha, mode))


# --------------------------------------------------------------------------------------------
# 3D joint errors


def _joints3d(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    _same_shape(pred, gt)
    if pred.ndim < 2:
        raise ValueError(f"pred and gt must be (..., J, D), got {pred.shape}")
    return pred.reshape(-1, *pred.shape[-2:]), gt.reshape(-1, *gt.shape[-2:])


def mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean per-joint position error over (..., J, 3) arrays, in the input units."""
    pred, gt = _joints3d(pred, gt)
    return float(np.mean(np.linalg.norm(pred - gt, axis=-1)))


def procrustes_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Each (J, D) sample of ``pred`` after the similarity transform that best fits it to ``gt``.

    Least-squares scale, rotation and translation (orthogonal Procrustes via SVD, as
    VideoPose3D's ``p_mpjpe``); when the best orthogonal map is a reflection, the last singular
    direction is flipped so the result is a proper rotation. A sample whose joints all coincide
    collapses to the GT centroid.
    """
    shape = np.shape(pred)
    pred, gt = _joints3d(pred, gt)
    mu_gt = gt.mean(axis=1, keepdims=True)
    mu_pred = pred.mean(axis=1, keepdims=True)
    x0, y0 = gt - mu_gt, pred - mu_pred
    norm_x = np.sqrt(np.sum(x0 ** 2, axis=(1, 2), keepdims=True))
    norm_y = np.sqrt(np.sum(y0 ** 2, axis=(1, 2), keepdims=True))
    x0 = x0 / np.where(norm_x > 0, norm_x, 1.0)
    y0 = y0 / np.where(norm_y > 0, norm_y, 1.0)
    u, s, vt = np.linalg.svd(np.matmul(x0.transpose(0, 2, 1), y0))
    v = vt.transpose(0, 2, 1)
    sign = np.sign(np.linalg.det(np.matmul(v, u.transpose(0, 2, 1))))
    v[:, :, -1] *= sign[:, None]
    s[:, -1] *= sign
    rotation = np.matmul(v, u.transpose(0, 2, 1))
    scale = s.sum(axis=1)[:, None, None] * norm_x / np.where(norm_y > 0, norm_y, np.inf)
    aligned = scale * np.matmul(pred - mu_pred, rotation) + mu_gt
    return aligned.reshape(shape)


def p_mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    """MPJPE after per-sample Procrustes alignment with scale (``procrustes_align``), protocol #2."""
    return mpjpe(procrustes_align(pred, gt), gt)


def n_mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    """MPJPE after rescaling each (J, 3) sample by ``<gt, pred> / <pred, pred>`` (scale only)."""
    pred, gt = _joints3d(pred, gt)
    num = np.sum(gt * pred, axis=(1, 2), keepdims=True)
    den = np.sum(pred * pred, axis=(1, 2), keepdims=True)
    scale = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return mpjpe(scale * pred, gt)


# --------------------------------------------------------------------------------------------
# COCO: OKS and keypoint AP


def oks(pred: np.ndarray, gt: np.ndarray, area: np.ndarray | float,
        sigmas: Sequence[float] = COCO17_SIGMAS, visible: np.ndarray | None = None) -> np.ndarray:
    """Object keypoint similarity of (..., K, 2) predictions to (..., K, 2 or 3) GT, broadcasting.

    As pycocotools ``COCOeval.computeOks``: mean over labelled GT keypoints of
    ``exp(-d^2 / (2 * (area + eps) * (2 * sigma)^2))``. ``sigmas`` are the per-keypoint values
    as stored in ``models.skeletons`` (0.026 for the nose; pycocotools' table divided by 10).
    Labelled means ``visible`` or, by default, COCO's flag v > 0 in ``gt[..., 2]``. A GT with
    no labelled keypoint gives NaN: pycocotools scores it against its box instead, but
    ``COCOeval`` ignores such GTs.
    """
    pred = np.asarray(pred, dtype=np.float64)[..., :2]
    gt = np.asarray(gt, dtype=np.float64)
    if visible is None:
        if gt.shape[-1] != 3:
            raise ValueError("pass visible=, or gt as (..., K, 3) with COCO's v flag last")
        visible = gt[..., 2] > 0
    labelled = np.asarray(visible, dtype=bool)
    var = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2
    area = np.asarray(area, dtype=np.float64)[..., None]
    d2 = np.sum((pred - gt[..., :2]) ** 2, axis=-1)
    similarity = np.exp(-d2 / var / (area + np.spacing(1)) / 2)
    count = labelled.sum(axis=-1)
    total = np.sum(np.where(labelled, similarity, 0.0), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _complete_coco_gt(dataset: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a COCO keypoints GT with the fields COCOeval needs but small GT files omit."""
    data = copy.deepcopy(dict(dataset))
    data.setdefault("categories", [{"id": 1, "name": "person"}])
    categories = data["categories"]
    person = next((c["id"] for c in categories if c.get("name") == "person"), categories[0]["id"] if categories else 1)
    for i, ann in enumerate(data.get("annotations", [])):
        ann.setdefault("id", i + 1)
        ann.setdefault("category_id", person)
        ann.setdefault("iscrowd", 0)
        if "num_keypoints" not in ann:
            ann["num_keypoints"] = int(np.count_nonzero(np.asarray(ann["keypoints"])[2::3] > 0))
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
    return data


EVAL_EXTRA_INSTALL = "pip install 'posepipe[eval]'"


class MissingDependencyError(ImportError):
    """A metric needs an optional package that is not installed or does not import; the message says
    which and the command that installs it."""


def pycocotools_problem() -> str | None:
    """None when pycocotools (COCO AP's reference implementation) imports; otherwise what is wrong
    with it and the fix, in words. The other metrics never need it."""
    try:
        import pycocotools.coco  # noqa: F401
        import pycocotools.cocoeval  # noqa: F401
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == "pycocotools" or missing.startswith("pycocotools."):
            return f"COCO AP (--metric coco-ap) needs pycocotools, which is not installed; install it with {EVAL_EXTRA_INSTALL}"
        return (f"COCO AP (--metric coco-ap) needs pycocotools, which is installed but needs the module {missing!r}; "
                f"install it (pip install {missing.split('.')[0]}) or reinstall with {EVAL_EXTRA_INSTALL}")
    except Exception as exc:  # noqa: BLE001 - a broken build: e.g. compiled against another NumPy
        return (f"COCO AP (--metric coco-ap) needs pycocotools, which is installed but does not import "
                f"({type(exc).__name__}: {exc}); reinstall it: pip install --force-reinstall --no-cache-dir pycocotools")
    return None


def coco_keypoint_ap(gt_coco_json: Mapping[str, Any] | str | PathLike[str],
                     predictions: Sequence[Mapping[str, Any]],
                     sigmas: Sequence[float] = COCO17_SIGMAS) -> dict[str, float]:
    """COCO keypoint AP/AR through pycocotools ``COCOeval(iouType="keypoints")``.

    ``gt_coco_json``: a COCO keypoints dataset (dict or path). Missing ``categories`` (person,
    id 1), annotation ``id``, ``category_id`` (the person category), ``iscrowd`` (0),
    ``num_keypoints`` (count of v > 0) and ``area`` (bbox w x h; COCO's own GT uses the
    segmentation area) are filled in on a copy.
    ``predictions``: COCO results, each ``{"image_id", "category_id", "keypoints": [x, y, s] x K,
    "score"}``. Returns ``COCO_KEYPOINT_STATS`` as floats; NaN where COCOeval reports -1 (no GT
    in that area range). pycocotools' progress prints are swallowed. `MissingDependencyError` if
    pycocotools is not installed or does not import.
    """
    problem = pycocotools_problem()
    if problem is not None:
        raise MissingDependencyError(problem)
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if isinstance(gt_coco_json, Mapping):
        dataset = gt_coco_json
    else:
        with open(gt_coco_json, encoding="utf-8") as f:
            dataset = json.load(f)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = _complete_coco_gt(dataset)
        gt.createIndex()
        if predictions:
            dt = gt.loadRes(copy.deepcopy(list(predictions)))  # loadRes writes area/bbox/id into them
        else:  # loadRes cannot take an empty list; no detections is AP 0 where there is GT
            dt = COCO()
            dt.dataset = {"images": gt.dataset.get("images", []), "categories": gt.dataset["categories"],
                          "annotations": []}
            dt.createIndex()
        evaluator = COCOeval(gt, dt, iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: (float(v) if v >= 0 else float("nan")) for name, v in zip(COCO_KEYPOINT_STATS, evaluator.stats)}


# --------------------------------------------------------------------------------------------
# Matching predictions to GT persons


def match_persons(pred_boxes_xyxy: np.ndarray, gt_boxes_xyxy: np.ndarray,
                  min_iou: float = 0.5) -> np.ndarray:
    """(M, 2) [pred row, gt row] pairs: the Hungarian matching on box IoU that maximises the
    total margin above ``min_iou``; pairs with IoU below ``min_iou`` are never made."""
    iou = iou_matrix(pred_boxes_xyxy, gt_boxes_xyxy)
    matches, _, _ = linear_assignment(1.0 - iou, threshold=1.0 - min_iou)
    return matches
