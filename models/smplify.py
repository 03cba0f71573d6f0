"""SMPLify as SPIN runs it: fit SMPL to 2D keypoints from a regressed start, under pose and shape priors.

Bogo et al., "Keep it SMPL", ECCV 2016 (SMPLify), in the single-stage form of Kolotouros et al., "Learning
to Reconstruct 3D Human Pose and Shape via Model-fitting in the Loop", ICCV 2019 (code: nkolot/SPIN,
``smplify/``; its GMM prior is SMPLify-X's ``MaxMixturePrior``, vchoutas/smplify-x ``smplifyx/prior.py``).

Two stages of Adam (SPIN: 100 steps each at lr 1e-2), for each person on its own (the batch's loss is a
sum of per-person terms, so a person's fit never depends on who shares its batch):

1. camera: the camera translation and the global orientation move, body pose and shape stay. The loss
   is the squared pixel error of the hips and shoulders (OpenPose's four if all four have a
   confidence, else the dataset ones) plus (100 * (t_z - t_z,start))^2, which keeps the depth where
   the regressor put it (a monocular fit cannot see depth otherwise);
2. body: the camera stays; body pose, shape and global orientation move under
   sum_j conf_j^2 * GMoF(projection_j - keypoint_j, sigma=100)
   + 4.78^2 * GMM pose prior (min over the 8 components of 0.5 d^T P d - log w')
   + 15.2^2 * sum exp(+-angle)^2 over the elbows' and knees' bending angles (the angle prior)
   + 5^2 * |betas|^2 (the shape prior),
   with the neck and all four hip keypoints left out (SPIN's ignore list).

The camera is a pinhole with SPIN's focal length 5000 px, looking down +z with no rotation, centred
on ``camera_center``; for a crop of 224 px (HMR's input) the regressor's weak-perspective camera
[s, tx, ty] is the translation [tx, ty, 2 * 5000 / (224 * s)] (:func:`translation_from_weak_perspective`).

Keypoints come in SPIN's 49-joint layout (25 OpenPose joints, then 24 dataset joints, each (x, y,
confidence)); :func:`coco17_to_spin49` places COCO's 17 where SPIN's demo puts OpenPose's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from posepipe.models.smpl import (
    NUM_BETAS, NUM_BODY_JOINTS, SMPL, SMPLModelError, load_smpl, read_pickled_arrays,
)

# SPIN's joint set (constants.JOINT_NAMES) and, for each, the index into SMPL.joints' 54 (constants.JOINT_MAP).
SPIN_JOINTS: tuple[tuple[str, int], ...] = (
    ("OP Nose", 24), ("OP Neck", 12), ("OP RShoulder", 17), ("OP RElbow", 19), ("OP RWrist", 21),
    ("OP LShoulder", 16), ("OP LElbow", 18), ("OP LWrist", 20), ("OP MidHip", 0), ("OP RHip", 2),
    ("OP RKnee", 5), ("OP RAnkle", 8), ("OP LHip", 1), ("OP LKnee", 4), ("OP LAnkle", 7),
    ("OP REye", 25), ("OP LEye", 26), ("OP REar", 27), ("OP LEar", 28), ("OP LBigToe", 29),
    ("OP LSmallToe", 30), ("OP LHeel", 31), ("OP RBigToe", 32), ("OP RSmallToe", 33), ("OP RHeel", 34),
    ("Right Ankle", 8), ("Right Knee", 5), ("Right Hip", 45), ("Left Hip", 46), ("Left Knee", 4),
    ("Left Ankle", 7), ("Right Wrist", 21), ("Right Elbow", 19), ("Right Shoulder", 17), ("Left Shoulder", 16),
    ("Left Elbow", 18), ("Left Wrist", 20), ("Neck (LSP)", 47), ("Top of Head (LSP)", 48), ("Pelvis (MPII)", 49),
    ("Thorax (MPII)", 50), ("Spine (H36M)", 51), ("Jaw (H36M)", 52), ("Head (H36M)", 53), ("Nose", 24),
    ("Left Eye", 26), ("Right Eye", 25), ("Left Ear", 28), ("Right Ear", 27),
)
SPIN_JOINT_NAMES: tuple[str, ...] = tuple(name for name, _ in SPIN_JOINTS)
NUM_SPIN_JOINTS = len(SPIN_JOINTS)  # 49
_INDEX = {name: i for i, name in enumerate(SPIN_JOINT_NAMES)}
CAMERA_JOINTS_OPENPOSE = tuple(_INDEX[n] for n in ("OP RHip", "OP LHip", "OP RShoulder", "OP LShoulder"))
CAMERA_JOINTS_DATASET = tuple(_INDEX[n] for n in ("Right Hip", "Left Hip", "Right Shoulder", "Left Shoulder"))
IGNORED_IN_BODY_FIT = tuple(_INDEX[n] for n in ("OP Neck", "OP RHip", "OP LHip", "Right Hip", "Left Hip"))
# The angle prior's coordinates in the 69 body-pose numbers: the bending axis of the left and the right
# elbow (x of joints 18, 19: +1 for the left, -1 for the right), and of the knees (x of joints 4, 5),
# each signed so that a natural bend lowers exp(sign * angle)^2.
ANGLE_PRIOR_INDEX = (55 - 3, 58 - 3, 12 - 3, 15 - 3)
ANGLE_PRIOR_SIGN = (1.0, -1.0, -1.0, -1.0)

SPIN_FOCAL_LENGTH = 5000.0
SPIN_CROP = 224
GMM_COMPONENTS = 8

# COCO-17 (models/skeletons.COCO17_NAMES) -> SPIN's OpenPose slots, where SPIN's demo puts OpenPose keypoints.
COCO17_TO_OPENPOSE = ("OP Nose", "OP LEye", "OP REye", "OP LEar", "OP REar", "OP LShoulder", "OP RShoulder",
                      "OP LElbow", "OP RElbow", "OP LWrist", "OP RWrist", "OP LHip", "OP RHip", "OP LKnee", "OP RKnee",
                      "OP LAnkle", "OP RAnkle")
# ... and the dataset hips and shoulders, where SMPLify's camera step looks when an OpenPose one has no
# confidence: the same positions at confidence 0, so they weigh nothing in the body step.
COCO17_TO_DATASET = {11: "Left Hip", 12: "Right Hip", 5: "Left Shoulder", 6: "Right Shoulder"}


@dataclass(frozen=True)
class SMPLifyOptions:
    """SPIN's defaults (smplify.py, losses.py, train_options.py)."""

    iterations: int = 100            # Adam steps per stage (SPIN's num_smplify_iters)
    step_size: float = 1e-2          # Adam's learning rate
    focal_length: float = SPIN_FOCAL_LENGTH
    sigma: float = 100.0             # Geman-McClure scale of the reprojection error, pixels
    pose_prior_weight: float = 4.78  # each weight is squared, as SPIN does
    angle_prior_weight: float = 15.2
    shape_prior_weight: float = 5.0
    depth_loss_weight: float = 100.0

    def __post_init__(self):
        if not isinstance(self.iterations, int) or isinstance(self.iterations, bool) or self.iterations < 0:
            raise ValueError(f"SMPLify iterations must be a whole number >= 0, got {self.iterations!r}")
        for f in fields(self)[1:]:
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"SMPLify {f.name} must be a finite number >= 0, got {value!r}")
        if self.step_size <= 0 or self.focal_length <= 0 or self.sigma <= 0:
            raise ValueError("SMPLify step_size, focal_length and sigma must be > 0")


# ---------------------------------------------------------------------------------------------
# Building blocks: the GMM pose prior, losses, projection
# ---------------------------------------------------------------------------------------------


class GMMPrior(nn.Module):
    """SMPLify's Gaussian mixture over the 69 body-pose numbers, as SMPLify-X evaluates it ("merged"):
    per person, the smallest over components of 0.5 d^T P_k d - log(w_k / ((2 pi)^(69/2) sqrt|C_k| / min_j sqrt|C_j|)).
    """

    def __init__(self, means: np.ndarray, covars: np.ndarray, weights: np.ndarray, *, sha256: str = ""):
        super().__init__()
        means, covars, weights = (np.asarray(a, dtype=np.float64) for a in (means, covars, weights))
        k, d = means.shape if means.ndim == 2 else (0, 0)
        if d != 3 * NUM_BODY_JOINTS or covars.shape != (k, d, d) or weights.shape != (k,) or k == 0:
            raise SMPLModelError(f"a GMM pose prior has means (K, 69), covars (K, 69, 69) and weights (K,); got "
                                 f"{means.shape}, {covars.shape}, {weights.shape}")
        if not (np.isfinite(means).all() and np.isfinite(covars).all() and np.isfinite(weights).all()):
            raise SMPLModelError("the GMM pose prior holds non-finite values")
        if (weights <= 0).any():
            raise SMPLModelError("the GMM pose prior has a component weight <= 0")
        # Precisions are inverted from float32 covariances in float32, as SMPLify-X does; the weights'
        # normalisation uses the file's float64 covariances.
        try:
            np.linalg.cholesky(covars)
        except np.linalg.LinAlgError:
            raise SMPLModelError("the GMM pose prior has a covariance that is not positive definite") from None
        precisions = np.stack([np.linalg.inv(c) for c in covars.astype(np.float32)]).astype(np.float32)
        sqrdets = np.sqrt(np.linalg.det(covars))
        nll_weights = weights / ((2 * np.pi) ** (d / 2.0) * (sqrdets / sqrdets.min()))
        self.sha256 = sha256
        self.register_buffer("means", torch.tensor(means, dtype=torch.float32))
        self.register_buffer("precisions", torch.tensor(precisions))
        self.register_buffer("log_nll_weights", torch.log(torch.tensor(nll_weights, dtype=torch.float32)))

    def forward(self, body_pose: torch.Tensor) -> torch.Tensor:
        diff = body_pose.unsqueeze(1) - self.means                       # (B, K, 69)
        quadratic = (torch.einsum("mij,bmj->bmi", self.precisions, diff) * diff).sum(dim=-1)
        return (0.5 * quadratic - self.log_nll_weights).min(dim=1).values


def read_gmm_prior(path: str | Path) -> GMMPrior:
    """SMPLify's gmm_08.pkl (a dict of means, covars, weights); its sha256 rides along for provenance."""
    data, digest = read_pickled_arrays(path, "GMM pose prior")
    missing = [k for k in ("means", "covars", "weights") if k not in data]
    if missing:
        raise SMPLModelError(f"the GMM pose prior {path} lacks {missing}: SMPLify's gmm_08.pkl is a dict of means, "
                             "covars and weights")
    try:
        return GMMPrior(data["means"], data["covars"], data["weights"], sha256=digest)
    except SMPLModelError as exc:
        raise SMPLModelError(f"the GMM pose prior {path}: {exc}") from None


def gmof(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Geman-McClure: sigma^2 x^2 / (sigma^2 + x^2), quadratic near 0 and flat for outliers."""
    x2 = x ** 2
    return (sigma ** 2 * x2) / (sigma ** 2 + x2)


def angle_prior(body_pose: torch.Tensor) -> torch.Tensor:
    """(B, 4): exp(sign * angle)^2 for the elbows and knees."""
    signs = torch.tensor(ANGLE_PRIOR_SIGN, dtype=body_pose.dtype, device=body_pose.device)
    return torch.exp(body_pose[:, list(ANGLE_PRIOR_INDEX)] * signs) ** 2


def project(points: torch.Tensor, translation: torch.Tensor, focal_length: float, center: torch.Tensor) -> torch.Tensor:
    """Pinhole projection of camera-frame points (B, N, 3) moved by `translation` (B, 3), in pixels (B, N, 2)."""
    p = points + translation.unsqueeze(1)
    return focal_length * (p[..., :2] / p[..., 2:]) + center.unsqueeze(1)


def translation_from_weak_perspective(camera: np.ndarray | torch.Tensor, *, focal_length: float = SPIN_FOCAL_LENGTH,
                                      crop: int = SPIN_CROP):
    """HMR's weak-perspective [s, tx, ty] for a crop -> the camera translation SMPLify starts from (SPIN's trainer)."""
    lib = torch if isinstance(camera, torch.Tensor) else np
    s, tx, ty = camera[..., 0], camera[..., 1], camera[..., 2]
    return lib.stack([tx, ty, 2 * focal_length / (crop * s + 1e-9)], -1)


def weak_perspective_from_translation(translation: np.ndarray | torch.Tensor, *, focal_length: float = SPIN_FOCAL_LENGTH,
                                      crop: int = SPIN_CROP):
    """The inverse: a fitted translation as a weak-perspective [s, tx, ty] for the same crop."""
    lib = torch if isinstance(translation, torch.Tensor) else np
    tx, ty, tz = translation[..., 0], translation[..., 1], translation[..., 2]
    return lib.stack([2 * focal_length / (crop * tz), tx, ty], -1)


def coco17_to_spin49(keypoints: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """COCO-17 keypoints (K, 17, 2) and scores (K, 17) -> SPIN's (K, 49, 3) layout (x, y, confidence)."""
    keypoints, scores = np.asarray(keypoints, np.float32), np.asarray(scores, np.float32)
    if keypoints.shape[-2:] != (17, 2) or scores.shape != keypoints.shape[:-1]:
        raise ValueError(f"COCO-17 keypoints (K, 17, 2) and scores (K, 17) expected, got {keypoints.shape}, {scores.shape}")
    out = np.zeros((keypoints.shape[0], NUM_SPIN_JOINTS, 3), np.float32)
    slots = [_INDEX[n] for n in COCO17_TO_OPENPOSE]
    out[:, slots, :2] = keypoints
    out[:, slots, 2] = np.where(np.isfinite(scores), np.clip(scores, 0.0, None), 0.0)
    for coco, name in COCO17_TO_DATASET.items():
        out[:, _INDEX[name], :2] = keypoints[:, coco]
    out[~np.isfinite(out)] = 0.0  # a missing keypoint: no position, no weight
    return out


# ---------------------------------------------------------------------------------------------
# The fit
# ---------------------------------------------------------------------------------------------


class SMPLifyFit(NamedTuple):
    pose: torch.Tensor                # (B, 72) axis-angle: global orientation, then the 23 body joints
    betas: torch.Tensor               # (B, 10)
    camera_translation: torch.Tensor  # (B, 3)
    joints: torch.Tensor              # (B, 49, 3) SPIN's joints of the fitted body, camera frame before translation
    reprojection_loss: torch.Tensor   # (B, 49) conf^2 * GMoF per joint, ignored joints 0 (SPIN's 'reprojection')


class SMPLify:
    """SPIN's SMPLify on one device, batched over persons."""

    def __init__(self, smpl: SMPL, prior: GMMPrior, options: SMPLifyOptions = SMPLifyOptions(), *,
                 device: str | torch.device | None = None):
        self.device = torch.device(device) if device is not None else smpl.v_template.device
        self.smpl = smpl.to(self.device)
        self.prior = prior.to(self.device)
        self.options = options
        self._select = [j for _, j in SPIN_JOINTS]

    def spin_joints(self, global_orient: torch.Tensor, body_pose: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        return self.smpl.joints(global_orient, body_pose, betas)[:, self._select]

    # -- losses, per person (B,) --

    def camera_loss(self, joints, translation, start_translation, center, keypoints, openpose_ok) -> torch.Tensor:
        o = self.options
        projected = project(joints, translation, o.focal_length, center)
        op, gt = list(CAMERA_JOINTS_OPENPOSE), list(CAMERA_JOINTS_DATASET)
        err_op = ((keypoints[:, op] - projected[:, op]) ** 2)
        err_gt = ((keypoints[:, gt] - projected[:, gt]) ** 2)
        reprojection = (openpose_ok * err_op + (1 - openpose_ok) * err_gt).sum(dim=(1, 2))
        return reprojection + o.depth_loss_weight ** 2 * (translation[:, 2] - start_translation[:, 2]) ** 2

    def reprojection_terms(self, joints, translation, center, keypoints, confidence) -> torch.Tensor:
        projected = project(joints, translation, self.options.focal_length, center)
        return confidence ** 2 * gmof(projected - keypoints, self.options.sigma).sum(dim=-1)

    def body_loss(self, body_pose, betas, joints, translation, center, keypoints, confidence) -> torch.Tensor:
        o = self.options
        return (self.reprojection_terms(joints, translation, center, keypoints, confidence).sum(dim=-1)
                + o.pose_prior_weight ** 2 * self.prior(body_pose)
                + o.angle_prior_weight ** 2 * angle_prior(body_pose).sum(dim=-1)
                + o.shape_prior_weight ** 2 * (betas ** 2).sum(dim=-1))

    # -- inputs --

    def _inputs(self, pose, betas, translation, center, keypoints):
        t = lambda a, shape, name: _tensor(a, shape, name, self.device)  # noqa: E731
        pose = t(pose, (72,), "pose")
        b = pose.shape[0]
        betas = t(betas, (NUM_BETAS,), "betas")
        translation = t(translation, (3,), "camera_translation")
        center = t(center, (2,), "camera_center")
        keypoints = t(keypoints, (NUM_SPIN_JOINTS, 3), "keypoints")
        if any(x.shape[0] != b for x in (betas, translation, center, keypoints)):
            raise ValueError(f"SMPLify needs as many betas, translations, centers and keypoint sets as poses ({b})")
        if (translation[:, 2] <= 0).any():
            raise ValueError("SMPLify's start camera translation must put every body in front of the camera (t_z > 0)")
        confidence = keypoints[:, :, 2].clone()
        return pose, betas, translation, center, keypoints[:, :, :2], confidence

    def _body_confidence(self, confidence: torch.Tensor) -> torch.Tensor:
        c = confidence.clone()
        c[:, list(IGNORED_IN_BODY_FIT)] = 0.0
        return c

    def reprojection_loss(self, pose, betas, camera_translation, camera_center, keypoints) -> torch.Tensor:
        """(B, 49) per-joint reprojection terms of given parameters (SPIN's ``get_fitting_loss``)."""
        pose, betas, translation, center, xy, confidence = self._inputs(pose, betas, camera_translation,
                                                                        camera_center, keypoints)
        with torch.no_grad():
            joints = self.spin_joints(pose[:, :3], pose[:, 3:], betas)
            return self.reprojection_terms(joints, translation, center, xy, self._body_confidence(confidence))

    def __call__(self, pose, betas, camera_translation, camera_center, keypoints) -> SMPLifyFit:
        """Fit B persons: start pose (B, 72), betas (B, 10), camera translation (B, 3), the image point
        the camera looks through (B, 2), keypoints (B, 49, 3) in the same pixels."""
        o = self.options
        pose, betas, start, center, xy, confidence = self._inputs(pose, betas, camera_translation, camera_center,
                                                                  keypoints)
        global_orient = pose[:, :3].clone()
        body_pose = pose[:, 3:].clone()
        betas = betas.clone()
        translation = start.clone()
        openpose_ok = (confidence[:, list(CAMERA_JOINTS_OPENPOSE)].min(dim=-1).values > 0).to(xy.dtype)[:, None, None]

        with torch.enable_grad():
            global_orient.requires_grad_(True)
            translation.requires_grad_(True)
            adam = torch.optim.Adam([global_orient, translation], lr=o.step_size, betas=(0.9, 0.999))
            for _ in range(o.iterations):
                joints = self.spin_joints(global_orient, body_pose, betas)
                loss = self.camera_loss(joints, translation, start, center, xy, openpose_ok).sum()
                adam.zero_grad()
                loss.backward()
                adam.step()
            translation = translation.detach()

            body_confidence = self._body_confidence(confidence)
            body_pose.requires_grad_(True)
            betas.requires_grad_(True)
            adam = torch.optim.Adam([body_pose, betas, global_orient], lr=o.step_size, betas=(0.9, 0.999))
            for _ in range(o.iterations):
                joints = self.spin_joints(global_orient, body_pose, betas)
                loss = self.body_loss(body_pose, betas, joints, translation, center, xy, body_confidence).sum()
                adam.zero_grad()
                loss.backward()
                adam.step()

        with torch.no_grad():
            global_orient, body_pose, betas = global_orient.detach(), body_pose.detach(), betas.detach()
            joints = self.spin_joints(global_orient, body_pose, betas)
            reprojection = self.reprojection_terms(joints, translation, center, xy, body_confidence)
        return SMPLifyFit(torch.cat([global_orient, body_pose], dim=1), betas, translation, joints, reprojection)


def _tensor(a, tail: tuple[int, ...], name: str, device: torch.device) -> torch.Tensor:
    x = torch.as_tensor(a, dtype=torch.float32, device=device) if not isinstance(a, torch.Tensor) \
        else a.detach().to(device=device, dtype=torch.float32)
    if x.ndim != len(tail) + 1 or tuple(x.shape[1:]) != tail:
        raise ValueError(f"SMPLify's {name} must have shape (B, {', '.join(map(str, tail))}), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"SMPLify's {name} holds non-finite values")
    return x


def load_smplify(smpl_model: str | Path, gmm_prior: str | Path, *, options: SMPLifyOptions = SMPLifyOptions(),
                 extra_regressor: str | Path | None = None, device: str | torch.device = "cpu") -> SMPLify:
    """SMPLify from the user's SMPL model file and GMM prior (gmm_08.pkl)."""
    smpl = load_smpl(smpl_model, extra_regressor=extra_regressor, device=device)
    return SMPLify(smpl, read_gmm_prior(gmm_prior), options, device=device)
