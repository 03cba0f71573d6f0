"""Associative Embedding: bottom-up 2D pose, every joint of every person found, then grouped by tags
(Newell, Huang and Deng, NeurIPS 2017).

"Associative Embedding: End-to-End Learning for Joint Detection and Grouping": one network pass gives,
per joint type, a heatmap (where such joints are) and a tag map (a 1-D embedding per pixel); joints
whose tags are close belong to the same person. A faithful re-implementation of mmpose 1.3.2's
``BottomupPoseEstimator`` with ``HRNet`` (W32) + ``AssociativeEmbeddingHead`` and the
``AssociativeEmbedding`` codec (config ``ae_hrnet-w32_8xb24-300e_coco-512x512.py``), loadable from
mmpose's 2020 checkpoint with ``strict=True``; ``shared/golden/ae_hrnet_w32_coco_512x512/README.md``
lists every convention checked.

Order of this file: the model, the weights table, the checkpoint format, the decoding (grouping),
the predictor. What the predictor reproduces:

- the canvas: ``BottomupResize(input_size=(512, 512), size_factor=64, resize_mode='expand')`` (the short
  side to 512, the long side grown and rounded up to a multiple of 64, the frame centred; models/bottomup.py);
- the network: HRNet-W32 (the top-down HRNet of models/hrnet.py: mmpose's HRNet has the authors'
  names and arithmetic) with a 1x1 head of 17 heatmap + 17 tag channels, stride 4;
- flip test (the config's test mode): a second pass on the mirrored canvas, heatmaps and tags mirrored
  back and their joints swapped, no shift; both maps upsampled x4 (bilinear, ``align_corners=False``)
  to the canvas size, heatmaps averaged, tags **concatenated** (each candidate gets a 2-D tag);
- decoding: 5x5 max-pool NMS, top 30 per joint, grouping in mmpose's joint order with the Munkres
  assignment on ``round(tag distance) * 100 - value`` (``munkres``, the solver mmpose calls: its
  tie-breaking decides between equally distant groups), quarter-pixel refinement and a +0.5 shift
  for found joints, missing joints filled at the best tag-consistent heatmap value, the person's
  score the mean of its 17 grouped values (missing ones 0) taken before the fill-in;
- each person's box is the extent of its 17 keypoints (AE has no box output; COCO's evaluator sizes
  keypoint-only detections the same way).

Without the flip test, mmpose 1.3.2 fails on this config (``ae_head.py:114`` asserts a list where
HRNet gives a tuple); here the single pass is decoded as the codec decodes any pass (tags 1-D).
That mode has no reference output.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from posepipe.models import mmpose
from posepipe.models.bottomup import (BottomupPredictor, bottomup_canvas, empty_persons, frames_by_shape,
                                      keypoint_extent, warp_frames_to_canvas)
from posepipe.models.checkpoint import CheckpointError, load_strict
from posepipe.models.hrnet import PoseHighResolutionNet
from posepipe.models.mmpose import MMPOSE_MEAN, MMPOSE_STD
from posepipe.models.skeletons import COCO17_NAMES, COCO17_SKELETON, flip_indices
from posepipe.models.topdown import place
from posepipe.models.weights import Weights

# The codec's decoding settings in the config (the rest are the codec's defaults).
DECODE_TOPK = 30
DECODE_MAX_INSTANCES = 30
DECODE_NMS_KERNEL = 5
DECODE_KEYPOINT_THR = 0.1
DECODE_TAG_THR = 1.0
DECODE_CENTER_SHIFT = 0.5
# Grouping order: head and torso first, then the limbs outwards (COCO indices).
DECODE_KEYPOINT_ORDER = (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16)
SIZE_FACTOR = 64


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class AssociativeEmbeddingNet(PoseHighResolutionNet):
    """HRNet-W{width} with the AE head: (N, 3, H, W) normalised RGB -> (N, 2 * J, H/4, W/4), rows
    0..J-1 heatmaps, J..2J-1 tags (one tag per joint type). H and W must be multiples of 32."""

    def __init__(self, width: int = 32, num_joints: int = 17):
        super().__init__(width=width, num_joints=2 * num_joints)
        self.num_joints = num_joints  # joint types; the head has a heatmap and a tag row for each


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------

_PAPER = "Associative Embedding: End-to-End Learning for Joint Detection and Grouping (Newell, Huang and Deng, NeurIPS 2017)"

WEIGHTS: dict[str, Weights] = {
    "ae_hrnet_w32_coco_512x512": Weights(
        name="ae_hrnet_w32_coco_512x512",
        family="associative_embedding",
        stage="pose",
        url="https://download.openmmlab.com/mmpose/bottom_up/hrnet_w32_coco_512x512-bcb8c247_20200816.pth",
        filename="hrnet_w32_coco_512x512-bcb8c247_20200816.pth",
        source_format="mmpose",
        hash_prefix="bcb8c247",
        arch={"width": 32, "num_joints": 17},
        input_size=(512, 512),   # the short side; the canvas grows along the long side (multiples of 64)
        mean=MMPOSE_MEAN,
        std=MMPOSE_STD,
        color="RGB",
        keypoint_names=COCO17_NAMES,
        skeleton=COCO17_SKELETON,
        license="Apache-2.0 (mmpose model zoo)",
        paper=_PAPER,
        # mmpose's model zoo (associative_embedding/coco/hrnet_coco.md), COCO val2017, flip test, no detector.
        metrics={"coco_val2017_AP": 65.6, "coco_val2017_AR": 71.1},
        gmacs=40.8,  # one 512x512 canvas, one pass (the flip test doubles it); torch's FlopCounterMode
        notes=(
            "Bottom-up: no detector; each person's box is the extent of its 17 keypoints and its score the mean "
            "of its grouped joints' heatmap values. A 2020 mmpose 0.x release (keypoint_head.final_layer.*, 17 "
            "heatmap + 17 tag channels), renamed as mmpose does. The canvas is 512 on the short side, wider for "
            "wide frames (832x512 for 16:9): the cost grows with it."
        ),
    ),
}


# --------------------------------------------------------------------------------------------
# Checkpoint format
# --------------------------------------------------------------------------------------------

_LABEL = "Associative Embedding HRNet (HRNet + 17 heatmap / 17 tag head)"
_MARKERS = ("backbone.stage4.0.fuse_layers.0.1.0.weight", "head.final_layer.weight")


def _is_ae(obj: Any) -> bool:
    """mmpose's HRNet file with a head of twice as many rows as joints: heatmaps and tags."""
    state = mmpose.state_dict_of(obj)
    if state is None:
        return False
    head = mmpose.remap_mmpose(state).get("head.final_layer.weight")
    return head is not None and head.ndim == 4 and head.shape[0] == 2 * 17 and head.shape[2:] == (1, 1)


def checkpoint_format(obj: Any) -> str | None:
    """The supported layout of an unpickled checkpoint, by its keys (and the head's 34 rows, which a
    top-down HRNet file of the same keys lacks); None if none."""
    return mmpose.describe_layout(obj, _LABEL, _MARKERS) if _is_ae(obj) else None


def remap_mmpose(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """mmpose's HRNet names are the authors' under ``backbone.``; the head is ``head.final_layer``: both
    to :class:`AssociativeEmbeddingNet`'s (the top-down HRNet's) names. Pure; anything else passes
    through so that the strict load names it."""
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in state.items():
        if key.startswith("backbone."):
            key = key[len("backbone."):]
        elif key.startswith("head.final_layer."):
            key = key[len("head."):]
        out[key] = value
    return out


def convert_checkpoint(obj: Any) -> "OrderedDict[str, torch.Tensor]":
    """Any supported AE checkpoint -> the state dict of :class:`AssociativeEmbeddingNet`."""
    state = mmpose.convert(obj, _LABEL, _MARKERS)
    head = state["head.final_layer.weight"]
    if head.shape[0] != 2 * 17:
        raise CheckpointError(
            f"not an Associative Embedding checkpoint: its head has {head.shape[0]} rows, not 34 (17 heatmaps and "
            f"17 tags); a 17-row head is a top-down HRNet's (load it as hrnet_w32_coco_256x192)")
    return remap_mmpose(state)


# --------------------------------------------------------------------------------------------
# Decoding: the AssociativeEmbedding codec
# --------------------------------------------------------------------------------------------

def heatmap_nms(heatmaps: torch.Tensor, kernel: int = DECODE_NMS_KERNEL) -> torch.Tensor:
    """Keep local maxima of a `kernel` window, zero the rest (negative peaks then rank below zeros)."""
    maximum = F.max_pool2d(heatmaps, kernel, stride=1, padding=(kernel - 1) // 2)
    return heatmaps * torch.eq(heatmaps, maximum).float()


def top_candidates(heatmaps: torch.Tensor, tags: torch.Tensor, k: int = DECODE_TOPK
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(J, H, W) NMS'd heatmaps and (L * J, H, W) tags -> per joint the top `k` values (J, k), their tags
    (J, k, L) and (x, y) locations (J, k, 2) int64, as ``_get_batch_topk``."""
    j, h, w = heatmaps.shape
    levels = tags.shape[0] // j
    vals, index = heatmaps.flatten(-2).topk(k, dim=-1)
    topk_tags = torch.stack([torch.gather(t, 1, index) for t in torch.unbind(tags.view(levels, j, h * w), dim=0)], dim=-1)
    locs = torch.stack([index % w, index // w], dim=-1)
    return vals.cpu().numpy(), topk_tags.cpu().numpy(), locs.cpu().numpy()


def group_by_tags(vals: np.ndarray, tags: np.ndarray, locs: np.ndarray, *,
                  order: Sequence[int] = DECODE_KEYPOINT_ORDER, val_thr: float = DECODE_KEYPOINT_THR,
                  tag_thr: float = DECODE_TAG_THR, max_groups: int = DECODE_MAX_INSTANCES) -> np.ndarray:
    """``_group_keypoints_by_tags``: candidates (J, M) values, (J, M, L) tags, (J, M, 2) locations ->
    (G, J, 3) [x, y, value] groups, (0, 0, 0) for a joint a group lacks.

    Joints are visited in `order`; candidates above `val_thr` only. The first joint with candidates
    opens one group per candidate; each later joint's candidates are assigned to groups by Munkres on
    ``round(||tag - group mean tag||) * 100 - value`` (padded with 1e10 columns when there are more
    candidates than groups) and join when the unrounded distance is below `tag_thr`; the others open
    groups. A group is keyed by the first tag value of its first candidate, as in mmpose (two
    openers with the same value share a group). The first `max_groups` groups opened are kept.
    """
    from munkres import Munkres  # the solver mmpose calls: its tie-breaking decides equal-cost assignments

    num_joints, _, loc_dim = locs.shape
    empty = np.zeros((num_joints, 3 + tags.shape[2]), dtype=np.float32)
    joint_dict: dict[Any, np.ndarray] = {}
    tag_dict: dict[Any, list[np.ndarray]] = {}
    for position, joint in enumerate(order):
        joint_tags = tags[joint]
        # int64 locations with float32 values and tags: one float64 row per candidate, as mmpose builds it
        rows = np.concatenate((locs[joint], vals[joint, :, None], joint_tags), 1)
        keep = rows[:, 2] > val_thr
        joint_tags, rows = joint_tags[keep], rows[keep]
        if rows.shape[0] == 0:
            continue
        if position == 0 or not joint_dict:
            for tag, row in zip(joint_tags, rows):
                key = tag[0]
                joint_dict.setdefault(key, np.copy(empty))[joint] = row
                tag_dict[key] = [tag]
            continue
        keys = list(joint_dict)
        group_tags = [np.mean(tag_dict[key], axis=0) for key in keys]
        diff = rows[:, None, 3:] - np.array(group_tags)[None, :, :]
        distance = np.linalg.norm(diff, ord=2, axis=2)
        cost = np.round(distance) * 100 - rows[:, 2:3]
        added, grouped = diff.shape[0], diff.shape[1]
        if added > grouped:
            cost = np.concatenate((cost, np.zeros((added, added - grouped), dtype=np.float32) + 1e10), axis=1)
        for r, c in np.array(Munkres().compute(cost)).astype(int):
            if r < added and c < grouped and distance[r][c] < tag_thr:
                key = keys[c]
                joint_dict[key][joint] = rows[r]
                tag_dict[key].append(joint_tags[r])
            else:
                key = joint_tags[r][0]
                joint_dict.setdefault(key, np.copy(empty))[joint] = rows[r]
                tag_dict[key] = [joint_tags[r]]
    kept = list(joint_dict)[:max_groups]
    if not kept:
        return np.empty((0, num_joints, loc_dim + 1), dtype=np.float32)
    return np.array([joint_dict[key] for key in kept]).astype(np.float32)[..., :loc_dim + 1]


def refine_keypoints(keypoints: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
    """mmpose's ``refine_keypoints``, in place: a quarter pixel towards the higher neighbour, x only when
    ``1 < x < W - 1`` and ``0 < y < H``, y only when ``1 < y < H - 1`` and ``0 < x < W``."""
    num, joints = keypoints.shape[:2]
    h, w = heatmaps.shape[1:]
    for n in range(num):
        for k in range(joints):
            x, y = keypoints[n, k, :2].astype(int)
            dx = heatmaps[k, y, x + 1] - heatmaps[k, y, x - 1] if 1 < x < w - 1 and 0 < y < h else 0.0
            dy = heatmaps[k, y + 1, x] - heatmaps[k, y - 1, x] if 1 < y < h - 1 and 0 < x < w else 0.0
            keypoints[n, k] += np.sign([dx, dy], dtype=np.float32) * 0.25
    return keypoints


def fill_missing(keypoints: np.ndarray, scores: np.ndarray, heatmaps: np.ndarray, tags: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``_fill_missing_keypoints``, in place: a person's tag is the mean of its found joints' tags (read at
    their truncated, clipped positions); each joint it lacks goes to the first pixel (row-major) of least
    ``round(||tag map - tag||) * 100 - heatmap``, with that heatmap value as its score (may be negative)."""
    num, joints = keypoints.shape[:2]
    h, w = heatmaps.shape[1:]
    levels = tags.shape[0] // joints
    joint_tags = [tags[k::joints] for k in range(joints)]
    for n in range(num):
        found = []
        for k in range(joints):
            if scores[n, k] > 0:
                x, y = keypoints[n, k, :2].astype(np.int64)
                found.append(joint_tags[k][:, np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)])
        tag = np.mean(found, axis=0).reshape(levels, 1, 1)
        for k in range(joints):
            if scores[n, k] > 0:
                continue
            distance = np.linalg.norm(joint_tags[k] - tag, ord=2, axis=0)
            cost = np.round(distance) * 100 - heatmaps[k]
            y, x = np.unravel_index(np.argmin(cost), shape=(h, w))
            keypoints[n, k] = [x, y]
            scores[n, k] = heatmaps[k, y, x]
    return keypoints, scores


def decode(heatmaps: torch.Tensor, tags: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One canvas' aggregated (J, H, W) heatmaps and (L * J, H, W) tags -> keypoints (N, J, 2) in canvas
    pixels, keypoint scores (N, J) and person scores (N,), float32 (``AssociativeEmbedding.batch_decode``)."""
    vals, cand_tags, locs = top_candidates(heatmap_nms(heatmaps[None])[0], tags)
    groups = group_by_tags(vals, cand_tags, locs)
    keypoints, scores = groups[..., :-1], groups[..., -1]
    instance_scores = scores.mean(axis=-1)
    if keypoints.size > 0:
        maps, tag_maps = heatmaps.cpu().numpy(), tags.cpu().numpy()
        keypoints = refine_keypoints(keypoints, maps)
        keypoints += DECODE_CENTER_SHIFT * (scores > 0).astype(keypoints.dtype)[..., None]
        keypoints, scores = fill_missing(keypoints, scores, maps, tag_maps)
    return keypoints, scores, instance_scores


# --------------------------------------------------------------------------------------------
# Public builders and the predictor
# --------------------------------------------------------------------------------------------

def associative_embedding(*, width: int = 32, num_joints: int = 17) -> AssociativeEmbeddingNet:
    """The bare network with PyTorch's default (random) initialisation; loads nothing."""
    return AssociativeEmbeddingNet(width=width, num_joints=num_joints)


class AssociativeEmbeddingPose(BottomupPredictor):
    """Whole frames -> persons, as mmpose's ``inference_bottomup`` with this config. Outputs CPU numpy."""

    label = "Associative Embedding"

    def __init__(self, model: AssociativeEmbeddingNet, weights: Weights, device: torch.device, half: bool = False):
        super().__init__(model, weights, device, half=half)
        self.flip_indices = flip_indices(weights.keypoint_names)

    def canvas(self, frame_hw: tuple[int, int]):
        return bottomup_canvas(frame_hw, self.input_size_wh, size_factor=SIZE_FACTOR, mode="expand")

    def _network(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            out = self.model(x)
        out = out.float()
        return out[:, :self.num_joints], out[:, self.num_joints:]

    @torch.inference_mode()
    def raw_outputs(self, inputs: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The head's raw heatmaps and tags (B, J, H/4, W/4) for normalised canvases (B, 3, H, W), CPU numpy."""
        x = inputs if isinstance(inputs, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(inputs))
        heatmaps, tags = self._network(x.to(self.device, dtype=torch.float32))
        return heatmaps.cpu().numpy(), tags.cpu().numpy()

    @torch.inference_mode()
    def maps(self, inputs: torch.Tensor | np.ndarray, flip_test: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised canvases (B, 3, H, W) -> what is decoded: heatmaps (B, J, H, W) and tags (B, L * J, H, W)
        at the canvas resolution (flip test: heatmaps averaged, tags concatenated, L = 2)."""
        x = inputs if isinstance(inputs, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(inputs))
        x = x.to(self.device, dtype=torch.float32)
        size = x.shape[-2:]

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

        if not flip_test:
            heatmaps, tags = self._network(x)
            return up(heatmaps), up(tags)
        b = x.shape[0]
        heatmaps, tags = self._network(torch.cat([x, x.flip(-1)]))
        flip_h = heatmaps[b:].flip(-1)[:, self.flip_indices]
        flip_t = tags[b:].flip(-1)[:, self.flip_indices]  # one tag per joint: the same permutation
        return (up(heatmaps[:b]) + up(flip_h)).div(2), torch.cat([up(tags[:b]), up(flip_t)], dim=1)

    @torch.inference_mode()
    def predict_images(self, images_bgr: Sequence[np.ndarray], flip_test: bool = True,
                       batch_size: int = 4) -> list[dict[str, np.ndarray]]:
        """Every person in each frame; frames of one size go through the network `batch_size` at a time."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        results: list[dict[str, np.ndarray]] = [empty_persons(self.num_joints)] * len(images_bgr)
        for shape, members in frames_by_shape(images_bgr):
            canvas = self.canvas(shape)
            for start in range(0, len(members), batch_size):
                chunk = members[start:start + batch_size]
                frames = torch.from_numpy(np.stack([images_bgr[i] for i in chunk]))
                x = self.normalize(warp_frames_to_canvas(frames, canvas, border_value=0))
                heatmaps, tags = self.maps(x, flip_test=flip_test)
                for row, i in enumerate(chunk):
                    keypoints, scores, instance = decode(heatmaps[row], tags[row])
                    keypoints = canvas.to_image(keypoints)
                    results[i] = {"keypoints": keypoints, "keypoint_scores": scores.astype(np.float32),
                                  "scores": instance.astype(np.float32), "bboxes_xyxy": keypoint_extent(keypoints)}
        return results


def create(spec: Weights, state_dict: Mapping[str, torch.Tensor] | None, *, device: torch.device,
           half: bool = False) -> AssociativeEmbeddingPose:
    """Build `spec`'s architecture, load `state_dict` strictly (None: random init), eval, place.

    Random weights (plumbing checks; the caller has warned) find no person: their heatmaps are about
    1e4 everywhere with no distinct peaks. So, as YOLOX's person logit is raised, the heatmap rows of
    the head are scaled down and their bias set so that a few peaks per joint pass the 0.1 threshold,
    and the tag rows are scaled down so that tags are close within a frame: random weights then give
    persons for the stages downstream.
    """
    model = associative_embedding(**dict(spec.arch))
    if state_dict is not None:
        load_strict(model, state_dict, what="the checkpoint")
    else:
        _bias_random_head(model)
    return AssociativeEmbeddingPose(place(model, device), spec, torch.device(device), half=half)


def _bias_random_head(model: AssociativeEmbeddingNet) -> None:
    j = model.num_joints
    with torch.no_grad():
        head = model.final_layer
        if head.weight.device.type == "meta":
            return
        head.weight[:j] *= 1e-6
        head.bias[:j] = 0.5
        head.weight[j:] *= 1e-7
        head.bias[j:] = 0.0


__all__ = [
    "AssociativeEmbeddingNet", "AssociativeEmbeddingPose", "DECODE_KEYPOINT_ORDER", "WEIGHTS", "associative_embedding",
    "checkpoint_format", "convert_checkpoint", "create", "decode", "fill_missing", "group_by_tags", "heatmap_nms",
    "refine_keypoints", "remap_mmpose", "top_candidates",
]
