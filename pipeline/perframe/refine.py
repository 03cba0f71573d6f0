"""`--refine smplify`: each posed person's SMPL fitted to its own 2D keypoints, from HMR's estimate (SPIN).

The model worker runs it on the rows of a shard (both per-frame paths' rows, and the boxes tracking
kept that a shard did not pose), batched over the shard's persons on the worker's device
(models/smplify.py). The fit happens where HMR made its estimate: in HMR's 224 px crop of the
person's box (the square of side max(w, h) around the box centre, `pipeline.downstream.camera`), with
SPIN's focal length of 5000 px, the camera at the crop's centre, and the translation SPIN derives
from HMR's weak-perspective camera. COCO's 17 keypoints go where SPIN's demo puts OpenPose's (scores
below 0, Associative Embedding's joints filled in by tag, weigh nothing).

Written per row (pipeline.io.schema): the fitted axis-angle pose and betas, the fitted camera as the same
weak-perspective [s, tx, ty] of the same crop as HMR's ``smpl_camera`` (so everything downstream places
it as it places HMR's), and the reprojection error before (HMR's parameters) and after (the fit's):
the score-weighted mean distance, in pixels of the frame, between the 2D keypoints and the model's
joints they stand for, over the 15 keypoints the fit uses (SMPLify leaves the hips out: SMPL's hip
joints sit inside the body, not where a 2D model marks a hip).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from posepipe.pipeline.perframe.shards import REFINED_COLUMNS

CHUNK = 512   # persons per SMPLify batch: memory stays small, the per-step overhead is shared


class SMPLifyRefiner:
    """Holds SMPLify (the user's SMPL model and GMM prior) on one device."""

    def __init__(self, options: Any, device: Any = "cpu") -> None:
        from posepipe.models.smpl import load_smpl
        from posepipe.models.smplify import SMPLify, read_gmm_prior

        smpl = load_smpl(options.smpl_model, device=device)
        prior = read_gmm_prior(options.smpl_prior)
        want = options.refine_files()
        got = {"smpl_model_sha256": smpl.sha256, "smpl_prior_sha256": prior.sha256}
        if want != got:  # a cluster whose workers see other files at the same paths: refuse, never mix fits
            raise RuntimeError(f"the SMPL files this worker reads ({got}) are not the ones the job checked ({want}); "
                               "give every worker the same --smpl-model and --smpl-prior files")
        self.smplify = SMPLify(smpl, prior, options.smplify_options(), device=device)

    def refine(self, rows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """REFINED_COLUMNS for `rows` (bbox_xyxy, keypoints_2d, keypoint_scores and HMR's smpl_* columns)."""
        import torch

        from posepipe.models.smplify import (
            COCO17_TO_OPENPOSE, SPIN_CROP, SPIN_JOINT_NAMES, coco17_to_spin49, project, translation_from_weak_perspective,
            weak_perspective_from_translation,
        )

        n = len(rows["bbox_xyxy"])
        out = {c: np.full((n, *shape), np.nan, np.float32) for c, shape in REFINED_COLUMNS.items()}
        boxes = np.asarray(rows["bbox_xyxy"], np.float64).reshape(n, 4)
        side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        center = (boxes[:, :2] + boxes[:, 2:]) / 2
        camera = np.asarray(rows["smpl_camera"], np.float64).reshape(n, 3)
        pose = np.concatenate([np.asarray(rows["smpl_global_orient"]).reshape(n, 3),
                               np.asarray(rows["smpl_body_pose"]).reshape(n, 69)], axis=1)
        betas = np.asarray(rows["smpl_betas"]).reshape(n, 10)
        # HMR's camera must put the person in front of the lens (a positive scale; only random weights give
        # another), and its numbers must be finite: other rows stay unrefined (null).
        ok = (side > 0) & (camera[:, 0] > 0) & np.isfinite(camera).all(1) & np.isfinite(pose).all(1) & np.isfinite(betas).all(1)
        todo = np.flatnonzero(ok)
        if not len(todo):
            return out
        to_crop = SPIN_CROP / side                      # crop pixels per frame pixel
        crop_xy = (np.asarray(rows["keypoints_2d"], np.float64).reshape(n, 17, 2) - center[:, None]) * to_crop[:, None, None] \
            + SPIN_CROP / 2
        keypoints = coco17_to_spin49(crop_xy.astype(np.float32), np.asarray(rows["keypoint_scores"]).reshape(n, 17))
        index = {name: i for i, name in enumerate(SPIN_JOINT_NAMES)}
        used = [index[name] for name in COCO17_TO_OPENPOSE if name not in ("OP LHip", "OP RHip")]
        # HMR's camera and the stored fitted camera convert at the fit's own focal length: a start at another
        # focal would put the body at the wrong depth for the projection the fit uses.
        focal = self.smplify.options.focal_length
        start = translation_from_weak_perspective(camera, focal_length=focal)
        fit = self.smplify
        for lo in range(0, len(todo), CHUNK):
            rows_ = todo[lo:lo + CHUNK]
            m = len(rows_)
            centre = np.full((m, 2), SPIN_CROP / 2, np.float32)
            args = [torch.as_tensor(a, dtype=torch.float32) for a in (pose[rows_], betas[rows_], start[rows_], centre,
                                                                       keypoints[rows_])]
            result = fit(*args)
            with torch.no_grad():
                before = fit.spin_joints(args[0][:, :3].to(fit.device), args[0][:, 3:].to(fit.device), args[1].to(fit.device))
                pixels = torch.as_tensor(centre, device=fit.device)
                errors = []
                for joints, translation in ((before, args[2].to(fit.device)), (result.joints, result.camera_translation)):
                    projected = project(joints[:, used], translation, focal, pixels).cpu().numpy()
                    errors.append(_weighted_error(projected, keypoints[rows_][:, used], side[rows_] / SPIN_CROP))
            p = result.pose.cpu().numpy()
            out["smplify_global_orient"][rows_] = p[:, :3]
            out["smplify_body_pose"][rows_] = p[:, 3:].reshape(m, 23, 3)
            out["smplify_betas"][rows_] = result.betas.cpu().numpy()
            out["smplify_camera"][rows_] = weak_perspective_from_translation(result.camera_translation.cpu().numpy().astype(np.float64),
                                                                                focal_length=focal)
            out["smplify_reprojection_before"][rows_], out["smplify_reprojection_after"][rows_] = errors
        return out


def _weighted_error(projected: np.ndarray, keypoints: np.ndarray, frame_px_per_crop_px: np.ndarray) -> np.ndarray:
    """Score-weighted mean keypoint distance, in frame pixels; NaN for a person with no weight."""
    weight = keypoints[..., 2]
    distance = np.linalg.norm(projected - keypoints[..., :2], axis=-1) * frame_px_per_crop_px[:, None]
    total = weight.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (weight * distance).sum(1) / total, np.nan)


def load_refiner(options: Any, device: Any) -> SMPLifyRefiner | None:
    """The job's refiner, or None without --refine."""
    return SMPLifyRefiner(options, device) if getattr(options, "refine", None) == "smplify" else None
