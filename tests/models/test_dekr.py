"""DEKR HRNet-W32: the deformable convolution against torchvision's (tests/models/deform_conv_reference.py),
the architecture against mmpose's state dict, the weights record, and golden parity with mmpose 1.3.2's
whole bottom-up path (tests/models/dekr_reference.py, tests/models/golden_dekr_hrnet_w32_coco_512x512/)."""
from __future__ import annotations

import json
import warnings
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from posepipe.models import dekr, load_model, read_weights
from posepipe.models.bottomup import warp_to_canvas
from posepipe.models.checkpoint import CheckpointError
from posepipe.models.skeletons import COCO17_NAMES
from tests.golden import assert_close, generate_state_dict, load_case
from tests.models.release_files import _with_metadata

HERE = Path(__file__).resolve().parent
NAME = "dekr_hrnet_w32_coco_512x512"
CPU = torch.device("cpu")
DEFORM_CASES = sorted(HERE.glob("deform_conv_seed*.npz"))


# ---------------------------------------------------------------------------------------------
# The deformable convolution against torchvision.ops.deform_conv2d
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", DEFORM_CASES, ids=lambda p: p.stem)
def test_deform_conv2d_matches_torchvision(path):
    """Every case of the file (one group, DEKR's groups, stride + dilation, samples on and beyond the
    border, a map one pixel wide): torchvision's C++ kernel's output within float32 rounding noise (measured
1.3e-6 at outputs up to 2.1: the sampling positions pass through grid_sample's normalised coordinates)."""
    data = np.load(path)
    names = sorted({key.split("/")[0] for key in data.files if "/" in key})
    assert names == sorted(["plain", "dekr_groups", "strided_dilated", "outside", "one_column"])
    for name in names:
        stride, padding, dilation = (int(v) for v in data[f"{name}/geometry"])
        out = dekr.deform_conv2d(torch.from_numpy(data[f"{name}/x"]), torch.from_numpy(data[f"{name}/offset"]),
                                 torch.from_numpy(data[f"{name}/weight"]), stride=stride, padding=padding,
                                 dilation=dilation)
        assert_close(out.numpy(), data[f"{name}/out"], f"deform_conv2d {name}", rtol=0, atol=1e-5)


def test_deform_conv2d_reference_samples_beyond_the_border():
    """The 'outside' case is what its name says: many taps fall at or past -1 / H / W, and whole outputs vanish."""
    data = np.load(DEFORM_CASES[0])
    assert (data["outside/out"] == 0).mean() > 0.2
    assert np.abs(data["outside/offset"]).max() > 3 * data["outside/x"].shape[-1]


def test_deform_conv2d_with_zero_offsets_is_a_convolution():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 9, 7, generator=g)
    weight = torch.randn(6, 2, 3, 3, generator=g)
    offset = torch.zeros(2, 2 * 3 * 9, 9, 7)
    out = dekr.deform_conv2d(x, offset, weight, padding=1)
    ref = torch.nn.functional.conv2d(x, weight, padding=1, groups=3)
    assert_close(out.numpy(), ref.numpy(), "zero-offset deform conv", rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="offset"):
        dekr.deform_conv2d(x, offset[:, :-1], weight, padding=1)


# ---------------------------------------------------------------------------------------------
# Golden parity with mmpose 1.3.2's DEKR (tests/models/dekr_reference.py): one predictor per case, loaded
# by `load_model` from the file as published; the network's outputs captured during `predict_image`
# ---------------------------------------------------------------------------------------------

GOLDEN = HERE / f"golden_{NAME}"
CASES = sorted(GOLDEN.glob("case_seed*.npz"))


def release_2022(state: "OrderedDict[str, torch.Tensor]", path: Path) -> Path:
    """The file as mmpose 1.x published it on 2022-12-28: mmengine's ``{'meta', 'state_dict'}``, zip format,
    the state dict an ``nn.Module.state_dict()`` (with ``_metadata``, the head at version 2)."""
    out = _with_metadata(state)
    for prefix in out._metadata:  # type: ignore[attr-defined]
        if prefix == "head":
            out._metadata[prefix] = {"version": 2}  # type: ignore[attr-defined]
    meta = {"mmengine_version": "0.4.0", "mmcv_version": "2.0.0rc3", "epoch": 140, "iter": 164_220, "seed": 0,
            "time": "20221228_110232"}
    torch.save({"meta": meta, "state_dict": out}, path)
    return path


@pytest.fixture(scope="module", params=CASES, ids=lambda p: p.stem)
def golden(request, tmp_path_factory):
    case = load_case(request.param)
    state = generate_state_dict(GOLDEN / "manifest.json", case)
    path = release_2022(state, tmp_path_factory.mktemp("dekr") / dekr.WEIGHTS[NAME].filename)
    del state
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a genuine release loads without a warning
        predictor = load_model(NAME, weights=path)
    captured: list[tuple[torch.Tensor, torch.Tensor]] = []
    hook = predictor.model.register_forward_hook(lambda module, args, out: captured.append(out))
    persons = predictor.predict_image(case["image_bgr"], flip_test=True)
    hook.remove()
    (heatmaps, displacements), = captured  # one batch: the canvas and its mirror image
    return case, predictor, {"heatmaps": heatmaps, "displacements": displacements, "persons": persons}, path


def _at_samples(maps: torch.Tensor, case: dict) -> np.ndarray:
    ys, xs = case["sample_yx"].T
    return maps[:, ys, xs].numpy()


def test_release_file_is_laid_out_as_published(golden):
    *_, path = golden
    _, report = read_weights(NAME, path)
    assert report.layout.startswith("mmpose 1.x DEKR") and report.dropped == () and report.ignored == ("meta",)
    assert report.tensors == len(json.loads((GOLDEN / "manifest.json").read_text()))


def test_canvas_and_coco_meta_are_mmposes(golden):
    """BottomupResize(expand, size_factor 32): the canvas size, centre, scale and bytes; the flip indices and
    the skeleton links the rescore net reads are mmpose's parsed COCO meta."""
    case, predictor, *_ = golden
    canvas = predictor.canvas(case["image_bgr"].shape[:2])
    assert canvas.size_wh == tuple(int(v) for v in case["input_size"])
    np.testing.assert_array_equal(canvas.center, case["input_center"])
    np.testing.assert_array_equal(canvas.scale, case["input_scale"])
    np.testing.assert_array_equal(warp_to_canvas(case["image_bgr"], canvas, 0), case["input_bgr"])
    assert predictor.flip_indices == case["flip_indices"].tolist()
    assert [list(link) for link in predictor.model.head.rescore_net.skeleton] == case["skeleton_links"].tolist()


def test_raw_heatmaps_and_displacements_of_both_passes(golden):
    """The network (HRNet, concatenated branches, both head branches with the deformable convolutions) on the
    canvas and on its mirror image: 1e-5 of the largest reference value (README: measured 2e-6)."""
    case, _, out, _ = golden
    for row, suffix in ((0, ""), (1, "_flip")):
        for key in ("heatmaps", "displacements"):
            limit = 1e-5 * float(case[f"{key}_max_abs"])
            assert_close(_at_samples(out[key][row], case), case[key + suffix], key + suffix, rtol=0, atol=limit)


def test_flip_aggregation(golden):
    """Mirrored back, joints swapped, heatmaps shifted a column, dx negated and amended by 0.75, averaged."""
    case, predictor, out, _ = golden
    heatmaps, displacements = out["heatmaps"], out["displacements"]
    flip_h, flip_d = dekr.flip_back(heatmaps[1:], displacements[1:], predictor.flip_indices, int(case["input_size"][0]))
    for got, key in (((heatmaps[:1] + flip_h) / 2, "heatmaps"), ((displacements[:1] + flip_d) / 2, "displacements")):
        limit = 1e-5 * float(case[f"{key}_max_abs"])
        assert_close(_at_samples(got[0], case), case[key + "_avg"], key + "_avg", rtol=0, atol=limit)


def test_persons_end_to_end(golden):
    """`predict_image` (the public API): mmpose's persons after the rescore net and the NMS, in its order;
    keypoints within 1e-3 px (README: measured ~1e-4), keypoint scores 1e-4 of the largest."""
    case, _, out, _ = golden
    persons = out["persons"]
    assert set(persons) == {"keypoints", "keypoint_scores", "scores", "bboxes_xyxy"}
    assert all(v.dtype == np.float32 for v in persons.values())
    assert len(case["keypoints"]) > 5, "the case must have persons"
    assert_close(persons["keypoints"], case["keypoints"], "keypoints", rtol=0, atol=1e-3)
    limit = 1e-4 * float(np.abs(case["keypoint_scores"]).max())
    assert_close(persons["keypoint_scores"], case["keypoint_scores"], "keypoint_scores", rtol=0, atol=limit)
    kp = persons["keypoints"]
    np.testing.assert_array_equal(persons["bboxes_xyxy"], np.concatenate([kp.min(1), kp.max(1)], axis=1))


def test_codec_and_rescore_on_the_official_maps(golden):
    """The decoding alone on mmpose's own decoded pass is not stored in full; on ours (checked above) the root
    peaks, the joints, their scores and the rescore net's OKS are mmpose's, and each person's score is
    root x rescore (keypoint_scores / joint scores)."""
    case, predictor, out, _ = golden
    heatmaps, displacements = out["heatmaps"], out["displacements"]
    flip_h, flip_d = dekr.flip_back(heatmaps[1:], displacements[1:], predictor.flip_indices, int(case["input_size"][0]))
    keypoints, roots, scores = dekr.decode_spr(((heatmaps[:1] + flip_h) / 2)[0], ((displacements[:1] + flip_d) / 2)[0])
    assert_close(keypoints.numpy(), case["codec_keypoints"], "codec keypoints", rtol=0, atol=1e-3)
    assert_close(roots.numpy(), case["codec_root_scores"], "root scores", rtol=0,
                 atol=1e-5 * float(case["heatmaps_max_abs"]))
    assert_close(scores.numpy(), case["codec_keypoint_scores"], "joint scores", rtol=0,
                 atol=1e-5 * float(case["heatmaps_max_abs"]))
    with torch.no_grad():
        oks = predictor.model.head.rescore_net(torch.from_numpy(case["codec_keypoints"]),
                                               torch.from_numpy(case["codec_keypoint_scores"]))
    assert_close(oks.numpy(), case["rescore"], "rescore", rtol=0, atol=1e-5)
    persons = out["persons"]
    keep = dekr.nearby_joints_nms(case["codec_keypoints"], case["codec_keypoint_scores"])
    assert len(keep) == len(case["keypoints"])
    expected = case["codec_root_scores"][keep] * case["rescore"][keep]
    assert_close(persons["scores"], expected, "person scores", rtol=0, atol=1e-5 * float(case["heatmaps_max_abs"]))


# ---------------------------------------------------------------------------------------------
# Architecture, formats, record, the modes without a reference
# ---------------------------------------------------------------------------------------------

def test_state_dict_keys_match_official_manifest():
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    state = dekr.dekr().state_dict()
    assert list(state) == [e["name"] for e in manifest]  # mmpose's names and order, no remap needed
    for key, e in zip(state, manifest):
        assert list(state[key].shape) == e["shape"], e["name"]


def test_convert_layouts_and_refusals(tmp_path):
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    state = OrderedDict((e["name"], torch.zeros(e["shape"], dtype=torch.int64 if e["dtype"] == "int64" else torch.float32))
                        for e in manifest)
    assert dekr.checkpoint_format({"meta": {}, "state_dict": state}).startswith("mmpose 1.x DEKR")
    assert list(dekr.convert_checkpoint({"meta": {}, "state_dict": state})) == list(state)
    # an Associative Embedding file (the same HRNet, another head) is not DEKR's, and load_model says whose it is
    ae_state = OrderedDict((k, v) for k, v in state.items() if k.startswith("backbone.") and "stage4.2.fuse_layers.1" not in k)
    ae_state["head.final_layer.weight"] = torch.zeros(34, 32, 1, 1)
    ae_state["head.final_layer.bias"] = torch.zeros(34)
    assert dekr.checkpoint_format({"state_dict": ae_state}) is None
    path = tmp_path / "ae.pth"
    torch.save({"meta": {}, "state_dict": ae_state}, path)
    with pytest.raises(CheckpointError) as info:
        load_model(NAME, weights=path)
    assert "is not a DEKR checkpoint" in str(info.value) and "ae_hrnet_w32_coco_512x512" in str(info.value)
    short = OrderedDict((k, v) for k, v in state.items() if not k.startswith("head.rescore_net."))
    with pytest.raises(CheckpointError, match="rescore_net"):
        dekr.convert_checkpoint({"state_dict": short})


def test_weights_entry_and_counted_cost():
    spec = dekr.WEIGHTS[NAME]
    assert spec.family == "dekr" and spec.stage == "pose" and spec.source_format == "mmpose"
    assert spec.url == ("https://download.openmmlab.com/mmpose/v1/body_2d_keypoint/dekr/coco/"
                        "dekr_hrnet-w32_8xb10-140e_coco-512x512_ac7c17bf-20221228.pth")
    assert spec.url.endswith("/" + spec.filename) and f"_{spec.hash_prefix}-" in spec.filename
    assert spec.input_size == (512, 512) and spec.keypoint_names == COCO17_NAMES and spec.color == "RGB"
    assert spec.mean == (123.675, 116.28, 103.53) and spec.std == (58.395, 57.12, 57.375)
    assert spec.metrics["coco_val2017_AP"] == 68.6 and "Geng" in spec.paper
    with torch.device("meta"):
        model = dekr.dekr()
        x = torch.zeros((1, 3, *spec.input_size))
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert spec.gmacs == pytest.approx(counter.get_total_flops() / 2e9, rel=0.01)


def test_without_flip_test_and_without_anybody():
    """The single pass (no reference: the config's test mode is the flip test) decodes the same way; random
    weights give persons; a frame whose root heatmap stays below 0.01 gives none, in the documented shapes.
    (On a 64-pixel canvas, to stay quick: the code path is the one of any canvas.)"""
    predictor = dekr.create(replace(dekr.WEIGHTS[NAME], input_size=(64, 64)), None, device=CPU)
    frame = np.full((48, 64, 3), 90, np.uint8)  # an 96x64 canvas
    assert predictor.canvas(frame.shape[:2]).size_wh == (96, 64)
    persons = predictor.predict_image(frame, flip_test=False)
    assert persons["keypoints"].shape[1:] == (17, 2) and len(persons["scores"]) > 0
    assert persons["keypoints"].shape[0] == persons["keypoint_scores"].shape[0] == persons["bboxes_xyxy"].shape[0]
    with torch.no_grad():
        predictor.model.head.heatmap_conv_layers[2].bias[-1] = -1.0  # nobody: the root far below the threshold
    for flip in (False, True):
        persons = predictor.predict_image(frame, flip_test=flip)
        assert persons["keypoints"].shape == (0, 17, 2) and persons["bboxes_xyxy"].shape == (0, 4)
        assert persons["keypoint_scores"].shape == (0, 17) and persons["scores"].shape == (0,)
