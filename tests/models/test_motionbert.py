"""MotionBERT: architecture keys, mmpose's release file through `load_model` (both catalogue entries), the
weights records, golden parity with mmpose 1.3.2's lifter chain on every stored case
(shared/golden/motionbert_dstformer_243_h36m: the demo's one frame per forward and whole clips, with and
without the flip test), the 243-frame clips a track is cut into, and `posepipe run --lifter
motionbert_dstformer_243_h36m` on a real local Ray with the 3D read back."""
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

from posepipe.models import load_model, read_weights
from posepipe.models import motionbert as mb
from posepipe.models import simplebaseline3d as sb3d
from posepipe.models.checkpoint import CheckpointError, read_checkpoint
from posepipe.models.skeletons import H36M17_NAMES
from tests import media
from tests.golden import assert_close, generate_state_dict, golden_cases, golden_dir, load_case
from tests.lifting import assert_3d_is_the_lifters
from tests.models.release_files import _with_metadata, save_as_released

NAME = "motionbert_dstformer_243_h36m"
FINE_TUNED = "motionbert_dstformer_ft_243_h36m"
TOL = {"rtol": 1e-4, "atol": 2e-5}


def _manifest() -> list[dict]:
    return json.loads((golden_dir(NAME) / "manifest.json").read_text())


def release_2023(state: "OrderedDict[str, torch.Tensor]", path: Path) -> Path:
    """mmpose's converted release of 2023-05-31: an mmengine checkpoint, zip format, ``{'meta', 'state_dict'}``
    with ``backbone.*`` / ``head.*`` keys; meta holds numpy arrays (the dataset's stats_info)."""
    meta = {
        "mmengine_version": "0.7.3", "epoch": 240,
        "dataset_meta": {"dataset_name": "h36m", "num_keypoints": 17,
                         "flip_indices": [0, 4, 5, 6, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16, 11, 12, 13],
                         "stats_info": {"bbox_center": np.array([528.0, 427.0], np.float32),
                                        "bbox_scale": np.float32(400.0)}},
    }
    return save_as_released({"meta": meta, "state_dict": _with_metadata(state)}, path, legacy=False, location="cpu")


@pytest.fixture(scope="module", params=golden_cases(NAME), ids=lambda p: p.stem)
def golden(request, tmp_path_factory):
    case = load_case(request.param)
    state = generate_state_dict(golden_dir(NAME) / "manifest.json", case)
    path = release_2023(state, tmp_path_factory.mktemp("motionbert") / mb.WEIGHTS[NAME].filename)
    del state
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a genuine release loads without a warning
        lifter = load_model(NAME, weights=path)
    return case, lifter, path


def _persons(case: dict) -> range:
    return range(case["keypoints_coco_px"].shape[1])


def _size(case: dict) -> tuple[int, int]:
    return int(case["width"]), int(case["height"])


# ---------------------------------------------------------------------------------------------
# Golden parity
# ---------------------------------------------------------------------------------------------

def test_release_file_through_the_loader(golden):
    _, lifter, path = golden
    _, report = read_weights(NAME, path)
    assert report.layout.startswith("mmpose 1.x MotionBERT") and report.tensors == 260
    assert report.renamed == 0 and report.dropped == () and report.ignored == ("meta",)
    assert lifter.receptive_field == 243 and lifter.pad == 121 and lifter.causal_shift == 0
    # The fine-tuned file is the same network: the same loader takes it under its own name.
    tuned = load_model(FINE_TUNED, weights=path)
    assert type(tuned) is type(lifter) and tuned.weights.name == FINE_TUNED


def test_conversion_normalisation_and_codec_input(golden):
    case, lifter, _ = golden
    w, h = _size(case)
    np.testing.assert_array_equal(np.float32(sb3d.H36M_BBOX_CENTER), case["stats_bbox_center"])
    np.testing.assert_array_equal(np.asarray(lifter._flip_index), case["flip_indices"])
    for n in _persons(case):
        kp, boxes = case["keypoints_coco_px"][:, n], case["bboxes_xyxy"][:, n]
        np.testing.assert_array_equal(sb3d.coco_to_h36m(kp), case["keypoints_h36m_px"][:, n])
        norm = sb3d.normalize_to_h36m_box(case["keypoints_h36m_px"][:, n], boxes)
        assert_close(norm, case["keypoints_h36m_normpose"][:, n], "normpose", rtol=0, atol=1e-4)
        x = lifter.model_input(kp, w, h, bboxes_xyxy=boxes)  # the demo's (h, w) order inside
        assert x.dtype == np.float32
        assert_close(x, case["input"][:, n], "input", rtol=0, atol=1e-6)
        assert_close(x, case["input_clip"][:, n], "input_clip", rtol=0, atol=1e-6)
        flipped = lifter._flip(torch.from_numpy(x)).numpy()
        assert_close(flipped, case["input_flip"][:, n], "input_flip", rtol=0, atol=1e-6)


def test_network_flip_average_and_decoding(golden):
    case, lifter, _ = golden
    w, h = _size(case)
    for n in _persons(case):
        demo = case["input"][:, n][:, None]         # the demo: T samples of one frame
        clip = case["input_clip"][:, n][None]       # one sample of T frames
        assert_close(lifter.raw_outputs(demo)[:, 0], case["output_raw"][:, n], "output_raw", **TOL)
        assert_close(lifter.raw_outputs(demo, flip_augment=True)[:, 0], case["output_flip_avg"][:, n],
                     "output_flip_avg", **TOL)
        assert_close(lifter.raw_outputs(clip)[0], case["output_raw_clip"][:, n], "output_raw_clip", **TOL)
        assert_close(lifter.decode(case["output_flip_avg"][:, n], w, h), case["keypoints_3d"][:, n], "decode",
                     rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("clip", [False, True], ids=["demo", "clip"])
@pytest.mark.parametrize("flip", [True, False], ids=["flip", "noflip"])
def test_lift_end_to_end(golden, flip, clip):
    case, lifter, _ = golden
    w, h = _size(case)
    key = "keypoints_3d" + ("_clip" if clip else "") + ("" if flip else "_noflip")
    for n in _persons(case):
        out = lifter.lift(case["keypoints_coco_px"][:, n], width=w, height=h, flip_augment=flip,
                          bboxes_xyxy=case["bboxes_xyxy"][:, n], clip=clip)
        assert out.dtype == np.float32 and (out[:, 0] == 0).all()
        assert_close(out, case[key][:, n], f"{key} person {n}", **TOL)


def test_lift_batch_is_lift_in_clips(golden):
    case, lifter, _ = golden
    w, h = _size(case)
    persons = list(_persons(case))
    sequences = [case["keypoints_coco_px"][:, n] for n in persons]
    boxes = [case["bboxes_xyxy"][:, n] for n in persons]
    outs = lifter.lift_batch(sequences, w, h, flip_augment=True, bboxes_xyxy=boxes)
    for n, out in zip(persons, outs):
        assert_close(out, case["keypoints_3d_clip"][:, n], f"lift_batch person {n}", **TOL)
    assert lifter.lift_batch([], w, h) == []


# ---------------------------------------------------------------------------------------------
# Clips, inputs, architecture, formats, records
# ---------------------------------------------------------------------------------------------

def _small_lifter(clip_frames: int) -> mb.MotionBERTLifter:
    torch.manual_seed(0)
    model = mb.MotionBERT(feat_size=32, depth=1, num_heads=2, seq_len=clip_frames).eval()
    return mb.MotionBERTLifter(model, mb.WEIGHTS[NAME])


def test_a_track_is_lifted_in_consecutive_clips_from_its_first_frame():
    """What the pipeline runs: clips of `clip_frames` from frame 0, the last one shorter; a clip sees
    itself only, so each part equals lifting that part alone, and tracks packed together do not mix."""
    assert mb.clip_bounds(20, 8) == [(0, 8), (8, 16), (16, 20)] and mb.clip_bounds(16, 8) == [(0, 8), (8, 16)]
    assert mb.clip_bounds(1, 243) == [(0, 1)]
    lifter = _small_lifter(8)
    rng = np.random.default_rng(3)
    track = rng.uniform(100, 400, (20, 17, 2)).astype(np.float32)
    other = rng.uniform(100, 400, (8, 17, 2)).astype(np.float32)
    whole, alone = lifter.lift_batch([track, other], 640, 480)
    parts = [lifter.lift(track[a:b], 640, 480, clip=True) for a, b in mb.clip_bounds(20, 8)]
    np.testing.assert_allclose(whole, np.concatenate(parts), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(alone, lifter.lift(other, 640, 480, clip=True), rtol=1e-5, atol=1e-6)
    # Within a clip every frame sees the others: changing frame 0 moves frame 5, never frame 8 or later.
    moved = track.copy()
    moved[0, 9:11] += 40.0  # one pose changes (a shift of the whole pose would vanish in norm_pose_2d)
    again = lifter.lift(moved, 640, 480, clip=True)
    assert np.abs(again[5] - whole[5]).max() > 1e-6
    np.testing.assert_allclose(again[8:], whole[8:], rtol=1e-5, atol=1e-6)
    # The demo mode lifts every frame alone.
    demo = lifter.lift(moved, 640, 480)
    np.testing.assert_allclose(demo[1:], lifter.lift(track, 640, 480)[1:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [np.zeros((4, 16, 2)), np.zeros((0, 17, 2)), np.full((2, 17, 2), np.nan)])
def test_bad_keypoints_are_refused(bad):
    with pytest.raises(ValueError):
        _small_lifter(8).lift(bad, 100, 100)


def test_bad_sizes_and_boxes_are_refused():
    lifter = _small_lifter(8)
    kp = np.random.default_rng(0).uniform(0, 100, (3, 17, 2))
    with pytest.raises(ValueError, match="image size"):
        lifter.lift(kp, 0, 100)
    with pytest.raises(ValueError, match="3 frames but 2 boxes"):
        lifter.lift(kp, 100, 100, bboxes_xyxy=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="DSTFormer takes"):
        lifter.raw_outputs(np.zeros((1, 9, 17, 3), np.float32))  # longer than the temporal embedding


def test_state_dict_keys_match_official_manifest():
    manifest = _manifest()
    state = mb.motionbert().state_dict()
    assert list(state) == [e["name"] for e in manifest]
    for e in manifest:
        assert list(state[e["name"]].shape) == e["shape"], e["name"]


def test_convert_layouts_and_refusals(tmp_path):
    state = OrderedDict((e["name"], torch.zeros(e["shape"])) for e in _manifest())
    checkpoint = read_checkpoint(release_2023(state, tmp_path / "mb.pth"))
    assert mb.checkpoint_format(checkpoint).startswith("mmpose 1.x MotionBERT")
    assert list(mb.convert_checkpoint(checkpoint)) == list(state)
    assert list(mb.convert_checkpoint(state)) == list(state)  # a plain state dict
    prefixed = OrderedDict(("module." + k, v) for k, v in state.items())
    assert list(mb.convert_checkpoint({"state_dict": prefixed})) == list(state)
    with pytest.raises(CheckpointError, match="not a MotionBERT"):
        mb.convert_checkpoint({"state_dict": {"backbone.expand_conv.conv.weight": torch.zeros(1)}})


@pytest.mark.parametrize("name,mpjpe", [(NAME, 34.5), (FINE_TUNED, 26.9)])
def test_weights_entries_and_counted_cost(name, mpjpe):
    spec = mb.WEIGHTS[name]
    assert spec.family == "motionbert" and spec.stage == "lifter" and spec.source_format == "mmpose"
    assert spec.url.endswith("/" + spec.filename) and f"-{spec.hash_prefix}_" in spec.filename
    assert spec.keypoint_names == H36M17_NAMES and spec.metrics["h36m_mpjpe_mm"] == mpjpe
    with torch.device("meta"):
        model = mb.motionbert(**dict(spec.arch))
        x = torch.zeros((1, 243, 17, 3))
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert spec.gmacs == pytest.approx(counter.get_total_flops() / 2e9 / 243, rel=0.01)  # per lifted frame


# ---------------------------------------------------------------------------------------------
# The option through a real job
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_run_with_motionbert(ray_local, tmp_path):
    """Shards of 2 frames: each track is lifted whole in the finisher, so its 3D is the lifter's answer on
    the whole track (assert_3d_is_the_lifters), whatever the shards were."""
    from posepipe.jobs.cli import main

    clip = media.street_clip(tmp_path / "walk.mp4", n=5)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "run", str(clip), "--output", str(out), "--random-weights", "--max-persons", "1", "--no-flip-test",
        "--shard-frames", "2", "--pose-model", "rtmpose_t_coco_256x192", "--lifter", NAME, "--json",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["ok"] == 1 and summary["rows"] > 0
    con = duckdb.connect()
    rows = con.sql(f"SELECT keypoints_3d, track_id FROM read_parquet('{out}/poses/**/*.parquet')").fetchall()
    assert len(rows) == summary["rows"] <= 5
    lifted = [np.asarray(k3) for k3, track in rows if track >= 0]
    assert lifted and all(k.shape == (17, 3) and np.isfinite(k).all() for k in lifted)
    assert assert_3d_is_the_lifters(out, NAME) >= 1  # flip augmentation on, as the job's default
    meta = json.loads(con.sql(f"SELECT value FROM parquet_kv_metadata('{next((out / 'poses').rglob('*.parquet'))}') "
                              "WHERE key = 'posepipe.provenance'").fetchall()[0][0])
    assert meta["models"]["lifter"]["name"] == NAME
