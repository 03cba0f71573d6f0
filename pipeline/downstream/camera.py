"""Where HMR puts a person in the camera frame: its crop camera, seen from the full frame.

HMR (SPIN) predicts a weak-perspective camera ``(s, tx, ty)`` of its 224x224 crop: a body point X
(metres, SMPL's output frame) projects to ``s * (X[:2] + (tx, ty))`` in crop coordinates scaled to
[-1, 1]. The crop is the square of side ``b = max(w, h)`` around the box centre ``(cx, cy)``
(`models.hmr.bbox_xyxy_to_center_scale`). Seen by a pinhole camera of focal length ``f`` pixels
with its principal point at the image centre ``(W/2, H/2)``, the same projection needs the body
translated by (CLIFF's ``cam_crop2full``, Li et al., ECCV 2022)::

    T = (tx + 2 (cx - W/2) / (b s),  ty + 2 (cy - H/2) / (b s),  2 f / (b s))

in metres, camera axes x right, y down, z forward (OpenCV's). The video does not say its focal
length; posepipe uses ``f = sqrt(W^2 + H^2)`` (the diagonal: a 53 degree diagonal field of view,
what CLIFF and 4D-Humans assume for unknown cameras). Depth scales with ``f``: pass another
focal length if the camera is known. HMR's scale is positive for a person it sees; a scale below
`MIN_SCALE` (only random weights give one) is taken as `MIN_SCALE`, so T is always finite.
"""
from __future__ import annotations

import numpy as np

MIN_SCALE = 1e-3


def default_focal(width: float, height: float) -> float:
    """The focal length posepipe assumes, in pixels: the image diagonal."""
    return float(np.hypot(width, height))


def full_frame_translation(bbox_xyxy: np.ndarray, smpl_camera: np.ndarray, width: float, height: float,
                           focal: float | None = None) -> np.ndarray:
    """(N, 4) boxes and (N, 3) HMR cameras (s, tx, ty) -> (N, 3) translations T in metres (see module)."""
    boxes = np.asarray(bbox_xyxy, np.float64).reshape(-1, 4)
    camera = np.asarray(smpl_camera, np.float64).reshape(-1, 3)
    focal = default_focal(width, height) if focal is None else float(focal)
    if not np.isfinite(focal) or focal <= 0:
        raise ValueError(f"focal length must be a positive number of pixels, got {focal!r}")
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    scale = np.where(np.isfinite(camera[:, 0]), np.maximum(camera[:, 0], MIN_SCALE), MIN_SCALE)
    bs = side * scale
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return np.stack([camera[:, 1] + 2 * (cx - width / 2) / bs,
                     camera[:, 2] + 2 * (cy - height / 2) / bs,
                     2 * focal / bs], axis=1)
