"""Hourglass-52: architecture keys, the 2020 mmpose 0.x release file through `load_model`, the weights
record, golden parity with mmpose 1.3.2 on every stored case (shared/golden/hourglass52_coco_256x256),
and `posepipe run --pose-model hourglass52_coco_256x256` end to end on a real local Ray."""
from __future__ import annotations

import json
import warnings
from collections import OrderedDict
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.utils.flop_counter import FlopCounterMode

from posepipe.models import hourglass, load_model, read_weights
from posepipe.models.checkpoint import CheckpointError, read_checkpoint
from posepipe.models.skeletons import COCO17_NAMES
from tests import media
from tests.golden import assert_close, generate_state_dict, golden_cases, golden_dir, load_case
from tests.models.mmpose_files import mmpose_1x_2023, to_0x
from tests.models.release_files import _with_metadata, pickle_globals, save_as_released

NAME = "hourglass52_coco_256x256"
CPU = torch.device("cpu")


def _manifest() -> list[dict]:
    return json.loads((golden_dir(NAME) / "manifest.json").read_text())


def _fake_state() -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((e["name"], torch.zeros(e["shape"], dtype=torch.int64 if e["dtype"] == "int64" else torch.float32))
                       for e in _manifest())


def release_2020(state: "OrderedDict[str, torch.Tensor]", path: Path) -> Path:
    """The file as mmpose 0.x published it on 2020-07-09: mmcv 1.0's ``save_checkpoint`` then
    ``publish_model`` (optimizer deleted), torch's legacy (pre-1.6) format, numpy scalars in ``meta``,
    the head under ``keypoint_head.*`` (0.x's TopdownHeatmapMultiStageHead)."""
    meta = {
        "mmcv_version": "1.0.0", "time": "Thu Jul  9 03:12:40 2020", "epoch": 210, "iter": 245_000, "seed": None,
        "config": "model = dict(type='TopDown', backbone=dict(type='HourglassNet', num_stacks=1))\n",
        "exp_name": "hourglass52_coco_256x256.py",
        "hook_msgs": {"best_score": np.float64(0.726), "best_epoch": np.int64(210),
                      "last_ckpt": "work_dirs/epoch_210.pth"},
    }
    return save_as_released({"meta": meta, "state_dict": _with_metadata(to_0x(state))}, path, legacy=True,
                            location="cpu")


def _rel(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


# ---------------------------------------------------------------------------------------------
# Golden parity: one predictor per case, loaded by `load_model` from the file as published
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=golden_cases(NAME), ids=lambda p: p.stem)
def golden(request, tmp_path_factory):
    case = load_case(request.param)
    state = generate_state_dict(golden_dir(NAME) / "manifest.json", case)
    path = release_2020(state, tmp_path_factory.mktemp("hourglass") / hourglass.WEIGHTS[NAME].filename)
    del state
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a genuine release loads without a warning
        predictor = load_model(NAME, weights=path)
    outputs = {
        "heatmaps": predictor.heatmaps(case["input"]),
        "heatmaps_flip": predictor.heatmaps(case["input"], flip_test=True),
        "predict_flip": predictor.predict(case["image_bgr"], case["bboxes_xywh"], flip_test=True),
        "predict_noflip": predictor.predict(case["image_bgr"], case["bboxes_xywh"], flip_test=False),
    }
    return case, predictor, outputs, path


def test_release_file_is_laid_out_as_published(golden):
    *_, path = golden
    checkpoint = read_checkpoint(path)
    assert "keypoint_head.multi_final_layers.0.weight" in checkpoint["state_dict"]
    assert any("numpy" in g for g in pickle_globals(path))  # meta's numpy scalars, allow-listed
    _, report = read_weights(NAME, path)
    assert report.layout.startswith("mmpose 0.x Hourglass") and report.container.startswith("torch legacy")
    assert report.tensors == 494 and report.renamed == 2 and report.dropped == () and report.ignored == ("meta",)


def test_center_scale_crop_and_input(golden):
    case, predictor, *_ = golden
    center, scale = predictor.box_to_center_scale(case["bboxes_xywh"])
    np.testing.assert_array_equal(center, case["center"])
    np.testing.assert_array_equal(scale, case["scale"])  # square: the 1:1 fix
    for k, trans in enumerate(predictor.warp_matrices(center, scale)):
        np.testing.assert_allclose(trans, case["trans"][k], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(predictor.crop_images(case["image_bgr"], center, scale), case["crop_bgr"])
    np.testing.assert_allclose(predictor.crop_inputs(case["image_bgr"], center, scale), case["input"], rtol=0, atol=1e-6)


def test_raw_and_flip_averaged_heatmaps(golden):
    case, _, out, _ = golden
    for got, key in ((out["heatmaps"], "heatmaps"), (out["heatmaps_flip"], "heatmaps_flip_avg")):
        assert got.shape == case[key].shape
        err = _rel(got, case[key])
        assert err <= 1e-5, f"{key}: max|diff|/max|ref| = {err:.3g}"


def test_decode_reference_heatmaps(golden):
    """MSRAHeatmap decoding alone, on the official heatmaps: exact, (-1, -1) rule included."""
    case, predictor, *_ = golden
    for key, suffix in (("heatmaps_flip_avg", ""), ("heatmaps", "_noflip")):
        kps, scores = predictor.decode(case[key])
        np.testing.assert_array_equal(kps, case["keypoints_input" + suffix])
        np.testing.assert_array_equal(scores, case["scores" + suffix])
    assert (case["scores"] <= 0).any(), "the visible case exercises maxval <= 0"


@pytest.mark.parametrize("flip", [True, False], ids=["flip", "noflip"])
def test_predict_end_to_end(golden, flip):
    case, _, out, _ = golden
    kps, scores = out["predict_flip" if flip else "predict_noflip"]
    suffix = "" if flip else "_noflip"
    assert kps.dtype == np.float32 and scores.dtype == np.float32
    assert_close(kps, case["keypoints" + suffix], f"keypoints{suffix}", rtol=0, atol=1e-3)
    ref = case["scores" + suffix]
    assert_close(scores, ref, f"scores{suffix}", rtol=0, atol=1e-5 * np.abs(ref).max())


def test_predict_batch_and_device_path_match_predict(golden):
    case, predictor, out, _ = golden
    image, boxes = case["image_bgr"], case["bboxes_xywh"]
    ref_kps, ref_scores = out["predict_flip"]
    results = predictor.predict_batch([image, image], [boxes[1:], boxes[:1]], flip_test=True, batch_size=2)
    assert_close(results[0][0], ref_kps[1:], "predict_batch keypoints", rtol=0, atol=1e-3)
    assert_close(results[1][0], ref_kps[:1], "predict_batch keypoints", rtol=0, atol=1e-3)
    # The device path (square crops through the shared mmpose geometry), here on the CPU.
    assert predictor.supports_device
    frames = torch.from_numpy(np.ascontiguousarray(image))[None]
    got = predictor.predict_frames(frames, torch.zeros(len(boxes), dtype=torch.long), torch.from_numpy(boxes),
                                   flip_test=True, bucket=1)
    assert_close(got.keypoints.numpy(), ref_kps, "predict_frames keypoints", rtol=0, atol=1e-3)
    assert_close(got.scores.numpy(), ref_scores, "predict_frames scores", rtol=0, atol=1e-5 * np.abs(ref_scores).max())


# ---------------------------------------------------------------------------------------------
# Architecture, formats, record
# ---------------------------------------------------------------------------------------------

def test_state_dict_keys_match_official_manifest():
    manifest = _manifest()
    state = hourglass.hourglass().state_dict()
    assert list(state) == [e["name"] for e in manifest]
    for e in manifest:
        assert list(state[e["name"]].shape) == e["shape"], e["name"]


def test_convert_layouts_and_refusals(tmp_path):
    state = _fake_state()
    old = read_checkpoint(release_2020(state, tmp_path / "old.pth"))
    assert hourglass.checkpoint_format(old).startswith("mmpose 0.x Hourglass")
    assert list(hourglass.convert_checkpoint(old)) == list(state)
    assert hourglass.checkpoint_format({"meta": {}, "state_dict": state}).startswith("mmpose 1.x Hourglass")
    assert list(hourglass.convert_checkpoint(state)) == list(state)  # a bare state dict, as mmengine takes it
    with pytest.raises(CheckpointError, match="not a Hourglass"):
        hourglass.convert_checkpoint({"state_dict": {"head.final_layer.weight": torch.zeros(1)}})
    short = OrderedDict((k, v) for k, v in state.items() if not k.startswith("backbone.inters."))
    with pytest.raises(CheckpointError, match="backbone.inters.0.conv1.weight"):
        hourglass.create(hourglass.WEIGHTS[NAME], hourglass.convert_checkpoint(short), device=CPU)


def test_another_familys_file_is_named_as_such(tmp_path):
    rtm = OrderedDict((e["name"], torch.zeros(e["shape"], dtype=torch.int64 if e["dtype"] == "int64" else torch.float32))
                      for e in json.loads((golden_dir("rtmpose_m_coco_256x192") / "manifest.json").read_text()))
    path = mmpose_1x_2023(rtm, tmp_path / "rtmpose.pth")
    with pytest.raises(CheckpointError) as info:
        load_model(NAME, weights=path)
    text = str(info.value)
    assert text.startswith(f"{NAME}: ") and "is not a Hourglass checkpoint" in text
    assert "it is laid out as mmpose 1.x RTMPose" in text and "--weights rtmpose_t_coco_256x192=PATH" in text


def test_weights_entry_and_counted_cost():
    spec = hourglass.WEIGHTS[NAME]
    assert spec.family == "hourglass" and spec.stage == "pose" and spec.source_format == "mmpose"
    assert spec.url.endswith("/" + spec.filename) and f"-{spec.hash_prefix}_" in spec.filename
    assert spec.input_size == (256, 256) and spec.keypoint_names == COCO17_NAMES
    assert spec.metrics["coco_val2017_AP"] == 72.6 and "Newell" in spec.paper
    with torch.device("meta"):
        model = hourglass.hourglass()
        x = torch.zeros((1, 3, *spec.input_size))
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert spec.gmacs == pytest.approx(counter.get_total_flops() / 2e9, rel=0.01)
    predictor = hourglass.create(spec, None, device=CPU)
    out = predictor.heatmaps(np.zeros((1, 3, 128, 128), np.float32))  # geometry on the smallest input
    assert out.shape == (1, 17, 32, 32) and np.isfinite(out).all()
    with pytest.raises(ValueError, match="multiples of 128"):
        predictor.heatmaps(np.zeros((1, 3, 128, 96), np.float32))


# ---------------------------------------------------------------------------------------------
# The option through a real job
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_run_with_hourglass(ray_local, tmp_path):
    from posepipe.jobs.cli import main

    clip = media.street_clip(tmp_path / "walk.mp4", n=3)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "run", str(clip), "--output", str(out), "--random-weights", "--max-persons", "1", "--no-flip-test",
        "--pose-model", NAME, "--lifter", "simplebaseline3d_h36m", "--json",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["ok"] == 1 and summary["rows"] > 0
    con = duckdb.connect()
    poses = f"read_parquet('{out}/poses/**/*.parquet')"
    rows = con.sql(f"SELECT keypoints_2d, keypoint_scores, bbox_xyxy FROM {poses}").fetchall()
    assert len(rows) == summary["rows"] <= 3
    for keypoints, scores, box in rows:
        kp = np.asarray(keypoints)
        assert kp.shape == (17, 2) and np.isfinite(kp).all() and np.asarray(scores).shape == (17,)
        # Square crops: keypoints stay within the padded square around the box (or a maximum <= 0's
        # (-4, -4) crop px, 1/64 of the side outside it).
        x1, y1, x2, y2 = box
        side = max(x2 - x1, y2 - y1) * 1.25
        assert (np.abs(kp - [(x1 + x2) / 2, (y1 + y2) / 2]) <= side / 2 + side / 64 + 1e-3).all()
    meta = json.loads(con.sql(f"SELECT value FROM parquet_kv_metadata('{next((out / 'poses').rglob('*.parquet'))}') "
                              "WHERE key = 'posepipe.provenance'").fetchall()[0][0])
    assert meta["models"]["pose"]["name"] == NAME
