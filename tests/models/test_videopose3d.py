"""VideoPose3D: parity with the official outputs, checkpoint formats, padding, chunking, batching.

Golden vectors and their conventions: shared/golden/videopose3d_243_coco/README.md.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from posepipe.models import videopose3d as vp3d
from posepipe.models.checkpoint import CheckpointError, read_checkpoint
from posepipe.models.skeletons import COCO17_LEFT, COCO17_RIGHT, H36M17_LEFT, H36M17_RIGHT
from tests.golden import assert_close as assert_allclose_golden
from tests.golden import GOLDEN, case_and_state, golden_cases, load_case

NAME = "videopose3d_243_coco"
SPEC = vp3d.WEIGHTS[NAME]
MANIFEST = GOLDEN / NAME / "manifest.json"
CASES = golden_cases(NAME)
TOL = dict(rtol=1e-4, atol=2e-5)


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str, **tol: float) -> None:
    assert_allclose_golden(actual, expected, what, **(tol or TOL))


def _case_and_state(path: Path) -> tuple[dict, "OrderedDict[str, torch.Tensor]"]:
    return case_and_state(MANIFEST, path)


def _official_container(state: "OrderedDict[str, torch.Tensor]") -> dict:
    """What VideoPose3D's run.py saves: {'epoch', 'lr', 'random_state', 'optimizer', 'model_pos'}."""
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = torch.optim.Adam(params, lr=0.0002, amsgrad=True)
    params[0].grad = torch.ones(2)
    optimizer.step()  # a real, non-empty optimizer state (step/exp_avg tensors, param_groups)
    return {
        "epoch": 80,
        "lr": 0.0002,
        "random_state": np.random.RandomState(1234).get_state(),
        "optimizer": optimizer.state_dict(),
        "model_pos": state,
    }


@pytest.fixture(scope="module", params=CASES, ids=[p.stem for p in CASES])
def golden(request, tmp_path_factory):
    """One golden case, loaded end to end from a file in the official container format."""
    case, state = _case_and_state(request.param)
    path = tmp_path_factory.mktemp("vp3d") / "pretrained_h36m_detectron_coco.bin"
    torch.save(_official_container(state), path)
    checkpoint = read_checkpoint(path)
    converted = vp3d.convert_checkpoint(checkpoint)
    lifter = vp3d.create(SPEC, converted, device="cpu")
    return case, state, checkpoint, lifter


@pytest.fixture(scope="module")
def lifter0() -> vp3d.VideoPose3DLifter:
    """A lifter with the first case's weights (random init if no golden vectors are present)."""
    if CASES:
        return vp3d.create(SPEC, _case_and_state(CASES[0])[1], device="cpu")
    torch.manual_seed(0)
    return vp3d.create(SPEC, None, device="cpu")


@pytest.fixture(scope="module")
def track() -> tuple[np.ndarray, int, int]:
    """A 300-frame (T, 17, 2) pixel track: the visible case's input, or seeded noise without it."""
    if CASES:
        case = load_case(CASES[0])
        return case["keypoints_px"], int(case["width"]), int(case["height"])
    rng = np.random.default_rng(0)
    base = rng.uniform([400, 200], [900, 600], (1, 17, 2))
    return (base + np.cumsum(rng.normal(0, 2, (300, 17, 2)), axis=0)).astype(np.float32), 1280, 720


@pytest.fixture(scope="module")
def full_tta(lifter0, track) -> np.ndarray:
    kps, w, h = track
    return lifter0.lift(kps, w, h)


# --- architecture and metadata ----------------------------------------------------------------


@pytest.mark.parametrize("cls", [vp3d.TemporalModel, vp3d.TemporalModelOptimized1f])
def test_state_dict_order_matches_manifest(cls):
    if not MANIFEST.exists():
        pytest.skip(f"no manifest at {MANIFEST}")
    manifest = json.loads(MANIFEST.read_text())
    model = cls(**{**SPEC.arch, "filter_widths": list(SPEC.arch["filter_widths"])})
    ours = [
        {"name": k, "shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
        for k, v in model.state_dict().items()
    ]
    assert ours == manifest
    assert model.receptive_field() == 243 and model.total_pad() == 121 and model.total_causal_shift() == 0


@pytest.mark.parametrize("name", sorted(vp3d.WEIGHTS))
def test_weights_metadata(name):
    spec = vp3d.WEIGHTS[name]
    assert spec.name == name and spec.family == "videopose3d" and spec.source_format == "videopose3d"
    assert spec.url.startswith("https://") and spec.url.rsplit("/", 1)[-1] == spec.filename
    assert spec.license and spec.paper
    assert len(spec.keypoint_names) == spec.arch["num_joints_out"]
    assert all(0 <= a < len(spec.keypoint_names) and 0 <= b < len(spec.keypoint_names) for a, b in spec.skeleton)
    model = vp3d.build_model(spec)
    assert isinstance(model, vp3d.TemporalModel)
    fw = spec.arch["filter_widths"]
    assert model.receptive_field() == int(np.prod(fw))
    assert isinstance(vp3d.build_model(spec, single_frame=True), vp3d.TemporalModelOptimized1f)


def test_flip_lists_are_the_official_ones():
    if not CASES:
        pytest.skip("no golden vectors")
    case = load_case(CASES[0])
    assert list(case["kps_left"]) == list(COCO17_LEFT) and list(case["kps_right"]) == list(COCO17_RIGHT)
    assert list(case["joints_left"]) == list(H36M17_LEFT) and list(case["joints_right"]) == list(H36M17_RIGHT)


def test_causal_geometry():
    model = vp3d.TemporalModel(17, 2, 17, [3, 3, 3], causal=True, channels=8)
    one_f = vp3d.TemporalModelOptimized1f(17, 2, 17, [3, 3, 3], causal=True, channels=8)
    assert model.receptive_field() == one_f.receptive_field() == 27
    assert model.total_causal_shift() == one_f.total_causal_shift() == 13
    one_f.load_state_dict(model.state_dict())
    model.eval(), one_f.eval()
    x = torch.randn(1, 27, 17, 2)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), one_f(x), rtol=1e-5, atol=1e-6)


# --- golden parity -----------------------------------------------------------------------------


def test_checkpoint_container_is_read(golden):
    case, state, checkpoint, lifter = golden
    assert set(checkpoint) == {"epoch", "lr", "random_state", "optimizer", "model_pos"}
    assert checkpoint["random_state"][0] == "MT19937"
    assert lifter.receptive_field == int(case["receptive_field"]) == 243
    assert lifter.pad == int(case["pad"]) == 121
    for key, value in lifter.model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_golden_input(golden):
    case, _, _, lifter = golden
    kps, w, h = case["keypoints_px"], case["width"], case["height"]
    norm = vp3d.normalize_screen_coordinates(kps, w, h)
    assert norm.dtype == np.float32
    np.testing.assert_array_equal(norm, case["input_norm"])
    np.testing.assert_array_equal(lifter.model_input(kps, w, h), case["raw_input"][0])


def test_golden_pred(golden):
    case, _, _, lifter = golden
    with torch.inference_mode():
        direct = lifter.model(torch.from_numpy(case["raw_input"])).numpy()[0]
    assert_close(direct, case["pred"], "model(raw_input)")
    out = lifter.lift(case["keypoints_px"], case["width"], case["height"], flip_augment=False)
    assert out.dtype == np.float32
    assert_close(out, case["pred"], "lift(flip_augment=False)")


def test_golden_pred_tta(golden):
    case, _, _, lifter = golden
    out = lifter.lift(case["keypoints_px"], case["width"], case["height"])
    assert_close(out, case["pred_tta"], "lift(flip_augment=True)")


def test_golden_pred_1f(golden):
    case, state, _, _ = golden
    model = vp3d.build_model(SPEC, single_frame=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    rf = model.receptive_field()
    windows = np.stack([case["raw_input"][0, t: t + rf] for t in case["check_frames_1f"]])
    with torch.inference_mode():
        out = model(torch.from_numpy(windows)).numpy()
    assert out.shape == (len(case["check_frames_1f"]), 1, 17, 3)
    assert_close(out[:, 0], case["pred_1f"], "TemporalModelOptimized1f")


def test_missing_num_batches_tracked_loads(golden):
    case, state, _, lifter = golden
    old = OrderedDict((k, v) for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert len(old) == len(state) - 9
    legacy = vp3d.create(SPEC, vp3d.convert_checkpoint({"epoch": 1, "model_pos": old}), device="cpu")
    short = case["keypoints_px"][:20]
    np.testing.assert_array_equal(
        legacy.lift(short, case["width"], case["height"], flip_augment=False),
        lifter.lift(short, case["width"], case["height"], flip_augment=False),
    )


# --- sequence handling -------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 50])
def test_short_sequences(lifter0, track, frames):
    kps, w, h = track
    out = lifter0.lift(kps[:frames], w, h)
    assert out.shape == (frames, 17, 3) and out.dtype == np.float32 and np.isfinite(out).all()
    if frames == 1:  # one frame, edge-padded: the single-frame model on 243 copies of it
        one_f = vp3d.build_model(SPEC, single_frame=True)
        one_f.load_state_dict(lifter0.model.state_dict())
        one_f.eval()
        window = lifter0.model_input(kps[:1], w, h)[None]
        assert window.shape == (1, 243, 17, 2) and (window == window[:, :1]).all()
        with torch.inference_mode():
            ref = one_f(torch.from_numpy(window)).numpy()[0]
        assert_close(lifter0.lift(kps[:1], w, h, flip_augment=False), ref, "T=1")


def test_chunked_equals_unchunked(lifter0, track, full_tta):
    kps, w, h = track
    chunked = lifter0.lift(kps, w, h, chunk_frames=128)  # 3 windows: 128 + 128 + 44 output frames
    assert_close(chunked, full_tta, "chunked lift")


def test_context_padding_equals_slices_of_full_run(lifter0, track, full_tta):
    kps, w, h = track
    frames, pad = len(kps), lifter0.pad
    # Shard [0, 150): real context after it, edge padding before.
    head = lifter0.lift(kps[: 150 + pad], w, h, pad_before=pad, pad_after=0)
    assert_close(head, full_tta[:150], "head shard")
    # Shard [150, T): real context before, edge padding after.
    tail = lifter0.lift(kps[150 - pad:], w, h, pad_before=0, pad_after=pad)
    assert_close(tail, full_tta[150:], "tail shard")
    # Middle shard [130, 170) with real context on both sides and no padding.
    middle = lifter0.lift(kps[130 - pad: 170 + pad], w, h, pad_before=0, pad_after=0)
    assert_close(middle, full_tta[130:170], "middle shard")
    # A short head shard: exactly the context its last output frame needs.
    short = lifter0.lift(kps[: 40 + pad], w, h, pad_before=pad, pad_after=0)
    assert_close(short, full_tta[:40], "short head shard")
    assert frames == 300


def test_too_little_context_is_refused(lifter0, track):
    kps, w, h = track
    with pytest.raises(ValueError, match="receptive field is 243"):
        lifter0.lift(kps[:100], w, h, pad_before=0, pad_after=100)
    with pytest.raises(ValueError, match="pad_before must be a non-negative int"):
        lifter0.lift(kps[:10], w, h, pad_before=-1)


def test_bad_inputs_are_refused(lifter0, track):
    kps, w, h = track
    with pytest.raises(ValueError, match=r"shape \(T>=1, 17, 2\)"):
        lifter0.lift(kps[:, :16], w, h)
    with pytest.raises(ValueError, match=r"shape \(T>=1, 17, 2\)"):
        lifter0.lift(kps[:0], w, h)
    nan = kps[:5].copy()
    nan[3, 2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        lifter0.lift(nan, w, h)
    with pytest.raises(ValueError, match="positive"):
        lifter0.lift(kps[:5], 0, h)
    with pytest.raises(ValueError, match="at least 243 input frames"):
        lifter0.model(torch.zeros(1, 242, 17, 2))


def test_lift_batch_equals_lift(lifter0, track, full_tta):
    kps, w, h = track
    sequences = [kps[:50], kps, kps[10:11], kps[100:107], kps[:50] + 3.0]
    for chunk in (None, 100):  # default: all packed together; 100: packing split and a chunked long track
        outs = lifter0.lift_batch(sequences, w, h, chunk_frames=chunk)
        assert [o.shape for o in outs] == [(len(s), 17, 3) for s in sequences]
        assert_close(outs[1], full_tta, f"lift_batch long track (chunk_frames={chunk})")
        for i in (0, 2, 3, 4):
            assert_close(outs[i], lifter0.lift(sequences[i], w, h), f"lift_batch track {i} (chunk_frames={chunk})")
    assert lifter0.lift_batch([], w, h) == []


# --- checkpoint conversion ---------------------------------------------------------------------


def _tiny_state() -> "OrderedDict[str, torch.Tensor]":
    return vp3d.TemporalModel(17, 2, 17, [3, 3], channels=4).state_dict()


def test_convert_run_py_container():
    state = _tiny_state()
    container = {"epoch": 80, "lr": 2e-4, "optimizer": {"state": {}, "param_groups": []},
                 "model_pos": state, "model_traj": OrderedDict(x=torch.zeros(1)),
                 "random_state": np.random.RandomState(0).get_state()}
    out = vp3d.convert_checkpoint(container)
    assert list(out) == list(state) and all(out[k] is state[k] for k in state)
    assert container["model_pos"] is state and "model_traj" in container  # input untouched


def test_convert_bare_state_dict():
    state = _tiny_state()
    out = vp3d.convert_checkpoint(state)
    assert list(out) == list(state)
    assert out is not state


def test_convert_strips_module_prefix():
    state = _tiny_state()
    wrapped = OrderedDict(("module." + k, v) for k, v in state.items())
    assert list(vp3d.convert_checkpoint(wrapped)) == list(state)
    assert list(vp3d.convert_checkpoint({"model_pos": wrapped, "epoch": 3})) == list(state)
    assert all(k.startswith("module.") for k in wrapped)


def test_convert_unknown_layout_names_keys():
    with pytest.raises(CheckpointError, match=r"keys seen \['model', 'epoch'\].*model_pos"):
        vp3d.convert_checkpoint({"model": _tiny_state(), "epoch": 1})
    with pytest.raises(CheckpointError, match="dict-like"):
        vp3d.convert_checkpoint([1, 2])
    with pytest.raises(CheckpointError, match="'model_pos' is a list"):
        vp3d.convert_checkpoint({"model_pos": []})


def test_wrong_architecture_is_refused():
    # d-pt-243.bin style: (x, y, score) per joint -> 51 input channels, not 34.
    state = vp3d.TemporalModel(17, 3, 17, [3, 3, 3, 3, 3], channels=1024).state_dict()
    with pytest.raises(CheckpointError, match=r"expand_conv.weight: file \(1024, 51, 3\) vs model \(1024, 34, 3\)"):
        vp3d.create(SPEC, state, device="cpu")
