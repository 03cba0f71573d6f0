"""Exact affine crops, computed here, never asked of the installed OpenCV.

Every top-down model crops each person with an affine warp, and the published numbers (and the golden
vectors in ``shared/golden``) were made with one particular ``cv2.warpAffine(INTER_LINEAR)``. OpenCV
has changed that kernel twice: 4.x works in fixed point (1/32-px positions, 15-bit weights), 5.0 in
float32 with fused multiply-adds, and 5.1 in yet another way. A heatmap argmax moves by a whole
heatmap pixel (0.3-3 px in the image) when an input pixel moves by one grey level near a tie, so a
new OpenCV would silently move keypoints. Hence the crops are this module's own arithmetic, on the
host and on the device alike, and OpenCV is not called for them at all:

- :func:`warp_affine_fixed_point`: OpenCV 4.x's kernel, the convention of every mmpose family
  (mmpose's reference outputs were made with OpenCV 4.10; checked against a pinned 4.10 in
  ``tests/models/test_warp.py``);
- :func:`warp_affine_float`: OpenCV 5.0's float32 kernel, HRNet's (its golden case was made by the
  official code under OpenCV 5.0: the crop is reproduced byte for byte, while the fixed-point crop
  moves its heatmaps by 4e-4 of their range, 40x the tolerance);
- :func:`affine_from_points`: ``cv2.getAffineTransform``'s LU solve, operation for operation in
  float64: the fixed-point warp rounds the matrix to 1/1024 px, where exact ties are common, so a
  closed-form matrix (equal to ~1e-13) is not enough.

The kernels are batched torch functions that read nothing back to the host (the device path needs
that); :func:`warp_crops` and :func:`affine_transform` are the host entry points on numpy arrays.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch

Kernel = Literal["fixed_point", "float"]
"""Which OpenCV ``warpAffine`` a crop reproduces: ``"fixed_point"`` (4.x) or ``"float"`` (5.0)."""


def fill_like(like: torch.Tensor, value: float) -> torch.Tensor:
    """`value` as a device tensor shaped like `like` (a fill, no host data)."""
    return torch.full_like(like, value)


def true_divide(t: torch.Tensor, divisor: float) -> torch.Tensor:
    """``t / divisor`` correctly rounded on every device. torch's ``t / python_float`` is ``t * (1 / d)``
    on CUDA (and ``d / t`` is ``reciprocal(t) * d`` everywhere), which differs in the last bit for
    divisors that are not powers of two; dividing by a 0-dim device tensor is a true division."""
    return t / t.new_full((), divisor)



# --------------------------------------------------------------------------------------------
# cv2.getAffineTransform and warpAffine's matrix inversion, in float64
# --------------------------------------------------------------------------------------------

def affine_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """``cv2.getAffineTransform(src, dst)`` for N triangles at once: (N, 3, 2) float32 -> (N, 2, 3) float64.

    OpenCV builds the 6x6 system with rows (x_i, y_i, 1, 0, 0, 0 | u_i) and (0, 0, 0, x_i, y_i, 1 | v_i)
    and solves it with ``hal::LU64f`` (``LUImpl``: partial pivoting on the first largest |value|,
    ``alpha = A[j, i] * (-1 / pivot)``, ``A[j, k] += alpha * A[i, k]`` without fused multiply-adds,
    back substitution ``(b[i] - sum A[i, k] x[k]) / A[i, i]`` in column order). Every operation is
    repeated here in the same order, so the matrix is the same to the bit (checked against the
    installed OpenCV on thousands of boxes): the fixed-point warp rounds it to 1/1024 px, where exact
    ties are common, so a closed-form matrix (equal to ~1e-13) is not enough.
    """
    n = src.shape[0]
    s = src.to(torch.float64)
    d = dst.to(torch.float64)
    a = s.new_zeros((n, 6, 6))
    b = s.new_zeros((n, 6))
    for i in range(3):
        a[:, 2 * i, 0], a[:, 2 * i, 1], a[:, 2 * i, 2] = s[:, i, 0], s[:, i, 1], 1.0
        a[:, 2 * i + 1, 3], a[:, 2 * i + 1, 4], a[:, 2 * i + 1, 5] = s[:, i, 0], s[:, i, 1], 1.0
        b[:, 2 * i], b[:, 2 * i + 1] = d[:, i, 0], d[:, i, 1]
    rows = torch.arange(6, device=src.device).expand(n, 6)
    for i in range(6):
        k = a[:, i:, i].abs().argmax(dim=1) + i  # the first largest, as the strict '>' scan
        perm = rows.clone()
        perm[:, i] = k
        perm.scatter_(1, k.unsqueeze(1), torch.full_like(k, i).unsqueeze(1))
        a = a.gather(1, perm.unsqueeze(-1).expand(n, 6, 6))
        b = b.gather(1, perm)
        inv = fill_like(a[:, i, i], -1.0) / a[:, i, i]  # `-1/A[i,i]`
        if i < 5:
            alpha = a[:, i + 1:, i] * inv.unsqueeze(1)
            a[:, i + 1:, i + 1:] = a[:, i + 1:, i + 1:] + alpha.unsqueeze(-1) * a[:, i:i + 1, i + 1:]
            b[:, i + 1:] = b[:, i + 1:] + alpha * b[:, i:i + 1]
    x = [None] * 6
    for i in range(5, -1, -1):
        acc = b[:, i]
        for k in range(i + 1, 6):
            acc = acc - a[:, i, k] * x[k]
        x[i] = acc / a[:, i, i]
    return torch.stack(x, dim=1).view(n, 2, 3)


def invert_affine(m: torch.Tensor) -> torch.Tensor:
    """``warpAffine``'s inversion of a (N, 2, 3) float64 image->crop matrix (crop->image), as OpenCV does it."""
    m0, m1, m2 = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    m3, m4, m5 = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    det = m0 * m4 - m1 * m3
    det = torch.where(det != 0, fill_like(det, 1.0) / torch.where(det != 0, det, fill_like(det, 1.0)), torch.zeros_like(det))
    a11, a22 = m4 * det, m0 * det
    a12, a21 = m1 * -det, m3 * -det
    b1 = -a11 * m2 - a12 * m5
    b2 = -a21 * m2 - a22 * m5
    return torch.stack([a11, a12, b1, a21, a22, b2], dim=1).view(-1, 2, 3)


# --------------------------------------------------------------------------------------------
# Batched samplers
# --------------------------------------------------------------------------------------------

def _taps(frames: torch.Tensor, frame_of_box: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor
          ) -> list[torch.Tensor]:
    """The four bilinear neighbours (x, y), (x+1, y), (x, y+1), (x+1, y+1) of each sample, (N, h, w, 3)
    uint8, 0 outside the frame (OpenCV's constant border)."""
    _, height, width, _ = frames.shape
    flat = frames.reshape(-1, 3)
    base = (frame_of_box * (height * width)).view(-1, 1, 1)
    out = []
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        px, py = ix + dx, iy + dy
        inside = (px >= 0) & (px < width) & (py >= 0) & (py < height)
        index = base + py.clamp(0, height - 1) * width + px.clamp(0, width - 1)
        value = flat.index_select(0, index.reshape(-1)).view(*index.shape, 3)
        out.append(value * inside.unsqueeze(-1))
    return out


def warp_affine_fixed_point(frames: torch.Tensor, frame_of_box: torch.Tensor, matrices: torch.Tensor,
                            output_size_wh: tuple[int, int]) -> torch.Tensor:
    """OpenCV 4.x's ``warpAffine(INTER_LINEAR)`` (constant-0 border) of frame ``frame_of_box[k]`` by
    image->crop ``matrices[k]`` (N, 2, 3) float64: (N, h, w, 3) uint8, the bytes of
    OpenCV 4.x's (positions in 1/32 px from per-row and per-column 1/1024-px
    roundings, 15-bit weights)."""
    width, height = output_size_wh
    m = invert_affine(matrices)
    dev = matrices.device
    xs = torch.arange(width, dtype=torch.float64, device=dev)
    ys = torch.arange(height, dtype=torch.float64, device=dev)
    adelta = torch.round(m[:, 0, 0:1] * xs * 1024).long()
    bdelta = torch.round(m[:, 1, 0:1] * xs * 1024).long()
    x0 = torch.round((m[:, 0, 1:2] * ys + m[:, 0, 2:3]) * 1024).long() + 16
    y0 = torch.round((m[:, 1, 1:2] * ys + m[:, 1, 2:3]) * 1024).long() + 16
    x = (x0.unsqueeze(2) + adelta.unsqueeze(1)) >> 5
    y = (y0.unsqueeze(2) + bdelta.unsqueeze(1)) >> 5
    ax, ay = (x & 31).to(torch.int32), (y & 31).to(torch.int32)
    p00, p01, p10, p11 = _taps(frames, frame_of_box, x >> 5, y >> 5)
    total = torch.zeros((*x.shape, 3), dtype=torch.int32, device=dev)
    for value, weight in ((p00, (32 - ax) * (32 - ay)), (p01, ax * (32 - ay)), (p10, (32 - ax) * ay), (p11, ax * ay)):
        total += value.to(torch.int32) * (weight * 32).unsqueeze(-1)
    return ((total + (1 << 14)) >> 15).clamp(0, 255).to(torch.uint8)


def _fma32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """float32 fused multiply-add: the product is exact in float64, the sum is rounded to float64 and
    then to float32. That is the fused result unless the float64 sum lands exactly on a float32
    midpoint (only when |c| is ~2^-29 of |a * b| or smaller): never seen in the byte-exact checks."""
    return (a.to(torch.float64) * b.to(torch.float64) + c.to(torch.float64)).to(torch.float32)


def warp_affine_float(frames: torch.Tensor, frame_of_box: torch.Tensor, matrices: torch.Tensor,
                      output_size_wh: tuple[int, int]) -> torch.Tensor:
    """OpenCV 5.x's ``warpAffine(INTER_LINEAR)`` (constant-0 border; ``warp_kernels.simd.hpp``) of frame
    ``frame_of_box[k]`` by image->crop ``matrices[k]``: (N, h, w, 3) uint8, byte for byte.

    The inverted matrix is cast to float32; per row ``M_x = float(y * M1) + M2`` (two float32
    roundings), per pixel ``sx = fma(M0, x, M_x)``; ``floor`` and the fraction; then
    ``v0 = fma(a, p01 - p00, p00)``, ``v1 = fma(a, p11 - p10, p10)``, ``v = fma(b, v1 - v0, v0)`` in
    float32 and round half to even.
    """
    width, height = output_size_wh
    m = invert_affine(matrices).to(torch.float32)
    dev = matrices.device
    xs = torch.arange(width, dtype=torch.float32, device=dev).view(1, 1, -1)
    ys = torch.arange(height, dtype=torch.float32, device=dev).view(1, -1, 1)

    def row(k: int) -> torch.Tensor:
        return m[:, k // 3, k % 3].view(-1, 1, 1)

    mx = ys * row(1) + row(2)  # float32: the product is rounded before the sum (no contraction)
    my = ys * row(4) + row(5)
    sx = _fma32(row(0), xs, mx)
    sy = _fma32(row(3), xs, my)
    fx, fy = torch.floor(sx), torch.floor(sy)
    ax, ay = (sx - fx).unsqueeze(-1), (sy - fy).unsqueeze(-1)
    p00, p01, p10, p11 = (p.to(torch.float32) for p in _taps(frames, frame_of_box, fx.long(), fy.long()))
    v0 = _fma32(ax, p01 - p00, p00)
    v1 = _fma32(ax, p11 - p10, p10)
    v = _fma32(ay, v1 - v0, v0)
    return torch.round(v).clamp(0, 255).to(torch.uint8)


def warp(kernel: Kernel):
    """The batched kernel for `kernel`."""
    if kernel == "fixed_point":
        return warp_affine_fixed_point
    if kernel == "float":
        return warp_affine_float
    raise ValueError(f"unknown warp kernel {kernel!r}; expected 'fixed_point' or 'float'")


# --------------------------------------------------------------------------------------------
# Host entry points (numpy in, numpy out)
# --------------------------------------------------------------------------------------------

def affine_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``cv2.getAffineTransform(src, dst)``: three (x, y) float32 points each -> (2, 3) float64."""
    s = torch.from_numpy(np.asarray(src, dtype=np.float32).reshape(1, 3, 2))
    d = torch.from_numpy(np.asarray(dst, dtype=np.float32).reshape(1, 3, 2))
    with torch.inference_mode():
        return affine_from_points(s, d)[0].numpy()


def warp_crops(image_bgr: np.ndarray, matrices: Sequence[np.ndarray], output_size_wh: tuple[int, int],
               kernel: Kernel) -> np.ndarray:
    """The affine crops of one (H, W, 3) uint8 frame by each image->crop (2, 3) matrix, black outside:
    (K, h, w, 3) uint8 in the frame's channel order, as `kernel`'s OpenCV makes them."""
    image = np.asarray(image_bgr)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.dtype} array of shape {image.shape}")
    width, height = output_size_wh
    if len(matrices) == 0:
        return np.zeros((0, height, width, 3), dtype=np.uint8)
    frames = torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0)
    m = torch.from_numpy(np.stack([np.asarray(t, dtype=np.float64).reshape(2, 3) for t in matrices]))
    with torch.inference_mode():
        return warp(kernel)(frames, torch.zeros(len(m), dtype=torch.long), m, output_size_wh).numpy()


__all__ = [
    "Kernel", "affine_from_points", "affine_transform", "fill_like", "invert_affine", "true_divide", "warp",
    "warp_affine_fixed_point", "warp_affine_float", "warp_crops",
]
