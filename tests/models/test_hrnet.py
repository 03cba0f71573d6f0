"""HRNet: architecture keys, checkpoint formats, weights records, and golden parity with the
official code (leoxiaobin/deep-high-resolution-net.pytorch) on every stored case."""
from __future__ import annotations

import json
import re
from collections import OrderedDict

import numpy as np
import pytest
import torch

from posepipe.models import hrnet
from posepipe.models.checkpoint import CheckpointError, read_checkpoint
from posepipe.models.skeletons import COCO17_NAMES
from tests.golden import generate_state_dict, golden_cases, golden_dir, load_case

NAME = "hrnet_w32_coco_256x192"
CPU = torch.device("cpu")


def _manifest() -> list[dict]:
    return json.loads((golden_dir(NAME) / "manifest.json").read_text())


def _fake_state(manifest: list[dict]) -> "OrderedDict[str, torch.Tensor]":
    """Cheap tensors with the official names and shapes (for format tests; values irrelevant)."""
    return OrderedDict(
        (e["name"], torch.zeros(e["shape"], dtype=torch.int64 if e["dtype"] == "int64" else torch.float32))
        for e in manifest
    )


def _rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


# ---------------------------------------------------------------------------------------------
# Golden parity: one module-scoped predictor per case (the state dict is ~28M numbers)
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=golden_cases(NAME), ids=lambda p: p.stem)
def golden(request, tmp_path_factory):
    case = load_case(request.param)
    state = generate_state_dict(golden_dir(NAME) / "manifest.json", case)
    path = tmp_path_factory.mktemp("hrnet") / "pose_hrnet_w32_256x192.pth"
    torch.save(state, path)  # the official container: a plain state_dict
    del state
    converted = hrnet.convert_checkpoint(read_checkpoint(path))
    predictor = hrnet.create(hrnet.WEIGHTS[NAME], converted, device=CPU)
    # The expensive forward passes, once per case.
    outputs = {
        "heatmaps": predictor.heatmaps(case["input"]),
        "heatmaps_of_flipped": predictor.heatmaps(np.ascontiguousarray(case["input"][:, :, :, ::-1])),
        "predict_flip": predictor.predict(case["image_bgr"], case["bboxes_xywh"], flip_test=True),
        "predict_noflip": predictor.predict(case["image_bgr"], case["bboxes_xywh"], flip_test=False),
    }
    return case, predictor, outputs


def test_center_scale_and_crop_matrix(golden):
    case, predictor, _ = golden
    center, scale = predictor.box_to_center_scale(case["bboxes_xywh"])
    assert center.dtype == np.float32 and scale.dtype == np.float32
    np.testing.assert_array_equal(center, case["center"])
    np.testing.assert_array_equal(scale, case["scale"])
    for k in range(len(center)):
        trans = hrnet.get_affine_transform(center[k], scale[k], (192, 256))
        np.testing.assert_allclose(trans, case["trans"][k], rtol=0, atol=1e-9)


def test_input_crop(golden):
    case, predictor, _ = golden
    inputs = predictor.crop_inputs(case["image_bgr"], case["center"], case["scale"])
    assert inputs.shape == case["input"].shape and inputs.dtype == np.float32
    np.testing.assert_allclose(inputs, case["input"], rtol=0, atol=1e-6)


def test_raw_heatmaps(golden):
    case, _, out = golden
    assert out["heatmaps"].shape == case["heatmaps"].shape
    err = _rel_err(out["heatmaps"], case["heatmaps"])
    assert err <= 1e-5, f"raw heatmaps: max|diff|/max|ref| = {err:.3g}"


def test_flip_averaged_heatmaps(golden):
    case, _, out = golden
    avg = hrnet.average_flip(out["heatmaps"], out["heatmaps_of_flipped"])
    err = _rel_err(avg, case["heatmaps_flip_avg"])
    assert err <= 1e-5, f"flip-averaged heatmaps: max|diff|/max|ref| = {err:.3g}"


def test_decode_reference_heatmaps(golden):
    """Decoding alone, on the official heatmaps: must match get_final_preds exactly."""
    case, _, _ = golden
    for hm_key, suffix in (("heatmaps_flip_avg", ""), ("heatmaps", "_noflip")):
        kps, scores = hrnet.decode_heatmaps(case[hm_key], case["center"], case["scale"])
        assert kps.dtype == np.float32 and scores.dtype == np.float32
        np.testing.assert_allclose(kps, case["keypoints" + suffix], rtol=0, atol=1e-3)
        np.testing.assert_array_equal(scores, case["scores" + suffix])


@pytest.mark.parametrize("flip", [True, False], ids=["flip", "noflip"])
def test_predict_end_to_end(golden, flip):
    case, _, out = golden
    kps, scores = out["predict_flip" if flip else "predict_noflip"]
    suffix = "" if flip else "_noflip"
    ref_kps, ref_scores = case["keypoints" + suffix], case["scores" + suffix]
    assert kps.shape == ref_kps.shape and kps.dtype == np.float32
    assert scores.shape == ref_scores.shape and scores.dtype == np.float32
    np.testing.assert_allclose(kps, ref_kps, rtol=0, atol=1e-3)
    ref_hm = case["heatmaps_flip_avg" if flip else "heatmaps"]
    err = float(np.abs(scores - ref_scores).max() / np.abs(ref_hm).max())
    assert err <= 1e-5, f"scores: max|diff|/max|heatmap| = {err:.3g}"


def test_predict_batch_matches_predict(golden):
    """Crops of several images share network passes (batch_size=2 mixes images 0 and 2)."""
    case, predictor, out = golden
    image, boxes = case["image_bgr"], case["bboxes_xywh"]
    mirrored = image[:, ::-1]  # a negative-stride view: the crop must cope
    results = predictor.predict_batch(
        [image, mirrored, image], [boxes[-1:], np.zeros((0, 4)), boxes[:2]], flip_test=True, batch_size=2
    )
    assert len(results) == 3
    ref_kps, ref_scores = out["predict_flip"]
    scale = np.abs(case["heatmaps_flip_avg"]).max()
    for (kps, scores), sel in ((results[0], slice(-1, None)), (results[2], slice(0, 2))):
        assert kps.dtype == np.float32 and scores.dtype == np.float32
        np.testing.assert_allclose(kps, ref_kps[sel], rtol=0, atol=1e-3)
        assert np.abs(scores - ref_scores[sel]).max() <= 1e-5 * scale
    assert results[1][0].shape == (0, 17, 2) and results[1][1].shape == (0, 17)


def test_predict_no_boxes(golden):
    case, predictor, _ = golden
    kps, scores = predictor.predict(case["image_bgr"], np.zeros((0, 4)))
    assert kps.shape == (0, 17, 2) and kps.dtype == np.float32
    assert scores.shape == (0, 17) and scores.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Pure helpers on tiny inputs
# ---------------------------------------------------------------------------------------------

def test_flip_test_shift_keeps_column_zero():
    flipped = np.arange(2 * 17 * 4 * 5, dtype=np.float32).reshape(2, 17, 4, 5)
    back = hrnet.flip_back(flipped)
    np.testing.assert_array_equal(back[:, 0], flipped[:, 0, :, ::-1])
    np.testing.assert_array_equal(back[:, 1], flipped[:, 2, :, ::-1])
    np.testing.assert_array_equal(back[:, 16], flipped[:, 15, :, ::-1])
    avg = hrnet.average_flip(np.zeros_like(flipped), flipped)
    np.testing.assert_array_equal(avg[..., 0], back[..., 0] * 0.5)   # column 0 kept, not zeroed
    np.testing.assert_array_equal(avg[..., 1:], back[..., :-1] * 0.5)


def test_decode_rules():
    hm = np.full((1, 3, 64, 48), -1.0, dtype=np.float32)
    hm[0, 0, 10, 20] = 5.0; hm[0, 0, 10, 21] = 1.0; hm[0, 0, 11, 20] = 2.0   # step +x, +y
    hm[0, 1, 1, 20] = 5.0; hm[0, 1, 1, 21] = 1.0                              # y=1: border band
    center, scale = np.array([[100.0, 50.0]], np.float32), np.array([[0.96, 1.28]], np.float32)
    kps, scores = hrnet.decode_heatmaps(hm, center, scale)
    k = 200 * 0.96 / 48  # image px per heatmap px
    np.testing.assert_allclose(kps[0, 0], [100 + (20.25 - 24) * k, 50 + (10.25 - 32) * k], atol=1e-4)
    np.testing.assert_allclose(kps[0, 1], [100 + (20 - 24) * k, 50 + (1 - 32) * k], atol=1e-4)
    np.testing.assert_allclose(kps[0, 2], [100 - 24 * k, 50 - 32 * k], atol=1e-4)  # maxval <= 0 -> (0, 0)
    np.testing.assert_array_equal(scores[0], [5.0, 5.0, -1.0])


@pytest.mark.parametrize("bad", [np.zeros((2, 3)), [[0, 0, -5, 10]], [[0, np.nan, 5, 10]]])
def test_bad_boxes_are_refused(bad):
    with pytest.raises(ValueError):
        hrnet.box_to_center_scale(np.asarray(bad, dtype=np.float64), 0.75)


# ---------------------------------------------------------------------------------------------
# Architecture and checkpoint formats
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def w32_model():
    return hrnet.pose_hrnet(width=32, num_joints=17)


def test_state_dict_keys_match_official_manifest(w32_model):
    manifest = _manifest()
    state = w32_model.state_dict()
    assert len(state) == 1754
    assert list(state) == [e["name"] for e in manifest]
    for e in manifest:
        assert list(state[e["name"]].shape) == e["shape"], e["name"]
        assert str(state[e["name"]].dtype).replace("torch.", "") == e["dtype"], e["name"]


def _as_official(converted):
    return list(converted) == [e["name"] for e in _manifest()]


def test_convert_official_plain():
    state = _fake_state(_manifest())
    assert hrnet.detect_format(state) == "official"
    assert _as_official(hrnet.convert_checkpoint(state))


def test_convert_official_module_prefix_and_wrapper():
    state = _fake_state(_manifest())
    prefixed = OrderedDict(("module." + k, v) for k, v in state.items())
    assert _as_official(hrnet.convert_checkpoint(prefixed))
    # the official training checkpoint.pth: {'state_dict': DataParallel keys, 'epoch', ...}
    assert _as_official(hrnet.convert_checkpoint({"epoch": 210, "state_dict": prefixed, "perf": 0.74}))
    assert _as_official(hrnet.remap_official(prefixed))


def test_convert_mmpose_v0():
    state = _fake_state(_manifest())
    mm = OrderedDict(
        (("keypoint_head." + k) if k.startswith("final_layer.") else ("backbone." + k), v) for k, v in state.items()
    )
    assert hrnet.detect_format(mm) == "mmpose 0.x"
    converted = hrnet.convert_checkpoint({"meta": {"mmpose_version": "0.x"}, "state_dict": mm, "optimizer": {}})
    assert _as_official(converted)
    assert converted["final_layer.bias"] is state["final_layer.bias"]


def test_convert_mmpose_v1():
    state = _fake_state(_manifest())
    mm = OrderedDict(
        (("head." + k) if k.startswith("final_layer.") else ("backbone." + k), v) for k, v in state.items()
    )
    assert hrnet.detect_format(mm) == "mmpose 1.x"
    assert _as_official(hrnet.convert_checkpoint({"meta": {}, "state_dict": mm}))
    assert _as_official(hrnet.remap_mmpose_v1(mm))


def test_convert_mmpose_v1_drops_exactly_the_data_preprocessor_buffers():
    """mmpose 1.x's load hook deletes data_preprocessor.mean/std; we drop those two names and nothing else."""
    state = _fake_state(_manifest())
    mm = OrderedDict(
        (("head." + k) if k.startswith("final_layer.") else ("backbone." + k), v) for k, v in state.items()
    )
    mm["data_preprocessor.mean"] = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    mm["data_preprocessor.std"] = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    assert hrnet.checkpoint_format({"meta": {}, "state_dict": mm}).startswith("mmpose 1.x")
    assert _as_official(hrnet.convert_checkpoint({"meta": {}, "state_dict": mm}))
    mm["data_preprocessor.other"] = torch.zeros(1)  # anything else still reaches the strict load, by name
    assert "data_preprocessor.other" in hrnet.remap_mmpose_v1(mm)


def test_convert_unknown_layout_raises():
    weird = OrderedDict((f"encoder.layers.{i}.weight", torch.zeros(1)) for i in range(10))
    with pytest.raises(CheckpointError) as info:
        hrnet.convert_checkpoint(weird)
    message = str(info.value)
    assert "encoder.layers.0.weight" in message and "10 in all" in message
    assert "mmpose 0.x" in message and "official" in message
    with pytest.raises(CheckpointError):
        hrnet.convert_checkpoint([torch.zeros(1)])


def test_strict_load_names_mismatched_keys():
    state = _fake_state(_manifest())
    state.pop("stage3.2.branches.1.0.conv1.weight")
    state["stage4.2.fuse_layers.1.0.0.weight"] = torch.zeros(64, 32, 3, 3)   # a multi-scale leftover
    state["final_layer.weight"] = torch.zeros(133, 32, 1, 1)                 # wrong joint count
    with pytest.raises(CheckpointError) as info:
        hrnet.create(hrnet.WEIGHTS[NAME], state, device=CPU)
    message = str(info.value)
    assert "stage3.2.branches.1.0.conv1.weight" in message
    assert "stage4.2.fuse_layers.1.0.0.weight" in message
    assert "final_layer.weight" in message and "133" in message


# ---------------------------------------------------------------------------------------------
# Weights records: build every entry once (random init) and validate its metadata
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(hrnet.WEIGHTS))
def test_weights_entry(name):
    spec = hrnet.WEIGHTS[name]
    assert spec.name == name and spec.family == "hrnet"
    assert spec.url.startswith("https://") and spec.url.endswith("/" + spec.filename)
    assert spec.hash_prefix is not None and re.fullmatch(r"[0-9a-f]{8}", spec.hash_prefix)
    assert f"-{spec.hash_prefix}" in spec.filename
    assert spec.source_format == "mmpose"
    width = int(re.search(r"_w(\d+)_", name).group(1))
    h, w = map(int, re.search(r"_(\d+)x(\d+)$", name).groups())
    assert spec.input_size == (h, w) and h % 32 == 0 and w % 32 == 0 and w / h == 0.75
    assert dict(spec.arch) == {"width": width, "num_joints": 17}
    assert spec.keypoint_names == COCO17_NAMES and len(spec.skeleton) == 19
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225) and spec.color == "RGB"
    # The file at `url` is mmpose's re-training, released under mmpose's Apache-2.0 (the authors' own: MIT).
    assert spec.license.startswith("Apache-2.0") and "Sun et al., CVPR 2019" in spec.paper
    assert 70 < spec.metrics["coco_val2017_AP"] < 80
    assert f"pose_hrnet_w{width}_{h}x{w}.pth" in spec.notes
    spec.describe()

    predictor = hrnet.create(spec, None, device=CPU)
    assert predictor.input_size == (h, w) and predictor.heatmap_size == (h // 4, w // 4)
    model = predictor.model
    assert not model.training
    assert model.final_layer.in_channels == width and model.final_layer.out_channels == 17
    assert model.stage4[-1].fuse_layers is not None and len(model.stage4[-1].fuse_layers) == 1
    out = predictor.heatmaps(np.zeros((1, 3, 64, 32), np.float32))  # geometry check on a tiny input
    assert out.shape == (1, 17, 16, 8) and out.dtype == np.float32 and np.isfinite(out).all()
