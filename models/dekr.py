"""DEKR: single-stage multi-person 2D pose by disentangled keypoint regression (Geng, Sun, Xiao, Zhang and
Wang, CVPR 2021).

"Bottom-up Human Pose Estimation via Disentangled Keypoint Regression": one network pass gives a root
(person centre) heatmap and, at every pixel, 17 displacements to that person's joints, each regressed by
its own branch of adaptive (deformable) convolutions; a person is a root peak plus the 17 joints its
pixel points at (SPM/SPR's single-stage representation, Nie et al. 2019). A faithful re-implementation of
mmpose 1.3.2's ``BottomupPoseEstimator`` with ``HRNet`` (W32, all four branches out) +
``FeatureMapProcessor(concat=True)`` + ``DEKRHead`` (with the authors' ``RescoreNet``) and the ``SPR``
codec (config ``dekr_hrnet-w32_8xb10-140e_coco-512x512.py``), loadable from mmpose's 2022 file with
``strict=True``; ``tests/models/golden_dekr_hrnet_w32_coco_512x512/README.md`` lists every convention
checked against mmpose's own code.

Order of this file: building blocks (the deformable convolution, written here in plain torch), the model,
the weights table, the checkpoint format, the decoding, the predictor. What the predictor reproduces:

- the canvas: ``BottomupResize(input_size=(512, 512), size_factor=32, resize_mode='expand')`` (the short
  side to 512, the long side grown and rounded up to a multiple of 32, the frame centred; models/bottomup.py);
- the network: HRNet-W32 whose last stage returns all four branches, bilinearly upsampled
  (``align_corners=False``) to the stride-4 branch and concatenated (480 channels); a heatmap branch
  (1x1 conv-BN-ReLU, a BasicBlock, 1x1 conv to 17 joint heatmaps + 1 root heatmap, the root last) and a
  displacement branch (1x1 conv-BN-ReLU to 17 x 15 channels, two ``AdaptiveActivationBlock``s: a grouped
  3x3 conv predicts per joint group a 2x3 affine matrix whose product with the regular 3x3 grid gives the
  sampling offsets of a grouped deformable 3x3 conv, then BN and ReLU of the sum with the input; a
  grouped 1x1 conv to 17 (dx, dy));
- flip test (the config's test mode): a second pass on the mirrored canvas; its heatmaps mirrored back,
  joints swapped (the root stays), shifted one column right (column 0 kept) and averaged; its
  displacements mirrored back, joints swapped, dx negated, then dx + 0.75 (mmpose's "coordinate amendment",
  ``(s - 1) / s`` with s = canvas width / heatmap width = 4) and averaged;
- decoding (``SPR.decode``): 5x5 max-pool NMS of the root heatmap, its top 30 peaks above 0.01; each
  peak's 17 joints are its pixel plus its displacements; joint scores are the joint heatmaps read there
  by ``grid_sample`` (mmpose normalises by ``W - 1`` but samples with ``align_corners=False``, border
  padding: reproduced as is); joints x4 to the canvas;
- rescoring: the authors' ``RescoreNet`` (3 linear layers on the 19 COCO links' normalised vectors and
  lengths and the 17 joint scores) estimates each pose's OKS; the root score is multiplied by it (NaN -> 0);
  each joint's output score is root score x joint score;
- NMS by pose distance (``nearby_joints_nms``, dist 0.05 of the pose's diagonal, more than 8 joints
  close, ranked by the mean *unrescored* joint score, at most 30 kept), in mmpose's order;
- each person's score is its rescored root score (``scores``); its box the extent of its 17 keypoints
  (DEKR has no box output; COCO's evaluator sizes keypoint-only detections the same way).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from posepipe.models import mmpose
from posepipe.models.bottomup import (BottomupPredictor, bottomup_canvas, empty_persons, frames_by_shape,
                                      keypoint_extent, warp_frames_to_canvas)
from posepipe.models.checkpoint import load_strict
from posepipe.models.hrnet import HighResolutionModule, PoseHighResolutionNet
from posepipe.models.mmpose import MMPOSE_MEAN, MMPOSE_STD
from posepipe.models.resnet import BasicBlock
from posepipe.models.skeletons import COCO17_NAMES, COCO17_SKELETON, flip_indices
from posepipe.models.topdown import place
from posepipe.models.weights import Weights

# The SPR codec's decoding settings in the config (the rest are the codec's defaults) and the test_cfg.
DECODE_MAX_INSTANCES = 30
DECODE_NMS_KERNEL = 5
DECODE_THR = 0.01
NMS_DIST_THR = 0.05
NMS_MAX_DETS = 30
SIZE_FACTOR = 32
HEATMAP_STRIDE = 4
# The rescore net normalises the links' lengths by the mean of these two (COCO's torso links 5-11, 6-12).
RESCORE_NORM_LINKS = (5, 6)


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------

def deform_conv2d(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, *, stride: int = 1,
                  padding: int = 0, dilation: int = 1) -> torch.Tensor:
    """Deformable convolution v1 (Dai et al., ICCV 2017), no bias, in plain torch.

    `x` (B, C, H, W); `weight` (O, C / groups, kh, kw), the groups read from its shape; `offset`
    (B, 2 * G * kh * kw, Ho, Wo) with G offset groups (C / G input channels each): channel
    ``2 * (g * kh * kw + k)`` is the row (y) shift and the next one the column (x) shift of kernel tap
    ``k = i * kw + j`` of group g. Tap k of output (oy, ox) reads ``x`` at
    ``(oy * stride - padding + i * dilation + dy, ox * stride - padding + j * dilation + dx)``
    bilinearly; a sample at or beyond one pixel outside the map (y <= -1, y >= H, x <= -1 or x >= W)
    is 0, and so is each corner outside the map of a sample near the border: the convention of the
    original CUDA kernel, mmcv's ``DeformConv2d`` and ``torchvision.ops.deform_conv2d`` (tests check the
    last on samples inside, across and outside the border). One tap at a time (memory O(B C Ho Wo), not
    x kh kw), the samples are read by ``grid_sample`` (bilinear, zeros outside, ``align_corners=True``,
    so that -1 and W map to pixel centres: the same weights and the same zeros; a map one pixel wide or
    high gets a zero column or row first, which changes no sample) and each tap is a grouped matrix
    product summed into the output.
    """
    b, c, h, w = x.shape
    out_channels, c_per_group, kh, kw = weight.shape
    if c % c_per_group or out_channels % (c // c_per_group):
        raise ValueError(f"weight {tuple(weight.shape)} does not divide {c} input channels into groups")
    groups = c // c_per_group
    taps = kh * kw
    ho = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    if offset.ndim != 4 or offset.shape[0] != b or offset.shape[1] % (2 * taps) or offset.shape[2:] != (ho, wo):
        raise ValueError(f"offset {tuple(offset.shape)} must be (B, 2 * G * {taps}, {ho}, {wo}) for input "
                         f"{tuple(x.shape)} and a {kh}x{kw} kernel")
    offset_groups = offset.shape[1] // (2 * taps)
    if c % offset_groups:
        raise ValueError(f"{offset_groups} offset groups do not divide {c} input channels")
    length = ho * wo
    off = offset.view(b, offset_groups, taps, 2, ho, wo)
    source = x.reshape(b * offset_groups, c // offset_groups, h, w)
    source = F.pad(source, (0, 1 if w == 1 else 0, 0, 1 if h == 1 else 0))  # zeros: what outside reads anyway
    span_y, span_x = max(h - 1, 1), max(w - 1, 1)
    base_y = (torch.arange(ho, device=x.device, dtype=x.dtype) * stride - padding).view(ho, 1)
    base_x = (torch.arange(wo, device=x.device, dtype=x.dtype) * stride - padding).view(1, wo)
    out = x.new_zeros((b, groups, out_channels // groups, length))
    kernel = weight.view(groups, out_channels // groups, c_per_group, taps)
    for k in range(taps):
        i, j = divmod(k, kw)
        py = base_y + i * dilation + off[:, :, k, 0]          # (B, G, Ho, Wo), input pixels
        px = base_x + j * dilation + off[:, :, k, 1]
        grid = torch.stack((px * (2 / span_x) - 1, py * (2 / span_y) - 1), dim=-1).view(b * offset_groups, ho, wo, 2)
        sample = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out = out + torch.matmul(kernel[..., k], sample.reshape(b, groups, c_per_group, length))
    return out.view(b, out_channels, ho, wo)


class DeformConv2d(nn.Module):
    """mmcv's ``DeformConv2d`` (no bias, offset groups given): the weight only, so its key is ``weight``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, deform_groups: int = 1):
        super().__init__()
        if in_channels % groups or out_channels % groups or in_channels % deform_groups:
            raise ValueError(f"{in_channels} -> {out_channels} channels do not divide into {groups} groups / "
                             f"{deform_groups} offset groups")
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.deform_groups = deform_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        return deform_conv2d(x, offset, self.weight, stride=self.stride, padding=self.padding, dilation=self.dilation)


class AdaptiveActivationBlock(nn.Module):
    """DEKR's adaptive convolution: per group a 2x3 affine matrix (a grouped 3x3 conv) maps the regular 3x3
    grid to the sampling offsets of a grouped deformable 3x3 conv; BN; ReLU of the sum with the input."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.groups = groups
        # rows: the taps' y, x (relative to the centre) and 1, for k = i * 3 + j
        regular = torch.tensor([[-1, -1, -1, 0, 0, 0, 1, 1, 1], [-1, 0, 1, -1, 0, 1, -1, 0, 1], [1] * 9])
        self.register_buffer("regular_matrix", regular.float())
        self.transform_matrix_conv = nn.Conv2d(channels, 6 * groups, 3, padding=1, groups=groups, bias=True)
        self.adapt_conv = DeformConv2d(channels, channels, 3, padding=1, groups=groups, deform_groups=groups)
        self.norm = nn.BatchNorm2d(channels)
        self.act = nn.ReLU(inplace=True)

    def offsets(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, groups * 18, H, W): per group and tap (dy, dx) = affine @ [i - 1, j - 1, 1]."""
        b, _, h, w = x.shape
        affine = self.transform_matrix_conv(x).permute(0, 2, 3, 1).reshape(b, h, w, self.groups, 2, 3)
        offset = torch.matmul(affine, self.regular_matrix).transpose(4, 5).reshape(b, h, w, self.groups * 18)
        return offset.permute(0, 3, 1, 2).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.adapt_conv(x, self.offsets(x)))
        return self.act(y + x)


class ConvBNReLU(nn.Module):
    """mmcv's ``ConvModule(kernel_size=1, norm_cfg=BN)``: its keys ``conv.weight`` and ``bn.*``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class RescoreNet(nn.Module):
    """The authors' OKS regressor: (N, K, 2) poses and (N, K) joint scores -> (N,) estimated OKS. Its
    feature: each link's vector and length over the mean torso link length (clamped to >= 1), then the scores."""

    def __init__(self, in_channels: int = 74, norm_indexes: tuple[int, int] = RESCORE_NORM_LINKS,
                 skeleton: Sequence[tuple[int, int]] = COCO17_SKELETON, hidden: int = 256):
        super().__init__()
        self.norm_indexes = tuple(norm_indexes)
        self.skeleton = tuple(tuple(link) for link in skeleton)
        self.l1 = nn.Linear(in_channels, hidden)
        self.l2 = nn.Linear(hidden, hidden)
        self.l3 = nn.Linear(hidden, 1)

    def features(self, keypoints: torch.Tensor, keypoint_scores: torch.Tensor) -> torch.Tensor:
        first, second = zip(*self.skeleton)
        vectors = (keypoints[:, list(first)] - keypoints[:, list(second)])[:, :, :2]
        lengths = vectors.norm(dim=2)
        norm = (lengths[:, self.norm_indexes[0]] + lengths[:, self.norm_indexes[1]]) / 2
        norm = norm.unsqueeze(1).expand(norm.size(0), len(self.skeleton)).clamp(min=1).contiguous()
        return torch.cat(((vectors / norm.unsqueeze(-1)).flatten(1), lengths / norm, keypoint_scores), dim=1).float()

    def forward(self, keypoints: torch.Tensor, keypoint_scores: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.l1(self.features(keypoints, keypoint_scores)))
        x = F.relu(self.l2(x))
        return self.l3(x).squeeze(1)


class DEKRHead(nn.Module):
    """mmpose's ``DEKRHead`` (names as its state dict): (B, 480, H, W) -> heatmaps (B, 17 + 1, H, W), the
    root last, and displacements (B, 17 * 2, H, W), per joint (dx, dy) from the pixel to the joint."""

    def __init__(self, in_channels: int = 480, num_joints: int = 17, heatmap_filters: int = 32,
                 displacement_filters_per_joint: int = 15):
        super().__init__()
        filters = num_joints * displacement_filters_per_joint
        self.heatmap_conv_layers = nn.Sequential(
            ConvBNReLU(in_channels, heatmap_filters),
            BasicBlock(heatmap_filters, heatmap_filters),
            nn.Conv2d(heatmap_filters, num_joints + 1, 1),
        )
        self.displacement_conv_layers = nn.Sequential(
            ConvBNReLU(in_channels, filters),
            AdaptiveActivationBlock(filters, num_joints),
            AdaptiveActivationBlock(filters, num_joints),
            nn.Conv2d(filters, 2 * num_joints, 1, groups=num_joints),
        )
        self.rescore_net = RescoreNet()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heatmap_conv_layers(x), self.displacement_conv_layers(x)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class HRNetBackbone(PoseHighResolutionNet):
    """mmpose's ``HRNet`` with ``multiscale_output=True``: the last module of stage 4 fuses into all four
    branches, and all four are returned (strides 4, 8, 16, 32). No final layer."""

    def __init__(self, width: int = 32):
        super().__init__(width=width, num_joints=1)
        del self.final_layer
        self.stage4[-1] = HighResolutionModule(BasicBlock, (4, 4, 4, 4), [width * m for m in (1, 2, 4, 8)],
                                               multi_scale_output=True)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        y = self.stage2([x if layer is None else layer(x) for layer in self.transition1])
        y = self.stage3(self._transition(self.transition2, y))
        return self.stage4(self._transition(self.transition3, y))


class DEKRNet(nn.Module):
    """HRNet-W{width} + concatenated branches + the DEKR head: (N, 3, H, W) normalised RGB (H, W multiples
    of 32) -> heatmaps (N, J + 1, H/4, W/4) and displacements (N, 2 J, H/4, W/4)."""

    heatmap_stride = HEATMAP_STRIDE

    def __init__(self, width: int = 32, num_joints: int = 17):
        super().__init__()
        self.num_joints = num_joints
        self.backbone = HRNetBackbone(width)
        self.head = DEKRHead(in_channels=width * 15, num_joints=num_joints)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        branches = self.backbone(x)
        size = branches[0].shape[-2:]
        features = torch.cat([branches[0]] + [F.interpolate(b, size=size, mode="bilinear", align_corners=False)
                                              for b in branches[1:]], dim=1)
        return self.head(features)


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------

_PAPER = "Bottom-up Human Pose Estimation via Disentangled Keypoint Regression (Geng, Sun, Xiao, Zhang and Wang, CVPR 2021)"

WEIGHTS: dict[str, Weights] = {
    "dekr_hrnet_w32_coco_512x512": Weights(
        name="dekr_hrnet_w32_coco_512x512",
        family="dekr",
        stage="pose",
        url=("https://download.openmmlab.com/mmpose/v1/body_2d_keypoint/dekr/coco/"
             "dekr_hrnet-w32_8xb10-140e_coco-512x512_ac7c17bf-20221228.pth"),
        filename="dekr_hrnet-w32_8xb10-140e_coco-512x512_ac7c17bf-20221228.pth",
        source_format="mmpose",
        hash_prefix="ac7c17bf",
        arch={"width": 32, "num_joints": 17},
        input_size=(512, 512),   # the short side; the canvas grows along the long side (multiples of 32)
        mean=MMPOSE_MEAN,
        std=MMPOSE_STD,
        color="RGB",
        keypoint_names=COCO17_NAMES,
        skeleton=COCO17_SKELETON,
        license="Apache-2.0 (mmpose model zoo)",
        paper=_PAPER,
        # mmpose's model zoo (dekr/coco/hrnet_coco.md), COCO val2017, flip test, no multi-scale, no detector.
        metrics={"coco_val2017_AP": 68.6, "coco_val2017_AR": 73.5},
        gmacs=45.4,  # one 512x512 canvas, one pass (the flip test doubles it); torch's FlopCounterMode
        notes=(
            "Single-stage (SPR's successor): no detector; a person is a root-heatmap peak and the 17 joints its "
            "pixel's displacements point at, rescored by the authors' OKS net; its box is the extent of its 17 "
            "keypoints. The head's adaptive convolutions are deformable convolutions, here in plain torch "
            "(tested against torchvision's). The canvas is 512 on the short side, wider for wide frames "
            "(928x512 for 16:9): the cost grows with it."
        ),
    ),
}


# --------------------------------------------------------------------------------------------
# Checkpoint format
# --------------------------------------------------------------------------------------------

_LABEL = "DEKR HRNet (HRNet + DEKR head with rescore net)"
_MARKERS = ("backbone.stage4.2.fuse_layers.3.0.0.0.weight", "head.displacement_conv_layers.1.adapt_conv.weight",
            "head.rescore_net.l1.weight")


def checkpoint_format(obj: Any) -> str | None:
    """The supported layout of an unpickled checkpoint, by keys only DEKR has; None if none."""
    return mmpose.describe_layout(obj, _LABEL, _MARKERS)


def convert_checkpoint(obj: Any) -> "OrderedDict[str, torch.Tensor]":
    """An mmpose 1.x DEKR checkpoint -> the state dict of :class:`DEKRNet` (the same names: mmpose's).

    mmpose 0.x files (``offset_conv_layers``, the root heatmap first, displacements of opposite sign)
    are not supported: the published file is a 1.x one, saved with the head's version 2 metadata, so
    mmpose's load hook leaves it as it is."""
    return mmpose.convert(obj, _LABEL, _MARKERS)


# --------------------------------------------------------------------------------------------
# Decoding: the SPR codec, the rescore net and NMS by pose distance
# --------------------------------------------------------------------------------------------

def flip_back(heatmaps: torch.Tensor, displacements: torch.Tensor, indices: Sequence[int], canvas_width: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The mirrored pass's maps in the unmirrored frame, as ``DEKRHead.predict`` aligns them (see the module doc)."""
    b, c, h, w = displacements.shape
    heatmaps = heatmaps.flip(-1)[:, list(indices) + [len(indices)]]
    heatmaps = torch.cat([heatmaps[..., :1], heatmaps[..., :-1]], dim=-1)
    displacements = displacements.view(b, c // 2, 2, h, w).flip(-1)[:, list(indices)]
    displacements = torch.stack([-displacements[:, :, 0], displacements[:, :, 1]], dim=2).view(b, c, h, w)
    scale = canvas_width / w
    shift = torch.tensor([(scale - 1) / scale, 0.0], dtype=displacements.dtype, device=displacements.device)
    return heatmaps, displacements + shift.repeat(c // 2).view(1, c, 1, 1)


def root_peaks(root: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) root heatmap -> scores and flat indices of its top peaks above the threshold (``SPR.decode``)."""
    maximum = F.max_pool2d(root[None, None], DECODE_NMS_KERNEL, stride=1, padding=(DECODE_NMS_KERNEL - 1) // 2)
    peaks = (root[None, None] * torch.eq(root[None, None], maximum).float()).flatten()
    scores, index = peaks.topk(min(DECODE_MAX_INSTANCES, peaks.numel()))
    keep = scores > DECODE_THR
    return scores[keep], index[keep]


def joint_scores(heatmaps: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
    """``SPR.get_keypoint_scores``: (K, H, W) joint heatmaps read at (N, K, 2) heatmap-pixel joints -> (N, K);
    normalised by ``size - 1`` and sampled with ``align_corners=False`` and border padding, as mmpose does."""
    k, h, w = heatmaps.shape
    grid = torch.stack((keypoints[..., 0] / (w - 1) * 2 - 1, keypoints[..., 1] / (h - 1) * 2 - 1), dim=-1)
    grid = grid.transpose(0, 1).unsqueeze(1).contiguous()
    sampled = F.grid_sample(heatmaps.unsqueeze(1), grid, padding_mode="border", align_corners=False)
    return sampled.view(k, -1).transpose(0, 1).contiguous()


def decode_spr(heatmaps: torch.Tensor, displacements: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One canvas' (K + 1, H, W) heatmaps and (2 K, H, W) displacements -> keypoints (N, K, 2) in canvas
    pixels, root scores (N,) and joint scores (N, K), root peaks best first (``SPR.decode``)."""
    k2, h, w = displacements.shape
    k = k2 // 2
    ys, xs = torch.meshgrid(torch.arange(h, device=displacements.device), torch.arange(w, device=displacements.device),
                            indexing="ij")
    grid = torch.stack([xs, ys], dim=0).to(displacements)
    posemaps = (grid[None] + displacements.view(k, 2, h, w)).flatten(2)
    scores, index = root_peaks(heatmaps[-1])
    keypoints = posemaps[:, :, index].permute(2, 0, 1).contiguous()
    kp_scores = joint_scores(heatmaps[:k], keypoints)
    return keypoints * float(HEATMAP_STRIDE), scores, kp_scores


def nearby_joints_nms(keypoints: np.ndarray, scores: np.ndarray, dist_thr: float = NMS_DIST_THR,
                      max_dets: int = NMS_MAX_DETS) -> list[int]:
    """mmpose's ``nearby_joints_nms`` (from the DEKR authors' ``lib/core/nms.py``), per-joint scores: two poses
    are close when more than K // 2 joints are nearer than `dist_thr` of the pose's bounding diagonal; from
    the best (mean score) down, each unsuppressed pose keeps the best of its close set (itself included)
    and suppresses that set; at most `max_dets`, the best of those kept. Indices in mmpose's order."""
    if len(keypoints) == 0:
        return []
    mean_scores = np.array([s.mean() for s in scores])
    num, joints, _ = keypoints.shape
    area = keypoints.max(axis=1) - keypoints.min(axis=1)
    area = np.sqrt(np.power(area, 2).sum(axis=1))
    close_thr = np.tile(area.reshape(num, 1, 1), (num, joints)) * dist_thr
    distance = np.sqrt(np.power(keypoints[:, None] - keypoints, 2).sum(axis=3))
    close = (distance < close_thr).sum(2) > joints // 2
    ignored: set[int] = set()
    kept: list[int] = []
    for i in np.argsort(mean_scores)[::-1]:
        if i in ignored:
            continue
        members = close[i].nonzero()[0]
        best = members[np.argmax(mean_scores[members])]
        if best not in ignored:
            kept.append(best)
            ignored = ignored.union(set(members))
    if max_dets > 0 and len(kept) > max_dets:
        kept = [kept[i] for i in np.argsort(mean_scores[kept])[-1:-max_dets - 1:-1]]
    return [int(i) for i in kept]


def decode(model: DEKRNet, heatmaps: torch.Tensor, displacements: torch.Tensor
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One canvas' decoded maps -> keypoints (N, K, 2) in canvas pixels, joint scores (N, K) (root score x
    rescore x joint heatmap) and person scores (N,) (root score x rescore), float32, in mmpose's order."""
    keypoints, roots, kp_scores = decode_spr(heatmaps, displacements)
    if len(keypoints):
        oks = model.head.rescore_net(keypoints, kp_scores)
        roots = roots * torch.nan_to_num(oks, nan=0.0, posinf=float("inf"), neginf=float("-inf"))
    keypoints_np, kp_np, roots_np = (t.float().cpu().numpy() for t in (keypoints, kp_scores, roots))
    out_scores = roots_np[..., None] * kp_np
    keep = nearby_joints_nms(keypoints_np, kp_np)
    return keypoints_np[keep], out_scores[keep], roots_np[keep]


# --------------------------------------------------------------------------------------------
# Public builders and the predictor
# --------------------------------------------------------------------------------------------

def dekr(*, width: int = 32, num_joints: int = 17) -> DEKRNet:
    """The bare network with PyTorch's default (random) initialisation; loads nothing."""
    return DEKRNet(width=width, num_joints=num_joints)


class DEKRPose(BottomupPredictor):
    """Whole frames -> persons, as mmpose's ``inference_bottomup`` with this config. Outputs CPU numpy."""

    label = "DEKR"

    def __init__(self, model: DEKRNet, weights: Weights, device: torch.device, half: bool = False):
        super().__init__(model, weights, device, half=half)
        self.flip_indices = flip_indices(weights.keypoint_names)

    def canvas(self, frame_hw: tuple[int, int]):
        return bottomup_canvas(frame_hw, self.input_size_wh, size_factor=SIZE_FACTOR, mode="expand")

    def _network(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            heatmaps, displacements = self.model(x)
        return heatmaps.float(), displacements.float()

    @torch.inference_mode()
    def raw_outputs(self, inputs: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The head's raw heatmaps (B, J + 1, H/4, W/4) and displacements (B, 2 J, H/4, W/4), CPU numpy."""
        x = inputs if isinstance(inputs, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(inputs))
        heatmaps, displacements = self._network(x.to(self.device, dtype=torch.float32))
        return heatmaps.cpu().numpy(), displacements.cpu().numpy()

    @torch.inference_mode()
    def maps(self, inputs: torch.Tensor | np.ndarray, flip_test: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised canvases (B, 3, H, W) -> what is decoded: heatmaps (B, J + 1, H/4, W/4) and
        displacements (B, 2 J, H/4, W/4), flip-averaged under the flip test."""
        x = inputs if isinstance(inputs, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(inputs))
        x = x.to(self.device, dtype=torch.float32)
        if not flip_test:
            return self._network(x)
        b = x.shape[0]
        heatmaps, displacements = self._network(torch.cat([x, x.flip(-1)]))
        flip_h, flip_d = flip_back(heatmaps[b:], displacements[b:], self.flip_indices, x.shape[-1])
        return (heatmaps[:b] + flip_h) / 2.0, (displacements[:b] + flip_d) / 2.0

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
                heatmaps, displacements = self.maps(x, flip_test=flip_test)
                for row, i in enumerate(chunk):
                    keypoints, kp_scores, scores = decode(self.model, heatmaps[row], displacements[row])
                    keypoints = canvas.to_image(keypoints)
                    results[i] = {"keypoints": keypoints, "keypoint_scores": kp_scores.astype(np.float32),
                                  "scores": scores.astype(np.float32), "bboxes_xyxy": keypoint_extent(keypoints)}
        return results


def create(spec: Weights, state_dict: Mapping[str, torch.Tensor] | None, *, device: torch.device,
           half: bool = False) -> DEKRPose:
    """Build `spec`'s architecture, load `state_dict` strictly (None: random init), eval, place.

    Random weights (plumbing checks; the caller has warned) give no usable root peaks. So, as for the
    other detector-free models, the root heatmap row is made 0.5 plus a trace of the features (peaks spread
    over the frame rather than tied in topk's order along its top row), every pixel's displacements are a
    fixed upright COCO-17 figure about 25 heatmap cells (100 canvas pixels) tall around it, and the rescore
    net answers 1: random weights then give person-sized persons for the stages downstream.
    """
    model = dekr(**dict(spec.arch))
    if state_dict is not None:
        load_strict(model, state_dict, what="the checkpoint")
    else:
        _bias_random_head(model)
    return DEKRPose(place(model, device), spec, torch.device(device), half=half)


# A plumbing run's person: COCO-17 joints as (dx, dy) heatmap cells from the root (between the hips), upright.
_PLUMBING_FIGURE = (
    (0, -12), (1, -13), (-1, -13), (2, -12.5), (-2, -12.5), (4, -8), (-4, -8), (5, -3), (-5, -3),
    (5.5, 1), (-5.5, 1), (2.5, 0), (-2.5, 0), (2.5, 6), (-2.5, 6), (2.5, 12), (-2.5, 12),
)


def _bias_random_head(model: DEKRNet) -> None:
    head = model.head
    final = head.heatmap_conv_layers[2]
    with torch.no_grad():
        if final.weight.device.type == "meta":
            return
        final.weight[-1].mul_(1e-3)
        final.bias[-1] = 0.5
        displacement = head.displacement_conv_layers[3]
        displacement.weight.zero_()
        displacement.bias.copy_(torch.as_tensor(_PLUMBING_FIGURE, dtype=displacement.bias.dtype).reshape(-1))
        head.rescore_net.l3.weight.zero_()
        head.rescore_net.l3.bias.fill_(1.0)


__all__ = [
    "AdaptiveActivationBlock", "DEKRHead", "DEKRNet", "DEKRPose", "DeformConv2d", "HRNetBackbone", "RescoreNet",
    "WEIGHTS", "checkpoint_format", "convert_checkpoint", "create", "decode", "decode_spr", "deform_conv2d", "dekr",
    "flip_back", "joint_scores", "nearby_joints_nms", "root_peaks",
]
