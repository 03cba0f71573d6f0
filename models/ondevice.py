"""Per-frame work on the model's device: batched crops, decoding and mapping back, with no host sync.

The reference paths (``predict_batch`` of every 2D family and of HMR) crop on the host, one OpenCV or
Pillow call per box, and hand numpy back. The ``predict_frames`` methods built on this module take
uint8 frames that are already on the device, ``frame_of_box`` and the boxes as device tensors, and
keep everything there: one batched sampling op crops all N boxes, the network sees the crops (and,
with the flip test, their mirrors) in one batch, and decoding and mapping back to the image run as
tensor ops. Nothing reads a device value on the host (no ``.item()``/``.cpu()``/``.tolist()``, no
``nonzero``/boolean masks, no tensor built from host data after construction), so a CUDA stream never
waits for the host; ``tests/models/test_ondevice.py`` proves it on the ``meta`` device.

Each crop is the reference path's own crop, not an approximation with ``grid_sample``: the reference
numbers are the golden outputs, and a heatmap argmax moves by a whole heatmap pixel (0.3-3 px in the
image) when an input pixel moves by one grey level near a tie. (A float32 ``grid_sample``, rounded,
differs from OpenCV 5's crop on ~1e-4 of the bytes by one level, but from the fixed-point crop of the
mmpose families by up to 5 levels on ~6% of them.) So:

- mmpose families and HRNet: the affine kernels of :mod:`posepipe.models.warp`, which both paths use
  (OpenCV 4.x's fixed point for mmpose, OpenCV 5.0's float32 kernel for HRNet; never the installed
  OpenCV), with the matrices from ``cv2.getAffineTransform``'s LU solve replayed in float64;
- HMR: SPIN's crop (:func:`spin_crops`): the integer corners as numpy's ``inv`` and ``dot`` compute
  them, the min-max ``bytescale`` as a per-crop lookup table, and Pillow's fixed-point two-pass
  antialiased bilinear resize (22-bit coefficients, uint8 between the passes, Pillow 13's
  vertical-first order where it applies: :func:`pillow_vertical_first`), in integer arithmetic.

These are many small elementwise kernels over (N, h, w, 3) tensors (float64 for OpenCV 5's fma, int32
for the rest): nothing on a GPU. On a CPU, a worker keeps ``predict_batch`` (per-frame crops, Pillow's
SIMD resize for HMR). Shapes are static given (B, H, W) and N: callers pad N up to a
multiple of :data:`BUCKET` with a dummy box (:func:`pad_boxes`) and slice the outputs back, so a new
N only costs a new shape when it crosses a bucket.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from posepipe.models.warp import (affine_from_points, fill_like, invert_affine, true_divide, warp_affine_fixed_point,
                                 warp_affine_float)

BUCKET = 8  # crops per batch are padded to a multiple of this (static shapes, cuDNN plans reused)


class PoseFrames(NamedTuple):
    """What a 2D model's ``predict_frames`` returns, all on the model's device.

    keypoints: (N, J, 2) float32 image pixels; scores: (N, J) float32; overflow: () bool, True when an
    fp16 pass of this call gave inf/NaN for a real (not padding) crop (see ``precision.forward_half_flagged``).
    """

    keypoints: torch.Tensor
    scores: torch.Tensor
    overflow: torch.Tensor


# --------------------------------------------------------------------------------------------
# Inputs and padding
# --------------------------------------------------------------------------------------------

def check_inputs(frames: torch.Tensor, frame_of_box: torch.Tensor, boxes: torch.Tensor,
                 device: torch.device, what: str) -> None:
    """Shapes, dtypes and devices only (metadata: no device value is read)."""
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        desc = f"{frames.dtype} tensor of shape {tuple(frames.shape)}" if isinstance(frames, torch.Tensor) \
            else type(frames).__name__
        raise ValueError(f"{what}: frames must be a (B, H, W, 3) uint8 tensor, got {desc}")
    if not isinstance(frame_of_box, torch.Tensor) or frame_of_box.ndim != 1 or frame_of_box.dtype not in (
            torch.int64, torch.int32):
        raise ValueError(f"{what}: frame_of_box must be an (N,) int64 tensor")
    if not isinstance(boxes, torch.Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4 or not boxes.dtype.is_floating_point:
        raise ValueError(f"{what}: boxes must be an (N, 4) float tensor")
    if boxes.shape[0] != frame_of_box.shape[0]:
        raise ValueError(f"{what}: {boxes.shape[0]} boxes but {frame_of_box.shape[0]} frame_of_box entries")
    for name, t in (("frames", frames), ("frame_of_box", frame_of_box), ("boxes", boxes)):
        if t.device != device and not (t.device.type == device.type and device.index is None):
            raise ValueError(f"{what}: {name} is on {t.device}, the model on {device}; move it there first")


def padded_count(n: int, bucket: int = BUCKET) -> int:
    """n rounded up to a multiple of `bucket` (0 stays 0)."""
    return -(-n // bucket) * bucket if bucket > 1 else n


def pad_boxes(frame_of_box: torch.Tensor, boxes: torch.Tensor, n_total: int,
              dummy: tuple[float, float, float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Append `n_total - N` copies of the `dummy` box on frame 0 (device fills, no host data)."""
    extra = n_total - boxes.shape[0]
    if extra <= 0:
        return frame_of_box.long(), boxes
    pad = boxes.new_empty((extra, 4))
    for i, v in enumerate(dummy):
        pad[:, i] = v
    return torch.cat([frame_of_box.long(), frame_of_box.new_zeros(extra, dtype=torch.long)]), torch.cat([boxes, pad])


# --------------------------------------------------------------------------------------------
# mmpose 1.x geometry (models/topdown.py), on tensors
# --------------------------------------------------------------------------------------------

def mmpose_center_scale(boxes_xywh: torch.Tensor, input_size_wh: tuple[int, int], padding: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``topdown.box_to_center_scale``: float32 throughout (x2 = x + w, centre, x1.25, 3:4 fix)."""
    b = boxes_xywh.to(torch.float32)
    x1y1 = b[:, :2]
    x2y2 = b[:, 2:] + b[:, :2]
    center = (x2y2 + x1y1) * 0.5
    scale = (x2y2 - x1y1) * padding
    aspect = input_size_wh[0] / input_size_wh[1]
    w, h = scale[:, 0:1], scale[:, 1:2]
    scale = torch.where(w > h * aspect, torch.cat([w, true_divide(w, aspect)], 1), torch.cat([h * aspect, h], 1))
    return center, scale


def _with_third_point(p0: torch.Tensor, p1: torch.Tensor) -> torch.Tensor:
    """(N, 3, 2) float32 points [p0, p1, p1 + rot90(p0 - p1)] (``_third_point``, float32 arithmetic)."""
    d = p0 - p1
    p2 = p1 + torch.stack([-d[:, 1], d[:, 0]], dim=1)
    return torch.stack([p0, p1, p2], dim=1)


def _constant_points(like: torch.Tensor, points: list[tuple[float, float]]) -> torch.Tensor:
    out = like.new_empty((like.shape[0], len(points), 2), dtype=torch.float32)
    for i, (x, y) in enumerate(points):
        out[:, i, 0], out[:, i, 1] = x, y
    return out


def mmpose_warp_matrices(center: torch.Tensor, scale: torch.Tensor, output_size_wh: tuple[int, int],
                         *, inv: bool = False) -> torch.Tensor:
    """``topdown.get_warp_matrix`` for N boxes: (N, 2, 3) float64, image -> crop (crop -> image with `inv`)."""
    dst_w, dst_h = output_size_wh
    src1 = torch.stack([center[:, 0] + scale[:, 0] * -0.5, center[:, 1]], dim=1)  # float32 sum, rounded once
    src = _with_third_point(center, src1)
    dst = _with_third_point(*_constant_points(center, [(dst_w * 0.5, dst_h * 0.5), (0.0, dst_h * 0.5)]).unbind(1))
    return affine_from_points(dst, src) if inv else affine_from_points(src, dst)


def crop_to_image(coords: torch.Tensor, center: torch.Tensor, scale: torch.Tensor,
                  input_size_wh: tuple[int, int]) -> torch.Tensor:
    """``topdown.crop_to_image``: ``kp / input_size * scale + center - 0.5 * scale`` in float64 -> float32."""
    w, h = input_size_wh
    kp = coords.to(torch.float64)
    kp = torch.stack([true_divide(kp[..., 0], w), true_divide(kp[..., 1], h)], dim=-1)
    s = scale.to(torch.float64).unsqueeze(1)
    out = kp * s + center.to(torch.float64).unsqueeze(1) - (scale * 0.5).to(torch.float64).unsqueeze(1)
    return out.to(torch.float32)


# --------------------------------------------------------------------------------------------
# HRNet's official geometry (models/hrnet.py), on tensors
# --------------------------------------------------------------------------------------------

def hrnet_center_scale(boxes_xywh: torch.Tensor, aspect_ratio: float, padding: float, pixel_std: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``hrnet.box_to_center_scale``: float64 arithmetic, float32 results (then x padding in float32)."""
    b = boxes_xywh.to(torch.float64)
    x, y, w, h = b.unbind(1)
    center = torch.stack([x + w * 0.5, y + h * 0.5], dim=1).to(torch.float32)
    wider = w > aspect_ratio * h
    taller = w < aspect_ratio * h
    h = torch.where(wider, true_divide(w * 1.0, aspect_ratio), h)
    w = torch.where(taller, h * aspect_ratio, w)
    scale = torch.stack([true_divide(w * 1.0, pixel_std), true_divide(h * 1.0, pixel_std)], dim=1).to(torch.float32)
    return center, scale * padding


def hrnet_affine(center: torch.Tensor, scale: torch.Tensor, output_size_wh: tuple[int, int], pixel_std: float,
                 *, inv: bool = False) -> torch.Tensor:
    """``hrnet.get_affine_transform`` for N boxes: (N, 2, 3) float64, image -> output (output -> image with `inv`)."""
    dst_w, dst_h = output_size_wh
    src_w = scale[:, 0] * pixel_std  # float32
    src1 = torch.stack([center[:, 0], (center[:, 1].double() + (src_w * -0.5).double()).float()], dim=1)
    src = _with_third_point(center, src1)
    dst = _with_third_point(*_constant_points(
        center, [(dst_w * 0.5, dst_h * 0.5), (dst_w * 0.5, dst_h * 0.5 + dst_w * -0.5)]).unbind(1))
    return affine_from_points(dst, src) if inv else affine_from_points(src, dst)


def apply_affine(points: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """(N, J, 2) points through (N, 2, 3) matrices in float64: ``x * m0 + y * m1 + m2`` -> float32."""
    p = points.to(torch.float64)
    m = matrices.unsqueeze(1)
    x = p[..., 0] * m[..., 0, 0] + p[..., 1] * m[..., 0, 1] + m[..., 0, 2]
    y = p[..., 0] * m[..., 1, 0] + p[..., 1] * m[..., 1, 1] + m[..., 1, 2]
    return torch.stack([x, y], dim=-1).to(torch.float32)


# --------------------------------------------------------------------------------------------
# SPIN's crop (models/hmr.py: crop_corners, bytescale, Pillow's resize), on tensors
# --------------------------------------------------------------------------------------------

_PILLOW_VERTICAL_FIRST: bool | None = None
_PRECISION_BITS = 22  # Pillow's 8-bit resample: 32 - 8 - 2


def pillow_vertical_first() -> bool:
    """Whether the installed Pillow resizes a shrinking, tall image vertical pass first (Pillow 13's
    ``ImagingResampleInner``: when ``in_h - out_h > 0`` and ``> 2 * (in_w - out_w)``); older Pillows
    always go horizontal first. Probed once, on a 30x500 noise image, on the host (at construction)."""
    global _PILLOW_VERTICAL_FIRST
    if _PILLOW_VERTICAL_FIRST is None:
        from PIL import Image

        img = np.random.default_rng(0).integers(0, 256, (500, 30, 3), dtype=np.uint8)
        direct = np.asarray(Image.fromarray(img).resize((224, 224), Image.Resampling.BILINEAR))
        transposed = np.asarray(Image.fromarray(np.ascontiguousarray(img.transpose(1, 0, 2))).resize(
            (224, 224), Image.Resampling.BILINEAR)).transpose(1, 0, 2)
        _PILLOW_VERTICAL_FIRST = bool(np.array_equal(direct, transposed))
    return _PILLOW_VERTICAL_FIRST


def spin_corners(boxes_xyxy: torch.Tensor, res: int, unit: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``hmr.bbox_xyxy_to_center_scale`` + ``hmr.crop_corners``: (N, 2) int64 ``ul`` and ``br`` (x, y).

    float32 centre/scale and transform entries, then numpy's ``inv`` of the 3x3 (OpenBLAS: 1/a, then
    ``-(t * (1/a))``) and ``dot`` (``inv00 * res + inv02``, two roundings), truncated toward zero.
    """
    b = boxes_xyxy.to(torch.float32)
    wh = b[:, 2:] - b[:, :2]
    center = b[:, :2] + 0.5 * wh
    scale = true_divide(wh.amax(dim=1), unit)
    h = unit * scale
    a = (fill_like(h, float(res)) / h).double()
    t = (float(res) * (-center / h.unsqueeze(1) + 0.5)).double()
    ia = (fill_like(a, 1.0) / a).unsqueeze(1)
    i02 = -(t * ia)
    ul = torch.trunc(i02).long()
    br = torch.trunc(ia * float(res) + i02).long()
    return ul, br


def _pillow_coefficients(in_size: torch.Tensor, out_size: int, taps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's ``precompute_coeffs`` (bilinear, support 1) + ``normalize_coeffs_8bpc`` for N input sizes:
    first source index (N, out) int64 and integer weights (N, out, taps) int32 (0 past each window)."""
    scale = true_divide(in_size.to(torch.float64), out_size)
    filterscale = scale.clamp(min=1.0)
    support = filterscale * 1.0
    inv_fs = (fill_like(filterscale, 1.0) / filterscale).unsqueeze(1)
    o = torch.arange(out_size, dtype=torch.float64, device=in_size.device)
    center = 0.0 + (o + 0.5) * scale.unsqueeze(1)
    xmin = torch.trunc(center - support.unsqueeze(1) + 0.5).long().clamp(min=0)
    xmax = torch.minimum(torch.trunc(center + support.unsqueeze(1) + 0.5).long(), in_size.unsqueeze(1)) - xmin
    ws = []
    ww = torch.zeros_like(center)
    for t in range(taps):
        u = (((t + xmin).to(torch.float64) - center) + 0.5) * inv_fs
        u = u.abs()
        w = torch.where((u < 1.0) & (t < xmax), 1.0 - u, torch.zeros_like(u))
        ww = ww + w  # in tap order, as the C loop
        ws.append(w)
    k = torch.stack(ws, dim=-1)
    k = torch.where((ww != 0).unsqueeze(-1), k / torch.where(ww != 0, ww, fill_like(ww, 1.0)).unsqueeze(-1), k)
    return xmin, torch.trunc(0.5 + k * float(1 << _PRECISION_BITS)).to(torch.int32)


def _clip8(acc: torch.Tensor) -> torch.Tensor:
    return ((acc + (1 << (_PRECISION_BITS - 1))) >> _PRECISION_BITS).clamp(0, 255)


def spin_crops(frames: torch.Tensor, frame_of_box: torch.Tensor, boxes_xyxy: torch.Tensor, *, res: int = 224,
               unit: float = 200.0, max_side: int | None = None, vertical_first_rule: bool | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``hmr.crop`` for N boxes of B frames: (N, res, res, 3) uint8 in the frames' channel order, and a
    (N,) bool that is True where a canvas side exceeded `max_side` (that crop is then wrong).

    Each crop's canvas (the frame inside [ul, br), black outside) is gathered into a `max_side` square
    (its own size in the top-left corner, black past it), min-max stretched through a per-crop lookup
    table (``bytescale``) and shrunk with Pillow's fixed-point antialiased bilinear filter: the first
    pass (along x, or along y for Pillow 13's tall crops) with ``2 * ceil(max_side / res) + 1`` integer
    taps per output for each canvas line, the second pass on the first's uint8 output. `max_side` is
    the static bound on a canvas side, so it sets the cost (quadratic in it): default the frame's longer
    side + 2, enough for any box inside the frame; a caller that knows its boxes passes the bound they
    need (``HMRPredictor.predict_frames`` buckets boxes by their canvas, :func:`canvas_bucket`).
    """
    if vertical_first_rule is None:
        vertical_first_rule = pillow_vertical_first()
    n = boxes_xyxy.shape[0]
    _, height, width, _ = frames.shape
    dev = frames.device
    side = int(max_side) if max_side else max(height, width) + 2
    taps = 2 * math.ceil(side / res) + 1
    ul, br = spin_corners(boxes_xyxy, res, unit)
    size = br - ul  # (N, 2) canvas (w, h)
    fob = frame_of_box.long()

    # The canvases: frame pixels at ul + (i, j) for i, j < side; black outside the frame and past the
    # canvas's own size (one index past the frames' end reads a black pixel).
    line = torch.arange(side, device=dev)
    xs = ul[:, 0:1] + line                                   # (N, side) frame x of canvas column j
    ys = ul[:, 1:2] + line                                   # (N, side) frame y of canvas row i
    col_ok = (line < size[:, 0:1]) & (xs >= 0) & (xs < width)
    row_ok = (line < size[:, 1:2]) & (ys >= 0) & (ys < height)
    inside = row_ok.unsqueeze(2) & col_ok.unsqueeze(1)      # (N, side, side)
    black = frames.shape[0] * height * width
    index = ((fob * (height * width)).view(n, 1, 1) + ys.clamp(0, height - 1).unsqueeze(2) * width
             + xs.clamp(0, width - 1).unsqueeze(1))
    index = torch.where(inside, index, black).to(torch.int32 if black < 2**31 - 1 else torch.int64)
    flat = torch.cat([frames.reshape(-1, 3), frames.new_zeros((1, 3))])
    canvas = flat.index_select(0, index.reshape(-1)).view(n, side, side, 3)

    # bytescale: min and max over the canvas (0 is its minimum when the box reaches outside the frame).
    lo = torch.where(inside, canvas.amin(dim=-1), 255).flatten(1).amin(dim=1)
    hi = torch.where(inside, canvas.amax(dim=-1), 0).flatten(1).amax(dim=1)
    outside = (ul[:, 0] < 0) | (ul[:, 1] < 0) | (br[:, 0] > width) | (br[:, 1] > height)
    lo = torch.where(outside, torch.zeros_like(lo), lo).to(torch.float64)
    span = hi.to(torch.float64) - lo
    factor = (fill_like(span, 255.0) / torch.where(span != 0, span, fill_like(span, 1.0))).unsqueeze(1)
    levels = torch.arange(256, dtype=torch.float64, device=dev)
    lut = (((levels - lo.unsqueeze(1)) * factor).clamp(0, 255) + 0.5).to(torch.uint8)  # (N, 256); LUT(0) = 0
    lut_base = (torch.arange(n, device=dev, dtype=torch.int32) * 256).view(n, 1, 1, 1)
    canvas = lut.reshape(-1).index_select(0, (lut_base + canvas.to(torch.int32)).reshape(-1)).view(n, side, side, 3)

    # Pass order (Pillow 13): vertical first when the height shrinks more than twice the width does.
    # The first pass resamples axis P (x, or y for vertical-first crops) for every canvas line of Q.
    if vertical_first_rule:
        vfirst = (size[:, 1] - res > 0) & (size[:, 1] - res > (size[:, 0] - res) * 2)
    else:
        vfirst = torch.zeros(n, dtype=torch.bool, device=dev)
    canvas = torch.where(vfirst.view(n, 1, 1, 1), canvas.transpose(1, 2), canvas)  # (N, Q lines, P, 3)
    p_axis = vfirst.long().unsqueeze(1)  # index into (x, y)
    p_start, p_weights = _pillow_coefficients(size.gather(1, p_axis).squeeze(1), res, taps)
    q_start, q_weights = _pillow_coefficients(size.gather(1, 1 - p_axis).squeeze(1), res, taps)

    first = torch.zeros((n, side, res, 3), dtype=torch.int32, device=dev)
    for t in range(taps):  # taps past a window have weight 0; past the canvas they read black
        p = (p_start + t).clamp(max=side - 1)               # (N, res)
        px = canvas.gather(2, p.view(n, 1, res, 1).expand(n, side, res, 3))
        first += px.to(torch.int32) * p_weights[:, :, t].view(n, 1, res, 1)
    first = _clip8(first)                                     # (N, side lines along Q, res along P, 3)

    second = torch.zeros((n, res, res, 3), dtype=torch.int32, device=dev)
    first_rows = first.reshape(n * side, res, 3)
    row_base = (torch.arange(n, device=dev) * side).view(n, 1)
    for t in range(taps):
        src_row = (row_base + (q_start + t).clamp(max=side - 1)).reshape(-1)
        second += first_rows.index_select(0, src_row).view(n, res, res, 3) * q_weights[:, :, t].view(n, res, 1, 1)
    out = _clip8(second).to(torch.uint8)                      # (N, res along Q, res along P, 3)
    cut = (size > side).any(dim=1)
    # contiguous: `where` may take the transposed operand's strides, and the network's kernels follow layout
    return torch.where(vfirst.view(n, 1, 1, 1), out.transpose(1, 2), out).contiguous(), cut


# Canvas sides HMR's device crops are bucketed by (a box's canvas is about its longer side): each
# bucket is one static shape, and a crop costs about its bucket squared instead of the frame's side.
CANVAS_BUCKETS = (64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)


def canvas_bucket(canvas_side: int, frame_side: int) -> int:
    """The static `max_side` for a canvas of `canvas_side` px (2 px of margin for the device's corner
    arithmetic): the smallest bucket that holds it, never more than the frame's longer side + 2."""
    need = int(canvas_side) + 2
    for b in CANVAS_BUCKETS:
        if b >= need:
            return min(b, max(need, int(frame_side) + 2))
    return need


__all__ = [
    "BUCKET", "CANVAS_BUCKETS", "PoseFrames", "affine_from_points", "canvas_bucket", "apply_affine", "check_inputs", "crop_to_image",
    "hrnet_affine", "hrnet_center_scale", "invert_affine", "mmpose_center_scale", "mmpose_warp_matrices",
    "pad_boxes", "padded_count", "pillow_vertical_first", "spin_corners",
    "spin_crops",
    "warp_affine_fixed_point", "warp_affine_float",
]
