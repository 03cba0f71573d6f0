"""YOLOX: golden parity with the official code (Megvii-BaseDetection/YOLOX) on every stored case,
checkpoint formats, strict loading, NMS/post-processing semantics and the weights records."""
from __future__ import annotations

import json
import re
from collections import OrderedDict
from urllib.parse import urlparse

import cv2
import numpy as np
import pytest
import torch

from posepipe.models import yolox
from posepipe.models.checkpoint import CheckpointError, read_checkpoint
from tests.golden import generate_state_dict, golden_cases, golden_dir, load_case

NAME = "yolox_s"
CPU = torch.device("cpu")
# Parameter counts from the official README's model table (millions).
OFFICIAL_PARAMS_M = {
    "yolox_nano": 0.91, "yolox_tiny": 5.06, "yolox_s": 9.0, "yolox_m": 25.3, "yolox_l": 54.2, "yolox_x": 99.1,
}
DET_SETS = [  # npz key, confidence key, NMS key, class_agnostic
    ("dets", "conf_thre", "nms_thre", False),
    ("dets_class_agnostic", "conf_thre", "nms_thre", True),
    ("dets_nms", "conf_thre_nms", "nms_thre_nms", False),
    ("dets_nms_class_agnostic", "conf_thre_nms", "nms_thre_nms", True),
]


def _manifest() -> list[dict]:
    return json.loads((golden_dir(NAME) / "manifest.json").read_text())


def _fake_state(names_shapes) -> "OrderedDict[str, torch.Tensor]":
    """Cheap tensors with the official names and shapes (format tests; values irrelevant)."""
    return OrderedDict(
        (name, torch.zeros(shape, dtype=torch.int64 if name.endswith("num_batches_tracked") else torch.float32))
        for name, shape in names_shapes
    )


def _manifest_state() -> "OrderedDict[str, torch.Tensor]":
    return _fake_state((e["name"], e["shape"]) for e in _manifest())


def assert_same_detections(out: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert out.dtype == np.float32 and out.ndim == 2 and out.shape[1] == 7, f"{what}: got {out.dtype} {out.shape}"
    assert out.shape == ref.shape, f"{what}: {len(out)} rows, expected {len(ref)}; new rows:\n{out!r}"
    np.testing.assert_array_equal(out[:, 6], ref[:, 6], err_msg=f"{what}: class ids; new rows:\n{out!r}")
    np.testing.assert_allclose(out[:, :4], ref[:, :4], rtol=1e-4, atol=1e-3, err_msg=f"{what}: boxes")
    np.testing.assert_allclose(out[:, 4:6], ref[:, 4:6], rtol=0, atol=2e-5, err_msg=f"{what}: obj/cls conf")


# ---------------------------------------------------------------------------------------------
# Golden parity: one module-scoped predictor per case
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=golden_cases(NAME), ids=lambda p: p.stem)
def golden(request, tmp_path_factory):
    case = load_case(request.param)
    state = generate_state_dict(golden_dir(NAME) / "manifest.json", case)
    path = tmp_path_factory.mktemp("yolox") / "yolox_s.pth"
    # The official container: the state dict under 'model', plus training entries to be ignored.
    torch.save({"model": state, "start_epoch": 300, "optimizer": None, "amp": None}, path)
    del state
    predictor = yolox.create(yolox.WEIGHTS[NAME], yolox.convert_checkpoint(read_checkpoint(path)), device=CPU)
    x, ratio = predictor.preprocess(case["image_bgr"])
    raw = predictor.forward_raw(x[None])  # the expensive forward, once per case
    return case, predictor, x, ratio, raw


def test_golden_input(golden):
    case, _, x, ratio, _ = golden
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x[None], case["input"])
    assert ratio == pytest.approx(float(case["ratio"]), rel=0, abs=1e-12)


def test_golden_raw_output(golden):
    case, predictor, _, _, raw = golden
    assert raw.dtype == np.float32 and raw.shape == case["raw_output"].shape
    np.testing.assert_allclose(raw, case["raw_output"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("key, conf_key, nms_key, agnostic", DET_SETS, ids=[s[0] for s in DET_SETS])
def test_golden_detections(golden, key, conf_key, nms_key, agnostic):
    case, predictor, _, ratio, raw = golden
    out = predictor.postprocess(raw[0], ratio, float(case[conf_key]), float(case[nms_key]), class_agnostic=agnostic)
    assert_same_detections(out, case[key], key)


def test_golden_detect_end_to_end(golden):
    """detect() from the image alone (its own forward) reproduces the NMS-heavy class-agnostic set."""
    case, predictor, _, _, _ = golden
    out = predictor.detect(case["image_bgr"], float(case["conf_thre_nms"]), float(case["nms_thre_nms"]),
                           class_agnostic=True)
    assert_same_detections(out, case["dets_nms_class_agnostic"], "detect")


def test_detect_batch_matches_per_image(golden):
    case, predictor, _, _, _ = golden
    image = case["image_bgr"]
    portrait = cv2.resize(image, (300, 410), interpolation=cv2.INTER_AREA)  # other size and aspect
    conf, iou = float(case["conf_thre"]), float(case["nms_thre_nms"])
    batch = predictor.detect_batch([image, portrait], conf, iou)
    assert len(batch) == 2
    for i, img in enumerate((image, portrait)):
        assert_same_detections(batch[i], predictor.detect(img, conf, iou), f"batch image {i}")
    assert_same_detections(batch[0], case["dets_nms"], "batch image 0 vs golden")
    assert predictor.detect_batch([], conf, iou) == []


def test_classes_and_max_detections(golden):
    case, predictor, _, ratio, raw = golden
    conf, iou = float(case["conf_thre_nms"]), float(case["nms_thre_nms"])
    ref = case["dets_nms"]
    wanted = {int(ref[0, 6]), int(ref[-1, 6])}
    out = predictor.postprocess(raw[0], ratio, conf, iou, classes=tuple(wanted))
    assert_same_detections(out, ref[np.isin(ref[:, 6], list(wanted))], "classes")
    capped = predictor.postprocess(raw[0], ratio, conf, iou, max_detections=5)
    assert_same_detections(capped, ref[:5], "max_detections")
    # Class-agnostic: classes are selected after NMS, so other classes still suppress.
    ref_ag = case["dets_nms_class_agnostic"]
    out_ag = predictor.postprocess(raw[0], ratio, conf, iou, class_agnostic=True, classes=tuple(wanted),
                                   max_detections=3)
    assert_same_detections(out_ag, ref_ag[np.isin(ref_ag[:, 6], list(wanted))][:3], "agnostic classes")


# ---------------------------------------------------------------------------------------------
# NMS and post-processing semantics (synthetic, fast)
# ---------------------------------------------------------------------------------------------

def _reference_nms(boxes, scores, thr, labels=None):
    """Plain greedy NMS, one box at a time, float64 IoU (the candidates avoid near-threshold pairs)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        ok = True
        for j in keep:
            if labels is not None and labels[i] != labels[j]:
                continue
            b1, b2 = boxes[i].astype(np.float64), boxes[j].astype(np.float64)
            w = max(0.0, min(b1[2], b2[2]) - max(b1[0], b2[0]))
            h = max(0.0, min(b1[3], b2[3]) - max(b1[1], b2[1]))
            inter = w * h
            union = (b1[2] - b1[0]) * (b1[3] - b1[1]) + (b2[2] - b2[0]) * (b2[3] - b2[1]) - inter
            if inter / union > thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return np.array(keep, dtype=np.int64)


def test_nms_matches_reference_and_caps_exactly():
    rng = np.random.default_rng(0)
    n = 300
    xy = rng.uniform(0, 200, (n, 2)).astype(np.float32)
    wh = rng.uniform(5, 60, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.permutation(n).astype(np.float32) / n  # distinct
    labels = rng.integers(0, 3, n)
    for lab in (None, labels):
        keep = yolox.nms(boxes, scores, 0.3, lab)
        np.testing.assert_array_equal(keep, _reference_nms(boxes, scores, 0.3, lab))
        assert len(keep) > 20
        np.testing.assert_array_equal(yolox.nms(boxes, scores, 0.3, lab, max_keep=20), keep[:20])
    assert yolox.nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).shape == (0,)


def test_nms_threshold_is_strict_and_areas_have_no_plus_one():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], dtype=np.float32)  # IoU exactly 0.5 (no +1)
    scores = np.array([0.9, 0.8], dtype=np.float32)
    np.testing.assert_array_equal(yolox.nms(boxes, scores, 0.5), [0, 1])
    np.testing.assert_array_equal(yolox.nms(boxes, scores, 0.49), [0])
    # Class-aware: different labels never suppress each other.
    np.testing.assert_array_equal(yolox.nms(boxes, scores, 0.1, np.array([0, 1])), [0, 1])


def _raw(rows: list[tuple[float, float, float, float, float, int, float]], num_classes: int = 3) -> np.ndarray:
    """rows of (cx, cy, w, h, obj, class, class score) -> (A, 5 + C) raw output."""
    raw = np.zeros((len(rows), 5 + num_classes), dtype=np.float32)
    for i, (cx, cy, w, h, obj, cls, score) in enumerate(rows):
        raw[i, :5] = (cx, cy, w, h, obj)
        raw[i, 5 + cls] = score
    return raw


def test_postprocess_semantics():
    # Box 0 and box 1 overlap (IoU 0.81) with different classes; box 2 sits exactly on the threshold.
    raw = _raw([(50, 50, 20, 20, 0.9, 1, 0.9), (51, 51, 20, 20, 0.8, 0, 0.9), (200, 200, 10, 10, 0.5, 0, 0.5)])
    thr = float(np.float32(0.5) * np.float32(0.5))
    out = yolox.postprocess(raw, thr, 0.5)
    np.testing.assert_array_equal(out[:, 6], [1, 0, 0])  # >= keeps the boundary box; sorted by score
    np.testing.assert_allclose(out[0, :4], [40, 40, 60, 60])
    np.testing.assert_allclose(out[0, 4:6], [0.9, 0.9])
    assert len(yolox.postprocess(raw, float(np.nextafter(np.float32(thr), np.float32(1))), 0.5)) == 2
    agnostic = yolox.postprocess(raw, thr, 0.5, class_agnostic=True)
    np.testing.assert_array_equal(agnostic[:, 6], [1, 0])
    # Person-only (class 0): class-aware keeps box 1; class-agnostic lets class-1 box 0 suppress it first.
    np.testing.assert_array_equal(yolox.postprocess(raw, thr, 0.5, classes=(0,))[:, 6], [0, 0])
    persons = yolox.postprocess(raw, thr, 0.5, class_agnostic=True, classes=(0,))
    np.testing.assert_allclose(persons[:, :4], [[195, 195, 205, 205]])
    assert yolox.postprocess(raw, 0.99, 0.5).shape == (0, 7)


def test_boxes_are_divided_by_ratio_not_clipped():
    predictor = yolox.create(yolox.WEIGHTS["yolox_nano"], None, device=CPU)
    raw = _raw([(0, 0, 40, 40, 0.9, 2, 0.9)], num_classes=80)
    out = predictor.postprocess(raw, 0.5, 0.25, 0.45)
    np.testing.assert_allclose(out[0, :4], [-40, -40, 40, 40])


def test_preprocess_letterbox_top_left_truncated():
    predictor = yolox.create(yolox.WEIGHTS["yolox_nano"], None, device=CPU)  # 416 x 416
    image = np.random.default_rng(1).integers(0, 255, (100, 333, 3), dtype=np.uint8)
    x, r = predictor.preprocess(image)
    assert x.shape == (3, 416, 416) and x.dtype == np.float32
    assert r == 416 / 333
    new_w, new_h = int(333 * r), int(100 * r)  # 124.92 -> 124: truncated, not rounded
    assert new_h == 124
    resized = yolox.resize_linear_uint8(torch.from_numpy(image)[None], new_h, new_w)[0].numpy().transpose(2, 0, 1)
    np.testing.assert_array_equal(x[:, :new_h, :new_w], resized)
    assert (x[:, new_h:] == 114).all() and (x[:, :, new_w:] == 114).all()
    with pytest.raises(ValueError, match="uint8 BGR"):
        predictor.preprocess(image[..., 0])


# ---------------------------------------------------------------------------------------------
# Checkpoint formats and strict loading
# ---------------------------------------------------------------------------------------------

def test_architecture_keys_match_official_manifest():
    model = yolox.build_yolox(**yolox.WEIGHTS[NAME].arch)
    manifest = _manifest()
    assert list(model.state_dict()) == [e["name"] for e in manifest]  # same names, same order
    for e in manifest:
        assert list(model.state_dict()[e["name"]].shape) == e["shape"], e["name"]
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)


def test_convert_official_wrapper():
    state = _manifest_state()
    out = yolox.convert_checkpoint({"model": state, "start_epoch": 300, "optimizer": {"state": {}}, "amp": None,
                                    "best_ap": 40.5})
    assert list(out) == list(state)
    assert all(out[k] is state[k] for k in state)


def test_convert_bare_state_dict():
    state = _manifest_state()
    assert list(yolox.convert_checkpoint(state)) == list(state)


def test_convert_strips_module_prefix():
    state = _manifest_state()
    out = yolox.convert_checkpoint({"model": OrderedDict(("module." + k, v) for k, v in state.items())})
    assert list(out) == list(state)


def _to_mmdet(key: str) -> str:
    """Official key -> mmdetection key (mmdet's CSPDarknet / YOLOXPAFPN / YOLOXHead names), as an
    independent check of convert_checkpoint's reverse direction."""
    csp = r"(backbone\.backbone\.dark[234]\.1|backbone\.backbone\.dark5\.2|backbone\.C3_(?:p4|p3|n3|n4))"
    key = re.sub(csp + r"\.conv1\.", r"\1.main_conv.", key)
    key = re.sub(csp + r"\.conv2\.", r"\1.short_conv.", key)
    key = re.sub(csp + r"\.conv3\.", r"\1.final_conv.", key)
    key = re.sub(csp + r"\.m\.", r"\1.blocks.", key)
    key = key.replace(".dconv.", ".depthwise_conv.").replace(".pconv.", ".pointwise_conv.")
    key = re.sub(r"^backbone\.backbone\.dark(\d)\.", lambda m: f"backbone.stage{int(m.group(1)) - 1}.", key)
    key = key.replace("backbone.backbone.stem.", "backbone.stem.")
    for old, new in [
        ("backbone.lateral_conv0.", "neck.reduce_layers.0."), ("backbone.reduce_conv1.", "neck.reduce_layers.1."),
        ("backbone.C3_p4.", "neck.top_down_blocks.0."), ("backbone.C3_p3.", "neck.top_down_blocks.1."),
        ("backbone.bu_conv2.", "neck.downsamples.0."), ("backbone.bu_conv1.", "neck.downsamples.1."),
        ("backbone.C3_n3.", "neck.bottom_up_blocks.0."), ("backbone.C3_n4.", "neck.bottom_up_blocks.1."),
        ("head.stems.", "neck.out_convs."), ("head.cls_convs.", "bbox_head.multi_level_cls_convs."),
        ("head.reg_convs.", "bbox_head.multi_level_reg_convs."), ("head.cls_preds.", "bbox_head.multi_level_conv_cls."),
        ("head.reg_preds.", "bbox_head.multi_level_conv_reg."), ("head.obj_preds.", "bbox_head.multi_level_conv_obj."),
    ]:
        if key.startswith(old):
            key = new + key[len(old):]
    return key


@pytest.mark.parametrize("name", ["yolox_s", "yolox_nano"])
def test_convert_mmdetection(name):
    official = yolox.build_yolox(**yolox.WEIGHTS[name].arch).state_dict()
    mmdet = OrderedDict((_to_mmdet(k), v) for k, v in official.items())
    # Spot checks of names that mmdetection's released YOLOX checkpoints use.
    assert "backbone.stage1.1.main_conv.conv.weight" in mmdet
    assert "backbone.stage4.1.conv1.conv.weight" in mmdet  # SPP keeps conv1/conv2
    assert "backbone.stage4.2.blocks.0.conv1.conv.weight" in mmdet
    assert "neck.out_convs.2.conv.weight" in mmdet and "bbox_head.multi_level_conv_obj.0.bias" in mmdet
    if name == "yolox_nano":
        assert "backbone.stage1.0.depthwise_conv.conv.weight" in mmdet
    # mmcv 1.x EMA-hook buffers sit at the top level with flattened names; they are dropped.
    with_ema = OrderedDict(mmdet)
    with_ema["ema_backbone_stem_conv_conv_weight"] = torch.zeros(1)
    out = yolox.convert_checkpoint({"state_dict": with_ema, "meta": {"epoch": 300, "CLASSES": ("person",)}})
    assert sorted(out) == sorted(official)
    model = yolox.build_yolox(**yolox.WEIGHTS[name].arch)
    model.load_state_dict(out, strict=True)


def test_convert_mmdetection_unknown_key_raises():
    mmdet = OrderedDict((_to_mmdet(k), v) for k, v in _manifest_state().items())
    mmdet["neck.extra_layer.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="neck.extra_layer.weight"):
        yolox.convert_checkpoint({"state_dict": mmdet})


def test_convert_unknown_layout_raises_naming_keys():
    with pytest.raises(CheckpointError, match=r"unrecognised YOLOX.*model\.0\.conv\.weight.*supported"):
        yolox.convert_checkpoint({"model.0.conv.weight": torch.zeros(1), "model.24.m.0.bias": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="expected a dict"):
        yolox.convert_checkpoint([torch.zeros(1)])


def test_strict_load_names_missing_and_unexpected_keys():
    spec = yolox.WEIGHTS[NAME]
    state = _manifest_state()
    del state["head.obj_preds.2.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys: head\.obj_preds\.2\.bias"):
        yolox.create(spec, state, device=CPU)
    state = _manifest_state()
    state["head.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unexpected keys: head\.extra\.weight"):
        yolox.create(spec, state, device=CPU)
    state = _manifest_state()
    del state["backbone.backbone.stem.conv.bn.num_batches_tracked"]  # optional leaf: tolerated
    yolox.create(spec, state, device=CPU)


def test_random_init_is_reproducible_and_leaves_global_rng_alone():
    spec = yolox.WEIGHTS["yolox_nano"]
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = yolox.create(spec, None, device=CPU).model.state_dict()
    after = torch.rand(1)
    b = yolox.create(spec, None, device=CPU).model.state_dict()
    assert torch.equal(before, after)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_random_weights_yield_capped_person_boxes():
    """Plumbing runs need persons: random weights give class-0 boxes, capped per image."""
    predictor = yolox.create(yolox.WEIGHTS["yolox_nano"], None, device=CPU)
    image = np.random.default_rng(2).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    out = predictor.detect_batch([image, image[:, :200]], classes=(0,), max_detections=7)
    assert [len(d) for d in out] == [7, 7]
    assert all((d[:, 6] == 0).all() and np.isfinite(d).all() for d in out)


# ---------------------------------------------------------------------------------------------
# Every weights entry: metadata and a random-init build
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(yolox.WEIGHTS))
def test_weights_metadata(name):
    spec = yolox.WEIGHTS[name]
    assert spec.name == name and spec.family == "yolox" and spec.source_format == "yolox"
    url = urlparse(spec.url)
    assert url.scheme == "https" and url.netloc == "github.com"
    assert spec.url == f"https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/{name}.pth"
    assert spec.filename == url.path.rsplit("/", 1)[-1] == f"{name}.pth"
    assert spec.input_size == ((416, 416) if name in ("yolox_nano", "yolox_tiny") else (640, 640))
    assert all(s % 32 == 0 for s in spec.input_size)
    assert spec.color == "BGR" and spec.mean is None and spec.std is None
    assert spec.sha256 is None and spec.license == "Apache-2.0" and "2107.08430" in spec.paper
    assert set(spec.arch) == {"depth", "width", "depthwise", "num_classes"} and spec.arch["num_classes"] == 80
    assert spec.arch["depthwise"] == (name == "yolox_nano")
    assert 20 < spec.metrics["coco_val2017_ap"] < 60
    assert spec.describe()["url"] == spec.url


@pytest.mark.parametrize("name", sorted(yolox.WEIGHTS))
def test_random_build_and_forward(name):
    spec = yolox.WEIGHTS[name]
    predictor = yolox.create(spec, None, device=CPU)
    assert predictor.weights is spec and predictor.device == CPU and predictor.input_size == spec.input_size
    assert not predictor.model.training
    params = sum(p.numel() for p in predictor.model.parameters())
    assert params == pytest.approx(OFFICIAL_PARAMS_M[name] * 1e6, rel=0.01), params
    raw = predictor.forward_raw(np.full((2, 3, 64, 96), 114, dtype=np.float32))
    assert raw.shape == (2, 8 * 12 + 4 * 6 + 2 * 3, 85) and raw.dtype == np.float32
    assert np.isfinite(raw).all()
    with pytest.raises(ValueError, match="multiples of 32"):
        predictor.forward_raw(np.zeros((1, 3, 60, 64), dtype=np.float32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_golden_on_cuda(golden):
    """fp32 on GPU (TF32 off) matches the CPU reference; fp16 autocast stays close to it."""
    case, _, x, _, _ = golden
    state = generate_state_dict(golden_dir(NAME) / "manifest.json", case)
    cuda = torch.device("cuda")
    prev = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        fp32 = yolox.create(yolox.WEIGHTS[NAME], state, device=cuda, half=False)
        np.testing.assert_allclose(fp32.forward_raw(x[None]), case["raw_output"], rtol=1e-4, atol=1e-4)
        fp16 = yolox.create(yolox.WEIGHTS[NAME], state, device=cuda, half=True)
        raw16 = fp16.forward_raw(x[None])
        assert raw16.dtype == np.float32 and np.isfinite(raw16).all()
        np.testing.assert_allclose(raw16[..., 4:], case["raw_output"][..., 4:], atol=2e-2)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev
