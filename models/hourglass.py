"""Stacked Hourglass: top-down 2D pose from repeated bottom-up, top-down processing (Newell et al., ECCV 2016).

"Stacked Hourglass Networks for Human Pose Estimation": a stem down to 1/4 resolution, then an
hourglass that halves the resolution five times and comes back up by nearest-neighbour upsampling,
adding at every level a skip branch at that level's resolution; a 1x1 convolution gives one
heatmap per joint. A faithful re-implementation of mmpose 1.3.2's ``TopdownPoseEstimator`` with
``HourglassNet(num_stacks=1)`` ("Hourglass-52") + ``CPMHead`` (config
``td-hm_hourglass52_8xb32-210e_coco-256x256.py``), loadable from mmpose's 2020 checkpoint with
``strict=True``; see ``shared/golden/hourglass52_coco_256x256/README.md`` for every convention checked.

Order of this file: building blocks, the model, the weights table, the public builders and the
predictor. What the predictor reproduces:

- crops, normalisation and mapping back: mmpose 1.x's top-down path (models/topdown.py), with a
  **square** 256x256 crop (the box is fixed to 1:1, not 3:4);
- flip test: mirror back, swap left/right, shift right by one column (column 0 kept), average;
- decoding (``MSRAHeatmap``, models/heatmaps.py "mmpose"): argmax (a maximum <= 0 gives (-1, -1)),
  the quarter-pixel step with mmpose's two separate border tests, x 4 to crop pixels; scores are
  the raw heatmap maxima. The same rules as SimpleBaseline, whose predictor this one is.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from posepipe.models import mmpose
from posepipe.models.checkpoint import load_strict
from posepipe.models.resnet import BasicBlock
from posepipe.models.simplebaseline import MMPOSE_MEAN, MMPOSE_STD, SimpleBaselinePose
from posepipe.models.skeletons import COCO17_NAMES, COCO17_SKELETON
from posepipe.models.topdown import place
from posepipe.models.weights import Weights

# HourglassNet's defaults, which the Hourglass-52 config keeps: channels and residual blocks per
# level, outermost first (the last entry is the innermost, 2x2 level at 256 px).
STAGE_CHANNELS = (256, 256, 384, 384, 384, 512)
STAGE_BLOCKS = (2, 2, 2, 2, 2, 4)


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------

class ConvBNReLU(nn.Module):
    """mmcv's ConvModule with BN: conv (no bias: a norm follows) -> BN (eps 1e-5) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """The shortcut's 1x1 convolution (with the stride, no bias) and BN."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_channels))


def res_layer(num_blocks: int, in_channels: int, out_channels: int, *, stride: int = 1,
              change_last: bool = False) -> nn.Sequential:
    """mmpose's ``ResLayer`` of ``BasicBlock``s.

    The block that changes the width (and carries the stride, with a projected shortcut) comes first,
    as in ResNet, or last with `change_last` (``downsample_first=False``, what the hourglass' way back
    up uses). As in mmpose, one block is built even for ``num_blocks=0``.
    """
    projection = _projection(in_channels, out_channels, stride) if stride != 1 or in_channels != out_channels else None
    if not change_last:
        blocks = [BasicBlock(in_channels, out_channels, stride, projection)]
        blocks += [BasicBlock(out_channels, out_channels) for _ in range(1, num_blocks)]
    else:
        blocks = [BasicBlock(in_channels, in_channels) for _ in range(num_blocks - 1)]
        blocks.append(BasicBlock(in_channels, out_channels, stride, projection))
    return nn.Sequential(*blocks)


class HourglassModule(nn.Module):
    """One level of the hourglass, recursively: ``up1(x) + upsample(low3(low2(low1(x))))``.

    ``low1`` halves the resolution (stride 2 in its first block) and widens to the next level's
    channels; ``low2`` is the next level (a plain residual layer at the innermost one); ``low3`` comes
    back to this level's width in its last block; nearest-neighbour x2 upsampling; no ReLU after the sum.
    """

    def __init__(self, depth: int, stage_channels: Sequence[int], stage_blocks: Sequence[int]):
        super().__init__()
        here, below = stage_channels[0], stage_channels[1]
        blocks, blocks_below = stage_blocks[0], stage_blocks[1]
        self.up1 = res_layer(blocks, here, here)
        self.low1 = res_layer(blocks, here, below, stride=2)
        if depth > 1:
            self.low2: nn.Module = HourglassModule(depth - 1, stage_channels[1:], stage_blocks[1:])
        else:
            self.low2 = res_layer(blocks_below, below, below)
        self.low3 = res_layer(blocks, below, here, change_last=True)
        self.up2 = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up1(x) + self.up2(self.low3(self.low2(self.low1(x))))


class HourglassNet(nn.Module):
    """mmpose's ``HourglassNet`` with one stack: (N, 3, H, W) -> (N, feat_channel, H/4, W/4).

    ``inters`` (one residual block, since mmpose builds one even for ``num_stacks - 1 = 0``) joins
    stacks in a stacked network and is never run with one stack; it is kept because the checkpoint
    holds it. ``conv1x1s`` and ``remap_convs`` are empty for one stack, as in mmpose.
    """

    def __init__(self, downsample_times: int = 5, stage_channels: Sequence[int] = STAGE_CHANNELS,
                 stage_blocks: Sequence[int] = STAGE_BLOCKS, feat_channel: int = 256):
        super().__init__()
        if len(stage_channels) != len(stage_blocks) or len(stage_channels) <= downsample_times:
            raise ValueError(f"need more than {downsample_times} stage channels and as many blocks, got "
                             f"{len(stage_channels)} channels and {len(stage_blocks)} blocks")
        width = stage_channels[0]
        self.stem = nn.Sequential(ConvBNReLU(3, 128, 7, stride=2), res_layer(1, 128, width, stride=2))
        self.hourglass_modules = nn.ModuleList([HourglassModule(downsample_times, stage_channels, stage_blocks)])
        self.inters = res_layer(0, width, width)
        self.out_convs = nn.ModuleList([ConvBNReLU(width, feat_channel, 3)])
        self.out_channels = feat_channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_convs[0](self.hourglass_modules[0](self.stem(x)))


class CPMHead(nn.Module):
    """mmpose's ``CPMHead`` with one stage and no deconvolution: a 1x1 convolution with bias, no sigmoid."""

    def __init__(self, in_channels: int, num_joints: int):
        super().__init__()
        self.multi_final_layers = nn.ModuleList([nn.Conv2d(in_channels, num_joints, kernel_size=1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.multi_final_layers[0](x)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class Hourglass(nn.Module):
    """HourglassNet (one stack) + CPMHead: (N, 3, H, W) normalised RGB -> (N, J, H/4, W/4) raw heatmaps."""

    def __init__(self, num_joints: int = 17, downsample_times: int = 5, feat_channel: int = 256):
        super().__init__()
        self.num_joints = num_joints
        self.backbone = HourglassNet(downsample_times=downsample_times, feat_channel=feat_channel)
        self.head = CPMHead(self.backbone.out_channels, num_joints)
        self.heatmap_stride = 4
        self.levels = downsample_times

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Each level adds its skip branch to the upsampled level below: sides that do not halve
        # evenly down to the innermost level cannot be added back (mmpose fails on them too).
        unit = 4 * 2 ** self.levels
        if x.shape[-2] % unit or x.shape[-1] % unit:
            raise ValueError(f"Hourglass input sides must be multiples of {unit} (the stem's /4, then "
                             f"{self.levels} halvings), got {x.shape[-2]}x{x.shape[-1]}")
        return self.head(self.backbone(x))


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------

_PAPER = "Stacked Hourglass Networks for Human Pose Estimation (Newell, Yang and Deng, ECCV 2016)"

WEIGHTS: dict[str, Weights] = {
    "hourglass52_coco_256x256": Weights(
        name="hourglass52_coco_256x256",
        family="hourglass",
        stage="pose",
        url="https://download.openmmlab.com/mmpose/top_down/hourglass/hourglass52_coco_256x256-4ec713ba_20200709.pth",
        filename="hourglass52_coco_256x256-4ec713ba_20200709.pth",
        source_format="mmpose",
        hash_prefix="4ec713ba",
        arch={"num_joints": 17},
        input_size=(256, 256),
        mean=MMPOSE_MEAN,
        std=MMPOSE_STD,
        color="RGB",
        keypoint_names=COCO17_NAMES,
        skeleton=COCO17_SKELETON,
        license="Apache-2.0 (mmpose model zoo)",
        paper=_PAPER,
        # mmpose's model zoo for this file (hourglass_coco.md / .yml), COCO val2017, detector boxes of
        # person AP 56.4, flip test.
        metrics={"coco_val2017_AP": 72.6, "coco_val2017_AR": 78.0},
        gmacs=28.6,  # one crop, torch's FlopCounterMode
        notes=(
            "One-stack hourglass ('Hourglass-52', mmpose's HourglassNet(num_stacks=1)) on square 256x256 crops "
            "(the box is padded to 1:1, not 3:4). A 2020 mmpose 0.x release: the head is stored as "
            "keypoint_head.multi_final_layers.*, renamed as mmpose does. Heatmaps are decoded with mmpose's "
            "MSRAHeatmap rules."
        ),
    ),
}


# --------------------------------------------------------------------------------------------
# Checkpoint format
# --------------------------------------------------------------------------------------------

_LABEL = "Hourglass (HourglassNet + CPM head)"
_MARKERS = ("backbone.hourglass_modules.0.up1.0.conv1.weight", "head.multi_final_layers.0.weight")


def checkpoint_format(obj: Any) -> str | None:
    """The supported layout of an unpickled checkpoint, by its keys; None if none."""
    return mmpose.describe_layout(obj, _LABEL, _MARKERS)


def convert_checkpoint(obj: Any) -> "OrderedDict[str, torch.Tensor]":
    """Any supported Hourglass checkpoint -> the state dict of :class:`Hourglass` (mmpose 1.x names)."""
    return mmpose.convert(obj, _LABEL, _MARKERS)


# --------------------------------------------------------------------------------------------
# Public builders and the predictor
# --------------------------------------------------------------------------------------------

def hourglass(*, num_joints: int = 17) -> Hourglass:
    """The bare network with PyTorch's default (random) initialisation; loads nothing."""
    return Hourglass(num_joints=num_joints)


class HourglassPose(SimpleBaselinePose):
    """Top-down keypoints from heatmaps, decoded as mmpose's MSRAHeatmap does (SimpleBaseline's
    predictor: the same flip test and decoding). Outputs CPU numpy."""

    label = "Hourglass"


def create(spec: Weights, state_dict: Mapping[str, torch.Tensor] | None, *, device: torch.device,
           half: bool = False) -> HourglassPose:
    """Build `spec`'s architecture, load `state_dict` strictly (None: random init), eval, place."""
    model = hourglass(**dict(spec.arch))
    if state_dict is not None:
        load_strict(model, state_dict, what="the checkpoint")
    return HourglassPose(place(model, device), spec, torch.device(device), half=half)


__all__ = [
    "CPMHead", "ConvBNReLU", "Hourglass", "HourglassModule", "HourglassNet", "HourglassPose", "STAGE_BLOCKS",
    "STAGE_CHANNELS", "WEIGHTS", "checkpoint_format", "convert_checkpoint", "create", "hourglass", "res_layer",
]
