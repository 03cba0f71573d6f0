"""The device paths (``predict_frames``: uint8 frames and boxes on the device in, device tensors out)
against the reference paths (``predict_batch``), on real frames and the golden weights.

- crops: every matrix and every crop byte for byte against what the reference path computes (the
  kernels of models/warp.py one crop at a time, SPIN's crop with Pillow), on a few hundred
  boxes of every kind (inside, partly outside, clipped to the frame, on integer pixels, tall, tiny);
- predictions: keypoints, scores and SMPL parameters against ``predict_batch`` on the same boxes, with
  the measured differences printed (``pytest -s``); the crops being identical, what is left is the
  float noise of a different batch size, so keypoints are compared on 99% of the joints (an argmax
  that ties between neighbouring heatmap pixels could flip on another CPU) and scores on all;
- no host sync: every predictor runs on the ``meta`` device (no values at all) under modes that fail
  on anything that reads a device value on the host or copies host data in; on a GPU the same under
  ``torch.cuda.set_sync_debug_mode("error")``.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from posepipe.models import hmr, hrnet, ondevice, rle, rtmpose, simplebaseline, topdown
from posepipe.models.precision import forward_half_flagged
from tests.golden import GOLDEN, case_and_state, golden_cases

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "street.mp4"
CPU = torch.device("cpu")
POSE_FAMILIES = {
    "hrnet_w32_coco_256x192": hrnet,
    "rtmpose_m_coco_256x192": rtmpose,
    "simplebaseline_res50_coco_256x192": simplebaseline,
    "rle_res50_coco_256x192": rle,
}
HMR = "hmr_spin_resnet50"


def _read_frames(path: Path, n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < n:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


@pytest.fixture(scope="module")
def street() -> list[np.ndarray]:
    """Six real frames of the repository's sample clip (384x288)."""
    frames = _read_frames(SAMPLE, 6)
    assert len(frames) == 6, f"could not decode {SAMPLE}"
    return frames


def _boxes(rng: np.random.Generator, frames: list[np.ndarray], per_frame: int, *, clip: bool
           ) -> tuple[np.ndarray, np.ndarray]:
    """(frame_of_box, xyxy float32) grouped by frame: people-like boxes, a quarter on whole pixels, some
    reaching outside the frame (clipped to it with `clip`, as the worker does), some tall and thin."""
    height, width = frames[0].shape[:2]
    fob, boxes = [], []
    for f in range(len(frames)):
        for k in range(per_frame):
            w = rng.uniform(8, 0.45 * width)
            h = min(w * rng.uniform(1.2, 3.5), 1.1 * height) if k % 3 else rng.uniform(6, 0.9 * height)
            x, y = rng.uniform(-0.15 * width, width - 0.6 * w), rng.uniform(-0.15 * height, height - 0.6 * h)
            box = np.array([x, y, x + w, y + h], np.float32)
            if k % 4 == 1:
                box = np.round(box).astype(np.float32)
            if clip:
                box = np.clip(box, 0, [width, height, width, height]).astype(np.float32)
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                box = np.array([10, 10, 30, 60], np.float32)
            fob.append(f)
            boxes.append(box)
    return np.array(fob), np.stack(boxes)


def _xywh(xyxy: np.ndarray) -> np.ndarray:
    return np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1).astype(np.float32)


def _per_frame(values: np.ndarray, fob: np.ndarray, n_frames: int) -> list[np.ndarray]:
    return [values[fob == f] for f in range(n_frames)]


def _stack(frames: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(frames))


# --------------------------------------------------------------------------------------------
# Matrices and crops, byte for byte
# --------------------------------------------------------------------------------------------

def test_matrices_are_opencvs_to_the_bit(street):
    """The LU solve of cv2.getAffineTransform, replayed: identical float64 matrices (a closed form is
    ~1e-13 off, which moves the fixed-point warp's 1/1024-px rounding at exact ties)."""
    rng = np.random.default_rng(0)
    _, xyxy = _boxes(rng, street * 10, 8, clip=False)
    xywh = _xywh(xyxy)
    c, s = topdown.box_to_center_scale(xywh, (192, 256))
    tc, ts = ondevice.mmpose_center_scale(torch.from_numpy(xywh), (192, 256), topdown.BOX_PADDING)
    np.testing.assert_array_equal(tc.numpy(), c)
    np.testing.assert_array_equal(ts.numpy(), s)
    for inv in (False, True):
        ref = np.stack([topdown.get_warp_matrix(cc, ss, (192, 256), inv=inv) for cc, ss in zip(c, s)])
        np.testing.assert_array_equal(ondevice.mmpose_warp_matrices(tc, ts, (192, 256), inv=inv).numpy(), ref)
    c, s = hrnet.box_to_center_scale(xywh, 192 / 256)
    tc, ts = ondevice.hrnet_center_scale(torch.from_numpy(xywh), 192 / 256, hrnet.BOX_PADDING, hrnet.PIXEL_STD)
    np.testing.assert_array_equal(tc.numpy(), c)
    np.testing.assert_array_equal(ts.numpy(), s)
    for size, inv in (((192, 256), False), ((48, 64), True)):
        ref = np.stack([hrnet.get_affine_transform(cc, ss, size, inv=inv) for cc, ss in zip(c, s)])
        np.testing.assert_array_equal(ondevice.hrnet_affine(tc, ts, size, hrnet.PIXEL_STD, inv=inv).numpy(), ref)


@pytest.mark.parametrize("clip", [False, True], ids=["free", "clipped"])
def test_mmpose_and_hrnet_crops_are_the_reference_bytes(street, clip):
    rng = np.random.default_rng(1)
    fob, xyxy = _boxes(rng, street, 12, clip=clip)
    xywh = _xywh(xyxy)
    frames, tfob = _stack(street), torch.from_numpy(fob)
    # mmpose families: OpenCV 4.x's fixed-point warp
    c, s = topdown.box_to_center_scale(xywh, (192, 256))
    ref = np.concatenate([topdown.warp_crops_fixed_point(street[f], [topdown.get_warp_matrix(cc, ss, (192, 256))],
                                                         (192, 256)) for f, cc, ss in zip(fob, c, s)])
    m = ondevice.mmpose_warp_matrices(*ondevice.mmpose_center_scale(torch.from_numpy(xywh), (192, 256), 1.25), (192, 256))
    np.testing.assert_array_equal(ondevice.warp_affine_fixed_point(frames, tfob, m, (192, 256)).numpy(), ref)
    # HRNet: OpenCV 5.0's float kernel (its golden case's)
    c, s = hrnet.box_to_center_scale(xywh, 192 / 256)
    ref = np.concatenate([hrnet.crop_images(street[f], cc[None], ss[None], input_size=(256, 192), color="BGR")
                          for f, cc, ss in zip(fob, c, s)])
    m = ondevice.hrnet_affine(torch.from_numpy(c), torch.from_numpy(s), (192, 256), hrnet.PIXEL_STD)
    np.testing.assert_array_equal(ondevice.warp_affine_float(frames, tfob, m, (192, 256)).numpy(), ref)


def _spin_reference(frames: list[np.ndarray], fob: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
    centers, scales = hmr.bbox_xyxy_to_center_scale(xyxy)
    return np.stack([hmr.crop(frames[f], c, s) for f, c, s in zip(fob, centers, scales)])


def _vertical_first_boxes(rng: np.random.Generator, count: int, *, narrower: bool = False) -> np.ndarray:
    """Boxes whose SPIN canvas Pillow 13 resizes vertical pass first: the canvas is square up to the
    corners' truncation, so that takes a 224 x 225 (or, `narrower`, 223 x 225: there the horizontal
    pass is not the identity and the order shows) one, i.e. a side of ~224.5 px."""
    found = []
    for _ in range(100_000):
        if len(found) == count:
            break
        side = rng.uniform(223.8, 225.6)
        x, y = rng.uniform(-5 if narrower else 5, 150), rng.uniform(0, 60)
        box = np.array([x, y, x + side * rng.uniform(0.3, 1.0), y + side], np.float32)
        c, s = hmr.bbox_xyxy_to_center_scale(box[None])
        ul, br = hmr.crop_corners(c[0], s[0])
        w, h = br - ul
        if h - 224 > 0 and h - 224 > 2 * (w - 224) and (w < 224 or not narrower):
            found.append(box)
    assert len(found) == count
    return np.stack(found)


def test_spin_corners_are_numpys():
    """The probe agrees, and the corners of the boxes below are numpy's (exact ties included)."""
    assert hmr.spin_corners_match_numpy()
    rng = np.random.default_rng(10)
    xyxy = np.round(rng.uniform(0, 400, (300, 4)).astype(np.float32) * 4) / 4
    xyxy[:, 2:] = xyxy[:, :2] + np.abs(xyxy[:, 2:]) + 1
    ul, br = ondevice.spin_corners(torch.from_numpy(xyxy), 224, 200.0)
    want = np.array([np.concatenate(hmr.crop_corners(c, s)) for c, s in zip(*hmr.bbox_xyxy_to_center_scale(xyxy))])
    np.testing.assert_array_equal(torch.cat([ul, br], dim=1).numpy(), want)


def test_spin_crops_are_the_reference_bytes(street):
    """Corners, bytescale and Pillow's two passes, in both orders (Pillow 13 goes vertical first for a
    canvas that shrinks more in height than twice in width)."""
    rng = np.random.default_rng(2)
    fob, xyxy = _boxes(rng, street, 10, clip=True)
    dim = (street[0] * 0.35 + 60).astype(np.uint8)                    # low contrast: bytescale stretches
    extra = np.array([[0, 0, 384, 288], [100.5, 0, 112, 288], [3, 40, 380, 70], [200, 150, 203, 152],
                      [0, 10.25, 40, 287.75]], np.float32)             # whole, thin tall, wide, tiny, on the edge
    tall = _vertical_first_boxes(rng, 4)
    frames = street + [dim]
    fob = np.concatenate([fob, np.full(len(extra), len(street)), [len(street)] * 3, [0, 2, 4, len(street)]])
    xyxy = np.concatenate([xyxy, extra, xyxy[:3], tall])
    out, cut = ondevice.spin_crops(_stack(frames), torch.from_numpy(fob), torch.from_numpy(xyxy))
    assert not cut.any()
    np.testing.assert_array_equal(out.numpy(), _spin_reference(frames, fob, xyxy))


def test_spin_crops_of_boxes_reaching_outside(street):
    """Canvas padding (black, part of bytescale's minimum) for boxes not clipped to the frame."""
    fob = np.array([0, 1, 2])
    xyxy = np.array([[-40, -30, 100, 200], [300, 100, 420, 330], [-10, 250, 60, 300]], np.float32)
    out, cut = ondevice.spin_crops(_stack(street), torch.from_numpy(fob), torch.from_numpy(xyxy))
    assert not cut.any()
    np.testing.assert_array_equal(out.numpy(), _spin_reference(street, fob, xyxy))


def test_spin_crops_flag_a_canvas_over_the_bound(street):
    xyxy = torch.tensor([[10, 10, 60, 100], [0, 0, 384, 288]], dtype=torch.float32)
    out, cut = ondevice.spin_crops(_stack(street), torch.tensor([0, 1]), xyxy, max_side=200)
    assert cut.tolist() == [False, True]
    np.testing.assert_array_equal(out[0].numpy(), _spin_reference(street, np.array([0]), xyxy[:1].numpy())[0])


def test_pillow_pass_order_probe(street):
    """The order the probe picks is the one that gives the installed Pillow's bytes on such canvases."""
    tall = _vertical_first_boxes(np.random.default_rng(9), 6, narrower=True)
    fob = np.arange(6) % len(street)
    ref = _spin_reference(street, fob, tall)
    got = {rule: ondevice.spin_crops(_stack(street), torch.from_numpy(fob), torch.from_numpy(tall),
                                     vertical_first_rule=rule)[0].numpy() for rule in (True, False)}
    np.testing.assert_array_equal(got[ondevice.pillow_vertical_first()], ref)
    print(f"\nPillow vertical-first rule: {ondevice.pillow_vertical_first()}; the two orders differ on "
          f"{int((got[True] != got[False]).sum())} of {ref.size} bytes here")


# --------------------------------------------------------------------------------------------
# Predictions against predict_batch, golden weights
# --------------------------------------------------------------------------------------------

def _golden_state(name: str):
    cases = golden_cases(name)
    if not cases:
        pytest.skip(f"golden vectors for {name} not present")
    _, state = case_and_state(GOLDEN / name / "manifest.json", cases[0])
    return state


@pytest.fixture(scope="module")
def pose_models():
    cache = {}

    def get(name: str):
        if name not in cache:
            module = POSE_FAMILIES[name]
            state = _golden_state(name)
            if module is rle:
                state = rle.convert_checkpoint({"meta": {}, "state_dict": state})
            cache[name] = module.create(module.WEIGHTS[name], state, device=CPU)
        return cache[name]
    return get


@pytest.mark.parametrize("flip", [True, False], ids=["flip", "noflip"])
@pytest.mark.parametrize("name", list(POSE_FAMILIES))
def test_pose_predict_frames_matches_predict_batch(street, pose_models, name, flip):
    model = pose_models(name)
    assert model.supports_device
    rng = np.random.default_rng(5)
    fob, xyxy = _boxes(rng, street, 3, clip=False)   # 18 crops: padded to 24
    xywh = _xywh(xyxy)
    ref = model.predict_batch(street, _per_frame(xywh, fob, len(street)), flip_test=flip)
    ref_kps = np.concatenate([k for k, _ in ref])
    ref_scores = np.concatenate([s for _, s in ref])
    out = model.predict_frames(_stack(street), torch.from_numpy(fob), torch.from_numpy(xywh), flip_test=flip)
    assert out.keypoints.shape == ref_kps.shape and out.keypoints.dtype == torch.float32
    assert out.scores.shape == ref_scores.shape and out.scores.dtype == torch.float32
    assert not bool(out.overflow)
    kp_diff = np.abs(out.keypoints.numpy().astype(np.float64) - ref_kps).max(axis=-1)
    score_diff = np.abs(out.scores.numpy().astype(np.float64) - ref_scores)
    print(f"\n{name} flip={flip}: keypoints max |diff| {kp_diff.max():.3g} px "
          f"(99th pct {np.percentile(kp_diff, 99):.3g}), scores max |diff| {score_diff.max():.3g} "
          f"(max |score| {np.abs(ref_scores).max():.3g})")
    assert np.mean(kp_diff <= 1e-3) >= 0.99, f"keypoints: {np.sum(kp_diff > 1e-3)} joints off by > 1e-3 px"
    assert score_diff.max() <= 1e-5 * np.abs(ref_scores).max()


def test_hmr_predict_frames_matches_predict_batch(street):
    model = hmr.create(hmr.WEIGHTS[HMR], _golden_state(HMR), device=CPU)
    assert model.supports_device
    rng = np.random.default_rng(6)
    fob, xyxy = _boxes(rng, street, 3, clip=True)
    ref = model.predict_batch(street, _per_frame(xyxy, fob, len(street)))
    out = model.predict_frames(_stack(street), torch.from_numpy(fob), torch.from_numpy(xyxy))
    assert not bool(out["overflow"]) and not bool(out["cut"])
    report = []
    for key in hmr.OUTPUT_KEYS:
        expected = np.concatenate([r[key] for r in ref])
        got = out[key].numpy()
        assert got.shape == expected.shape and got.dtype == np.float32, key
        diff = float(np.abs(got.astype(np.float64) - expected).max())
        report.append(f"{key} {diff:.2g}")
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg=key)
    print("\nHMR max |diff|: " + ", ".join(report))


def test_hmr_crops_bucketed_by_box_are_the_frame_bound_crops(street):
    """Cropped at each box's canvas bucket (what the worker does), every crop is the same bytes and the
    SMPL the same numbers as with the frame-sized bound; boxes of many sizes land in several buckets."""
    model = hmr.create(hmr.WEIGHTS[HMR], _golden_state(HMR), device=CPU)
    rng = np.random.default_rng(11)
    fob, xyxy = _boxes(rng, street, 9, clip=True)
    xyxy = np.concatenate([xyxy, np.float32([[0, 0, 384, 288], [200, 150, 203, 152], [10.5, 3, 70.25, 200]])])
    fob = np.concatenate([fob, [0, 1, 2]])
    sides = (xyxy[:, 2:] - xyxy[:, :2]).max(axis=1)
    assert len({ondevice.canvas_bucket(int(np.ceil(v)) + 1, 384) for v in sides}) >= 3
    frames, tfob, txyxy = _stack(street), torch.from_numpy(fob), torch.from_numpy(xyxy)
    whole = model.predict_frames(frames, tfob, txyxy)
    bucketed = model.predict_frames(frames, tfob, txyxy, box_sides=sides)
    assert not bool(bucketed["cut"])
    for key in hmr.OUTPUT_KEYS:
        np.testing.assert_array_equal(bucketed[key].numpy(), whole[key].numpy(), err_msg=key)
    total = ondevice.padded_count(len(xyxy))
    fob_p, boxes_p = ondevice.pad_boxes(tfob, txyxy, total, (0.0, 0.0, 1.0, 1.0))
    crops, cut = model._bucketed_crops(frames, fob_p, boxes_p, sides, len(xyxy))
    np.testing.assert_array_equal(crops[:len(xyxy)].numpy(), _spin_reference(street, fob, xyxy))
    assert not cut.any()


def test_padding_buckets_and_no_boxes(street, pose_models):
    model = pose_models("rtmpose_m_coco_256x192")
    frames = _stack(street)
    xywh = torch.tensor([[30, 20, 60, 150], [200, 40, 50, 140], [120, 90, 40, 100]], dtype=torch.float32)
    fob = torch.tensor([0, 2, 5])
    a = model.predict_frames(frames, fob, xywh, flip_test=True, bucket=8)
    b = model.predict_frames(frames, fob, xywh, flip_test=True, bucket=1, batch_size=2)  # 2 passes, no padding
    assert a.keypoints.shape == (3, 17, 2) and a.scores.shape == (3, 17)
    np.testing.assert_allclose(a.keypoints.numpy(), b.keypoints.numpy(), atol=1e-3)
    none = model.predict_frames(frames, fob[:0], xywh[:0], flip_test=True)
    assert none.keypoints.shape == (0, 17, 2) and none.scores.shape == (0, 17) and not bool(none.overflow)
    mesh = hmr.create(hmr.WEIGHTS[HMR], None, device=CPU)
    empty = mesh.predict_frames(frames, fob[:0], xywh[:0])
    assert empty["body_pose"].shape == (0, 23, 3) and not bool(empty["overflow"]) and not bool(empty["cut"])
    with pytest.raises(ValueError):
        model.predict_frames(frames.float(), fob, xywh)
    with pytest.raises(ValueError):
        model.predict_frames(frames, fob[:2], xywh)


def test_overflow_is_a_device_flag_over_the_real_rows():
    """fp16 overflow: no host read, only the rows asked about count (not the padding)."""
    fake = SimpleNamespace(half=True, device=torch.device("cuda"))
    out = torch.ones(8, 3)
    out[6] = float("inf")  # a padding row
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # autocast("cuda") without CUDA: disabled, with a warning
        value, flag = forward_half_flagged(fake, lambda: out, [slice(0, 5)])
        assert value.dtype == torch.float32 and not bool(flag)
        _, flag = forward_half_flagged(fake, lambda: out, [slice(0, 5), slice(5, 7)])
        assert bool(flag)
    _, flag = forward_half_flagged(SimpleNamespace(half=False, device=CPU), lambda: out)
    assert flag.shape == () and not bool(flag)


# --------------------------------------------------------------------------------------------
# No host sync
# --------------------------------------------------------------------------------------------

_HOST_READS = {"item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__", "nonzero",
               "argwhere", "masked_select", "unique", "unique_consecutive", "tensor", "as_tensor", "asarray"}


class _NoHostTraffic(TorchFunctionMode):
    """Fails on any torch call that reads a device value on the host or builds a tensor from host data."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name in _HOST_READS:
            raise AssertionError(f"host traffic: {name}")
        if name in ("__getitem__", "__setitem__"):
            index = args[1] if len(args) > 1 else None
            for leaf in pytree.tree_leaves(index):
                if isinstance(leaf, (list, np.ndarray)):
                    raise AssertionError(f"{name} with a host index {type(leaf).__name__}")
        if name == "where" and len(args) + len(kwargs) == 1:
            raise AssertionError("one-argument where (nonzero)")
        if name == "repeat_interleave" and "output_size" not in kwargs:
            raise AssertionError("repeat_interleave without output_size")
        return func(*args, **kwargs)


class _MetaOnly(TorchDispatchMode):
    """Every tensor reaching an operator is on the meta device (nothing was copied in from the host)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for leaf in pytree.tree_leaves((args, kwargs)):
            if isinstance(leaf, torch.Tensor) and leaf.device.type != "meta":
                raise AssertionError(f"{func}: a {leaf.device} tensor reached the device path")
        if func is torch.ops.aten._local_scalar_dense.default:
            raise AssertionError("a device value read on the host")
        return func(*args, **kwargs)


def _no_from_numpy(*_args, **_kwargs):
    raise AssertionError("host traffic: from_numpy")


@pytest.mark.parametrize("name", [*POSE_FAMILIES, HMR])
def test_no_host_sync_on_the_meta_device(name, monkeypatch):
    """The whole device path runs where tensors have no values: any read of one, any data-dependent
    shape, any tensor made from host data, fails. (On CUDA each of those would block the stream.)"""
    meta = torch.device("meta")
    torch.manual_seed(0)
    if name == HMR:
        model = hmr.create(hmr.WEIGHTS[HMR], None, device=meta)
    else:
        module = POSE_FAMILIES[name]
        model = module.create(module.WEIGHTS[name], None, device=meta)
    ondevice.pillow_vertical_first(), hmr.spin_corners_match_numpy()  # host probes, cached
    frames = torch.empty((4, 96, 128, 3), dtype=torch.uint8, device=meta)
    fob = torch.empty(11, dtype=torch.long, device=meta)
    boxes = torch.empty((11, 4), dtype=torch.float32, device=meta)
    monkeypatch.setattr(torch, "from_numpy", _no_from_numpy)
    with _NoHostTraffic(), _MetaOnly():
        if name == HMR:
            out = model.predict_frames(frames, fob, boxes)
            shapes = {k: tuple(v.shape) for k, v in out.items()}
            assert shapes["body_pose"] == (11, 23, 3) and shapes["betas"] == (11, 10) and shapes["overflow"] == ()
        else:
            for flip in (True, False):
                out = model.predict_frames(frames, fob, boxes, flip_test=flip)
                assert out.keypoints.shape == (11, 17, 2) and out.scores.shape == (11, 17) and out.overflow.shape == ()


# --------------------------------------------------------------------------------------------
# GPU (skipped without one)
# --------------------------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_no_sync_and_parity(street):
    from posepipe.models import strict_fp32

    cuda = torch.device("cuda")
    strict_fp32(cuda)
    rng = np.random.default_rng(7)
    fob, xyxy = _boxes(rng, street, 4, clip=True)
    frames, tfob = _stack(street).to(cuda), torch.from_numpy(fob).to(cuda)
    for name, module in [*POSE_FAMILIES.items(), (HMR, hmr)]:
        state = _golden_state(name)
        if module is rle:
            state = rle.convert_checkpoint({"meta": {}, "state_dict": state})
        model = module.create(module.WEIGHTS[name], state, device=cuda)
        boxes = torch.from_numpy(xyxy if module is hmr else _xywh(xyxy)).to(cuda)
        run = (lambda: model.predict_frames(frames, tfob, boxes)) if module is hmr else \
            (lambda: model.predict_frames(frames, tfob, boxes, flip_test=True))
        run()  # warm-up (cuDNN plans, lazy init)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = run()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        if module is hmr:
            ref = model.predict_batch(street, _per_frame(xyxy, fob, len(street)))
            for key in hmr.OUTPUT_KEYS:
                np.testing.assert_allclose(out[key].cpu().numpy(), np.concatenate([r[key] for r in ref]),
                                           rtol=1e-4, atol=1e-4, err_msg=f"{name} {key}")
        else:
            ref = model.predict_batch(street, _per_frame(_xywh(xyxy), fob, len(street)), flip_test=True)
            kp_diff = np.abs(out.keypoints.cpu().numpy() - np.concatenate([k for k, _ in ref])).max(axis=-1)
            print(f"\n{name} on CUDA: keypoints max |diff| {kp_diff.max():.3g} px")
            assert np.mean(kp_diff <= 1e-2) >= 0.99


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp16_overflow_is_flagged_then_fp32_reruns(street):
    """HRNet's golden weights overflow fp16 (~1e5 heatmaps): the flag says so, the caller falls back."""
    from posepipe.models import PrecisionWarning

    cuda = torch.device("cuda")
    name = "hrnet_w32_coco_256x192"
    model = hrnet.create(hrnet.WEIGHTS[name], _golden_state(name), device=cuda, half=True)
    fob, xyxy = _boxes(np.random.default_rng(8), street, 2, clip=True)
    args = (_stack(street).to(cuda), torch.from_numpy(fob).to(cuda), torch.from_numpy(_xywh(xyxy)).to(cuda))
    first = model.predict_frames(*args, flip_test=True)
    assert bool(first.overflow)
    with pytest.warns(PrecisionWarning):
        model.fall_back_to_fp32()
    again = model.predict_frames(*args, flip_test=True)
    assert not bool(again.overflow) and not model.half
    assert torch.isfinite(again.keypoints).all()
