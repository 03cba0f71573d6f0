"""YOLOX on the device (`YOLOXDetector.detect_frames`, `pipeline.perframe.persons`) against the reference
path (`detect_batch` + `persons.select_persons`): the same boxes, in the same order, on real footage;
the letterbox bit-identical to the host's; the static NMS identical to `nms`; and no host sync.

CPU tensors (CI has no GPU); the CUDA tests at the end run where there is one. Measured on CPU: boxes
and scores identical (max |diff| 0 px), since the letterbox, the forward's input and every float32
operation of the post-processing are the same as the reference's; BOX_PX is the tolerance on CUDA.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from posepipe.models import yolox
from posepipe.models.precision import PrecisionWarning, fall_back_to_fp32
from posepipe.pipeline.perframe.persons import PERSON_CLASS, DevicePersons, select_persons, select_persons_device
from posepipe.pipeline.temporal.association import MAX_CANDIDATES
from tests.golden import GOLDEN, generate_state_dict, golden_cases, load_case
from tests.media import VTEST, source_frames

CPU = torch.device("cpu")
WIDTH, HEIGHT = 768, 576
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "street.mp4"
BOX_PX = 1e-3  # on CUDA (the same forward, the same float32 post-processing; CPU gives 0)
# The worker's detection settings (PoseWorker._frames): ByteTrack's low threshold, --det-nms, persons.
WORKER = {"conf_threshold": 0.1, "nms_threshold": 0.7, "classes": (PERSON_CLASS,), "max_detections": MAX_CANDIDATES}


def real_frames(n: int) -> list[np.ndarray]:
    """n consecutive 768x576 BGR frames of street footage: vtest.avi (../shared/media) when present,
    else the repository's samples/street.mp4 (384x288) scaled up, else drawn walkers."""
    frames: list[np.ndarray] = []
    for path in (VTEST, SAMPLE):
        if not path.exists():
            continue
        cap = cv2.VideoCapture(str(path))
        while len(frames) < n:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame if frame.shape[:2] == (HEIGHT, WIDTH) else cv2.resize(frame, (WIDTH, HEIGHT)))
        cap.release()
        if len(frames) == n:
            return frames
        frames = []
    return source_frames(n, (WIDTH, HEIGHT))


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return real_frames(8)


@pytest.fixture(scope="module")
def nano() -> yolox.YOLOXDetector:
    """Random weights with the person bias of `create` (what --random-weights runs): persons on real footage."""
    return yolox.create(yolox.WEIGHTS["yolox_nano"], None, device=CPU)


@pytest.fixture(scope="module")
def golden_s() -> yolox.YOLOXDetector:
    """yolox_s with the golden weights of its first case (no persons on street footage, but thousands of
    boxes of other classes, some suppressing each other). Random weights would not do: they give one
    class everywhere and nothing for NMS to suppress, so without ../shared these tests skip."""
    cases = golden_cases("yolox_s")
    if not cases:
        pytest.skip("needs the golden yolox_s weights (../shared/golden): random weights give one class")
    state = generate_state_dict(GOLDEN / "yolox_s" / "manifest.json", load_case(cases[0]))
    return yolox.create(yolox.WEIGHTS["yolox_s"], state, device=CPU)


def stacked(frames: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(frames))


def max_diff(out: list[np.ndarray], ref: list[np.ndarray]) -> float:
    return max((float(np.abs(o - r).max()) for o, r in zip(out, ref) if len(r)), default=0.0)


def assert_same_rows(out: list[np.ndarray], ref: list[np.ndarray], what: str, *, box_px: float = 0.0) -> float:
    """Frame by frame: the same number of rows, the same classes (column 6 when present), boxes within
    box_px, the rest identical; returns the largest box difference."""
    assert len(out) == len(ref), what
    for i, (o, r) in enumerate(zip(out, ref)):
        assert o.dtype == np.float32 and o.shape == r.shape, f"{what}, frame {i}: {o.shape} vs {r.shape}"
        np.testing.assert_allclose(o[:, :4], r[:, :4], rtol=0, atol=box_px, err_msg=f"{what}, frame {i}: boxes")
        np.testing.assert_array_equal(o[:, 4:], r[:, 4:], err_msg=f"{what}, frame {i}: scores/classes")
    return max_diff([o[:, :4] for o in out], [r[:, :4] for r in ref])


# ---------------------------------------------------------------------------------------------
# The letterbox: the same bytes on the device (its exactness against OpenCV 4.10: tests/models/test_warp.py)
# ---------------------------------------------------------------------------------------------

def test_float_interpolate_would_not_be_exact(frames):
    """Why the letterbox is integer arithmetic: F.interpolate's bilinear (the same filter) is 1 off on
    ~1/10 of the pixels of this letterbox."""
    x = torch.from_numpy(frames[0]).permute(2, 0, 1)[None].float()
    interp = torch.nn.functional.interpolate(x, size=(480, 640), mode="bilinear", align_corners=False, antialias=False)
    interp = interp.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    ref = yolox.resize_linear_uint8(torch.from_numpy(frames[0])[None], 480, 640)[0].numpy()
    diff = np.abs(interp.astype(int) - ref.astype(int))
    assert diff.max() == 1 and 0.01 < np.mean(diff > 0) < 0.5


@pytest.mark.parametrize("input_size", [(640, 640), (416, 416), (320, 480)])
def test_letterbox_frames_matches_letterbox_uint8(frames, input_size):
    canvas, ratio = yolox.letterbox_frames(stacked(frames[:2]), input_size)
    assert canvas.dtype == torch.uint8 and canvas.shape == (2, *input_size, 3)
    for i in range(2):
        ref, ref_ratio = yolox.letterbox_uint8(frames[i], input_size)
        assert ratio == ref_ratio
        np.testing.assert_array_equal(canvas[i].numpy(), ref)
    portrait = np.ascontiguousarray(np.stack(frames[:2]).transpose(0, 2, 1, 3))  # 576 wide, 768 high
    canvas, ratio = yolox.letterbox_frames(torch.from_numpy(portrait), input_size)
    ref, ref_ratio = yolox.letterbox_uint8(portrait[1], input_size)
    assert ratio == ref_ratio
    np.testing.assert_array_equal(canvas[1].numpy(), ref)
    with pytest.raises(ValueError, match="uint8 BGR"):
        yolox.letterbox_frames(stacked(frames[:1]).float(), input_size)


# ---------------------------------------------------------------------------------------------
# End to end on real footage: detect_frames + select_persons_device vs detect_batch + select_persons
# ---------------------------------------------------------------------------------------------

def test_worker_settings_match_the_reference_path(nano, frames):
    """What the worker asks for (persons, >= 0.1, NMS 0.7, 300 per frame), 8 frames of 768x576."""
    ref = nano.detect_batch(frames, **WORKER)
    dets = nano.detect_frames(stacked(frames), **WORKER)
    assert dets.boxes.shape == (8, MAX_CANDIDATES, 4) and dets.valid.shape == (8, MAX_CANDIDATES)
    assert not bool(dets.fallback) and not bool(dets.overflow)
    assert sum(len(r) for r in ref) > 0
    box_err = assert_same_rows(dets.to_host(), ref, "detections")
    # The worker's selection: clipped, degenerate boxes dropped, best first, capped.
    ref_persons = [select_persons(r, WIDTH, HEIGHT, MAX_CANDIDATES) for r in ref]
    persons = select_persons_device(dets, WIDTH, HEIGHT, MAX_CANDIDATES)
    assert isinstance(persons, DevicePersons) and persons.boxes.shape == (8, MAX_CANDIDATES, 4)
    person_err = assert_same_rows(persons.to_host(), ref_persons, "persons")
    capped = select_persons_device(dets, WIDTH, HEIGHT, 5).to_host()
    assert_same_rows(capped, [select_persons(r, WIDTH, HEIGHT, 5) for r in ref], "persons capped at 5")
    print(f"\nworker settings: {[len(p) for p in ref_persons]} persons per frame; "
          f"max |diff| boxes {box_err} px, persons {person_err} px")
    assert box_err == 0 and person_err == 0


def test_all_classes_match_the_reference_path(golden_s, frames):
    """Every class, with NMS at 0.2 so that boxes do suppress each other (checked), per class."""
    kw = {"conf_threshold": 0.1, "nms_threshold": 0.2, "max_detections": 100}
    ref = golden_s.detect_batch(frames[:2], **kw)
    dets = golden_s.detect_frames(stacked(frames[:2]), **kw)
    assert not bool(dets.fallback)
    box_err = assert_same_rows(dets.to_host(), ref, "all classes")
    unsuppressed = golden_s.detect_batch(frames[:2], **{**kw, "nms_threshold": 1.0})
    assert len({int(c) for c in ref[0][:, 6]}) > 1  # several classes
    assert any(not np.array_equal(u, r) for u, r in zip(unsuppressed, ref))  # NMS removed boxes
    print(f"\nall classes, NMS 0.2: {[len(r) for r in ref]} boxes; max |diff| {box_err} px")


def test_postprocess_device_matches_postprocess_on_network_outputs(golden_s, frames):
    """The post-processing alone on the same raw outputs, across thresholds, caps and class sets."""
    canvases = [yolox.letterbox_uint8(f, golden_s.input_size)[0] for f in frames[:2]]
    raw = golden_s.forward_raw(torch.from_numpy(np.stack(canvases)).permute(0, 3, 1, 2).float())
    for conf, iou, classes, cap in [(0.34, 0.7, None, None), (0.3, 0.45, None, 20), (0.05, 0.3, (0, 2, 56), 50),
                                    (0.1, 0.65, (PERSON_CLASS,), MAX_CANDIDATES), (0.2, 0.5, None, 0)]:
        dets = yolox.postprocess_device(torch.from_numpy(raw), conf, iou, classes=classes, max_detections=cap,
                                        candidates=2048)
        assert bool(dets.exact.all())
        ref = [yolox.postprocess(r, conf, iou, classes=classes, max_detections=cap) for r in raw]
        assert_same_rows(dets.to_host(), ref, f"conf {conf}, NMS {iou}, classes {classes}, cap {cap}")


def test_detect_frames_empty_batch_and_checks(nano, frames):
    dets = nano.detect_frames(torch.zeros((0, HEIGHT, WIDTH, 3), dtype=torch.uint8), **WORKER)
    assert dets.boxes.shape == (0, MAX_CANDIDATES, 4) and dets.to_host() == []
    with pytest.raises(ValueError, match="uint8 BGR"):
        nano.detect_frames(stacked(frames[:1])[..., :2], **WORKER)


# ---------------------------------------------------------------------------------------------
# The static NMS against nms()
# ---------------------------------------------------------------------------------------------

def _clustered_boxes(rng, n_clusters: int, per: int, jitter: float) -> np.ndarray:
    centres = rng.uniform(0, 600, (n_clusters, 2))
    sizes = rng.uniform(10, 150, (n_clusters, 2))
    base = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    boxes = np.repeat(base, per, axis=0) + rng.normal(0, jitter, (n_clusters * per, 4)) * np.repeat(
        np.concatenate([sizes, sizes], axis=1), per, axis=0)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 0.5)
    return boxes.astype(np.float32)


def _static_nms(boxes: np.ndarray, scores: np.ndarray, thr: float, labels: np.ndarray | None,
                iterations: int = 24) -> tuple[np.ndarray, bool]:
    """greedy_nms_static over one frame, visiting order as nms(); kept original indices, best first."""
    order = np.argsort(-scores, kind="stable")
    b = torch.from_numpy(boxes[order])[None]
    lab = None if labels is None else torch.from_numpy(labels[order])[None]
    keep, converged = yolox.greedy_nms_static(b, torch.ones(b.shape[:2], dtype=torch.bool), lab, thr,
                                              iterations=iterations)
    return order[keep[0].numpy()], bool(converged[0])


def test_static_nms_equals_nms_with_ties_and_overlaps():
    rng = np.random.default_rng(7)
    cases = 0
    for trial in range(12):
        boxes = _clustered_boxes(rng, n_clusters=int(rng.integers(1, 20)), per=int(rng.integers(2, 40)),
                                 jitter=float(rng.uniform(0.02, 0.3)))
        n = len(boxes)
        if trial % 3 == 0:
            boxes[rng.integers(0, n, n // 4)] = boxes[rng.integers(0, n, n // 4)]  # identical boxes
        scores = (rng.integers(1, 8, n) / 8).astype(np.float32)  # 7 levels: ties everywhere
        labels = rng.integers(0, 3, n)
        for thr in (0.7, 0.5, 0.3, 0.45, 0.0):
            for lab in (None, labels):
                ref = yolox.nms(boxes, scores, thr, lab)
                kept, converged = _static_nms(boxes, scores, thr, lab)
                assert converged
                np.testing.assert_array_equal(kept, ref, err_msg=f"trial {trial}, thr {thr}, labels {lab is not None}")
                cases += 1
    assert cases == 120


def test_static_nms_threshold_is_strict_in_double():
    """nms compares the float32 IoU in double: exactly on the threshold keeps, just below it suppresses,
    including thresholds whose nearest float32 is above them (a plain float32 comparison would keep)."""
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], dtype=np.float32)  # IoU exactly 0.5
    scores = np.array([0.9, 0.8], dtype=np.float32)
    for thr, expected in [(0.5, [0, 1]), (0.49, [0]), (float(np.nextafter(0.5, 0)), [0])]:
        np.testing.assert_array_equal(_static_nms(boxes, scores, thr, None)[0], expected)
        np.testing.assert_array_equal(yolox.nms(boxes, scores, thr), expected)
    rng = np.random.default_rng(8)
    checked = 0
    for _ in range(200):
        pair = _clustered_boxes(rng, 1, 2, 0.2)
        iou = yolox.pairwise_iou(torch.from_numpy(pair)[None])[0, 0, 1].item()
        below = float(np.nextafter(np.float32(iou), np.float32(0)))
        thr = (below + iou) / 2  # a double strictly between two float32 neighbours
        if float(np.float32(thr)) != iou:
            continue  # need thresholds that round up to the IoU itself
        ref = yolox.nms(pair, np.array([0.9, 0.8], np.float32), thr)
        np.testing.assert_array_equal(ref, [0])  # iou > thr in double: suppressed
        np.testing.assert_array_equal(_static_nms(pair, np.array([0.9, 0.8], np.float32), thr, None)[0], ref)
        checked += 1
    assert checked > 20


def test_static_nms_reports_non_convergence():
    """A chain: box i overlaps only box i+1, scores descending, so the greedy result alternates and
    each iteration settles one more box; too few iterations must say so."""
    n = 12
    boxes = np.array([[i * 6.0, 0, i * 6.0 + 10, 10] for i in range(n)], np.float32)  # IoU(i, i+1) = 0.25
    scores = np.linspace(1, 0.5, n).astype(np.float32)
    ref = yolox.nms(boxes, scores, 0.2)
    np.testing.assert_array_equal(ref, np.arange(0, n, 2))
    kept, converged = _static_nms(boxes, scores, 0.2, None, iterations=n)
    assert converged
    np.testing.assert_array_equal(kept, ref)
    assert not _static_nms(boxes, scores, 0.2, None, iterations=3)[1]


def _raw(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, num_classes: int = 3) -> np.ndarray:
    """One frame's raw output holding these boxes (cx, cy, w, h), obj = score, class score 1."""
    raw = np.zeros((len(boxes), 5 + num_classes), np.float32)
    raw[:, 0:2] = (boxes[:, :2] + boxes[:, 2:]) / 2
    raw[:, 2:4] = boxes[:, 2:] - boxes[:, :2]
    raw[:, 4] = scores
    raw[np.arange(len(boxes)), 5 + labels] = 1
    return raw


def test_postprocess_device_candidates_and_exactness_flag():
    rng = np.random.default_rng(9)
    frames = []
    for _ in range(3):
        boxes = _clustered_boxes(rng, 20, 20, 0.1)
        frames.append(_raw(boxes, (rng.integers(1, 50, len(boxes)) / 50).astype(np.float32), rng.integers(0, 3, len(boxes))))
    raw = np.stack(frames)
    ref = [yolox.postprocess(r, 0.1, 0.5, max_detections=30) for r in raw]
    passed = [(r[:, 4] >= np.float32(0.1)).sum() for r in raw]
    # all candidates considered: exact
    dets = yolox.postprocess_device(torch.from_numpy(raw), 0.1, 0.5, max_detections=30, candidates=len(raw[0]))
    assert bool(dets.exact.all())
    assert_same_rows(dets.to_host(), ref, "all candidates")
    # fewer candidates than passed, but 30 kept among them: still exact (a box depends only on better ones)
    few = yolox.postprocess_device(torch.from_numpy(raw), 0.1, 0.5, max_detections=30, candidates=150)
    assert all(p > 150 for p in passed) and bool(few.exact.all())
    assert_same_rows(few.to_host(), ref, "150 candidates")
    # too few to keep 30: flagged, and the caller falls back
    tiny = yolox.postprocess_device(torch.from_numpy(raw), 0.1, 0.5, max_detections=30, candidates=20)
    assert not bool(tiny.exact.any()) and bool(tiny.fallback)
    # no cap: exact only if every passed anchor was considered
    uncapped = yolox.postprocess_device(torch.from_numpy(raw), 0.1, 0.5, candidates=150)
    assert not bool(uncapped.exact.any())
    # too few NMS iterations for these clusters: flagged
    assert not bool(yolox.postprocess_device(torch.from_numpy(raw), 0.1, 0.5, max_detections=30,
                                             candidates=400, nms_iterations=0).exact.all())


# ---------------------------------------------------------------------------------------------
# Person selection
# ---------------------------------------------------------------------------------------------

def test_select_persons_device_edge_cases():
    """Boxes off the frame, too thin after clipping, NaN, other classes, score ties: as select_persons."""
    rows = np.array([
        [-20, -5, 50, 60, 0.9, 0.9, 0],       # clipped at the top-left
        [700, 500, 900, 700, 0.9, 0.9, 0],    # clipped at the bottom-right, same score
        [10, 10, 11.5, 80, 0.8, 0.9, 0],      # 1.5 px wide: dropped
        [790, 10, 900, 80, 0.8, 0.9, 0],      # right of the frame: 0 px after clipping, dropped
        [10, 10, 40, 40, 0.7, 0.9, 1],        # another class
        [np.nan, 10, 40, 40, 0.7, 0.9, 0],    # not finite
        [10, 10, 12, 12, 0.6, 0.9, 0],        # exactly MIN_BOX_PX: kept
        [100, 100, np.inf, 300, 0.5, 0.9, 0],  # inf clipped to the width: kept, as select_persons does
        [5, 5, 50, 50, 0.4, 0.5, 0],
    ], np.float32)
    k = 12
    t = torch.zeros((2, k, 7))
    t[0, :len(rows)] = torch.from_numpy(rows)
    t[1, :3] = torch.from_numpy(rows[[4, 2, 5]])  # a frame with no selectable person
    count = torch.tensor([len(rows), 3])
    dets = yolox.DeviceDetections(
        boxes=t[..., :4], obj=t[..., 4], cls_conf=t[..., 5], labels=t[..., 6].long(),
        valid=torch.arange(k)[None] < count[:, None], count=count,
        overflow=torch.zeros((), dtype=torch.bool), exact=torch.ones(2, dtype=torch.bool))
    for cap in (10, 3, 0):
        out = select_persons_device(dets, WIDTH, HEIGHT, cap).to_host()
        ref = [select_persons(rows, WIDTH, HEIGHT, cap), select_persons(rows[[4, 2, 5]], WIDTH, HEIGHT, cap)]
        assert_same_rows(out, ref, f"cap {cap}")
    assert len(select_persons_device(dets, WIDTH, HEIGHT, 10).to_host()[0]) == 5


# ---------------------------------------------------------------------------------------------
# No host sync in the steady path
# ---------------------------------------------------------------------------------------------

def _window(detector: yolox.YOLOXDetector, frames: torch.Tensor, width: int, height: int):
    dets = detector.detect_frames(frames, conf_threshold=0.1, nms_threshold=0.7, classes=(PERSON_CLASS,),
                                  max_detections=20, nms_iterations=4)
    persons = select_persons_device(dets, width, height, 20)
    return persons.boxes, persons.scores, persons.count, dets.fallback


class HostReads(TorchDispatchMode):
    """Records every dispatched op that reads device data on the host or sizes a result by the data:
    .item() / bool(t) / int(t) (_local_scalar_dense), nonzero, boolean-mask indexing, unique, a tensor
    made from host data (lift_fresh) and copies between devices."""

    DATA_DEPENDENT = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::equal",
                      "aten::is_nonzero", "aten::_unique", "aten::_unique2", "aten::unique_dim",
                      "aten::unique_consecutive", "aten::lift_fresh", "aten::masked_scatter"}

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        tensors = [a for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        if name in self.DATA_DEPENDENT:
            self.found.append(name)
        elif name in ("aten::index", "aten::index_put", "aten::index_put_") and any(
                t is not None and t.dtype == torch.bool for t in args[1]):
            self.found.append(f"{name} with a boolean mask")
        out = func(*args, **kwargs)
        if name in ("aten::_to_copy", "aten::copy_") and isinstance(out, torch.Tensor):
            if {t.device for t in tensors} | {out.device} != {out.device}:
                self.found.append(f"{name} between devices")
        return out


def test_no_host_sync_in_the_dispatched_ops(nano, frames):
    """Every aten op of a warm window (detection and selection): none reads data on the host."""
    x = stacked(frames[:2])
    _window(nano, x, WIDTH, HEIGHT)  # the first call of a frame size uploads the letterbox taps
    with HostReads() as reads:
        _window(nano, x, WIDTH, HEIGHT)
    assert reads.found == []
    with HostReads() as reads:  # the check has teeth
        _ = int(x.sum()), x[x > 3], torch.tensor([1.0]), x.to(torch.device("meta"))
    assert reads.found == ["aten::_local_scalar_dense", "aten::index with a boolean mask", "aten::lift_fresh",
                           "aten::_to_copy between devices"]


def test_whole_graph_capture(nano, frames):
    """torch.compile(fullgraph=True) captures a window whole (no graph break, e.g. no Python branch on
    a tensor's value) and it computes what it computes eagerly: ready for compile / CUDA graphs."""
    small = torch.from_numpy(np.stack([cv2.resize(f, (160, 120)) for f in frames[:2]]))
    eager = _window(nano, small, 160, 120)
    compiled = torch.compile(lambda x: _window(nano, x, 160, 120), fullgraph=True, backend="eager")
    for a, b in zip(compiled(small), eager):
        assert torch.equal(a, b)

    def branches(x):  # the check has teeth: a Python branch on a device value is refused
        return x + 1 if x.sum() > 0 else x - 1

    with pytest.raises(Exception, match="(?i)data.dependent|graph break|unsupported"):
        torch.compile(branches, fullgraph=True, backend="eager")(small)


def test_no_host_sync_on_the_meta_device(frames):
    """On 'meta' tensors have shapes and no data: any value read (.item(), .tolist(), .cpu(), .numpy(),
    bool(t)) or data-dependent shape would raise."""
    meta = yolox.create(yolox.WEIGHTS["yolox_nano"], None, device=CPU)
    meta.model.to("meta")
    meta.device = torch.device("meta")
    boxes, scores, count, fallback = _window(meta, stacked(frames[:2]).to("meta"), WIDTH, HEIGHT)
    assert boxes.device.type == "meta" and boxes.shape == (2, 20, 4) and fallback.shape == ()


def test_fall_back_to_fp32_turns_half_off():
    class Predictor:
        half = True
        device = CPU

    p = Predictor()
    with pytest.warns(PrecisionWarning, match="YOLOX: fp16 overflowed"):
        fall_back_to_fp32(p, "YOLOX")
    assert p.half is False


# ---------------------------------------------------------------------------------------------
# CUDA (where there is one)
# ---------------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("half", [False, True])
def test_cuda_matches_reference_without_a_sync(frames, half):
    cuda = torch.device("cuda")
    prev = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        det = yolox.create(yolox.WEIGHTS["yolox_nano"], None, device=cuda, half=half)
        ref = det.detect_batch(frames, **WORKER)
        x = stacked(frames).to(cuda)
        dets = det.detect_frames(x, **WORKER)  # warm: the letterbox taps and class table are uploaded once
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            dets = det.detect_frames(x, **WORKER)
            persons = select_persons_device(dets, WIDTH, HEIGHT, MAX_CANDIDATES)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert not bool(dets.fallback)
        out = dets.to_host()
        err = max_diff([o[:, :4] for o in out], [r[:, :4] for r in ref])
        assert [len(o) for o in out] == [len(r) for r in ref]
        for o, r in zip(out, ref):
            np.testing.assert_allclose(o[:, :4], r[:, :4], rtol=0, atol=BOX_PX)
            np.testing.assert_allclose(o[:, 4:], r[:, 4:], rtol=0, atol=1e-6)
        assert_same_rows(persons.to_host(), [select_persons(r, WIDTH, HEIGHT, MAX_CANDIDATES) for r in ref],
                         "persons", box_px=BOX_PX)
        print(f"\nCUDA half={half}: max |diff| boxes {err} px")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev


@needs_cuda
def test_cuda_fp16_overflow_is_flagged_and_fp32_recovers(frames):
    det = yolox.create(yolox.WEIGHTS["yolox_nano"], None, device=torch.device("cuda"), half=True)
    with torch.no_grad():
        for conv in det.model.head.reg_preds:  # box centres past fp16's 65504 (finite in fp32)
            conv.bias[:2] = 1e5
    x = stacked(frames[:2]).cuda()
    assert bool(det.detect_frames(x, **WORKER).overflow)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        fall_back_to_fp32(det, "YOLOX")
    assert det.half is False and not bool(det.detect_frames(x, **WORKER).overflow)
