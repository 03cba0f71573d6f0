"""Heatmap flip test and decoding, shared by every heatmap model (HRNet, SimpleBaseline).

Two official conventions exist and both are kept here, side by side, in torch so that they run
where the network ran (CPU or GPU) and only (K, J, 2) coordinates travel back:

- ``"official"``: the HRNet authors' ``get_final_preds`` (deep-high-resolution-net.pytorch
  ``lib/core/inference.py``): a maximum <= 0 gives (0, 0); the quarter-pixel step is taken only
  when the rounded peak is inside ``1 < x < W-1 and 1 < y < H-1`` (one test for both axes).
- ``"mmpose"``: mmpose 1.x's ``MSRAHeatmap`` decoding (``codecs/utils/post_processing.py``
  ``get_heatmap_maximum`` and ``codecs/utils/refinement.py`` ``refine_keypoints``): a maximum <= 0
  gives (-1, -1); x steps when ``1 < x < W-1 and 0 < y < H``, y when ``1 < y < H-1 and 0 < x < W``
  (two separate tests, on the truncated peak).

The flip test is the same in both: mirror the heatmaps of the mirrored input back, swap the
left/right joints, shift right by one column (column 0 keeps its value), average with the
original pass.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

CONVENTIONS = ("official", "mmpose")


def _tensor(heatmaps: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = heatmaps if isinstance(heatmaps, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(heatmaps))
    if t.ndim != 4:
        raise ValueError(f"heatmaps must be (K, J, H, W), got shape {tuple(t.shape)}")
    return t.float()


def flip_back(heatmaps_flipped: np.ndarray | torch.Tensor, flip_indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Heatmaps of mirrored inputs (K, J, H, W) -> mirrored back, joint j taking joint flip_indices[j].

    `flip_indices` as a long tensor on the heatmaps' device keeps a CUDA stream free of host syncs (a
    Python list is copied to the device, blocking, on every call)."""
    hm = _tensor(heatmaps_flipped)
    if len(flip_indices) != hm.shape[1]:
        raise ValueError(f"{len(flip_indices)} flip indices for {hm.shape[1]} heatmap channels")
    if isinstance(flip_indices, torch.Tensor):
        return hm.flip(-1).index_select(1, flip_indices)
    return hm.flip(-1)[:, list(flip_indices)]


def average_flip(
    heatmaps: np.ndarray | torch.Tensor, heatmaps_flipped: np.ndarray | torch.Tensor,
    flip_indices: Sequence[int] | torch.Tensor,
    *, shift: bool = True,
) -> torch.Tensor:
    """The official flip test: flip back, shift right by one column (column 0 kept), ``(a + b) * 0.5``."""
    back = flip_back(heatmaps_flipped, flip_indices)
    if shift:
        back[..., 1:] = back[..., :-1].clone()
    original = _tensor(heatmaps).to(back.device)
    return (original + back) * 0.5


def flip_indices_from_pairs(num_joints: int, pairs: Sequence[tuple[int, int]]) -> list[int]:
    """Left/right pairs -> the permutation mmpose calls ``flip_indices``."""
    indices = list(range(num_joints))
    for left, right in pairs:
        indices[left], indices[right] = right, left
    return indices


def heatmap_maxima(heatmaps: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, J, H, W) -> peak locations (K, J, 2) float32 [x, y] in heatmap pixels and maxima (K, J).

    The first maximum of the row-major flattened map wins a tie, as numpy's argmax.
    """
    hm = _tensor(heatmaps)
    k, j, h, w = hm.shape
    flat = hm.reshape(k, j, h * w)
    if flat.numel() == 0:
        return torch.zeros((k, j, 2), dtype=torch.float32, device=hm.device), flat.new_zeros((k, j))
    idx = flat.argmax(dim=2)  # the first maximum (max()'s index is not promised to be)
    maxvals = torch.gather(flat, 2, idx.unsqueeze(-1)).squeeze(-1)
    coords = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], dim=2).float()
    return coords, maxvals


def _neighbour_diff(hm: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """H[y, x+1] - H[y, x-1] and H[y+1, x] - H[y-1, x] at every (k, j), indices clamped into the map
    (the caller masks out the places where a neighbour would be outside)."""
    k, j, h, w = hm.shape
    flat = hm.reshape(k, j, h * w)

    def at(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        index = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)).unsqueeze(-1)
        return torch.gather(flat, 2, index).squeeze(-1)

    return at(xs + 1, ys) - at(xs - 1, ys), at(xs, ys + 1) - at(xs, ys - 1)


def decode_heatmaps(heatmaps: np.ndarray | torch.Tensor, convention: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Peaks with the quarter-pixel step: (K, J, 2) float32 [x, y] in heatmap pixels and maxima (K, J).

    ``convention`` is ``"official"`` (HRNet authors) or ``"mmpose"`` (mmpose 1.x); see the module
    docstring for how they differ. Scaling to input pixels and mapping back to the image are the
    caller's (each convention does it differently).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    hm = _tensor(heatmaps)
    _, _, h, w = hm.shape
    coords, maxvals = heatmap_maxima(hm)
    if coords.numel() == 0:
        return coords, maxvals
    quarter = 0.25  # a Python scalar: a tensor made here would be a blocking host-to-device copy on CUDA
    if convention == "official":
        coords = coords * (maxvals > 0.0).unsqueeze(-1).float()
        px = torch.floor(coords[..., 0] + 0.5).long()
        py = torch.floor(coords[..., 1] + 0.5).long()
        dx, dy = _neighbour_diff(hm, px, py)
        inside = ((px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)).unsqueeze(-1)
        step = torch.sign(torch.stack([dx, dy], dim=-1)) * quarter
        return torch.where(inside, coords + step, coords), maxvals
    # mmpose: (-1, -1) where the maximum is not positive, then two separate border tests.
    coords = torch.where((maxvals <= 0.0).unsqueeze(-1), torch.full_like(coords, -1.0), coords)
    x, y = coords[..., 0].long(), coords[..., 1].long()  # astype(int): truncation (-1 stays -1)
    dx, dy = _neighbour_diff(hm, x, y)
    dx = torch.where((x > 1) & (x < w - 1) & (y > 0) & (y < h), dx, torch.zeros_like(dx))
    dy = torch.where((y > 1) & (y < h - 1) & (x > 0) & (x < w), dy, torch.zeros_like(dy))
    return coords + torch.sign(torch.stack([dx, dy], dim=-1)) * quarter, maxvals


__all__ = ["CONVENTIONS", "average_flip", "decode_heatmaps", "flip_back", "flip_indices_from_pairs", "heatmap_maxima"]
