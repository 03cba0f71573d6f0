"""ViTPose-B: architecture keys, the 2023 mmengine release file through `load_model`, the weights record,
golden parity with mmpose 1.3.2 on every stored case (shared/golden/vitpose_b_coco_256x192): UDP crops,
DARK-UDP decoding (keypoints on the joints the README marks well-conditioned, scores on all, the decoder
alone on synthetic heatmaps), and `posepipe run --pose-model vitpose_b_coco_256x192` on a real local Ray."""
from __future__ import annotations

import json
import warnings
from collections import OrderedDict

import duckdb
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.utils.flop_counter import FlopCounterMode

from posepipe.models import load_model, read_weights, vitpose
from posepipe.models.checkpoint import CheckpointError
from posepipe.models.skeletons import COCO17_NAMES
from tests import media
from tests.golden import assert_close, generate_state_dict, golden_cases, golden_dir, load_case
from tests.models.mmpose_files import mmpose_1x_2023

NAME = "vitpose_b_coco_256x192"
CPU = torch.device("cpu")


def _manifest() -> list[dict]:
    return json.loads((golden_dir(NAME) / "manifest.json").read_text())


def _fake_state() -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((e["name"], torch.zeros(e["shape"], dtype=torch.int64 if e["dtype"] == "int64" else torch.float32))
                       for e in _manifest())


def _rel(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def _assert_stable_keypoints(got: np.ndarray, ref: np.ndarray, stable: np.ndarray, what: str, atol: float) -> None:
    """Keypoints on the joints whose decoding is well-conditioned (README: DARK-UDP on random weights)."""
    assert got.shape == ref.shape and stable.shape == ref.shape[:2] and stable.any()
    diff = np.abs(got.astype(np.float64) - ref).max(axis=-1)
    worst = float(diff[stable].max())
    assert worst <= atol, f"{what}: max |diff| on {int(stable.sum())} stable joints {worst:.3g} px, new value:\n{got!r}"


# ---------------------------------------------------------------------------------------------
# Golden parity: one predictor per case, loaded by `load_model` from the file as published
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=golden_cases(NAME), ids=lambda p: p.stem)
def golden(request, tmp_path_factory):
    case = load_case(request.param)
    state = generate_state_dict(golden_dir(NAME) / "manifest.json", case)
    # mmengine's file of 2023-03-14: meta with numpy arrays in dataset_meta, EMA and runner state beside
    # the state dict, data_preprocessor buffers in it.
    path = mmpose_1x_2023(state, tmp_path_factory.mktemp("vitpose") / vitpose.WEIGHTS[NAME].filename,
                          with_data_preprocessor=True)
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


def test_release_file_through_the_loader(golden):
    *_, path = golden
    _, report = read_weights(NAME, path)
    assert report.layout.startswith("mmpose 1.x ViTPose") and report.tensors == 163 and report.renamed == 0
    assert set(report.dropped) == {"data_preprocessor.mean", "data_preprocessor.std"}
    assert set(report.ignored) == {"meta", "ema_state_dict", "message_hub", "param_schedulers"}


def test_center_scale_udp_matrix_crop_and_input(golden):
    case, predictor, *_ = golden
    center, scale = predictor.box_to_center_scale(case["bboxes_xywh"])
    np.testing.assert_array_equal(center, case["center"])
    np.testing.assert_array_equal(scale, case["scale"])
    matrices = predictor.warp_matrices(center, scale)
    for k, trans in enumerate(matrices):
        np.testing.assert_array_equal(trans, case["trans"][k])  # float32 values, as mmpose builds them
    on_tensors = vitpose.udp_warp_matrices(torch.from_numpy(center), torch.from_numpy(scale), predictor.input_size_wh)
    np.testing.assert_array_equal(on_tensors.numpy(), np.stack(matrices))
    np.testing.assert_array_equal(predictor.crop_images(case["image_bgr"], center, scale), case["crop_bgr"])
    np.testing.assert_allclose(predictor.crop_inputs(case["image_bgr"], center, scale), case["input"], rtol=0, atol=1e-6)


def test_raw_and_flip_averaged_heatmaps(golden):
    case, _, out, _ = golden
    for got, key in ((out["heatmaps"], "heatmaps"), (out["heatmaps_flip"], "heatmaps_flip_avg")):
        assert got.shape == case[key].shape
        err = _rel(got, case[key])
        assert err <= 2e-5, f"{key}: max|diff|/max|ref| = {err:.3g}"


def test_decoder_on_well_conditioned_heatmaps(golden):
    """DARK-UDP alone on the synthetic blobs (joint 0 of each on the left border): every joint, 1e-3 crop px."""
    case, predictor, *_ = golden
    kps, scores = predictor.decode(case["decode_test/heatmaps"])
    assert kps.dtype == np.float64  # mmpose keeps crop coordinates in float64
    assert_close(kps, case["decode_test/keypoints_input"], "decode_test keypoints", rtol=0, atol=1e-3)
    np.testing.assert_array_equal(scores, case["decode_test/scores"])


def test_decoder_on_the_reference_heatmaps(golden):
    case, predictor, *_ = golden
    for key, suffix in (("heatmaps_flip_avg", ""), ("heatmaps", "_noflip")):
        kps, scores = predictor.decode(case[key])
        np.testing.assert_array_equal(scores, case["scores" + suffix])
        # crop px; the stable joints' image tolerance (0.05 px) is at least this in crop px for these boxes
        _assert_stable_keypoints(kps, case["keypoints_input" + suffix], case["keypoints" + suffix + "_stable"],
                                 f"keypoints_input{suffix}", 0.05)


@pytest.mark.parametrize("flip", [True, False], ids=["flip", "noflip"])
def test_predict_end_to_end(golden, flip):
    case, _, out, _ = golden
    kps, scores = out["predict_flip" if flip else "predict_noflip"]
    suffix = "" if flip else "_noflip"
    assert kps.dtype == np.float32 and scores.dtype == np.float32
    _assert_stable_keypoints(kps, case["keypoints" + suffix], case["keypoints" + suffix + "_stable"],
                             f"keypoints{suffix}", 0.05)
    ref = case["scores" + suffix]
    hm = case["heatmaps_flip_avg" if flip else "heatmaps"]
    assert_close(scores, ref, f"scores{suffix}", rtol=0, atol=2e-5 * np.abs(hm).max())


def test_flip_average_has_no_shift(golden):
    """UDP's geometry is symmetric: the mirrored pass is flipped back and swapped, never shifted a column."""
    case, predictor, *_ = golden
    raw, flipped = torch.from_numpy(case["heatmaps"]), torch.from_numpy(case["heatmaps_flip"])
    merged = predictor._merge_flip(raw, flipped).numpy()
    assert _rel(merged, case["heatmaps_flip_avg"]) <= 1e-6


def test_predict_batch_and_the_device_path_match_predict(golden):
    case, predictor, out, _ = golden
    image, boxes = case["image_bgr"], case["bboxes_xywh"]
    ref_kps, ref_scores = out["predict_flip"]
    results = predictor.predict_batch([image, image], [boxes[1:], boxes[:1]], flip_test=True, batch_size=2)
    stable = case["keypoints_stable"]
    _assert_stable_keypoints(results[0][0], ref_kps[1:], stable[1:], "predict_batch", 1e-3)
    _assert_stable_keypoints(results[1][0], ref_kps[:1], stable[:1], "predict_batch", 1e-3)
    # The device path crops with UDP's matrices too (device_warp_matrices): the same keypoints and scores.
    assert predictor.supports_device
    frames = torch.from_numpy(np.ascontiguousarray(image))[None]
    got = predictor.predict_frames(frames, torch.zeros(len(boxes), dtype=torch.long),
                                   torch.from_numpy(np.asarray(boxes, np.float32)), flip_test=True)
    assert not bool(got.overflow)
    np.testing.assert_allclose(got.keypoints.numpy(), ref_kps, rtol=0, atol=1e-3)
    np.testing.assert_allclose(got.scores.numpy(), ref_scores, rtol=0, atol=1e-5 * np.abs(ref_scores).max())


# ---------------------------------------------------------------------------------------------
# Architecture, formats, record, decoding rules
# ---------------------------------------------------------------------------------------------

def test_state_dict_keys_match_official_manifest():
    manifest = _manifest()
    state = vitpose.vitpose().state_dict()
    assert list(state) == [e["name"] for e in manifest]
    for e in manifest:
        assert list(state[e["name"]].shape) == e["shape"], e["name"]


def test_convert_layouts_and_refusals():
    state = _fake_state()
    assert vitpose.checkpoint_format({"meta": {}, "state_dict": state}).startswith("mmpose 1.x ViTPose")
    assert list(vitpose.convert_checkpoint(state)) == list(state)  # a bare state dict
    # A class-token ViT's position embedding (193 rows): mmpretrain's load hook drops the first row.
    with_cls = OrderedDict(state)
    with_cls["backbone.pos_embed"] = torch.arange(193 * 768, dtype=torch.float32).view(1, 193, 768)
    converted = vitpose.convert_checkpoint({"state_dict": with_cls})
    assert converted["backbone.pos_embed"].shape == (1, 192, 768)
    assert converted["backbone.pos_embed"][0, 0, 0] == 768.0
    other_grid = OrderedDict(state)
    other_grid["backbone.pos_embed"] = torch.zeros(1, 196, 768)
    with pytest.raises(CheckpointError, match="shape mismatches: backbone.pos_embed"):
        vitpose.create(vitpose.WEIGHTS[NAME], vitpose.convert_checkpoint(other_grid), device=CPU)
    with pytest.raises(CheckpointError, match="not a ViTPose"):
        vitpose.convert_checkpoint({"state_dict": {"backbone.layer1.0.conv1.weight": torch.zeros(1)}})


def test_dark_udp_rules():
    """A Gaussian blob decodes to its sub-pixel centre; a maximum <= 0 keeps mmpose's (-1, -1) start;
    scaling to crop pixels is by (size - 1), not by the 4x stride."""
    predictor = vitpose.create(vitpose.WEIGHTS[NAME], None, device=CPU)
    yy, xx = np.mgrid[0:64, 0:48]
    hm = np.full((1, 17, 64, 48), -0.5, np.float32)
    hm[0, 0] = np.exp(-((xx - 20.3) ** 2 + (yy - 30.6) ** 2) / (2 * 2.0 ** 2))
    kps, scores = predictor.decode(hm)
    assert abs(kps[0, 0, 0] / 192 * 47 - 20.3) < 0.05 and abs(kps[0, 0, 1] / 256 * 63 - 30.6) < 0.05
    assert scores[0, 1] == -0.5 and np.isfinite(kps).all()


def test_weights_entry_and_counted_cost():
    spec = vitpose.WEIGHTS[NAME]
    assert spec.family == "vitpose" and spec.stage == "pose" and spec.source_format == "mmpose"
    assert spec.url.endswith("/" + spec.filename) and f"-{spec.hash_prefix}_" in spec.filename
    assert spec.input_size == (256, 192) and spec.keypoint_names == COCO17_NAMES
    assert spec.metrics["coco_val2017_AP"] == 75.7 and "Xu et al." in spec.paper
    assert "PRTR and TokenPose" in spec.notes
    with torch.device("meta"):
        model = vitpose.vitpose()
        x = torch.zeros((1, 3, *spec.input_size))
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert spec.gmacs == pytest.approx(counter.get_total_flops() / 2e9, rel=0.01)
    predictor = vitpose.create(spec, None, device=CPU)
    with pytest.raises(ValueError, match="token grid"):
        predictor.heatmaps(np.zeros((1, 3, 128, 96), np.float32))


# ---------------------------------------------------------------------------------------------
# The option through a real job
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_run_with_vitpose(ray_local, tmp_path):
    from posepipe.jobs.cli import main

    clip = media.street_clip(tmp_path / "walk.mp4", n=3)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "run", str(clip), "--output", str(out), "--random-weights", "--max-persons", "1",
        "--pose-model", NAME, "--lifter", "simplebaseline3d_h36m", "--json",
    ], catch_exceptions=False)  # flip test on: both passes and the unshifted average run in the job
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["ok"] == 1 and summary["rows"] > 0
    con = duckdb.connect()
    rows = con.sql(f"SELECT keypoints_2d, keypoint_scores FROM read_parquet('{out}/poses/**/*.parquet')").fetchall()
    assert len(rows) == summary["rows"] <= 3
    for keypoints, scores in rows:
        assert np.asarray(keypoints).shape == (17, 2) and np.isfinite(np.asarray(keypoints)).all()
        assert np.asarray(scores).shape == (17,) and np.isfinite(np.asarray(scores)).all()
    meta = json.loads(con.sql(f"SELECT value FROM parquet_kv_metadata('{next((out / 'poses').rglob('*.parquet'))}') "
                              "WHERE key = 'posepipe.provenance'").fetchall()[0][0])
    assert meta["models"]["pose"]["name"] == NAME
