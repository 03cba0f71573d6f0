"""Skeletons are data: joint names, bones and left/right pairs in one place."""
from __future__ import annotations

COCO17_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
COCO17_LEFT: tuple[int, ...] = (1, 3, 5, 7, 9, 11, 13, 15)
COCO17_RIGHT: tuple[int, ...] = (2, 4, 6, 8, 10, 12, 14, 16)
COCO17_FLIP_PAIRS: tuple[tuple[int, int], ...] = tuple(zip(COCO17_LEFT, COCO17_RIGHT))
COCO17_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)
# COCO OKS sigmas (pycocotools), used by evaluation.
COCO17_SIGMAS: tuple[float, ...] = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
    0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)

# Human3.6M 17-joint skeleton as VideoPose3D outputs it (after remove_joints).
H36M17_NAMES: tuple[str, ...] = (
    "pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "spine", "thorax", "neck_nose", "head", "left_shoulder", "left_elbow", "left_wrist",
    "right_shoulder", "right_elbow", "right_wrist",
)
H36M17_PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
H36M17_LEFT: tuple[int, ...] = (4, 5, 6, 11, 12, 13)
H36M17_RIGHT: tuple[int, ...] = (1, 2, 3, 14, 15, 16)
H36M17_SKELETON: tuple[tuple[int, int], ...] = tuple(
    (child, parent) for child, parent in enumerate(H36M17_PARENTS) if parent >= 0
)

SMPL_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)


def flip_indices(names: tuple[str, ...] | list[str]) -> list[int]:
    """The left/right permutation of a skeleton from its joint names (mmpose's ``flip_indices``):
    joint i of a mirrored image is joint flip_indices[i] of the original ("left_x" <-> "right_x")."""
    index = {name: i for i, name in enumerate(names)}
    out = []
    for name in names:
        side, _, rest = name.partition("_")
        other = {"left": "right", "right": "left"}.get(side)
        out.append(index.get(f"{other}_{rest}", index[name]) if other else index[name])
    return out
