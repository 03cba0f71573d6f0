"""The skeletons beyond COCO-17 equal mmpose 1.3.2's parsed dataset meta (names, flip indices, links, sigmas),
as recorded in the golden cases by tests/models/mmpose_skeletons_reference.py; and each Skeleton is consistent."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from posepipe.models.skeletons import (AP10K17, COCO17, COCO17_NAMES, SKELETONS, WHOLEBODY133, Skeleton, flip_indices,
                                       skeleton_flip_indices, skeleton_of)

HERE = Path(__file__).resolve().parent
# golden folder -> the skeleton its model outputs
RECORDED = {"golden_rtmpose_m_coco_wholebody_256x192": WHOLEBODY133, "golden_rtmpose_m_ap10k_256x256": AP10K17,
            "golden_hrnet_w32_ap10k_256x256": AP10K17}


@pytest.mark.parametrize("folder", sorted(RECORDED))
def test_skeleton_is_mmposes_dataset_meta(folder):
    skeleton = RECORDED[folder]
    with np.load(HERE / folder / "case_seed0.npz") as case:
        assert tuple(case["keypoint_names"].tolist()) == skeleton.joint_names
        assert case["flip_indices"].tolist() == skeleton.flip_indices
        assert [tuple(link) for link in case["skeleton_links"].tolist()] == list(skeleton.links)
        np.testing.assert_array_equal(case["sigmas"], np.array(skeleton.sigmas, np.float32))


def test_wholebody_starts_with_coco17_and_is_human():
    assert WHOLEBODY133.num_joints == 133 and WHOLEBODY133.joint_names[:17] == COCO17_NAMES
    assert WHOLEBODY133.sigmas[:17] == COCO17.sigmas and WHOLEBODY133.flip_indices[:17] == COCO17.flip_indices
    assert WHOLEBODY133.human and COCO17.human and not AP10K17.human


def test_flip_indices_are_involutions_and_known_skeletons_are_found_by_names():
    for skeleton in SKELETONS.values():
        f = skeleton.flip_indices
        assert [f[i] for i in f] == list(range(skeleton.num_joints)), skeleton.name
        assert skeleton_of(list(skeleton.joint_names)) is skeleton
        assert skeleton_flip_indices(skeleton.joint_names) == f
        assert skeleton.describe()["joint_names"] == list(skeleton.joint_names)
    # by name alone the face (face-N) and AP-10K (L_/R_) joints would not be mirrored
    assert flip_indices(WHOLEBODY133.joint_names) != WHOLEBODY133.flip_indices
    assert flip_indices(AP10K17.joint_names) == list(range(17))
    assert COCO17.flip_indices == flip_indices(COCO17_NAMES)
    assert skeleton_of(("a", "b")) is None and skeleton_flip_indices(("left_a", "right_a")) == [1, 0]


def test_inconsistent_skeletons_are_refused():
    with pytest.raises(ValueError, match="sigmas"):
        Skeleton("x", ("a", "b"), (), (), (0.1,), human=False)
    with pytest.raises(ValueError, match="outside"):
        Skeleton("x", ("a", "b"), ((0, 2),), (), (0.1, 0.1), human=False)
    with pytest.raises(ValueError, match="two left/right pairs"):
        Skeleton("x", ("a", "b", "c"), (), ((0, 1), (1, 2)), (0.1, 0.1, 0.1), human=False)
