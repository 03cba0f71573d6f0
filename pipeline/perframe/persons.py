"""Which detections are persons to pose: `select_persons` on the host, `select_persons_device` on the device.

One rule, the same numbers on both: person class only, boxes clipped to the frame, those under MIN_BOX_PX wide or
high or not finite dropped, best first (score = obj * cls_conf), at most `max_persons`. Fixed shapes
and no host sync, so the window's detections stay on the device until the caller reads them once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from posepipe.models.yolox import DeviceDetections, first_true

PERSON_CLASS = 0
MIN_BOX_PX = 2.0


def select_persons(dets: np.ndarray, width: int, height: int, max_persons: int) -> np.ndarray:
    """Person boxes clipped to the frame, degenerate ones dropped, the `max_persons` best kept, best first."""
    return select_person_rows(dets, width, height, max_persons)[1]


def select_person_rows(dets: np.ndarray, width: int, height: int, max_persons: int) -> tuple[np.ndarray, np.ndarray]:
    """`select_persons` and which rows of `dets` it kept: (K,) int64 indices into `dets`, and the (K, 5)
    float32 [x1, y1, x2, y2, score] rows, best first (a detector-free pose model's keypoints follow
    its boxes through the selection by these indices)."""
    rows = np.flatnonzero(dets[:, 6] == PERSON_CLASS) if len(dets) else np.zeros(0, np.int64)
    if len(rows) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 5), np.float32)
    dets = dets[rows]
    boxes = dets[:, :4].copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    scores = dets[:, 4] * dets[:, 5]
    keep = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_PX) & ((boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_PX) & np.isfinite(boxes).all(1)
    rows, boxes, scores = rows[keep], boxes[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")[:max_persons]
    return rows[order].astype(np.int64), np.concatenate([boxes[order], scores[order, None]], axis=1).astype(np.float32)


@dataclass
class DevicePersons:
    """Row b holds frame b's person boxes, best first, in its first count[b] rows (valid[b]); the
    other rows are zeros. Boxes are xyxy in frame pixels, clipped to the frame."""
    boxes: torch.Tensor   # (B, P, 4) float32
    scores: torch.Tensor  # (B, P) float32, obj * cls_conf
    valid: torch.Tensor   # (B, P) bool, a prefix of each row
    count: torch.Tensor   # (B,) int64

    def to_host(self) -> list[np.ndarray]:
        """Per frame (N, 5) float32 [x1, y1, x2, y2, score]: what `select_persons` returns (a sync)."""
        rows = torch.cat([self.boxes, self.scores[..., None]], dim=-1).cpu().numpy()
        return [np.ascontiguousarray(r[:n]) for r, n in zip(rows, self.count.cpu().tolist())]


def select_persons_device(dets: DeviceDetections, width: int, height: int, max_persons: int) -> DevicePersons:
    """`select_persons` for every frame of `dets` at once, on their device: P = min(max_persons, K) rows.

    `dets` rows are already best first (ties in anchor order), which is the order `select_persons`'
    stable sort gives, so the kept rows are only moved up (a stable compaction), not re-sorted.
    """
    boxes = dets.boxes
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    boxes = torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)
    scores = dets.obj * dets.cls_conf
    keep = (dets.valid & (dets.labels == PERSON_CLASS)
            & (boxes[..., 2] - boxes[..., 0] >= MIN_BOX_PX) & (boxes[..., 3] - boxes[..., 1] >= MIN_BOX_PX)
            & torch.isfinite(boxes).all(dim=-1))
    p = min(max(int(max_persons), 0), boxes.shape[1])
    pick, count = first_true(keep, p)
    valid = torch.arange(p, device=boxes.device)[None, :] < count[:, None]
    zero = torch.zeros((), dtype=boxes.dtype, device=boxes.device)
    return DevicePersons(
        boxes=torch.where(valid[..., None], boxes.gather(1, pick[..., None].expand(-1, -1, 4)), zero),
        scores=torch.where(valid, scores.gather(1, pick), zero),
        valid=valid,
        count=count,
    )


__all__ = ["MIN_BOX_PX", "PERSON_CLASS", "DevicePersons", "select_person_rows", "select_persons", "select_persons_device"]
