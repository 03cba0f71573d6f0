"""HMR (SPIN): parity with the official outputs, SPIN's crop, rotations, batching, checkpoint formats.

Golden vectors and their conventions: shared/golden/hmr_spin_resnet50/README.md.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from posepipe.models import hmr
from posepipe.models.checkpoint import CheckpointError, read_checkpoint
from posepipe.models.skeletons import SMPL_JOINT_NAMES
from tests.golden import assert_close as assert_allclose_golden
from tests.golden import GOLDEN, case_and_state, golden_cases

NAME = "hmr_spin_resnet50"
SPEC = hmr.WEIGHTS[NAME]
MANIFEST = GOLDEN / NAME / "manifest.json"
CASES = golden_cases(NAME)
TOL = dict(rtol=1e-4, atol=1e-4)


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str, **tol: float) -> None:
    assert_allclose_golden(actual, expected, what, **(tol or TOL))


def _case_and_state(path: Path) -> tuple[dict, "OrderedDict[str, torch.Tensor]"]:
    return case_and_state(MANIFEST, path)


@pytest.fixture(scope="module", params=CASES, ids=[p.stem for p in CASES])
def golden(request, tmp_path_factory):
    """One golden case, loaded end to end from a file in SPIN's container format."""
    case, state = _case_and_state(request.param)
    path = tmp_path_factory.mktemp("hmr") / "model_checkpoint.pt"
    torch.save({"model": state, "optimizer": {}, "epoch": 0}, path)
    predictor = hmr.create(SPEC, hmr.convert_checkpoint(read_checkpoint(path)), device="cpu")
    return case, predictor


@pytest.fixture(scope="module")
def predictor0() -> hmr.HMRPredictor:
    """A predictor with the first case's weights (random init if no golden vectors are present)."""
    if CASES:
        return hmr.create(SPEC, _case_and_state(CASES[0])[1], device="cpu")
    torch.manual_seed(0)
    return hmr.create(SPEC, None, device="cpu")


def _frame(seed: int, height: int = 240, width: int = 320) -> np.ndarray:
    """A smooth synthetic BGR frame (random blobs resized up), so crops are not pure noise."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


# --- golden parity ---------------------------------------------------------------------------


def test_state_dict_matches_manifest():
    if not MANIFEST.exists():
        pytest.skip("golden manifest not present")
    manifest = json.loads(MANIFEST.read_text())
    own = hmr.hmr_resnet50().state_dict()
    assert [(k, list(v.shape)) for k, v in own.items()] == [(e["name"], e["shape"]) for e in manifest]


def test_golden_crop(golden):
    case, _ = golden
    centers, scales = hmr.bbox_xyxy_to_center_scale(case["bbox_xyxy"][None])
    np.testing.assert_array_equal(centers[0], case["center"])
    np.testing.assert_array_equal(scales[0], case["scale"])
    ul, br = hmr.crop_corners(centers[0], scales[0])
    np.testing.assert_array_equal(ul, case["crop_ul"])
    np.testing.assert_array_equal(br, case["crop_br"])
    rgb = np.ascontiguousarray(case["image_bgr"][:, :, ::-1])
    crop = hmr.crop(rgb, centers[0], scales[0])
    assert crop.dtype == np.uint8
    diff = np.abs(crop.astype(int) - case["crop_rgb"].astype(int))
    assert diff.max() == 0, f"crop_rgb differs by up to {diff.max()} grey levels at {np.argwhere(diff).tolist()[:5]}"


def test_golden_input_and_features(golden):
    case, predictor = golden
    x = predictor.preprocess(case["image_bgr"], case["bbox_xyxy"][None])
    assert_close(x.cpu().numpy(), case["input"], "input", rtol=0, atol=1e-6)
    assert_close(predictor.features(case["image_bgr"], case["bbox_xyxy"][None]), case["feat"], "feat")


def test_golden_outputs(golden):
    case, predictor = golden
    out = predictor.predict(case["image_bgr"], case["bbox_xyxy"][None])
    assert_close(out["pose_6d"], case["pred_6d"], "pred_6d")
    assert_close(out["betas"], case["pred_betas"], "pred_betas")
    assert_close(out["camera"], case["pred_camera"], "pred_camera")
    assert_close(out["rotmat"], case["pred_rotmat"], "pred_rotmat", rtol=0, atol=5e-5)
    # The axis-angle outputs are the same rotations.
    rebuilt = hmr.axis_angle_to_rotmat(
        torch.from_numpy(np.concatenate([out["global_orient"][:, None], out["body_pose"]], axis=1))
    ).numpy()
    assert_close(rebuilt, case["pred_rotmat"], "axis-angle -> rotmat", rtol=0, atol=1e-4)


def test_golden_model_forward_on_official_input(golden):
    """The bare module on the stored network input gives the stored outputs (no preprocessing)."""
    case, predictor = golden
    with torch.inference_mode():
        out = predictor.model(torch.from_numpy(case["input"]))
    assert_close(out.pose_6d.numpy(), case["pred_6d"], "pred_6d")
    assert_close(out.rotmat.numpy(), case["pred_rotmat"], "pred_rotmat", rtol=0, atol=5e-5)


# --- preprocessing ---------------------------------------------------------------------------


def test_bbox_to_center_scale_has_no_enlargement():
    centers, scales = hmr.bbox_xyxy_to_center_scale(np.array([[10, 20, 110, 320], [0, 0, 50, 40]], np.float32))
    np.testing.assert_array_equal(centers, [[60, 170], [25, 20]])
    np.testing.assert_array_equal(scales, np.array([1.5, 0.25], np.float32))
    assert centers.dtype == np.float32 and scales.dtype == np.float32


@pytest.mark.parametrize(
    "bad", [np.zeros((4,)), np.zeros((2, 5)), np.array([[0, 0, np.nan, 10]]), np.array([[5, 5, 5, 5]])]
)
def test_bad_boxes_are_refused(bad):
    with pytest.raises(ValueError):
        hmr.bbox_xyxy_to_center_scale(bad)


def test_crop_corners_truncate_toward_zero():
    ul, br = hmr.crop_corners((10.25, 5.0), 0.125)  # half-side 12.5: 10.25 - 12.5 = -2.25 -> -2, not -3
    assert ul.tolist() == [-2, -7] and br.tolist() == [22, 17]


def test_bytescale_semantics():
    full = np.array([[[0, 10, 255]]], np.uint8)
    np.testing.assert_array_equal(hmr.bytescale(full), full)  # already spans 0..255: identity
    low = np.array([[[100, 110, 140]]], np.uint8)
    # (v - 100) * 255 / 40 + 0.5, truncated: 0, 64.25 -> 64, 255
    assert hmr.bytescale(low).tolist() == [[[0, 64, 255]]]
    assert hmr.bytescale(np.full((2, 2, 3), 77, np.uint8)).max() == 0  # constant canvas -> 0, as scipy


def test_crop_applies_bytescale_to_low_contrast_crops():
    """A crop fully inside the image with values 100..140 is stretched to 0..255 before resizing."""
    rng = np.random.default_rng(3)
    image = rng.integers(100, 141, (120, 160, 3), dtype=np.uint8)
    image[60, 80] = (100, 140, 120)  # pin both extremes inside the crop
    center, scale = (80.0, 60.0), 0.4  # 80x80 region [40, 120) x [20, 100), inside the image
    ul, br = hmr.crop_corners(center, scale)
    assert ul.min() >= 0 and br[0] <= 160 and br[1] <= 120
    region = image[ul[1]:br[1], ul[0]:br[0]].astype(np.float64)
    lo, hi = region.min(), region.max()
    stretched = np.floor((region - lo) * (255.0 / (hi - lo)) + 0.5).astype(np.uint8)
    expected = np.asarray(Image.fromarray(stretched).resize((224, 224), Image.Resampling.BILINEAR))
    got = hmr.crop(image, center, scale)
    np.testing.assert_array_equal(got, expected)
    unstretched = np.asarray(Image.fromarray(region.astype(np.uint8)).resize((224, 224), Image.Resampling.BILINEAR))
    assert np.abs(got.astype(int) - unstretched.astype(int)).max() > 50


def test_crop_outside_image_is_black_padding():
    image = np.full((50, 60, 3), 200, np.uint8)
    image[0, 0] = 255
    got = hmr.crop(image, (0.0, 0.0), 0.5)  # region [-50, 50)^2: three quarters padding
    assert got[:100, :100].max() == 0 and got[-50:, -50:].min() > 0
    far = hmr.crop(image, (1000.0, 1000.0), 0.5)  # misses the image entirely: all black
    assert far.shape == (224, 224, 3) and far.max() == 0


def test_predictor_crops_are_rgb(predictor0):
    frame = _frame(0)
    frame[..., 0] = 0  # no blue in BGR
    crops = predictor0.crops(frame, np.array([[20, 20, 200, 220]], np.float32))
    assert crops.shape == (1, 224, 224, 3) and crops[..., 2].max() == 0 and crops[..., 0].max() > 0


# --- rotations -------------------------------------------------------------------------------


def test_rot6d_to_rotmat_layout_and_orthonormality():
    identity = torch.tensor(hmr.IDENTITY_6D).repeat(24).reshape(24, 6)
    np.testing.assert_allclose(hmr.rot6d_to_rotmat(identity).numpy(), np.broadcast_to(np.eye(3), (24, 3, 3)))
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 3, (5, 24, 6)).astype(np.float32))
    r = hmr.rot6d_to_rotmat(x).double()
    assert r.shape == (5, 24, 3, 3)
    np.testing.assert_allclose((r @ r.transpose(-1, -2)).numpy(), np.broadcast_to(np.eye(3), r.shape), atol=1e-5)
    np.testing.assert_allclose(torch.linalg.det(r).numpy(), 1.0, atol=1e-5)
    # The 6D vector is R[:, :2] read row-major: the columns, not the rows, carry b1 and b2.
    np.testing.assert_allclose(hmr.rot6d_to_rotmat(r[..., :2].reshape(5, 24, 6).float()).numpy(), r.numpy(), atol=1e-5)
    first_column = torch.nn.functional.normalize(x.double()[..., 0::2], dim=-1)  # (a, c, e), not (a, b, c)
    np.testing.assert_allclose(r[..., 0].numpy(), first_column.numpy(), atol=1e-5)


def _axis_angles(rng: np.random.Generator, angles: np.ndarray) -> np.ndarray:
    axes = rng.normal(size=(len(angles), 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    return axes * angles[:, None]


@pytest.mark.parametrize("regime", ["random", "tiny", "near_pi"])
def test_rotmat_to_axis_angle_round_trip(regime):
    rng = np.random.default_rng({"random": 0, "tiny": 1, "near_pi": 2}[regime])
    angles = {
        "random": rng.uniform(0, np.pi - 1e-3, 100),
        "tiny": np.concatenate([[0.0], 10.0 ** rng.uniform(-9, -3, 99)]),
        "near_pi": np.concatenate([[np.pi], np.pi - 10.0 ** rng.uniform(-7, -2, 99)]),
    }[regime]
    aa = _axis_angles(rng, angles)
    rot = hmr.axis_angle_to_rotmat(torch.from_numpy(aa)).float()
    back = hmr.rotmat_to_axis_angle(rot.reshape(4, 25, 3, 3))
    assert back.dtype == torch.float32 and back.shape == (4, 25, 3)
    back = back.reshape(-1, 3).double()
    assert float(back.norm(dim=-1).max()) <= np.pi + 1e-6
    rebuilt = hmr.axis_angle_to_rotmat(back).numpy()
    np.testing.assert_allclose(rebuilt, rot.double().numpy(), atol=2e-6)
    if regime != "near_pi":  # near pi, a and -a are (almost) the same rotation
        np.testing.assert_allclose(back.numpy(), aa, atol=2e-6 if regime == "random" else 1e-9)


def test_rotmat_to_axis_angle_matches_opencv():
    rng = np.random.default_rng(5)
    aa = _axis_angles(rng, rng.uniform(0, np.pi - 1e-2, 50))
    rot = hmr.axis_angle_to_rotmat(torch.from_numpy(aa)).numpy()
    ours = hmr.rotmat_to_axis_angle(torch.from_numpy(rot)).numpy()
    theirs = np.stack([cv2.Rodrigues(r)[0][:, 0] for r in rot])
    np.testing.assert_allclose(ours, theirs, atol=1e-9)
    np.testing.assert_allclose(rot, np.stack([cv2.Rodrigues(a)[0] for a in aa]), atol=1e-12)


# --- predictor -------------------------------------------------------------------------------


def test_predict_batch_equals_predict(predictor0):
    frames = [_frame(1), _frame(2), _frame(3)]
    boxes = [
        np.array([[10, 10, 150, 200], [100, 50, 310, 230]], np.float32),
        np.zeros((0, 4), np.float32),
        np.array([[-30, 40, 120, 300]], np.float32),  # partly outside the frame
    ]
    batched = predictor0.predict_batch(frames, boxes, batch_size=2)  # the 2nd batch spans two frames
    assert len(batched) == 3
    for frame, box, got in zip(frames, boxes, batched):
        single = predictor0.predict(frame, box)
        assert set(got) == set(hmr.OUTPUT_KEYS)
        for key in hmr.OUTPUT_KEYS:
            assert got[key].dtype == np.float32
            assert_close(got[key], single[key], key, rtol=1e-4, atol=1e-4)
    assert batched[1]["rotmat"].shape == (0, 24, 3, 3)


def test_predict_empty_and_shapes(predictor0):
    empty = predictor0.predict(_frame(4), np.zeros((0, 4), np.float32))
    expected = {"rotmat": (24, 3, 3), "betas": (10,), "camera": (3,), "pose_6d": (144,),
                "global_orient": (3,), "body_pose": (23, 3)}
    assert {k: v.shape for k, v in empty.items()} == {k: (0, *s) for k, s in expected.items()}
    out = predictor0.predict(_frame(4), np.array([[5, 5, 100, 150]], np.float32))
    assert {k: v.shape for k, v in out.items()} == {k: (1, *s) for k, s in expected.items()}
    assert predictor0.features(_frame(4), np.zeros((0, 4))).shape == (0, 2048)
    with pytest.raises(ValueError):
        predictor0.predict(_frame(4).astype(np.float32), np.zeros((0, 4)))
    with pytest.raises(ValueError):
        predictor0.predict_batch([_frame(4)], [])


def test_random_init_has_mean_parameters():
    torch.manual_seed(0)
    predictor = hmr.create(SPEC, None, device="cpu")
    model = predictor.model
    assert not model.training and predictor.device == torch.device("cpu")
    np.testing.assert_array_equal(model.init_pose.numpy(), np.tile([1, 0, 0, 1, 0, 0], 24)[None])
    np.testing.assert_array_equal(model.init_shape.numpy(), np.zeros((1, 10)))
    np.testing.assert_allclose(model.init_cam.numpy(), [[0.9, 0, 0]])
    out = predictor.predict(_frame(5), np.array([[20, 20, 220, 230]], np.float32))
    assert all(np.isfinite(v).all() for v in out.values())
    r = out["rotmat"][0].astype(np.float64)
    np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(3), r.shape), atol=1e-5)


def test_model_checks_input_size():
    with pytest.raises(ValueError, match="224"):
        hmr.hmr_resnet50().features(torch.zeros(1, 3, 256, 192))


# --- checkpoints -----------------------------------------------------------------------------


def _tiny_state() -> "OrderedDict[str, torch.Tensor]":
    names = ["init_pose", "conv1.weight", "layer1.0.downsample.0.weight", "fc1.weight", "decpose.weight"]
    return OrderedDict((k, torch.full((2,), float(i))) for i, k in enumerate(names))


def test_convert_spin_container():
    state = _tiny_state()
    out = hmr.convert_checkpoint({"model": state, "optimizer": {"state": {}}, "epoch": 3, "total_step_count": 10})
    assert list(out) == list(state) and all(torch.equal(out[k], state[k]) for k in state)


def test_convert_bare_and_module_prefix():
    state = _tiny_state()
    assert list(hmr.convert_checkpoint(state)) == list(state)
    wrapped = OrderedDict((f"module.{k}", v) for k, v in state.items())
    assert list(hmr.convert_checkpoint(wrapped)) == list(state)
    assert list(hmr.convert_checkpoint({"model": wrapped})) == list(state)


def test_convert_mmhuman3d():
    state = _tiny_state()
    mm = OrderedDict()
    for k, v in state.items():
        head = k.startswith(("init_", "fc", "dec"))
        mm[("head." if head else "backbone.") + k] = v
    mm["disc.fc.weight"] = torch.zeros(1)
    mm["body_model_train.shapedirs"] = torch.zeros(1)
    out = hmr.convert_checkpoint({"state_dict": mm, "meta": {"epoch": 100}})
    assert sorted(out) == sorted(state) and all(torch.equal(out[k], state[k]) for k in state)
    mm["neck.conv.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="neck.conv.weight"):
        hmr.convert_checkpoint({"state_dict": mm})


def test_convert_unknown_layouts_name_keys():
    with pytest.raises(CheckpointError, match="weird_key"):
        hmr.convert_checkpoint({"weird_key": torch.zeros(1), "epoch": 1})
    with pytest.raises(CheckpointError, match="conv1.weight"):
        hmr.convert_checkpoint({"model": {"conv1.weight": torch.zeros(1)}})  # a ResNet without HMR's head
    with pytest.raises(CheckpointError, match="list"):
        hmr.convert_checkpoint([torch.zeros(1)])


def test_strict_load_names_keys():
    state = hmr.hmr_resnet50().state_dict()
    state.pop("decshape.bias")
    state["decshape.offset"] = torch.zeros(10)
    state["fc2.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError) as err:
        hmr.create(SPEC, state, device="cpu")
    text = str(err.value)
    assert "decshape.bias" in text and "decshape.offset" in text and "fc2.weight" in text


# --- weights table ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(hmr.WEIGHTS))
def test_weights_metadata(name):
    spec = hmr.WEIGHTS[name]
    assert spec.name == name and spec.family == "hmr"
    assert spec.source_format in hmr.CHECKPOINT_FORMATS
    assert spec.url.endswith("/" + spec.filename)
    assert spec.input_size == (224, 224) and spec.color == "RGB"
    assert len(spec.mean) == 3 and len(spec.std) == 3 and all(0 < m < 1 for m in spec.mean)
    assert spec.keypoint_names == SMPL_JOINT_NAMES and len(spec.keypoint_names) == 24
    assert spec.license and spec.paper and spec.metrics
    assert hmr.hmr_resnet50(**spec.arch).n_iter == 3
