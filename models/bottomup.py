"""Detector-free 2D pose as mmpose 1.x runs it: a whole frame in, every person's box, keypoints and score out.

Shared by the families whose network finds the people itself (bottom-up Associative Embedding,
one-stage RTMO): mmpose 1.3.2's ``inference_bottomup`` path around the network, reproduced to the
bit where the golden READMEs (``shared/golden/ae_hrnet_w32_coco_512x512``, ``rtmo_s_coco_640x640``)
say it is:

- ``BottomupResize``: the frame is zoomed uniformly about its centre into a canvas whose sides are
  multiples of ``size_factor`` (``fit``: inside the input size, letterboxed; ``expand``: the short
  side to the input size, the long one grows), **centred**, with ``get_warp_matrix`` and OpenCV 4.x's
  fixed-point ``warpAffine(INTER_LINEAR)`` and a constant border (:func:`warp_to_canvas`);
- back to the frame (``BottomupPoseEstimator.add_pred_to_datasample``):
  ``p / canvas_size * scale + center - 0.5 * scale`` in float64, no half-pixel shift, no clipping.

:class:`BottomupPredictor` is the interface the pipeline sees: ``predict_image`` /
``predict_images`` (frames -> persons) and, so that a detector-free model also answers the
top-down question "the keypoints of the person in this box" (the pipeline asks it for boxes that
tracking kept), ``predict_batch`` with the same signature as every top-down family.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from posepipe.models import warp
from posepipe.models.topdown import check_image, crop_to_image, get_warp_matrix
from posepipe.models.weights import Weights


# --------------------------------------------------------------------------------------------
# The canvas: BottomupResize
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Canvas:
    """Where a frame sits in the network input: mmpose's ``input_center``, ``input_scale`` and ``input_size``."""

    center: np.ndarray            # (2,) float32, the frame's centre (w / 2, h / 2), frame px
    scale: np.ndarray             # (2,) float32, the frame extent the whole canvas covers, frame px
    size_wh: tuple[int, int]      # the canvas (network input) width and height
    matrix: np.ndarray            # (2, 3) float64, frame -> canvas

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Canvas pixels (..., 2) -> frame pixels, float32 (float64 arithmetic, as mmpose)."""
        points = np.asarray(points)
        flat = points.reshape(-1, 1, 2) if points.size else np.zeros((0, 1, 2), np.float32)
        return crop_to_image(flat, self.center, self.scale, self.size_wh).reshape(points.shape)


def _ceil_to_multiple(size: tuple[float, float], base: int) -> tuple[int, int]:
    return tuple(int(np.ceil(s / base) * base) for s in size)  # type: ignore[return-value]


def bottomup_canvas(frame_hw: tuple[int, int], input_size_wh: tuple[int, int], *, size_factor: int,
                    mode: str) -> Canvas:
    """``BottomupResize._get_input_size`` and ``transform`` (no UDP): the canvas of one frame size."""
    img_h, img_w = int(frame_hw[0]), int(frame_hw[1])
    if img_h < 1 or img_w < 1:
        raise ValueError(f"the frame must be at least 1x1 pixels, got {img_w}x{img_h}")
    ratio = img_w / img_h
    if mode == "fit":
        padded = _ceil_to_multiple(input_size_wh, size_factor)
        if padded != tuple(input_size_wh):
            raise ValueError(f"input size {input_size_wh} is not a multiple of {size_factor}")
        pad_w, pad_h = padded
        actual = (min(pad_w, pad_h * ratio), min(pad_h, pad_w / ratio))
    elif mode == "expand":
        pad_w, pad_h = _ceil_to_multiple(input_size_wh, size_factor)
        actual = (max(pad_w, pad_h * ratio), max(pad_h, pad_w / ratio))
        padded = _ceil_to_multiple(actual, size_factor)
    else:
        raise ValueError(f"resize mode must be 'fit' or 'expand', got {mode!r}")
    center = np.array([img_w / 2, img_h / 2], dtype=np.float32)
    scale = np.array([img_w * padded[0] / actual[0], img_h * padded[1] / actual[1]], dtype=np.float32)
    return Canvas(center=center, scale=scale, size_wh=(int(padded[0]), int(padded[1])),
                  matrix=get_warp_matrix(center, scale, padded))


def warp_frames_to_canvas(frames: torch.Tensor, canvas: Canvas, border_value: int) -> torch.Tensor:
    """Frames (B, H, W, 3) uint8 -> canvases (B, h, w, 3) uint8, as OpenCV 4.x's ``warpAffine(INTER_LINEAR,
    borderValue=border_value)`` makes them.

    :func:`posepipe.models.warp.warp_affine_fixed_point`'s arithmetic (positions in 1/32 px from per-row
    and per-column 1/1024-px roundings, 15-bit weights) with OpenCV's constant border of any value: a tap
    outside the frame reads `border_value` (that function's border is 0; RTMO pads with 114). With 0 the
    bytes are that function's (tests check it).
    """
    width, height = canvas.size_wh
    batch, frame_h, frame_w, _ = frames.shape
    dev = frames.device
    m = warp.invert_affine(torch.from_numpy(np.asarray(canvas.matrix, np.float64)).to(dev)[None])
    xs = torch.arange(width, dtype=torch.float64, device=dev)
    ys = torch.arange(height, dtype=torch.float64, device=dev)
    adelta = torch.round(m[:, 0, 0:1] * xs * 1024).long()
    bdelta = torch.round(m[:, 1, 0:1] * xs * 1024).long()
    x0 = torch.round((m[:, 0, 1:2] * ys + m[:, 0, 2:3]) * 1024).long() + 16
    y0 = torch.round((m[:, 1, 1:2] * ys + m[:, 1, 2:3]) * 1024).long() + 16
    x = ((x0.unsqueeze(2) + adelta.unsqueeze(1)) >> 5)[0]
    y = ((y0.unsqueeze(2) + bdelta.unsqueeze(1)) >> 5)[0]
    ax, ay = (x & 31).to(torch.int32), (y & 31).to(torch.int32)
    ix, iy = x >> 5, y >> 5
    total = torch.zeros((batch, height, width, 3), dtype=torch.int32, device=dev)
    for dy, dx, weight in ((0, 0, (32 - ax) * (32 - ay)), (0, 1, ax * (32 - ay)), (1, 0, (32 - ax) * ay), (1, 1, ax * ay)):
        px, py = ix + dx, iy + dy
        inside = ((px >= 0) & (px < frame_w) & (py >= 0) & (py < frame_h)).unsqueeze(-1)
        tap = frames[:, py.clamp(0, frame_h - 1), px.clamp(0, frame_w - 1)].to(torch.int32)
        tap = torch.where(inside, tap, torch.full_like(tap, int(border_value)))
        total += tap * (weight * 32).unsqueeze(-1)
    return ((total + (1 << 14)) >> 15).clamp(0, 255).to(torch.uint8)


def warp_to_canvas(image_bgr: np.ndarray, canvas: Canvas, border_value: int) -> np.ndarray:
    """One (H, W, 3) uint8 frame -> its (h, w, 3) uint8 canvas, still in the frame's channel order."""
    check_image(image_bgr)
    with torch.inference_mode():
        frames = torch.from_numpy(np.ascontiguousarray(image_bgr))[None]
        return warp_frames_to_canvas(frames, canvas, border_value)[0].numpy()


# --------------------------------------------------------------------------------------------
# Persons
# --------------------------------------------------------------------------------------------

def keypoint_extent(keypoints: np.ndarray) -> np.ndarray:
    """(N, K, 2) keypoints -> (N, 4) float32 [x1, y1, x2, y2], the smallest box holding all K of them
    (COCO's evaluator sizes a keypoint-only detection the same way)."""
    keypoints = np.asarray(keypoints, dtype=np.float32)
    if len(keypoints) == 0:
        return np.zeros((0, 4), np.float32)
    return np.concatenate([keypoints.min(axis=1), keypoints.max(axis=1)], axis=1).astype(np.float32)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, 4) x (B, 4) xyxy boxes -> (A, B) IoU (0 where a union is empty), float64."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def empty_persons(num_joints: int) -> dict[str, np.ndarray]:
    return {"keypoints": np.zeros((0, num_joints, 2), np.float32), "keypoint_scores": np.zeros((0, num_joints), np.float32),
            "scores": np.zeros(0, np.float32), "bboxes_xyxy": np.zeros((0, 4), np.float32)}


# --------------------------------------------------------------------------------------------
# The predictor interface of every detector-free family
# --------------------------------------------------------------------------------------------

class BottomupPredictor:
    """A whole BGR frame -> every person the network finds in it.

    A family subclasses it with :meth:`predict_images`. ``predict_image(image_bgr, flip_test)`` returns
    ``dict(keypoints (N, J, 2), keypoint_scores (N, J), scores (N,), bboxes_xyxy (N, 4))``, float32,
    frame pixels, best-scored first as the family orders them. Attributes as every 2D family:
    ``weights``, ``weights_sha256``, ``input_size``, ``num_joints``, ``device``, ``half``.

    ``detector_free`` tells the pipeline to run no detector: the boxes and scores the tracker sees
    are the model's own (pipeline.perframe.worker). There is no device path (``supports_device``
    False): the grouping and the NMS are host work with data-dependent shapes.
    """

    label = "detector-free model"
    detector_free = True
    supports_device = False

    def __init__(self, model: nn.Module, weights: Weights, device: torch.device, half: bool = False):
        if weights.input_size is None or weights.mean is None or weights.std is None:
            raise ValueError(f"{weights.name}: the weights record needs input_size, mean and std")
        self.model = model
        self.weights = weights
        self.device = torch.device(device)
        self.half = bool(half) and self.device.type == "cuda"
        self.input_size: tuple[int, int] = tuple(weights.input_size)  # (height, width)
        self.num_joints = len(weights.keypoint_names) or 17
        self.weights_sha256: str | None = None  # set by models.load_model
        self._bgr_to_rgb = weights.color == "RGB"
        self._mean = torch.tensor(weights.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(weights.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    @property
    def input_size_wh(self) -> tuple[int, int]:
        return self.input_size[1], self.input_size[0]

    def normalize(self, canvases_bgr: torch.Tensor) -> torch.Tensor:
        """(B, h, w, 3) uint8 BGR canvases -> (B, 3, h, w) float32 network input (``PoseDataPreprocessor``)."""
        x = canvases_bgr.to(self.device).permute(0, 3, 1, 2)
        if self._bgr_to_rgb:
            x = x.flip(1)
        return (x.float() - self._mean) / self._std

    def _autocast(self) -> Any:
        if self.half and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        if self.half and self.device.type == "cpu":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    # -- prediction -------------------------------------------------------------------------
    def predict_image(self, image_bgr: np.ndarray, flip_test: bool = True) -> dict[str, np.ndarray]:
        """Every person in one BGR frame (see the class doc for the dict)."""
        return self.predict_images([image_bgr], flip_test=flip_test)[0]

    def predict_images(self, images_bgr: Sequence[np.ndarray], flip_test: bool = True,
                       batch_size: int = 4) -> list[dict[str, np.ndarray]]:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.inference_mode()
    def predict_batch(self, images_bgr: Sequence[np.ndarray], bboxes_xywh: Sequence[np.ndarray],
                      flip_test: bool = True, batch_size: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
        """The top-down question for a detector-free model: for each given box [x, y, w, h], the keypoints
        (K, J, 2) and scores (K, J) of the person the model finds in that frame whose own box, clipped to
        the frame, overlaps it most; zeros for a box that overlaps no found person. The pipeline asks it
        for boxes the model itself gave (the same numbers, so the same person)."""
        if len(images_bgr) != len(bboxes_xywh):
            raise ValueError(f"{len(images_bgr)} images but {len(bboxes_xywh)} box arrays")
        found = self.predict_images(images_bgr, flip_test=flip_test, batch_size=batch_size)
        out = []
        for image, boxes, persons in zip(images_bgr, bboxes_xywh, found):
            boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
            xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
            own = persons["bboxes_xyxy"].copy()
            own[:, 0::2] = own[:, 0::2].clip(0, image.shape[1])
            own[:, 1::2] = own[:, 1::2].clip(0, image.shape[0])
            kps = np.zeros((len(boxes), self.num_joints, 2), np.float32)
            scores = np.zeros((len(boxes), self.num_joints), np.float32)
            if len(own) and len(boxes):
                iou = box_iou(xyxy, own)
                best = iou.argmax(axis=1)
                hit = iou[np.arange(len(boxes)), best] > 0
                kps[hit] = persons["keypoints"][best[hit]]
                scores[hit] = persons["keypoint_scores"][best[hit]]
            out.append((kps, scores))
        return out

    def predict(self, image_bgr: np.ndarray, bboxes_xywh: np.ndarray, flip_test: bool = True
                ) -> tuple[np.ndarray, np.ndarray]:
        """``predict_batch`` for one frame."""
        return self.predict_batch([image_bgr], [bboxes_xywh], flip_test=flip_test)[0]


def frames_by_shape(images: Sequence[np.ndarray]) -> list[tuple[tuple[int, int], list[int]]]:
    """Indices of consecutive frames of one size, in order: [((h, w), [i, ...]), ...] (a video's frames
    share one canvas, so they go through the network together)."""
    groups: list[tuple[tuple[int, int], list[int]]] = []
    for i, image in enumerate(images):
        check_image(image)
        shape = (int(image.shape[0]), int(image.shape[1]))
        if groups and groups[-1][0] == shape:
            groups[-1][1].append(i)
        else:
            groups.append((shape, [i]))
    return groups


__all__ = [
    "BottomupPredictor", "Canvas", "bottomup_canvas", "box_iou", "empty_persons", "frames_by_shape", "keypoint_extent",
    "warp_frames_to_canvas", "warp_to_canvas",
]
