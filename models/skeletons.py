"""Skeletons are data: joint names, bones and left/right pairs in one place."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


# --------------------------------------------------------------------------------------------
# Skeletons beyond COCO-17, as mmpose 1.3.2's dataset meta defines them
# (configs/_base_/datasets/coco_wholebody.py, ap10k.py): joint names in mmpose's order, the links it
# draws (skeleton_info, in order), the left/right pairs (each joint's 'swap') and the OKS sigmas.
# --------------------------------------------------------------------------------------------

# COCO-WholeBody, 133 joints: body 0-16 (= COCO-17, same order), feet 17-22, face 23-90 (68 points,
# named face-0 .. face-67 as mmpose names them), left hand 91-111, right hand 112-132.
_FINGERS = ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")


def _hand_names(side: str) -> tuple[str, ...]:
    return (f"{side}_hand_root",) + tuple(f"{side}_{finger}{k}" for finger in _FINGERS for k in range(1, 5))


def _hand_links(root: int) -> tuple[tuple[int, int], ...]:
    """Root -> first joint of each finger, then along the finger (mmpose's order)."""
    links: list[tuple[int, int]] = []
    for f in range(len(_FINGERS)):
        first = root + 1 + 4 * f
        links += [(root, first), (first, first + 1), (first + 1, first + 2), (first + 2, first + 3)]
    return tuple(links)


WHOLEBODY133_NAMES: tuple[str, ...] = (
    COCO17_NAMES
    + ("left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel")
    + tuple(f"face-{i}" for i in range(68))
    + _hand_names("left") + _hand_names("right")
)
WHOLEBODY133_SKELETON: tuple[tuple[int, int], ...] = (
    COCO17_SKELETON
    + ((15, 17), (15, 18), (15, 19), (16, 20), (16, 21), (16, 22))
    + _hand_links(91) + _hand_links(112)
)  # mmpose draws no face links
WHOLEBODY133_FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    COCO17_FLIP_PAIRS
    + ((17, 20), (18, 21), (19, 22))
    # face: jaw line, eyebrows, nose bottom, eyes, mouth (the 68-point iBUG layout, mirrored)
    + ((23, 39), (24, 38), (25, 37), (26, 36), (27, 35), (28, 34), (29, 33), (30, 32),
       (40, 49), (41, 48), (42, 47), (43, 46), (44, 45), (54, 58), (55, 57),
       (59, 68), (60, 67), (61, 66), (62, 65), (63, 70), (64, 69),
       (71, 77), (72, 76), (73, 75), (78, 82), (79, 81), (83, 87), (84, 86), (88, 90))
    + tuple((91 + i, 112 + i) for i in range(21))
)
WHOLEBODY133_SIGMAS: tuple[float, ...] = COCO17_SIGMAS + (
    # feet
    0.068, 0.066, 0.066, 0.092, 0.094, 0.094,
    # face
    0.042, 0.043, 0.044, 0.043, 0.040, 0.035, 0.031, 0.025, 0.020, 0.023, 0.029, 0.032, 0.037, 0.038, 0.043,
    0.041, 0.045, 0.013, 0.012, 0.011, 0.011, 0.012, 0.012, 0.011, 0.011, 0.013, 0.015, 0.009, 0.007, 0.007,
    0.007, 0.012, 0.009, 0.008, 0.016, 0.010, 0.017, 0.011, 0.009, 0.011, 0.009, 0.007, 0.013, 0.008, 0.011,
    0.012, 0.010, 0.034, 0.008, 0.008, 0.009, 0.008, 0.008, 0.007, 0.010, 0.008, 0.009, 0.009, 0.009, 0.007,
    0.007, 0.008, 0.011, 0.008, 0.008, 0.008, 0.010, 0.008,
    # left hand, then right hand (the same 21 values)
    0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024, 0.035, 0.018, 0.024, 0.022, 0.026, 0.017, 0.021,
    0.021, 0.032, 0.020, 0.019, 0.022, 0.031,
    0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024, 0.035, 0.018, 0.024, 0.022, 0.026, 0.017, 0.021,
    0.021, 0.032, 0.020, 0.019, 0.022, 0.031,
)

# AP-10K animals (Yu et al., NeurIPS 2021 Datasets and Benchmarks), 17 joints, mmpose's names.
AP10K17_NAMES: tuple[str, ...] = (
    "L_Eye", "R_Eye", "Nose", "Neck", "Root of tail", "L_Shoulder", "L_Elbow", "L_F_Paw", "R_Shoulder",
    "R_Elbow", "R_F_Paw", "L_Hip", "L_Knee", "L_B_Paw", "R_Hip", "R_Knee", "R_B_Paw",
)
AP10K17_SKELETON: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 2), (1, 2), (2, 3), (3, 4), (3, 5), (5, 6), (6, 7), (3, 8), (8, 9), (9, 10),
    (4, 11), (11, 12), (12, 13), (4, 14), (14, 15), (15, 16),
)
AP10K17_FLIP_PAIRS: tuple[tuple[int, int], ...] = ((0, 1), (5, 8), (6, 9), (7, 10), (11, 14), (12, 15), (13, 16))
AP10K17_SIGMAS: tuple[float, ...] = (
    0.025, 0.025, 0.026, 0.035, 0.035, 0.079, 0.072, 0.062, 0.079, 0.072,
    0.062, 0.107, 0.087, 0.089, 0.107, 0.087, 0.089,
)


@dataclass(frozen=True)
class Skeleton:
    """One keypoint layout as data: what a model outputs, what an output records, what eval and render use.

    `human` says whether the first 17 joints are COCO-17's (tracking, 3D lifting and SMPL need them)."""

    name: str
    joint_names: tuple[str, ...]
    links: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]
    human: bool

    def __post_init__(self) -> None:
        n = len(self.joint_names)
        if len(set(self.joint_names)) != n or len(self.sigmas) != n:
            raise ValueError(f"skeleton {self.name}: {n} joints, {len(set(self.joint_names))} distinct names, "
                             f"{len(self.sigmas)} sigmas")
        flat = [j for pair in self.links + self.flip_pairs for j in pair]
        if any(not 0 <= j < n for j in flat):
            raise ValueError(f"skeleton {self.name}: a link or pair names a joint outside 0..{n - 1}")
        sides = [j for pair in self.flip_pairs for j in pair]
        if len(sides) != len(set(sides)):
            raise ValueError(f"skeleton {self.name}: a joint is in two left/right pairs")

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def flip_indices(self) -> list[int]:
        """mmpose's ``flip_indices``: joint i of a mirrored image is joint flip_indices[i] of the original."""
        out = list(range(self.num_joints))
        for a, b in self.flip_pairs:
            out[a], out[b] = b, a
        return out

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly record of the whole skeleton (for metadata)."""
        return {"name": self.name, "joint_names": list(self.joint_names), "links": [list(p) for p in self.links],
                "flip_pairs": [list(p) for p in self.flip_pairs], "sigmas": list(self.sigmas), "human": self.human}


COCO17 = Skeleton("coco17", COCO17_NAMES, COCO17_SKELETON, COCO17_FLIP_PAIRS, COCO17_SIGMAS, human=True)
WHOLEBODY133 = Skeleton("coco_wholebody133", WHOLEBODY133_NAMES, WHOLEBODY133_SKELETON, WHOLEBODY133_FLIP_PAIRS,
                        WHOLEBODY133_SIGMAS, human=True)
AP10K17 = Skeleton("ap10k17", AP10K17_NAMES, AP10K17_SKELETON, AP10K17_FLIP_PAIRS, AP10K17_SIGMAS, human=False)
SKELETONS: dict[str, Skeleton] = {s.name: s for s in (COCO17, WHOLEBODY133, AP10K17)}


def skeleton_of(names: tuple[str, ...] | list[str]) -> Skeleton | None:
    """The known skeleton whose joint names are exactly `names`, in order; None if none is."""
    names = tuple(names)
    return next((s for s in SKELETONS.values() if s.joint_names == names), None)


def skeleton_flip_indices(names: tuple[str, ...] | list[str]) -> list[int]:
    """The flip permutation for a model's joint names: the known skeleton's own pairs (COCO-WholeBody's face
    and AP-10K's L_/R_ joints are not named left_/right_), else :func:`flip_indices` by name."""
    skeleton = skeleton_of(names)
    return skeleton.flip_indices if skeleton is not None else flip_indices(names)
