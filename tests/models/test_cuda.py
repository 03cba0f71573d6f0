"""The CUDA paths of all four models against the official outputs (skipped without a GPU).

fp32 on a GPU must reproduce the CPU golden values once TF32 is off (cuDNN allows TF32 convolutions
by default, which costs ~1e-3 relative: `strict_fp32` is what the worker applies for --no-half).
fp16 autocast (the default on CUDA) cannot match to 1e-4; its bounds below are what a user may rely
on, in the units they read: pixels, millimetres-scale lifter units, SMPL radians. Each test prints
its measured error so `pytest -s` shows the figures the README quotes.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from posepipe.models import PrecisionWarning, hmr, hrnet, strict_fp32, videopose3d, yolox
from tests.golden import generate_state_dict, golden_cases, golden_dir, load_case

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def _first_case(name: str) -> tuple[dict, dict]:
    cases = golden_cases(name)
    if not cases:
        pytest.skip(f"no golden vectors for {name}")
    case = load_case(cases[0])
    return case, generate_state_dict(golden_dir(name) / "manifest.json", case)


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max(initial=0.0))


@pytest.fixture(autouse=True)
def _restore_tf32():
    prev = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev


@pytest.mark.parametrize("half", [False, True], ids=["fp32", "fp16"])
def test_yolox_detect(half):
    case, state = _first_case("yolox_s")
    if not half:
        strict_fp32(CUDA)
    predictor = yolox.create(yolox.WEIGHTS["yolox_s"], state, device=CUDA, half=half)
    x, _ = predictor.preprocess(case["image_bgr"])
    raw = predictor.forward_raw(x[None])
    ref = case["raw_output"]
    box_err, conf_err = _max_abs(raw[..., :4], ref[..., :4]), _max_abs(raw[..., 4:], ref[..., 4:])
    print(f"\nyolox_s {'fp16' if half else 'fp32'}: raw boxes max|diff| {box_err:.3g} px, conf {conf_err:.3g}")
    assert raw.dtype == np.float32 and np.isfinite(raw).all()
    if half:
        assert box_err < 2.0 and conf_err < 2e-2
    else:
        np.testing.assert_allclose(raw, ref, rtol=1e-4, atol=1e-4)
        dets = predictor.detect(case["image_bgr"], float(case["conf_thre_nms"]), float(case["nms_thre_nms"]),
                                class_agnostic=True)
        assert dets.shape == case["dets_nms_class_agnostic"].shape
        np.testing.assert_allclose(dets[:, :4], case["dets_nms_class_agnostic"][:, :4], rtol=1e-4, atol=1e-3)


def test_hrnet_predict_fp32():
    name = "hrnet_w32_coco_256x192"
    case, state = _first_case(name)
    strict_fp32(CUDA)
    predictor = hrnet.create(hrnet.WEIGHTS[name], state, device=CUDA, half=False)
    kps, scores = predictor.predict(case["image_bgr"], case["bboxes_xywh"], flip_test=True)
    scale = float(np.abs(case["heatmaps_flip_avg"]).max())
    print(f"\nhrnet fp32: keypoints max|diff| {_max_abs(kps, case['keypoints']):.3g} px, "
          f"scores {_max_abs(scores, case['scores']) / scale:.3g} of max heatmap")
    np.testing.assert_allclose(kps, case["keypoints"], rtol=0, atol=1e-3)
    assert _max_abs(scores, case["scores"]) <= 1e-5 * scale


def test_hrnet_fp16_overflow_is_redone_in_fp32_for_that_pass_only():
    """The golden weights drive HRNet's fused branches to ~1e5, past fp16's 65504: the predictor
    must notice, warn, and give the fp32 answer rather than NaN keypoints; then its precision state
    (fp16 on, the process's TF32 flags) is what it was."""
    name = "hrnet_w32_coco_256x192"
    case, state = _first_case(name)
    predictor = hrnet.create(hrnet.WEIGHTS[name], state, device=CUDA, half=True)
    tf32 = torch.backends.cudnn.allow_tf32
    with pytest.warns(PrecisionWarning, match="HRNet: fp16 overflowed"):
        kps, _ = predictor.predict(case["image_bgr"], case["bboxes_xywh"], flip_test=True)
    assert predictor.half is True and predictor.fp16_overflows == 1 and torch.backends.cudnn.allow_tf32 == tf32
    np.testing.assert_allclose(kps, case["keypoints"], rtol=0, atol=1e-3)


def test_hrnet_fp16_close_to_fp32():
    """With activations in the range trained networks have (BN scales x0.7: peaks ~80), fp16 keeps
    the heatmaps and keypoints of fp32."""
    name = "hrnet_w32_coco_256x192"
    case, state = _first_case(name)
    state = {k: v * 0.7 if k.endswith(".weight") and v.ndim == 1 else v for k, v in state.items()}
    strict_fp32(CUDA)
    fp32 = hrnet.create(hrnet.WEIGHTS[name], state, device=CUDA, half=False)
    fp16 = hrnet.create(hrnet.WEIGHTS[name], state, device=CUDA, half=True)
    hm32, hm16 = fp32.heatmaps(case["input"], flip_test=True), fp16.heatmaps(case["input"], flip_test=True)
    rel = _max_abs(hm16, hm32) / float(np.abs(hm32).max())
    kps32, _ = fp32.predict(case["image_bgr"], case["bboxes_xywh"])
    kps16, _ = fp16.predict(case["image_bgr"], case["bboxes_xywh"])
    kp_err = np.abs(kps16 - kps32)
    print(f"\nhrnet fp16 vs fp32: heatmaps max|diff| {rel:.3g} of max, keypoints median {np.median(kp_err):.3g} px, "
          f"max {kp_err.max():.3g} px")
    assert fp16.half, "no overflow expected at these scales"
    assert rel < 1e-2 and float(np.median(kp_err)) < 0.5


@pytest.mark.parametrize("half", [False, True], ids=["fp32", "fp16"])
def test_videopose3d_lift(half):
    name = "videopose3d_243_coco"
    case, state = _first_case(name)
    if not half:
        strict_fp32(CUDA)
    lifter = videopose3d.create(videopose3d.WEIGHTS[name], state, device=CUDA, half=half)
    out = lifter.lift(case["keypoints_px"], int(case["width"]), int(case["height"]))
    err = _max_abs(out, case["pred_tta"])
    print(f"\nvideopose3d {'fp16' if half else 'fp32'}: pred_tta max|diff| {err:.3g} "
          f"(range {np.abs(case['pred_tta']).max():.3g})")
    assert out.dtype == np.float32 and np.isfinite(out).all()
    if half:
        assert err < 1e-2 * max(1.0, float(np.abs(case["pred_tta"]).max()))
    else:
        np.testing.assert_allclose(out, case["pred_tta"], rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("half", [False, True], ids=["fp32", "fp16"])
def test_hmr_predict(half):
    name = "hmr_spin_resnet50"
    case, state = _first_case(name)
    if not half:
        strict_fp32(CUDA)
    predictor = hmr.create(hmr.WEIGHTS[name], state, device=CUDA, half=half)
    out = predictor.predict(case["image_bgr"], case["bbox_xyxy"][None])
    errs = {k: _max_abs(out[k], case[ref]) for k, ref in
            (("rotmat", "pred_rotmat"), ("betas", "pred_betas"), ("camera", "pred_camera"))}
    print(f"\nhmr {'fp16' if half else 'fp32'}: " + ", ".join(f"{k} max|diff| {v:.3g}" for k, v in errs.items()))
    assert all(np.isfinite(out[k]).all() for k in ("rotmat", "betas", "camera"))
    if half:
        assert errs["rotmat"] < 2e-2 and errs["betas"] < 5e-2 and errs["camera"] < 2e-2
    else:
        np.testing.assert_allclose(out["rotmat"], case["pred_rotmat"], rtol=0, atol=5e-5)
        np.testing.assert_allclose(out["betas"], case["pred_betas"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(out["camera"], case["pred_camera"], rtol=1e-4, atol=1e-4)


def test_strict_fp32_turns_tf32_off():
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    strict_fp32(CUDA)
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
