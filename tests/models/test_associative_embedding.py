"""Associative Embedding HRNet-W32: architecture keys, the 2020 mmpose 0.x release file through `load_model`,
the weights record, golden parity with mmpose 1.3.2's whole bottom-up path on every stored case
(shared/golden/ae_hrnet_w32_coco_512x512): the canvas, the raw maps, the candidates, the grouping and the
final persons. (`posepipe run` with it end to end: tests/pipeline/test_detector_free.py.)"""
from __future__ import annotations

import json
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from posepipe.models import associative_embedding as ae
from posepipe.models import load_model, read_weights
from posepipe.models.bottomup import warp_to_canvas
from posepipe.models.checkpoint import CheckpointError, read_checkpoint
from posepipe.models.skeletons import COCO17_NAMES
from tests.golden import assert_close, generate_state_dict, golden_cases, golden_dir, load_case
from tests.models.mmpose_files import to_0x
from tests.models.release_files import _with_metadata, save_as_released

NAME = "ae_hrnet_w32_coco_512x512"
CPU = torch.device("cpu")


def _manifest() -> list[dict]:
    return json.loads((golden_dir(NAME) / "manifest.json").read_text())


def _fake_state(rows: int = 34) -> "OrderedDict[str, torch.Tensor]":
    state = OrderedDict((e["name"], torch.zeros(e["shape"], dtype=torch.int64 if e["dtype"] == "int64" else torch.float32))
                        for e in _manifest())
    state["head.final_layer.weight"] = torch.zeros(rows, 32, 1, 1)
    state["head.final_layer.bias"] = torch.zeros(rows)
    return state


def release_2020(state: "OrderedDict[str, torch.Tensor]", path: Path) -> Path:
    """The file as mmpose 0.x published it on 2020-08-16: mmcv's ``save_checkpoint`` then ``publish_model``,
    torch's legacy (pre-1.6) format, numpy scalars in ``meta``, the head under ``keypoint_head.*``
    (0.x's ``BottomUpSimpleHead``)."""
    meta = {
        "mmcv_version": "1.0.5", "time": "Sun Aug 16 07:21:54 2020", "epoch": 300, "iter": 196_000, "seed": None,
        "config": "model = dict(type='BottomUp', backbone=dict(type='HRNet'))\n",
        "exp_name": "hrnet_w32_coco_512x512.py",
        "hook_msgs": {"best_score": np.float64(0.656), "best_epoch": np.int64(300)},
    }
    return save_as_released({"meta": meta, "state_dict": _with_metadata(to_0x(state))}, path, legacy=True, location="cpu")


# ---------------------------------------------------------------------------------------------
# Golden parity: one predictor per case, loaded by `load_model` from the file as published
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=golden_cases(NAME), ids=lambda p: p.stem)
def golden(request, tmp_path_factory):
    case = load_case(request.param)
    state = generate_state_dict(golden_dir(NAME) / "manifest.json", case)
    path = release_2020(state, tmp_path_factory.mktemp("ae") / ae.WEIGHTS[NAME].filename)
    del state
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a genuine release loads without a warning
        predictor = load_model(NAME, weights=path)
    x = predictor.normalize(torch.from_numpy(case["input_bgr"])[None])
    outputs = {
        "raw": predictor.raw_outputs(x),
        "raw_flip": predictor.raw_outputs(x.flip(-1)),
        "maps": predictor.maps(x, flip_test=True),
        "persons": predictor.predict_image(case["image_bgr"], flip_test=True),
    }
    return case, predictor, outputs, path


def test_release_file_is_laid_out_as_published(golden):
    *_, path = golden
    checkpoint = read_checkpoint(path)
    assert "keypoint_head.final_layer.weight" in checkpoint["state_dict"]
    _, report = read_weights(NAME, path)
    assert report.layout.startswith("mmpose 0.x Associative Embedding") and report.container.startswith("torch legacy")
    assert report.tensors == 1754 and report.dropped == () and report.ignored == ("meta",)


def test_canvas_is_bottomup_resize(golden):
    """BottomupResize(expand, size_factor 64): the canvas size, centre, scale, matrix and bytes."""
    case, predictor, *_ = golden
    canvas = predictor.canvas(case["image_bgr"].shape[:2])
    assert canvas.size_wh == tuple(int(v) for v in case["input_size"])
    np.testing.assert_array_equal(canvas.center, case["input_center"])
    np.testing.assert_array_equal(canvas.scale, case["input_scale"])
    np.testing.assert_allclose(canvas.matrix, case["trans"], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(warp_to_canvas(case["image_bgr"], canvas, 0), case["input_bgr"])


def test_raw_heatmaps_and_tags(golden):
    case, _, out, _ = golden
    for (heatmaps, tags), suffix in ((out["raw"], ""), (out["raw_flip"], "_flip")):
        for got, key in ((heatmaps, "heatmaps" + suffix), (tags, "tags" + suffix)):
            err = float(np.abs(got - case[key]).max() / np.abs(case[key]).max())
            assert err <= 1e-5, f"{key}: max|diff|/max|ref| = {err:.3g}"


def test_candidates_and_grouping_on_the_aggregated_maps(golden):
    """Flip aggregation (averaged heatmaps, concatenated tags at the canvas size), NMS and top-30, then the
    Munkres grouping: the same candidates and the same groups as mmpose's codec."""
    case, _, out, _ = golden
    heatmaps, tags = out["maps"]
    vals, cand_tags, locs = ae.top_candidates(ae.heatmap_nms(heatmaps)[0], tags[0])
    np.testing.assert_array_equal(locs, case["topk_locs"])
    # the maps' tolerance (README: 1e-5 of the largest raw value), as the candidates are read from them
    limit = 1e-5 * np.abs(np.concatenate([case["heatmaps"], case["heatmaps_flip"]])).max()
    assert_close(vals, case["topk_vals"], "topk_vals", rtol=0, atol=limit)
    limit = 1e-5 * np.abs(np.concatenate([case["tags"], case["tags_flip"]])).max()
    assert_close(cand_tags, case["topk_tags"], "topk_tags", rtol=0, atol=limit)
    # The grouping alone, on the official candidates: bit for bit.
    groups = ae.group_by_tags(case["topk_vals"], case["topk_tags"], case["topk_locs"])
    np.testing.assert_array_equal(groups, case["groups"])


def test_persons_end_to_end(golden):
    """`predict_image` (the public API): persons in mmpose's order, keypoints on the stable joints, scores
    relative to their largest value, the box the keypoints' extent."""
    case, _, out, _ = golden
    persons = out["persons"]
    assert set(persons) == {"keypoints", "keypoint_scores", "scores", "bboxes_xyxy"}
    assert all(v.dtype == np.float32 for v in persons.values())
    assert len(persons["scores"]) == len(case["instance_scores"])
    stable = case["keypoints_stable"]
    assert_close(persons["keypoints"][stable], case["keypoints"][stable], "keypoints", rtol=0, atol=1e-3)
    kp_stable = case["keypoint_scores_stable"]
    ref = case["keypoint_scores"]
    assert_close(persons["keypoint_scores"][kp_stable], ref[kp_stable], "keypoint_scores", rtol=0,
                 atol=1e-5 * np.abs(ref).max())
    inst = case["instance_scores_stable"]
    ref = case["instance_scores"]
    assert_close(persons["scores"][inst], ref[inst], "instance_scores", rtol=0, atol=1e-5 * np.abs(ref).max())
    kp = persons["keypoints"]
    np.testing.assert_array_equal(persons["bboxes_xyxy"], np.concatenate([kp.min(1), kp.max(1)], axis=1))


def test_predict_batch_answers_for_the_models_own_boxes(golden):
    """The top-down question the pipeline asks for kept boxes: each person's own (clipped) box gives back
    that person's keypoints; a box far from everyone gives zeros."""
    case, predictor, out, _ = golden
    image, persons = case["image_bgr"], out["persons"]
    h, w = image.shape[:2]
    own = persons["bboxes_xyxy"].copy()
    own[:, 0::2] = own[:, 0::2].clip(0, w)
    own[:, 1::2] = own[:, 1::2].clip(0, h)
    xywh = np.concatenate([own[:, :2], own[:, 2:] - own[:, :2]], axis=1)
    keep = (xywh[:, 2:] > 2).all(1) & (np.abs(own[:, None] - own[None]).sum(-1) + np.eye(len(own)) * 1e9 > 1).all(1)
    far = np.array([[w + 100, h + 100, 10, 10]], np.float32)
    kps, scores = predictor.predict(image, np.concatenate([xywh[keep], far]), flip_test=True)
    assert_close(kps[:-1], persons["keypoints"][keep], "predict keypoints", rtol=0, atol=0)
    assert_close(scores[:-1], persons["keypoint_scores"][keep], "predict scores", rtol=0, atol=0)
    assert not kps[-1].any() and not scores[-1].any()


# ---------------------------------------------------------------------------------------------
# Architecture, formats, record
# ---------------------------------------------------------------------------------------------

def test_state_dict_keys_match_official_manifest():
    manifest = _manifest()
    model = ae.associative_embedding()
    converted = ae.convert_checkpoint({"state_dict": _fake_state()})
    state = model.state_dict()
    assert list(converted) == list(state)  # the official order, renamed one to one
    for key, e in zip(state, manifest):
        assert list(state[key].shape) == e["shape"], e["name"]


def test_convert_layouts_and_refusals(tmp_path):
    state = _fake_state()
    old = read_checkpoint(release_2020(state, tmp_path / "old.pth"))
    assert ae.checkpoint_format(old).startswith("mmpose 0.x Associative Embedding")
    assert ae.checkpoint_format({"meta": {}, "state_dict": state}).startswith("mmpose 1.x Associative Embedding")
    # A top-down HRNet file has the same keys and a 17-row head: not recognised, refused with the reason.
    topdown = _fake_state(rows=17)
    assert ae.checkpoint_format({"state_dict": topdown}) is None
    with pytest.raises(CheckpointError, match="17 rows, not 34"):
        ae.convert_checkpoint({"state_dict": topdown})
    short = OrderedDict((k, v) for k, v in state.items() if not k.startswith("backbone.stage4.2."))
    with pytest.raises(CheckpointError, match="stage4.2"):
        ae.create(ae.WEIGHTS[NAME], ae.convert_checkpoint(short), device=CPU)


def test_a_topdown_hrnet_file_is_named_as_such(tmp_path):
    path = tmp_path / "hrnet.pth"
    torch.save({"meta": {}, "state_dict": to_0x(_fake_state(rows=17))}, path)
    with pytest.raises(CheckpointError) as info:
        load_model(NAME, weights=path)
    text = str(info.value)
    assert text.startswith(f"{NAME}: ") and "is not an Associative Embedding checkpoint" in text
    assert "mmpose 0.x" in text and "hrnet_w32_coco_256x192" in text


def test_weights_entry_and_counted_cost():
    spec = ae.WEIGHTS[NAME]
    assert spec.family == "associative_embedding" and spec.stage == "pose" and spec.source_format == "mmpose"
    assert spec.url.endswith("/" + spec.filename) and f"-{spec.hash_prefix}_" in spec.filename
    assert spec.url == "https://download.openmmlab.com/mmpose/bottom_up/hrnet_w32_coco_512x512-bcb8c247_20200816.pth"
    assert spec.input_size == (512, 512) and spec.keypoint_names == COCO17_NAMES and spec.color == "RGB"
    assert spec.mean == (123.675, 116.28, 103.53) and spec.std == (58.395, 57.12, 57.375)
    assert spec.metrics["coco_val2017_AP"] == 65.6 and "Newell" in spec.paper
    with torch.device("meta"):
        model = ae.associative_embedding()
        x = torch.zeros((1, 3, *spec.input_size))
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert spec.gmacs == pytest.approx(counter.get_total_flops() / 2e9, rel=0.01)


def test_without_flip_test_and_without_anybody():
    """The single pass (mmpose 1.3.2 has no reference for it: its head asserts) decodes with 1-D tags; a
    frame where no heatmap passes 0.1 gives no person, in the documented shapes."""
    predictor = ae.create(ae.WEIGHTS[NAME], None, device=CPU)
    with torch.no_grad():
        predictor.model.final_layer.bias[:17] = -1.0  # nobody: every heatmap far below the threshold
    persons = predictor.predict_image(np.full((64, 96, 3), 90, np.uint8), flip_test=False)  # a 768x512 canvas
    assert persons["keypoints"].shape == (0, 17, 2) and persons["bboxes_xyxy"].shape == (0, 4)
    canvases = predictor.normalize(torch.zeros((1, 64, 96, 3), dtype=torch.uint8))
    heatmaps, tags = predictor.maps(canvases, flip_test=False)
    assert heatmaps.shape == (1, 17, 64, 96) and tags.shape == (1, 17, 64, 96)
    heatmaps, tags = predictor.maps(canvases, flip_test=True)
    assert heatmaps.shape == (1, 17, 64, 96) and tags.shape == (1, 34, 64, 96)
