"""The shared blocks: mmpose's box and crop conventions, OpenCV 4.x's fixed-point crop (two
implementations, both byte-exact against every mmpose golden case), both heatmap conventions, ResNet."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from posepipe.models import heatmaps, hrnet, topdown
from posepipe.models.resnet import ResNet
from posepipe.models.skeletons import COCO17_FLIP_PAIRS, COCO17_NAMES, H36M17_NAMES, flip_indices
from tests.golden import golden_cases, golden_dir, load_case

MMPOSE_2D = ("rtmpose_m_coco_256x192", "simplebaseline_res50_coco_256x192", "rle_res50_coco_256x192")


def _cases():
    params = [pytest.param(name, path, id=f"{name}-{path.stem}") for name in MMPOSE_2D for path in golden_cases(name)]
    return params or [pytest.param(None, None, marks=pytest.mark.skip("golden vectors not present"))]


@pytest.mark.parametrize("name,case_path", _cases())
def test_boxes_matrices_and_crops_are_mmposes(name, case_path):
    case = load_case(case_path)
    center, bbox_scale = topdown.bbox_center_scale(case["bboxes_xywh"])
    np.testing.assert_array_equal(center, case["bbox_center"])
    np.testing.assert_array_equal(bbox_scale, case["bbox_scale"])
    center, scale = topdown.box_to_center_scale(case["bboxes_xywh"], (192, 256))
    np.testing.assert_array_equal(scale, case["scale"])
    matrices = [topdown.get_warp_matrix(c, s, (192, 256)) for c, s in zip(center, scale)]
    np.testing.assert_allclose(np.stack(matrices), case["trans"], rtol=0, atol=1e-9)
    crops = topdown.warp_crops_fixed_point(case["image_bgr"], matrices, (192, 256))
    np.testing.assert_array_equal(crops, case["crop_bgr"])


def test_fixed_point_crop_of_a_mirrored_view_and_no_boxes():
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    m = topdown.get_warp_matrix(np.float32([40, 30]), np.float32([90, 120]), (24, 32))
    view = image[:, ::-1]  # a negative-stride view crops as its contiguous copy
    a = topdown.warp_crops_fixed_point(view, [m], (24, 32))
    np.testing.assert_array_equal(a, topdown.warp_crops_fixed_point(np.ascontiguousarray(view), [m], (24, 32)))
    assert topdown.warp_crops_fixed_point(image, [], (24, 32)).shape == (0, 32, 24, 3)


def test_mapping_back_is_float64_and_has_no_half_pixel_shift():
    kps = np.array([[[96.0, 128.0], [0.0, 0.0]]], dtype=np.float32)
    out = topdown.crop_to_image(kps, np.float32([[100, 50]]), np.float32([[30, 40]]), (192, 256))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0], [[100, 50], [85, 30]])


@pytest.mark.parametrize("bad", [np.zeros((2, 3)), [[0, 0, -5, 10]], [[0, np.inf, 5, 10]]])
def test_bad_boxes_are_refused(bad):
    with pytest.raises(ValueError):
        topdown.bbox_center_scale(np.asarray(bad, dtype=np.float64))


def test_flip_indices_come_from_joint_names():
    assert flip_indices(COCO17_NAMES) == heatmaps.flip_indices_from_pairs(17, COCO17_FLIP_PAIRS)
    assert flip_indices(H36M17_NAMES) == [0, 4, 5, 6, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16, 11, 12, 13]


def test_both_heatmap_conventions_on_one_map():
    """The same peaks decoded by the HRNet authors' rules and by mmpose's differ exactly where documented."""
    hm = np.full((1, 3, 64, 48), -1.0, dtype=np.float32)
    hm[0, 0, 1, 20] = 5.0; hm[0, 0, 1, 21] = 1.0   # y = 1: official takes no step at all, mmpose steps in x
    hm[0, 2, 5, 5] = 0.0                           # max <= 0 everywhere on joint 2 (and joint 1)
    official, _ = heatmaps.decode_heatmaps(hm, "official")
    mm, maxvals = heatmaps.decode_heatmaps(hm, "mmpose")
    assert official[0, 0].tolist() == [20.0, 1.0] and mm[0, 0].tolist() == [20.25, 1.0]
    assert official[0, 1].tolist() == [0.0, 0.0] and mm[0, 1].tolist() == [-1.0, -1.0]
    assert maxvals[0, 2] == 0.0
    with pytest.raises(ValueError):
        heatmaps.decode_heatmaps(hm, "other")


@pytest.mark.parametrize("case_path", golden_cases("hrnet_w32_coco_256x192") or
                         [pytest.param(None, marks=pytest.mark.skip("golden vectors not present"))])
def test_hrnet_flip_average_is_the_shared_one(case_path):
    case = load_case(case_path)
    fake = case["heatmaps"][:, :, :, ::-1]  # any map stands in for the mirrored pass
    shared = heatmaps.average_flip(case["heatmaps"], fake, flip_indices(COCO17_NAMES)).numpy()
    np.testing.assert_array_equal(hrnet.average_flip(case["heatmaps"], np.ascontiguousarray(fake)), shared)


def test_resnet50_keys_are_the_mmpose_backbone():
    manifest = json.loads((golden_dir("simplebaseline_res50_coco_256x192") / "manifest.json").read_text())
    backbone = [e for e in manifest if e["name"].startswith("backbone.")]
    state = ResNet(50).state_dict()
    assert [f"backbone.{k}" for k in state] == [e["name"] for e in backbone]
    assert all(list(state[e["name"][len("backbone."):]].shape) == e["shape"] for e in backbone)
    assert ResNet(50)(torch.zeros(1, 3, 64, 32)).shape == (1, 2048, 2, 1)
    with pytest.raises(ValueError):
        ResNet(42)

