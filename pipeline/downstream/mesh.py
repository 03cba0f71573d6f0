"""The SMPL joints of OUTPUT's rows, for drawing: HMR's or SMPLify's parameters through the user's SMPL model.

`render --mesh hmr|smplify` draws what a row's SMPL parameters say: the 24 joints of SMPL's kinematic
tree, posed by the row's ``smpl_*`` (HMR) or ``smplify_*`` (SMPLify, `--refine smplify`) columns.

- **Over the frame**, the joints are projected as SPIN projects them: the row's weak-perspective camera
  ``(s, tx, ty)`` of HMR's 224 px crop (the square of side ``max(w, h)`` around the box centre) becomes
  the translation ``(tx, ty, 2 f / (224 s))`` at SPIN's focal length f = 5000 px, then a pinhole
  projection into the crop, scaled back to the frame. This is the projection SMPLify fits and its
  ``smplify_reprojection_*`` columns measure, so the drawing shows how well the mesh lines up.
- **In the 3D panel**, the joints are pelvis-relative in the camera frame (x right, y down), as the
  lifter's are.

SMPL's model file is licensed and the user's (`--smpl-model` or ``$POSEPIPE_SMPL_MODEL``); nothing of it
is stored in OUTPUT, so drawing a mesh needs it again.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from posepipe.models.smpl import NUM_JOINTS, SMPLModelError, load_smpl
from posepipe.models.smplify import SPIN_CROP, SPIN_FOCAL_LENGTH, project, translation_from_weak_perspective

# --mesh NAME -> the prefix of its columns in the poses table
MESH_SOURCES = {"hmr": "smpl", "smplify": "smplify"}
PARTS = ("global_orient", "body_pose", "betas", "camera")
SHAPES = {"global_orient": (3,), "body_pose": (23, 3), "betas": (10,), "camera": (3,)}
CHUNK = 256   # rows per SMPL forward: a mesh is 6,890 vertices, so memory stays near 100 MB


class MeshError(ValueError):
    """The mesh cannot be drawn (no such columns in OUTPUT, or no SMPL model); the message says what to do."""


def mesh_columns(source: str) -> list[str]:
    """The poses columns `source` ("hmr" or "smplify") draws from."""
    if source not in MESH_SOURCES:
        raise MeshError(f"{source!r} is not a mesh source; choose {' or '.join(MESH_SOURCES)}")
    return [f"{MESH_SOURCES[source]}_{part}" for part in PARTS]


@dataclass(frozen=True)
class MeshJoints:
    """SMPL's joints for N rows; NaN where a row has no parameters (null columns)."""

    joints_3d: np.ndarray          # (N, 24, 3) metres, pelvis-relative, camera axes (x right, y down)
    joints_2d: np.ndarray          # (N, 24, 2) frame pixels
    parents: tuple[int, ...]       # SMPL's kinematic tree, -1 for the root


def mesh_joints(smpl_model: str, bbox_xyxy: np.ndarray, params: dict[str, np.ndarray]) -> MeshJoints:
    """Pose the user's SMPL model by each row's parameters and project its joints into the frame.

    `params` holds the four PARTS as float arrays of SHAPES (NaN rows are left NaN)."""
    if not smpl_model:
        raise MeshError("drawing a mesh needs SMPL's model file, which is licensed and not stored in OUTPUT: pass "
                        "--smpl-model PATH or set $POSEPIPE_SMPL_MODEL (the file the run used)")
    try:
        body = load_smpl(smpl_model)
    except SMPLModelError as exc:   # it says what is wrong with the file
        raise MeshError(str(exc)) from None
    n = len(bbox_xyxy)
    flat = {part: np.asarray(params[part], np.float32).reshape(n, -1) for part in PARTS}
    boxes = np.asarray(bbox_xyxy, np.float64).reshape(n, 4)
    ok = np.isfinite(boxes).all(1) & np.all([np.isfinite(a).all(1) for a in flat.values()], axis=0) \
        & (flat["camera"][:, 0] > 0)   # a camera behind the lens (random weights only) projects nowhere
    joints_3d = np.full((n, NUM_JOINTS, 3), np.nan, np.float32)
    joints_2d = np.full((n, NUM_JOINTS, 2), np.nan, np.float32)
    rows = np.flatnonzero(ok)
    centre = torch.full((CHUNK, 2), SPIN_CROP / 2)
    for lo in range(0, len(rows), CHUNK):
        take = rows[lo:lo + CHUNK]
        t = {part: torch.as_tensor(a[take]) for part, a in flat.items()}
        with torch.no_grad():
            joints = body.joints(t["global_orient"], t["body_pose"], t["betas"])[:, :NUM_JOINTS]
            translation = translation_from_weak_perspective(t["camera"], focal_length=SPIN_FOCAL_LENGTH)
            crop = project(joints, translation, SPIN_FOCAL_LENGTH, centre[:len(take)]).double().numpy()
        box = boxes[take]
        side = np.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])
        middle = (box[:, :2] + box[:, 2:]) / 2
        joints_2d[take] = (crop - SPIN_CROP / 2) * (side / SPIN_CROP)[:, None, None] + middle[:, None]
        joints = joints.numpy()
        joints_3d[take] = joints - joints[:, :1]
    return MeshJoints(joints_3d, joints_2d, body.parents)
