"""DensePose R-CNN on given boxes (models/densepose.py, models/fpn.py) against detectron2's own code.

The reference is ``golden_densepose/case_seed0.npz`` beside this file, written by ``densepose_reference.py``:
detectron2 at 02b5c4e (its ``projects/DensePose``, config ``densepose_rcnn_R_50_FPN_s1x``) built from
source and run unmodified, CPU float32, through ``GeneralizedRCNN.inference(..., detected_instances=...)``
on two real frames with nine given boxes, on weights generated from ``golden_densepose/manifest.json`` (the
official state dict's names and shapes, in order) and the npz's seed by ../shared/golden/README.md's rule
plus the npz's designed head leaves. Here the same weights are written as the official container (a
pickle of ``{'model': {name: ndarray}, '__author__': ...}``), loaded with ``load_densepose`` and run through
the public ``predict_batch``; intermediate tensors are read with forward hooks. Another seed's case
(``densepose_reference.py --seed 7 --out-dir DIR``) is checked the same way when its folder holds a
``case_seed*.npz`` or its path is in $POSEPIPE_DENSEPOSE_REFERENCE (several joined with ``os.pathsep``).

Tolerances, and why they are not 0 (measured on seed 0: the largest differences are 1.5e-6 of the
largest value before the head and 5e-6 after it; labels identical; U, V one step apart at some pixels):
- exact: the resized frame (Pillow's bilinear both sides), the normalised and padded input, the boxes at
  the network input and back in the frame, which boxes are kept, the integer chart boxes, the chart sizes;
- backbone p2..p5, decoder, pooled RoIs: 1e-5 of the largest |value| (summation order in the convolutions:
  oneDNN's against torch 2.14's, on activations that reach ~3e3 with random weights);
- head, predictor outputs (coarse/fine segmentation, U, V): 2e-5 of the largest |value|;
- the stored chart (I, U*255, V*255 as uint8): I may differ at 0.1 % of the pixels at most (a tie in the
  fine segmentation's arg-max moved by the above), U and V by one step (the truncation of a value within
  ~1e-5 of a multiple of 1/255) where I agrees, at 2 % of those pixels at most; a chart whose planes
  agree has detectron2's PNG bytes exactly (same Pillow), else its PNG decodes to our planes;
- alone, on exact inputs: ROIAlign against torchvision's kernel 1e-6 absolute (values ~1), the predictor
  (ConvTranspose2d + interpolate) 1e-5 relative, the chart conversion of detectron2's own predictor output
  exactly (labels) and 1e-6 (U, V).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import PIL
import pytest
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from posepipe.models.checkpoint import CheckpointError
from posepipe.models.densepose import (
    GMACS_PER_FRAME_800x1088, GMACS_PER_PERSON, OUTPUT_KEYS, UNUSED_PREFIXES, WEIGHTS, DensePoseChartPredictor,
    boxes_to_input, build_densepose, chart_result, decode_iuv_png, encode_iuv_png, load_densepose, quantize,
    read_densepose_checkpoint, resized_shape, roi_align, split_checkpoint,
)
from tests.golden import generate_state_dict, load_case

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden_densepose"
MANIFEST = GOLDEN / "manifest.json"
CASES = sorted(GOLDEN.glob("case_seed*.npz")) + [
    Path(p) for p in os.environ.get("POSEPIPE_DENSEPOSE_REFERENCE", "").split(os.pathsep) if p]
FRAMES = ("vtest", "messi5")
REL_BACKBONE, REL_HEAD = 1e-5, 2e-5
LABEL_FLIPS, UV_OFF_BY_ONE = 1e-3, 2e-2


def write_container(state: "OrderedDict[str, torch.Tensor]", path: Path, **extra) -> Path:
    """The official release's layout: a plain pickle of numpy arrays under 'model', and '__author__'."""
    container = {"model": OrderedDict((k, v.numpy()) for k, v in state.items()), "__author__": "Detectron2 Model Zoo",
                 **extra}
    with open(path, "wb") as f:
        pickle.dump(container, f)
    return path


@pytest.fixture(scope="module")
def official_state() -> "OrderedDict[str, torch.Tensor]":
    return generate_state_dict(MANIFEST, {"seed": np.int64(0)})


@pytest.fixture(scope="module", params=CASES, ids=lambda p: p.stem)
def run(request, tmp_path_factory):
    """(case, the predictor loaded from the official container, its charts per frame, hooked tensors per frame)."""
    case = load_case(request.param)
    manifest = request.param.parent / "manifest.json"
    path = write_container(generate_state_dict(manifest if manifest.exists() else MANIFEST, case),
                           tmp_path_factory.mktemp("densepose") / "model_final.pkl")
    predictor = load_densepose(path)
    caught: dict[str, list] = {}

    def hook(name):
        def store(module, args, output):
            caught.setdefault(name, []).append(output)
            if name == "backbone":
                caught.setdefault("images", []).append(args[0])
            if name == "head":
                caught.setdefault("pooled", []).append(args[0])
        return store

    model = predictor.model
    handles = [m.register_forward_hook(hook(n)) for n, m in (
        ("backbone", model.backbone), ("decoded", model.roi_heads.decoder), ("head", model.roi_heads.densepose_head),
        ("predictor", model.roi_heads.densepose_predictor))]
    charts = predictor.predict_batch([case[f"frame/{k}"] for k in FRAMES], [case[f"boxes/{k}"] for k in FRAMES])
    for h in handles:
        h.remove()
    tensors = {}
    for j, key in enumerate(FRAMES):
        tensors[key] = {"images": caught["images"][j], "decoded": caught["decoded"][j], "pooled": caught["pooled"][j],
                        "head": caught["head"][j], **{f"p{i}": caught["backbone"][j][i - 2] for i in range(2, 6)},
                        **dict(zip(OUTPUT_KEYS, caught["predictor"][j]))}
    return case, predictor, charts, tensors


# ---------------------------------------------------------------------------------------------
# The checkpoint
# ---------------------------------------------------------------------------------------------


def test_the_manifest_is_the_model_plus_the_parts_given_boxes_make_unneeded():
    manifest = json.loads(MANIFEST.read_text())
    ours = build_densepose().state_dict()
    official = OrderedDict((e["name"], tuple(e["shape"])) for e in manifest)
    unused = [k for k in official if k.startswith(tuple(UNUSED_PREFIXES))]
    assert unused and all(k.startswith(("proposal_generator.rpn_head.", "roi_heads.box_")) for k in unused)
    assert [k for k in official if k not in unused] == list(ours)
    assert all(tuple(ours[k].shape) == official[k] for k in ours)
    assert all(e["dtype"] == "float32" for e in manifest)


def test_the_official_container_loads_and_what_is_left_out_is_named(official_state, tmp_path):
    # Older detectron2 files also carry pixel_mean/std and the RPN's cell anchors (its checkpointer says so).
    state = OrderedDict(official_state)
    state["pixel_mean"] = torch.tensor([103.53, 116.28, 123.675]).view(3, 1, 1)
    state["pixel_std"] = torch.ones(3, 1, 1)
    state["proposal_generator.anchor_generator.cell_anchors.0"] = torch.zeros(3, 4)
    path = write_container(state, tmp_path / "model_final_162be9.pkl", matching_heuristics=False)
    checkpoint = read_densepose_checkpoint(path)
    kept, dropped = split_checkpoint(checkpoint)
    assert set(dropped) == {k for k in state if k.startswith(tuple(UNUSED_PREFIXES))} | {"pixel_mean", "pixel_std"}
    predictor = load_densepose(path)
    assert predictor.weights is WEIGHTS["densepose_rcnn_R_50_FPN_s1x"]
    assert predictor.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    for name, value in predictor.model.state_dict().items():
        assert torch.equal(value, official_state[name]), name
    # a training run's torch file ({'model': tensors, 'optimizer', ...}) is read through models.checkpoint
    torch.save({"model": official_state, "iteration": 130000}, tmp_path / "model_final.pth")
    assert torch.equal(load_densepose(tmp_path / "model_final.pth").model.roi_heads.decoder.predictor.bias,
                       official_state["roi_heads.decoder.predictor.bias"])


def test_a_file_that_is_not_the_models_is_refused_naming_what_is_wrong(official_state, tmp_path):
    missing = OrderedDict((k, v) for k, v in official_state.items() if k != "roi_heads.densepose_head.body_conv_fcn3.weight")
    with pytest.raises(CheckpointError, match=r"missing keys: roi_heads\.densepose_head\.body_conv_fcn3\.weight"):
        load_densepose(write_container(missing, tmp_path / "missing.pkl"))
    extra = OrderedDict(official_state, **{"roi_heads.mask_head.mask_fcn1.weight": torch.zeros(256, 256, 3, 3)})
    with pytest.raises(CheckpointError, match=r"unexpected keys: roi_heads\.mask_head\.mask_fcn1\.weight"):
        load_densepose(write_container(extra, tmp_path / "extra.pkl"))
    wrong = OrderedDict(official_state, **{"roi_heads.densepose_predictor.u_lowres.bias": torch.zeros(15)})
    with pytest.raises(CheckpointError, match=r"u_lowres\.bias: file \(15,\) vs model \(25,\)"):
        load_densepose(write_container(wrong, tmp_path / "wrong.pkl"))
    other = OrderedDict((k, v) for k, v in official_state.items() if not k.startswith("roi_heads.densepose"))
    with pytest.raises(CheckpointError, match="not a DensePose R-CNN checkpoint"):
        load_densepose(write_container(other, tmp_path / "maskrcnn.pkl"))
    (tmp_path / "page.pkl").write_text("<!DOCTYPE html><html><title>Access denied</title></html>")
    with pytest.raises(CheckpointError, match="HTML page"):
        load_densepose(tmp_path / "page.pkl")
    with open(tmp_path / "short.pkl", "wb") as f:
        f.write((tmp_path / "missing.pkl").read_bytes()[:5000])
    # A download cut short: the same words as models.checkpoint's for a torch file, and what to do.
    with pytest.raises(CheckpointError, match=r"short\.pkl ends early or is damaged \(0\.0 MB; detectron2 \.pkl "
                                              r"container; .*truncated.*\): the file was cut short .*download or copy it again"):
        load_densepose(tmp_path / "short.pkl")


def test_a_pickle_that_asks_to_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"model": {"x": Payload()}, "__author__": "Detectron2 Model Zoo"}, f, protocol=2)
    with pytest.raises(CheckpointError, match=r"refused to load .*GLOBAL (posix|os)\.system is not allowed"):
        load_densepose(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_python2_era_pickles_of_numpy_arrays_load(official_state, tmp_path):
    """Protocol 2, as a Python 3 writer of 2020 could have used: numpy's payload goes through _codecs.encode."""
    state = {k: v.numpy() for k, v in list(official_state.items())[:3]}
    with open(tmp_path / "p2.pkl", "wb") as f:
        pickle.dump({"model": state, "__author__": "Detectron2 Model Zoo"}, f, protocol=2)
    assert b"_codecs" in (tmp_path / "p2.pkl").read_bytes()
    loaded = read_densepose_checkpoint(tmp_path / "p2.pkl")
    for k, v in state.items():
        np.testing.assert_array_equal(loaded["model"][k], v)


# ---------------------------------------------------------------------------------------------
# Parity, end to end and stage by stage
# ---------------------------------------------------------------------------------------------


def test_the_network_input_is_detectron2s_exactly(run):
    case, predictor, _, tensors = run
    for key in FRAMES:
        frame = case[f"frame/{key}"]
        x = predictor.preprocess(frame)
        assert list(x.input_hw) == case[f"{key}/input_hw"].tolist() == list(resized_shape(*frame.shape[:2]))
        resized = np.ascontiguousarray(x.image.numpy().transpose(1, 2, 0).astype(np.uint8))
        assert hashlib.sha256(resized.tobytes()).hexdigest() == str(case[f"{key}/resized_sha256"]), key
        images = tensors[key]["images"]
        assert list(images.shape) == case[f"{key}/images_shape"].tolist()
        assert hashlib.sha256(images.numpy().tobytes()).hexdigest() == str(case[f"{key}/images_sha256"]), key
        boxes = boxes_to_input(case[f"boxes/{key}"], x.frame_hw, x.input_hw)
        np.testing.assert_array_equal(boxes.numpy(), case[f"{key}/input_boxes"])


@pytest.mark.parametrize("name,rel", [(f"p{i}", REL_BACKBONE) for i in range(2, 6)] + [
    ("decoded", REL_BACKBONE), ("pooled", REL_BACKBONE), ("head", REL_HEAD), ("coarse_segm", REL_HEAD),
    ("fine_segm", REL_HEAD), ("u", REL_HEAD), ("v", REL_HEAD)])
def test_each_stage_matches_detectron2(run, name, rel):
    case, _, _, tensors = run
    for key in FRAMES:
        t = tensors[key][name]
        assert list(t.shape) == case[f"{key}/{name}/shape"].tolist(), (key, name)
        values = t.detach().numpy().reshape(-1)
        scale = float(case[f"{key}/{name}/max_abs"])
        assert abs(float(np.abs(values).max()) - scale) <= rel * scale, (key, name)
        diff = np.abs(values[case[f"{key}/{name}/index"]] - case[f"{key}/{name}/values"])
        assert diff.max() <= rel * scale, f"{key} {name}: max |diff| {diff.max():.3g} = {diff.max() / scale:.2g} of max"


def test_the_stored_charts_are_detectron2s(run):
    case, _, charts, _ = run
    flips = pixels = off = agree = 0
    for j, key in enumerate(FRAMES):
        kept = case[f"{key}/kept"].tolist()
        assert [i for i, c in enumerate(charts[j]) if c is not None] == kept, key
        assert len(charts[j]) == len(case[f"boxes/{key}"])
        for n, i in enumerate(kept):
            chart = charts[j][i]
            np.testing.assert_array_equal(chart.box_xyxy, case[f"{key}/boxes_xyxy"][n])
            assert chart.box_xywh[:2] == tuple(case[f"{key}/boxes_xywh"][n][:2].astype(np.int64).tolist())
            png = case[f"{key}/chart{n}/png"].tobytes()
            ref = decode_iuv_png(png)
            assert ref.shape == tuple(case[f"{key}/chart{n}/shape_chw"]) == chart.iuv.shape, (key, n)
            assert chart.iuv.dtype == np.uint8
            same_label = chart.iuv[0] == ref[0]
            flips += int((~same_label).sum())
            pixels += same_label.size
            d = np.abs(chart.iuv[1:].astype(np.int16) - ref[1:])[:, same_label]
            assert d.max(initial=0) <= 1, f"{key} chart {n}: U/V {d.max()} steps apart"
            off += int((d > 0).sum())
            agree += d.size
            if np.array_equal(chart.iuv, ref):
                assert hashlib.sha256(ref.tobytes()).hexdigest() == str(case[f"{key}/chart{n}/iuv_sha256"])
                if str(case["pillow_version"]) == PIL.__version__:
                    assert chart.png() == png, f"{key} chart {n}: same planes, other PNG bytes"
    assert flips <= LABEL_FLIPS * pixels, f"{flips} of {pixels} labels differ"
    assert off <= UV_OFF_BY_ONE * agree, f"{off} of {agree} U/V values one step apart"


def test_roi_align_alone_is_torchvisions(run):
    case = run[0]
    features, rois = torch.from_numpy(case["roialign/features"]), torch.from_numpy(case["roialign/rois"])
    for aligned in (False, True):
        for ratio in (2, 0):
            got = roi_align(features, rois, (5, 4), 0.5, ratio, aligned).numpy()
            np.testing.assert_allclose(got, case[f"roialign/aligned{int(aligned)}_ratio{ratio}"], rtol=0, atol=1e-6,
                                       err_msg=f"aligned={aligned} sampling_ratio={ratio}")
    assert roi_align(features, rois[:0], 7, 0.25, 2, False).shape == (0, 3, 7, 7)


def test_the_predictor_alone_upsamples_as_detectron2(run, tmp_path):
    case = run[0]
    (tmp_path / "manifest.json").write_text(str(case["predictor/manifest"]))
    predictor = DensePoseChartPredictor(in_channels=8)
    predictor.load_state_dict(generate_state_dict(tmp_path / "manifest.json", {"seed": case["seed"]}))
    with torch.no_grad():
        out = predictor(torch.from_numpy(case["predictor/input"]))
    for key, got in zip(OUTPUT_KEYS, out):
        ref = case[f"predictor/{key}"]
        assert got.shape == ref.shape == (1, ref.shape[1], 20, 24)
        np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-5 * np.abs(ref).max(), err_msg=key)


def test_the_chart_conversion_alone_is_detectron2s(run):
    case = run[0]
    outputs = [torch.from_numpy(case[f"predictor/{k}"]) for k in OUTPUT_KEYS]
    for i, box in enumerate(case["predictor/boxes"]):
        labels, uv = chart_result(*outputs, torch.from_numpy(box))
        np.testing.assert_array_equal(labels.numpy(), case[f"predictor/labels{i}"])
        np.testing.assert_allclose(uv.numpy(), case[f"predictor/uv{i}"], rtol=0, atol=1e-6)
        assert labels.shape == (max(int(box[3] - box[1]), 1), max(int(box[2] - box[0]), 1))


def test_the_png_round_trips_and_other_images_are_refused():
    rng = np.random.default_rng(3)
    iuv = rng.integers(0, 256, (3, 17, 9), dtype=np.uint8)
    iuv[0] %= 25
    np.testing.assert_array_equal(decode_iuv_png(encode_iuv_png(iuv)), iuv)
    labels = torch.from_numpy(iuv[0].astype(np.int64))
    uv = torch.from_numpy(iuv[1:].astype(np.float32) / 255 + 1e-4)
    np.testing.assert_array_equal(quantize(labels, uv), iuv)
    stream = io.BytesIO()
    Image.fromarray(iuv[0]).save(stream, format="png")
    with pytest.raises(ValueError, match="a PNG of mode L, where a chart is an RGB PNG"):
        decode_iuv_png(stream.getvalue())
    with pytest.raises(ValueError, match=r"\(3, h, w\) uint8"):
        encode_iuv_png(iuv[:2])


# ---------------------------------------------------------------------------------------------
# Cost
# ---------------------------------------------------------------------------------------------


def test_recorded_cost_is_what_the_network_computes():
    """Per person: the pooled RoI through the head and predictor; per frame: an 800x1088 input (a 576x768
    frame) through ResNet-50, FPN and decoder. Counted on the meta device (shapes only)."""
    with torch.device("meta"):
        model = build_densepose()
        images = torch.zeros(1, 3, 800, 1088)
        with FlopCounterMode(display=False) as frame:
            decoded = model.decode(images)
        rois = torch.tensor([[0.0, 100.0, 100.0, 300.0, 500.0]])
        with FlopCounterMode(display=False) as person:
            model.roi_heads(decoded, rois)
    assert GMACS_PER_FRAME_800x1088 == pytest.approx(frame.get_total_flops() / 2e9, rel=0.01)
    assert GMACS_PER_PERSON == pytest.approx(person.get_total_flops() / 2e9, rel=0.01)
    assert WEIGHTS["densepose_rcnn_R_50_FPN_s1x"].gmacs == GMACS_PER_PERSON
