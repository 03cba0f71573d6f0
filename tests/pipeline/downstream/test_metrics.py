"""Pose metrics on hand-computed cases, and OKS / keypoint AP against pycocotools.

Cases are built from known pixel offsets, so each expected value is written out as arithmetic
next to the inputs that produce it.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from posepipe.models.skeletons import COCO17_SIGMAS
from posepipe.pipeline.downstream import metrics

K = 17


def skeleton2d(seed: int = 0, n: int = 2) -> np.ndarray:
    """(n, 17, 2) whole-pixel keypoints spread over a 100 x 200 px person (exact distances)."""
    rng = np.random.default_rng(seed)
    return rng.integers([100, 100], [200, 300], size=(n, K, 2)).astype(np.float64)


def skeleton3d(seed: int = 0, n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 0.3, size=(n, K, 3))


def rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


# --------------------------------------------------------------------------------------------
# Normalisers


def test_bbox_norm_is_the_longer_side():
    assert metrics.bbox_norm(np.array([[0, 0, 100, 50], [10, 20, 40, 100]])).tolist() == [100.0, 80.0]


def test_torso_norm_left_shoulder_to_right_hip_nan_when_unseen():
    gt = np.zeros((2, K, 2))
    gt[:, 5], gt[:, 12] = (0, 0), (30, 40)
    visible = np.ones((2, K), bool)
    visible[1, 12] = False
    size = metrics.torso_norm(gt, visible)
    assert size[0] == 50.0 and np.isnan(size[1])
    assert metrics.torso_norm(gt).tolist() == [50.0, 50.0]


def test_mpii_head_size_is_six_tenths_of_the_diagonal():
    assert metrics.mpii_head_size(np.array([[0, 0, 30, 40]])).tolist() == pytest.approx([30.0])


# --------------------------------------------------------------------------------------------
# PCK, PCKh, PDJ


def test_pck_known_offsets():
    gt = skeleton2d()
    pred = gt.copy()
    pred[0] += (6, 8)     # 10 px off: 10 / 100 = 0.1 < 0.2, correct
    pred[1] += (18, 24)   # 30 px off: 0.3, wrong
    visible = np.ones((2, K), bool)
    norm = metrics.bbox_norm(np.array([[0, 0, 100, 50], [0, 0, 50, 100]]))
    assert metrics.pck(pred, gt, visible, norm) == pytest.approx(0.5)
    assert metrics.pck(pred, gt, visible, norm, alpha=0.35) == pytest.approx(1.0)
    np.testing.assert_allclose(metrics.pck_per_joint(pred, gt, visible, norm), np.full(K, 0.5))


def test_pck_averages_joints_like_mmpose_and_pckh_pools_like_mpii():
    gt = skeleton2d()
    pred = gt.copy()
    pred[1] += (18, 24)   # sample 1 wrong everywhere (30 px vs 20 px)
    visible = np.ones((2, K), bool)
    visible[1, 0] = False  # joint 0 only counted in the correct sample
    norm = np.array([100.0, 100.0])
    per_joint = metrics.pck_per_joint(pred, gt, visible, norm)
    assert per_joint[0] == 1.0 and np.all(per_joint[1:] == 0.5)
    assert metrics.pck(pred, gt, visible, norm) == pytest.approx((1.0 + 16 * 0.5) / 17)
    # PCKh pools keypoints: 17 correct out of 33 counted. alpha 0.2 x head 100 = same 20 px limit.
    assert metrics.pckh(pred, gt, visible, norm, alpha=0.2) == pytest.approx(17 / 33)
    np.testing.assert_allclose(metrics.pckh_per_joint(pred, gt, visible, norm, alpha=0.2), per_joint)


def test_pck_threshold_is_strict():
    gt = skeleton2d(n=1)
    pred = gt + (12, 16)  # exactly 20 px = 0.2 x 100
    assert metrics.pck(pred, gt, np.ones((1, K), bool), np.array([100.0]), alpha=0.2) == 0.0


def test_pck_skips_unusable_samples_and_counts_nan_predictions_as_misses():
    gt = skeleton2d(n=3)
    pred = gt.copy()
    pred[1] = np.nan                      # an unmatched GT person: wrong, still counted
    norm = np.array([100.0, 100.0, 0.0])  # sample 2 has no size: not counted at all
    pred[2] += 1000
    visible = np.ones((3, K), bool)
    assert metrics.pck(pred, gt, visible, norm) == pytest.approx(0.5)
    assert np.isnan(metrics.pck(pred, gt, np.zeros((3, K), bool), norm))


def test_pckh_with_mpii_head_sizes():
    gt = skeleton2d(n=2)
    head = metrics.mpii_head_size(np.array([[0, 0, 30, 40], [0, 0, 60, 80]]))  # 30 px, 60 px
    pred = gt + (9, 12)   # 15 px: < 0.5 x 60 = 30 but not < 0.5 x 30 = 15
    assert metrics.pckh(pred, gt, np.ones((2, K), bool), head) == pytest.approx(0.5)


def test_pdj_against_torso_diameter():
    gt = skeleton2d(n=2)
    gt[:, 5], gt[:, 12] = (100, 100), (130, 140)   # torso diameter 50 px, limit 0.2 x 50 = 10 px
    visible = np.ones((2, K), bool)
    pred = gt.copy()
    pred[0] += (3, 4)    # 5 px: detected
    pred[1] += (9, 12)   # 15 px: missed
    torso = metrics.torso_norm(gt, visible)
    assert metrics.pdj(pred, gt, visible, torso) == pytest.approx(0.5)
    assert metrics.pdj(pred, gt, visible, torso, alpha=0.4) == pytest.approx(1.0)


def test_shape_errors_name_the_argument():
    gt = skeleton2d()
    with pytest.raises(ValueError, match="visible"):
        metrics.pck(gt, gt, np.ones((2, 5), bool), np.ones(2))
    with pytest.raises(ValueError, match="norm"):
        metrics.pck(gt, gt, np.ones((2, K), bool), np.ones(3))
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.pck(gt[:1], gt, np.ones((2, K), bool), np.ones(2))


# --------------------------------------------------------------------------------------------
# PCP


def _one_limb_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gt = np.zeros((1, 4, 2))
    gt[0] = [(0, 0), (100, 0), (0, 50), (0, 150)]   # limbs (0, 1) and (2, 3): length 100, limit 50 px
    pred = gt.copy()
    pred[0, 0] += (10, 0)    # limb (0, 1): endpoints 10 px and 60 px off
    pred[0, 1] += (0, 60)
    pred[0, 2] += (0, 40)    # limb (2, 3): both 40 px off
    pred[0, 3] += (40, 0)
    return pred, gt, np.ones((1, 4), bool)


def test_pcp_strict_needs_both_endpoints():
    pred, gt, visible = _one_limb_case()
    limbs = [(0, 1), (2, 3)]
    assert metrics.pcp(pred, gt, visible, limbs) == pytest.approx(0.5)
    np.testing.assert_allclose(metrics.pcp_per_limb(pred, gt, visible, limbs), [0.0, 1.0])


def test_pcp_average_uses_mean_endpoint_error():
    pred, gt, visible = _one_limb_case()
    # (10 + 60) / 2 = 35 < 50: correct under the looser convention
    assert metrics.pcp(pred, gt, visible, [(0, 1), (2, 3)], mode="average") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="mode"):
        metrics.pcp(pred, gt, visible, [(0, 1)], mode="loose")


def test_pcp_skips_limbs_with_an_unseen_endpoint():
    pred, gt, visible = _one_limb_case()
    visible[0, 1] = False
    assert metrics.pcp(pred, gt, visible, [(0, 1), (2, 3)]) == pytest.approx(1.0)
    assert np.isnan(metrics.pcp_per_limb(pred, gt, visible, [(0, 1), (2, 3)])[0])


def test_pcp_default_limbs_are_coco_arms_and_legs():
    gt = skeleton2d()
    assert len(metrics.COCO17_PCP_LIMBS) == len(metrics.COCO17_PCP_LIMB_NAMES) == 8
    assert metrics.pcp(gt, gt, np.ones((2, K), bool)) == 1.0


# --------------------------------------------------------------------------------------------
# 3D


def test_mpjpe_known_offset():
    gt = skeleton3d()
    assert metrics.mpjpe(gt + (0.03, 0.04, 0.0), gt) == pytest.approx(0.05)


def test_p_mpjpe_ignores_similarity_transforms():
    gt = skeleton3d()
    pred = np.stack([1.7 * gt[i] @ rotation(i).T + (0.5, -0.2, 3.0) for i in range(len(gt))])
    assert metrics.mpjpe(pred, gt) > 0.1
    assert metrics.p_mpjpe(pred, gt) == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(metrics.procrustes_align(pred, gt), gt, atol=1e-9)


def test_p_mpjpe_does_not_undo_a_reflection():
    gt = skeleton3d()
    mirrored = gt * (-1.0, 1.0, 1.0)
    assert metrics.p_mpjpe(mirrored, gt) > 0.05
    aligned = metrics.procrustes_align(mirrored, gt)
    assert metrics.mpjpe(aligned, gt) == pytest.approx(metrics.p_mpjpe(mirrored, gt))


def _umeyama(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Independent similarity fit (Umeyama 1991) of one (J, 3) sample, for the cross-check."""
    mp, mg = pred.mean(0), gt.mean(0)
    p, g = pred - mp, gt - mg
    u, s, vt = np.linalg.svd(g.T @ p / len(p))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    r = u @ d @ vt
    c = np.trace(np.diag(s) @ d) / (p ** 2).sum(1).mean()
    return c * p @ r.T + mg


def test_p_mpjpe_matches_an_independent_similarity_fit_on_noisy_data():
    gt = skeleton3d(seed=1)
    rng = np.random.default_rng(2)
    pred = np.stack([0.8 * gt[i] @ rotation(10 + i).T for i in range(len(gt))]) + rng.normal(0, 0.05, gt.shape)
    pred[0] *= (-1.0, 1.0, 1.0)  # one sample whose best orthogonal fit is a reflection
    expected = np.mean([np.linalg.norm(_umeyama(p, g) - g, axis=-1).mean() for p, g in zip(pred, gt)])
    assert metrics.p_mpjpe(pred, gt) == pytest.approx(expected, rel=1e-9)


def test_n_mpjpe_removes_scale_only():
    gt = skeleton3d()
    assert metrics.n_mpjpe(0.5 * gt, gt) == pytest.approx(0.0, abs=1e-12)
    assert metrics.mpjpe(0.5 * gt, gt) > 0.05
    rotated = np.stack([g @ rotation(3).T for g in gt])
    assert metrics.n_mpjpe(rotated, gt) > 0.05


def test_3d_metrics_accept_extra_leading_dims():
    gt = skeleton3d(n=6).reshape(2, 3, K, 3)
    assert metrics.mpjpe(gt + (0.0, 0.0, 0.01), gt) == pytest.approx(0.01)
    assert metrics.p_mpjpe(2 * gt, gt) == pytest.approx(0.0, abs=1e-9)
    assert metrics.procrustes_align(2 * gt, gt).shape == gt.shape


# --------------------------------------------------------------------------------------------
# COCO: OKS and keypoint AP against pycocotools


def coco_person(xy: np.ndarray, visible: np.ndarray, image_id: int, ann_id: int) -> dict:
    x0, y0 = xy[visible].min(0) if visible.any() else (0.0, 0.0)
    x1, y1 = xy[visible].max(0) if visible.any() else (1.0, 1.0)
    flags = np.where(visible, 2, 0)
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            "area": float((x1 - x0) * (y1 - y0)), "num_keypoints": int(visible.sum()),
            "keypoints": [float(v) for v in np.column_stack([xy, flags]).reshape(-1)]}


def coco_gt(people: np.ndarray, visible: np.ndarray, per_image: int = 2) -> dict:
    annotations = [coco_person(p, v, 1 + i // per_image, i + 1) for i, (p, v) in enumerate(zip(people, visible))]
    images = [{"id": i, "width": 640, "height": 480} for i in sorted({a["image_id"] for a in annotations})]
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}


def coco_results(people: np.ndarray, gt: dict, scores: np.ndarray) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": 1, "score": float(s),
             "keypoints": [float(v) for v in np.column_stack([p, np.ones(K)]).reshape(-1)]}
            for p, a, s in zip(people, gt["annotations"], scores)]


def test_oks_matches_pycocotools():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(7)
    people = skeleton2d(seed=3, n=2)
    visible = rng.random((2, K)) > 0.3
    gt = coco_gt(people, visible, per_image=2)
    dets = people[[0, 1, 0, 1]] + rng.normal(0, 6, (4, K, 2))
    results = coco_results(dets, {"annotations": gt["annotations"] * 2}, np.array([0.9, 0.8, 0.7, 0.6]))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), iouType="keypoints")
        evaluator.evaluate()
    reference = evaluator.ious[(1, 1)]   # (dets sorted by score, gts)
    gt_xyv = np.array([a["keypoints"] for a in gt["annotations"]]).reshape(2, K, 3)
    area = np.array([a["area"] for a in gt["annotations"]])
    ours = metrics.oks(dets[:, None], gt_xyv[None], area[None])
    np.testing.assert_allclose(ours, reference, rtol=1e-12)
    same = metrics.oks(dets[:, None], gt_xyv[None, ..., :2], area[None], COCO17_SIGMAS, visible=gt_xyv[None, ..., 2] > 0)
    np.testing.assert_allclose(same, reference, rtol=1e-12)


def test_oks_is_one_for_a_perfect_match_and_nan_without_labels():
    gt = skeleton2d(n=1)[0]
    assert metrics.oks(gt, gt, 5000.0, visible=np.ones(K, bool)) == pytest.approx(1.0)
    assert np.isnan(metrics.oks(gt, gt, 5000.0, visible=np.zeros(K, bool)))


def test_coco_keypoint_ap_perfect_then_perturbed():
    people = skeleton2d(seed=5, n=6)
    visible = np.ones((6, K), bool)
    gt = coco_gt(people, visible)
    scores = np.linspace(0.9, 0.4, 6)
    perfect = metrics.coco_keypoint_ap(gt, coco_results(people, gt, scores))
    assert set(perfect) == set(metrics.COCO_KEYPOINT_STATS)
    assert perfect["AP"] == pytest.approx(1.0) and perfect["AR"] == pytest.approx(1.0)
    assert np.isnan(perfect["APm"])   # every GT is large: COCOeval's -1 comes back as NaN
    noisy = people + np.random.default_rng(0).normal(0, 12, people.shape)
    perturbed = metrics.coco_keypoint_ap(gt, coco_results(noisy, gt, scores))
    assert 0.0 < perturbed["AP"] < 1.0


def test_coco_keypoint_ap_fills_minimal_gt_and_takes_no_predictions(tmp_path):
    import json

    people = skeleton2d(seed=5, n=2)
    gt = coco_gt(people, np.ones((2, K), bool))
    for ann in gt["annotations"]:
        for field in ("id", "category_id", "iscrowd", "area", "num_keypoints"):
            ann.pop(field)
    del gt["categories"]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    assert metrics.coco_keypoint_ap(path, coco_results(people, gt, np.ones(2)))["AP"] == pytest.approx(1.0)
    assert metrics.coco_keypoint_ap(gt, [])["AP"] == 0.0
    assert "id" not in gt["annotations"][0]   # the caller's dict is left alone


# --------------------------------------------------------------------------------------------
# Matching


def test_match_persons_pairs_by_iou_and_drops_weak_pairs():
    gt = np.array([[0, 0, 100, 200], [300, 0, 400, 200]], float)
    pred = np.array([[305, 5, 405, 205], [500, 0, 600, 200], [2, 0, 100, 190]], float)
    pairs = metrics.match_persons(pred, gt, min_iou=0.5)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1), (2, 0)]
    assert metrics.match_persons(pred, gt[:0]).shape == (0, 2)
