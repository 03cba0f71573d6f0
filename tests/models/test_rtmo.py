"""RTMO-s: architecture keys, the 2023 mmpose 1.x release file through `load_model`, the weights record,
golden parity with mmpose 1.3.2's whole one-stage path on every stored case (shared/golden/rtmo_s_coco_640x640):
the letterbox, the raw head outputs, the candidates, the NMS, the DCC and the final persons.
(`posepipe run` with it end to end: tests/pipeline/test_detector_free.py.)"""
from __future__ import annotations

import json
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torch.utils.flop_counter import FlopCounterMode

from posepipe.models import load_model, read_weights, rtmo
from posepipe.models.bottomup import warp_frames_to_canvas, warp_to_canvas
from posepipe.models.checkpoint import CheckpointError, read_checkpoint
from posepipe.models.skeletons import COCO17_NAMES
from posepipe.models.warp import warp_affine_fixed_point
from tests.golden import assert_close, generate_state_dict, golden_cases, golden_dir, load_case
from tests.models.mmpose_files import COCO_FLIP_INDICES
from tests.models.release_files import _with_metadata

NAME = "rtmo_s_coco_640x640"
CPU = torch.device("cpu")
LEVELS = (("s16", 0), ("s32", 1))
RAW = ("cls_logits", "bbox_preds", "kpt_vis_logits", "pose_vecs")


def _manifest() -> list[dict]:
    return json.loads((golden_dir(NAME) / "manifest.json").read_text())


def _fake_state() -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((e["name"], torch.zeros(e["shape"], dtype=torch.int64 if e["dtype"] == "int64" else torch.float32))
                       for e in _manifest())


def release_2023(state: "OrderedDict[str, torch.Tensor]", path: Path) -> Path:
    """The file as mmpose 1.x's ``publish_model.py`` left it on 2023-12-11: zip format, ``{'meta', 'state_dict'}``
    with the EMA weights under the plain names and numpy arrays in ``meta['dataset_meta']``."""
    meta = {
        "mmengine_version": "0.10.1", "mmcv_version": "2.1.0", "epoch": 600, "iter": 275_400, "seed": 1234,
        "experiment_name": "rtmo-s_8xb32-600e_coco-640x640_20231211_132456",
        "dataset_meta": {"dataset_name": "coco", "num_keypoints": 17, "flip_indices": COCO_FLIP_INDICES,
                         "sigmas": np.array([.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062,
                                             .107, .107, .087, .087, .089, .089], dtype=np.float32),
                         "skeleton_link_colors": np.zeros((19, 3), dtype=np.uint8)},
    }
    torch.save({"meta": meta, "state_dict": _with_metadata(state)}, path)
    return path


def match_persons(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Hungarian matching on the mean keypoint distance (the checker's rule): for each reference person, the
    index of ours."""
    cost = np.linalg.norm(ref[:, None] - got[None], axis=-1).mean(-1)
    rows, cols = linear_sum_assignment(cost)
    return cols[np.argsort(rows)]


# ---------------------------------------------------------------------------------------------
# Golden parity: one predictor per case, loaded by `load_model` from the file as published
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=golden_cases(NAME), ids=lambda p: p.stem)
def golden(request, tmp_path_factory):
    case = load_case(request.param)
    state = generate_state_dict(golden_dir(NAME) / "manifest.json", case)
    path = release_2023(state, tmp_path_factory.mktemp("rtmo") / rtmo.WEIGHTS[NAME].filename)
    del state
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a genuine release loads without a warning
        predictor = load_model(NAME, weights=path)
    outputs = predictor.head_outputs(predictor.normalize(torch.from_numpy(case["input_bgr"])[None]))
    persons = predictor.predict_image(case["image_bgr"], flip_test=False)
    return case, predictor, outputs, persons, path


def test_release_file_is_laid_out_as_published(golden):
    *_, path = golden
    checkpoint = read_checkpoint(path)  # weights_only, numpy allow-listed for the meta
    assert isinstance(checkpoint["meta"]["dataset_meta"]["sigmas"], np.ndarray)
    _, report = read_weights(NAME, path)
    assert report.layout.startswith("mmpose 1.x RTMO") and report.tensors == 514
    assert report.dropped == () and report.ignored == ("meta",)
    assert report.renamed == sum(1 for e in _manifest() if e["name"].startswith("backbone.stage"))


def test_letterbox_is_centred_with_grey_114(golden):
    case, predictor, *_ = golden
    canvas = predictor.canvas(case["image_bgr"].shape[:2])
    assert canvas.size_wh == tuple(int(v) for v in case["input_size"])
    np.testing.assert_array_equal(canvas.center, case["input_center"])
    np.testing.assert_array_equal(canvas.scale, case["input_scale"])
    np.testing.assert_allclose(canvas.matrix, case["trans"], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(warp_to_canvas(case["image_bgr"], canvas, rtmo.PAD_VALUE), case["input_bgr"])


def test_canvas_warp_with_border_0_is_warp_py_s():
    """The canvas kernel is models/warp.py's fixed-point warpAffine with a border value: with 0, the same bytes."""
    from posepipe.models.bottomup import bottomup_canvas

    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 256, (2, 37, 53, 3), dtype=np.uint8))
    canvas = bottomup_canvas((37, 53), (64, 64), size_factor=32, mode="fit")
    ours = warp_frames_to_canvas(frames, canvas, 0)
    m = torch.from_numpy(np.stack([canvas.matrix, canvas.matrix]))
    theirs = warp_affine_fixed_point(frames, torch.arange(2), m, canvas.size_wh)
    assert torch.equal(ours, theirs)
    grey = warp_frames_to_canvas(frames, canvas, 114)
    assert (grey[:, :5] == 114).all() and torch.equal(grey[:, 20:40, 2:-2], ours[:, 20:40, 2:-2])  # the band; the inside


def test_raw_head_outputs(golden):
    case, _, outputs, *_ = golden
    for suffix, level in LEVELS:
        for i, key in enumerate(RAW):
            ref = case[f"{key}_{suffix}"]
            got = outputs[level][i][0].numpy()
            err = float(np.abs(got - ref).max() / np.abs(ref).max())
            assert err <= 1e-5, f"{key}_{suffix}: max|diff|/max|ref| = {err:.3g}"


def test_nms_and_dcc_on_the_official_inputs(golden):
    """mmpose's nms_torch and the DCC alone, on the stored inputs: the same keep list; the same keypoints."""
    case, predictor, *_ = golden
    keep = rtmo.nms(torch.from_numpy(case["nms_in_bboxes"]), torch.from_numpy(case["nms_in_scores"]))
    np.testing.assert_array_equal(keep.numpy(), case["nms_keep"])
    vecs = []
    for x, y in case["dcc_grids"]:  # each prior's level from its position: i * s + (s - 1) / 2
        s = 16 if (x - 7.5) % 16 == 0 else 32
        vecs.append(case[f"pose_vecs_s{s}"][:, int((y - (s - 1) / 2) // s), int((x - (s - 1) / 2) // s)])
    with torch.inference_mode():
        keypoints = predictor.model.head.dcc(torch.from_numpy(np.stack(vecs)), torch.from_numpy(case["dcc_bbox_cs"]),
                                             torch.from_numpy(case["dcc_grids"]))
    assert_close(keypoints.numpy(), case["keypoints_input"], "DCC keypoints", rtol=0, atol=1e-2)


def test_persons_end_to_end(golden):
    case, _, _, persons, _ = golden
    assert set(persons) == {"keypoints", "keypoint_scores", "scores", "bboxes_xyxy"}
    assert all(v.dtype == np.float32 for v in persons.values())
    assert len(persons["scores"]) == len(case["instance_scores"])
    order = match_persons(persons["keypoints"], case["keypoints"])
    np.testing.assert_array_equal(order, np.arange(len(order)))  # mmpose's order (NMS, descending score)
    assert_close(persons["keypoints"], case["keypoints"], "keypoints", rtol=0, atol=1e-2)
    assert_close(persons["bboxes_xyxy"], case["bboxes_xyxy"], "bboxes_xyxy", rtol=0, atol=2e-3)
    for key, ref_key in (("keypoint_scores", "keypoint_scores"), ("scores", "instance_scores")):
        ref = case[ref_key]
        assert_close(persons[key], ref, key, rtol=0, atol=4e-5 * np.abs(ref).max())


def test_predict_batch_answers_for_the_models_own_boxes(golden):
    case, predictor, _, persons, _ = golden
    image = case["image_bgr"]
    h, w = image.shape[:2]
    own = persons["bboxes_xyxy"].copy()
    own[:, 0::2] = own[:, 0::2].clip(0, w)
    own[:, 1::2] = own[:, 1::2].clip(0, h)
    xywh = np.concatenate([own[:, :2], own[:, 2:] - own[:, :2]], axis=1)
    kps, scores = predictor.predict(image, xywh, flip_test=False)
    assert_close(kps, persons["keypoints"], "predict keypoints", rtol=0, atol=0)
    assert_close(scores, persons["keypoint_scores"], "predict scores", rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# Architecture, formats, record
# ---------------------------------------------------------------------------------------------

def test_state_dict_keys_match_official_manifest():
    manifest = _manifest()
    converted = rtmo.convert_checkpoint({"state_dict": _fake_state()})
    state = rtmo.rtmo().state_dict()
    assert set(converted) == set(state) and len(converted) == len(manifest)
    for (key, value), e in zip(converted.items(), manifest):
        assert list(state[key].shape) == list(value.shape) == e["shape"], e["name"]


def test_convert_layouts_and_refusals(tmp_path):
    state = _fake_state()
    assert rtmo.checkpoint_format(read_checkpoint(release_2023(state, tmp_path / "r.pth"))).startswith("mmpose 1.x RTMO")
    assert rtmo.checkpoint_format({"state_dict": {"head.final_layer.weight": torch.zeros(1)}}) is None
    with pytest.raises(CheckpointError, match="not a RTMO"):
        rtmo.convert_checkpoint({"state_dict": {"head.final_layer.weight": torch.zeros(1)}})
    short = OrderedDict((k, v) for k, v in state.items() if not k.startswith("head.dcc.gau."))
    with pytest.raises(CheckpointError, match="head.dcc.gau"):
        rtmo.create(rtmo.WEIGHTS[NAME], rtmo.convert_checkpoint(short), device=CPU)


def test_weights_entry_and_counted_cost():
    spec = rtmo.WEIGHTS[NAME]
    assert spec.family == "rtmo" and spec.stage == "pose" and spec.source_format == "mmpose"
    assert spec.url.endswith("/" + spec.filename) and f"-{spec.hash_prefix}_" in spec.filename
    assert spec.filename == "rtmo-s_8xb32-600e_coco-640x640-8db55a59_20231211.pth"
    assert spec.input_size == (640, 640) and spec.keypoint_names == COCO17_NAMES
    assert spec.color == "BGR" and spec.mean == (0.0, 0.0, 0.0) and spec.std == (1.0, 1.0, 1.0)
    assert spec.metrics["coco_val2017_AP"] == 67.3 and "RTMO" in spec.paper
    with torch.device("meta"):
        model = rtmo.rtmo()
        x = torch.zeros((1, 3, *spec.input_size))
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert spec.gmacs == pytest.approx(counter.get_total_flops() / 2e9, rel=0.01)


def test_random_weights_find_a_fixed_lattice_of_persons():
    """The plumbing bias (`--random-weights`): well-formed persons, the same boxes in every frame."""
    predictor = rtmo.create(rtmo.WEIGHTS[NAME], None, device=CPU)
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(2)]
    first, second = predictor.predict_images(frames)
    assert 5 <= len(first["scores"]) <= 300
    np.testing.assert_array_equal(first["bboxes_xyxy"], second["bboxes_xyxy"])
    assert np.isfinite(first["keypoints"]).all() and (first["scores"] > 0.5).all()
