"""Crops and the letterbox are posepipe's own arithmetic: no OpenCV version can move a keypoint.

- mmpose's convention, OpenCV 4.x's fixed-point ``warpAffine`` and its ``getAffineTransform``, and
  YOLOX's ``cv2.resize`` letterbox, against a pinned OpenCV 4.10 (what mmpose's reference outputs
  were made with) in a venv of its own, on a few hundred cases of the kinds the models make (boxes
  inside, partly outside, tiny, huge, on whole pixels) and generic ones (rotation, shear);
- HRNet's convention, OpenCV 5.0's float kernel, against its golden case (made by the official code
  under OpenCV 5.0): the network input byte for byte;
- with no OpenCV importable at all, every model's crops and the letterbox are the same bytes.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from posepipe.models import hrnet, topdown, warp, yolox
from tests.golden import MEDIA, golden_cases, load_case
from tests.side_venv import ROOT, clean_env, side_python

# OpenCV 4.10.0.84 is the build mmpose 1.3.2's golden outputs were made with; numpy < 2.3 has its wheels.
OPENCV4 = ["numpy>=1.26,<2.3", "opencv-python-headless==4.10.0.84"]


def _triangle(center: np.ndarray, half_width: float, size_wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The (src, dst) float32 points mmpose's get_warp_matrix hands getAffineTransform."""
    def third(a, b):
        d = a - b
        return b + np.array([-d[1], d[0]], dtype=np.float32)
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = center
    src[1] = center + np.array([-half_width, 0.0])
    dst[0] = [size_wh[0] * 0.5, size_wh[1] * 0.5]
    dst[1] = [0.0, size_wh[1] * 0.5]
    src[2], dst[2] = third(src[0], src[1]), third(dst[0], dst[1])
    return src, dst


def _cases(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    cases: dict[str, np.ndarray] = {}
    street = np.asarray(_street_frame())
    noise = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    for i in range(300):  # triangles: the models' kind, then arbitrary ones
        if i < 200:
            c = rng.uniform(-50, 800, 2).astype(np.float32)
            if i % 3 == 0:
                c = np.round(c)
            src, dst = _triangle(c, float(np.float32(rng.uniform(1, 600)) * 0.5), (192, 256))
        else:
            src, dst = rng.uniform(-100, 900, (2, 3, 2)).astype(np.float32)
        cases[f"src_{i}"], cases[f"dst_{i}"] = src, dst
    for i in range(160):  # crops of the models' kind (both sizes), then rotated and sheared ones
        image = street if i % 2 == 0 else noise
        h, w = image.shape[:2]
        size = (192, 256) if i % 4 < 2 else (256, 256)
        if i < 120:
            x, y = rng.uniform(-0.3, 1.1) * w, rng.uniform(-0.3, 1.1) * h
            bw, bh = rng.uniform(2, 1.5 * w), rng.uniform(2, 1.5 * h)
            if i % 5 == 0:
                x, y, bw, bh = np.round([x, y, bw, bh])
            c, s = topdown.box_to_center_scale(np.float32([[x, y, bw, bh]]), size)
            m = topdown.get_warp_matrix(c[0], s[0], size)
        else:
            a = rng.uniform(0.2, 3.0)
            t = rng.uniform(-np.pi, np.pi)
            m = np.array([[a * np.cos(t), -a * np.sin(t) + rng.uniform(-0.3, 0.3), rng.uniform(-200, 200)],
                          [a * np.sin(t), a * np.cos(t), rng.uniform(-200, 200)]])
        cases[f"warp_image_{i}"], cases[f"warp_matrix_{i}"] = image, m
        cases[f"warp_size_{i}"] = np.array(size)
    sizes = [((576, 768), (480, 640)), ((720, 1280), (360, 640)), ((1080, 1920), (360, 640)), ((240, 320), (480, 640)),
             ((100, 300), (213, 640)), ((333, 77), (640, 148)), ((2, 4096), (1, 640)), ((2048, 2), (640, 1)),
             ((1, 1), (640, 640)), ((7, 5), (21, 15)), ((416, 416), (416, 416)), ((481, 641), (479, 639)),
             ((576, 768), (312, 416)), ((288, 384), (480, 640)), ((13, 17), (26, 34)), ((1, 5), (3, 9)), ((7, 1), (2, 3))]
    sizes += [(tuple(int(v) for v in rng.integers(1, 500, 2)), tuple(int(v) for v in rng.integers(1, 500, 2)))
              for _ in range(40)]
    for i, ((h, w), (dh, dw)) in enumerate(sizes):
        cases[f"resize_image_{i}"] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        cases[f"resize_size_{i}"] = np.array((dw, dh))
    path = tmp_path / "cases.npz"
    np.savez(path, **cases)
    return path


def _street_frame() -> np.ndarray:
    import av

    with av.open(str(MEDIA / "vtest.avi")) if (MEDIA / "vtest.avi").exists() else av.open(
            str(ROOT / "samples" / "street.mp4")) as container:
        return next(container.decode(video=0)).to_ndarray(format="bgr24")


@pytest.fixture(scope="module")
def opencv4(tmp_path_factory):
    """(cases, OpenCV 4.10's answers) as dicts."""
    python = side_python(".venv-opencv4", OPENCV4, what="opencv-python-headless 4.10")
    tmp = tmp_path_factory.mktemp("opencv4")
    cases = _cases(tmp)
    done = subprocess.run([str(python), str(ROOT / "tests" / "models" / "opencv4_reference.py"), str(cases),
                           str(tmp / "answers.npz")], capture_output=True, text=True, timeout=300, env=clean_env())
    assert done.returncode == 0, done.stderr[-3000:]
    answers = dict(np.load(tmp / "answers.npz"))
    assert str(answers["version"]).startswith("4.10"), answers["version"]
    return dict(np.load(cases)), answers


def test_get_affine_transform_is_opencv4s_to_the_bit(opencv4):
    cases, answers = opencv4
    n = 0
    for key in cases:
        if key.startswith("src_"):
            i = key[4:]
            np.testing.assert_array_equal(warp.affine_transform(cases[key], cases[f"dst_{i}"]), answers[f"affine_{i}"],
                                          err_msg=f"triangle {i}")
            n += 1
    assert n == 300


def test_fixed_point_warp_is_opencv4s_byte_for_byte(opencv4):
    cases, answers = opencv4
    for key in cases:
        if key.startswith("warp_image_"):
            i = key[11:]
            size = tuple(int(v) for v in cases[f"warp_size_{i}"])
            ours = warp.warp_crops(cases[key], [cases[f"warp_matrix_{i}"]], size, "fixed_point")[0]
            np.testing.assert_array_equal(ours, answers[f"warp_{i}"], err_msg=f"crop {i}")
            if int(i) < 120 and int(i) % 2 == 0:  # the mmpose families' host entry point, same bytes
                assert np.array_equal(topdown.warp_crops_fixed_point(cases[key], [cases[f"warp_matrix_{i}"]], size)[0],
                                      ours)


def test_letterbox_resize_is_opencv4s_byte_for_byte(opencv4):
    cases, answers = opencv4
    for key in cases:
        if key.startswith("resize_image_"):
            i = key[13:]
            w, h = (int(v) for v in cases[f"resize_size_{i}"])
            frame = torch.from_numpy(cases[key]).unsqueeze(0)
            np.testing.assert_array_equal(yolox.resize_linear_uint8(frame, h, w)[0].numpy(), answers[f"resize_{i}"],
                                          err_msg=f"resize {cases[key].shape[:2]} -> {(h, w)}")


def test_the_two_kernels_differ():
    """Choosing the convention matters: the same crop differs between OpenCV 4.x and 5.0's kernels."""
    image = np.random.default_rng(3).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    m = np.array([[0.61, 0.0, 2.3], [0.0, 0.61, -1.7]])
    assert not np.array_equal(warp.warp_crops(image, [m], (32, 40), "fixed_point"),
                              warp.warp_crops(image, [m], (32, 40), "float"))
    with pytest.raises(ValueError, match="unknown warp kernel"):
        warp.warp("nearest")


@pytest.mark.parametrize("case_path", golden_cases("hrnet_w32_coco_256x192") or
                         [pytest.param(None, marks=pytest.mark.skip("golden vectors not present"))])
def test_hrnet_crop_is_its_golden_input_byte_for_byte(case_path):
    """The golden input was made by the official code's cv2.warpAffine under OpenCV 5.0: our float kernel
    gives the same bytes (normalised as the official ToTensor + Normalize)."""
    case = load_case(case_path)
    crops = hrnet.crop_images(case["image_bgr"], case["center"], case["scale"], input_size=(256, 192))
    x = crops.astype(np.float32) / 255.0
    x = ((x - np.float32([0.485, 0.456, 0.406])) / np.float32([0.229, 0.224, 0.225])).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(x, case["input"])


_NO_OPENCV = r"""
import sys
sys.modules["cv2"] = None  # `import cv2` raises ImportError from here on
import numpy as np, torch
from posepipe.models import hrnet, hmr, rle, rtmpose, simplebaseline, topdown, yolox
case = dict(np.load(sys.argv[1]))
crops = hrnet.crop_images(case["image_bgr"], case["center"], case["scale"], input_size=(256, 192))
canvas, r = yolox.letterbox_uint8(case["image_bgr"], (640, 640))
c, s = topdown.box_to_center_scale(case["bboxes_xywh"], (192, 256))
mm = topdown.warp_crops_fixed_point(case["image_bgr"], [topdown.get_warp_matrix(a, b, (192, 256)) for a, b in zip(c, s)], (192, 256))
np.savez(sys.argv[2], hrnet=crops, letterbox=canvas, mmpose=mm)
"""


def test_no_opencv_at_all_gives_the_same_crops(tmp_path):
    """Models import and crop without OpenCV: nothing numeric asks it (it stays for drawing only)."""
    cases = golden_cases("hrnet_w32_coco_256x192")
    if not cases:
        pytest.skip("golden vectors not present")
    case = load_case(cases[0])
    done = subprocess.run([sys.executable, "-c", _NO_OPENCV, str(cases[0]), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_array_equal(out["hrnet"], hrnet.crop_images(case["image_bgr"], case["center"], case["scale"],
                                                                  input_size=(256, 192)))
    np.testing.assert_array_equal(out["letterbox"], yolox.letterbox_uint8(case["image_bgr"], (640, 640))[0])
    c, s = topdown.box_to_center_scale(case["bboxes_xywh"], (192, 256))
    np.testing.assert_array_equal(out["mmpose"], topdown.warp_crops_fixed_point(
        case["image_bgr"], [topdown.get_warp_matrix(a, b, (192, 256)) for a, b in zip(c, s)], (192, 256)))
