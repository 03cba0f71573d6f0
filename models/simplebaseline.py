"""SimpleBaseline: top-down 2D pose from a ResNet and three deconvolutions (Xiao et al., ECCV 2018).

"Simple Baselines for Human Pose Estimation and Tracking": a ResNet trunk, three 4x4 stride-2
transposed convolutions (256 channels, BN, ReLU) back to 1/4 resolution and a 1x1 convolution to
one heatmap per joint. A faithful re-implementation of mmpose 1.3.2's ``TopdownPoseEstimator``
with ``ResNet`` + ``HeatmapHead`` (config ``td-hm_res50_8xb64-210e_coco-256x192.py``), loadable
from mmpose's published checkpoints with ``strict=True``; see
``shared/golden/simplebaseline_res50_coco_256x192/README.md`` for every convention checked.

Order of this file: building blocks, the model, the weights table, the public builders and the
predictor. What the predictor reproduces:

- crops, normalisation and mapping back: mmpose 1.x's top-down path (models/topdown.py);
- flip test: mirror back, swap left/right, shift right by one column (column 0 kept), average;
- decoding (``MSRAHeatmap``, models/heatmaps.py "mmpose"): argmax (a maximum <= 0 gives
  (-1, -1)), the quarter-pixel step with mmpose's two separate border tests, x 4 to crop pixels;
  scores are the raw heatmap maxima.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from posepipe.models import heatmaps as heatmap_ops
from posepipe.models import mmpose
from posepipe.models.checkpoint import load_strict
from posepipe.models.resnet import ResNet
from posepipe.models.skeletons import COCO17_NAMES, COCO17_SKELETON
from posepipe.models.topdown import TopdownPredictor, place
from posepipe.models.weights import Weights

MMPOSE_MEAN, MMPOSE_STD = mmpose.MMPOSE_MEAN, mmpose.MMPOSE_STD  # PoseDataPreprocessor, RGB, 0..255


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------

class HeatmapHead(nn.Module):
    """mmpose's ``HeatmapHead`` with its default deconvolutions and no extra convolutions.

    ``deconv_layers``: 3 x [ConvTranspose2d(k=4, s=2, p=1, no bias), BN, ReLU]; ``conv_layers`` is an
    identity; ``final_layer`` a 1x1 convolution with bias. No sigmoid.
    """

    def __init__(self, in_channels: int, num_joints: int, deconv_channels: tuple[int, ...] = (256, 256, 256)):
        super().__init__()
        layers: list[nn.Module] = []
        for out_channels in deconv_channels:
            layers += [
                nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, output_padding=0,
                                   bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            in_channels = out_channels
        self.deconv_layers = nn.Sequential(*layers)
        self.conv_layers = nn.Identity()
        self.final_layer = nn.Conv2d(in_channels, num_joints, kernel_size=1)
        self.upsample = 2 ** len(deconv_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layer(self.conv_layers(self.deconv_layers(x)))


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class SimpleBaseline(nn.Module):
    """ResNet-`depth` + deconvolution head: (N, 3, H, W) normalised RGB -> (N, J, H/4, W/4) raw heatmaps."""

    def __init__(self, depth: int = 50, num_joints: int = 17):
        super().__init__()
        self.num_joints = num_joints
        self.backbone = ResNet(depth)
        self.head = HeatmapHead(self.backbone.out_channels, num_joints)
        self.heatmap_stride = 32 // self.head.upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------

_PAPER = "Simple Baselines for Human Pose Estimation and Tracking (Xiao et al., ECCV 2018)"
_ZOO = "https://download.openmmlab.com/mmpose/v1/body_2d_keypoint/topdown_heatmap/coco"

WEIGHTS: dict[str, Weights] = {
    "simplebaseline_res50_coco_256x192": Weights(
        name="simplebaseline_res50_coco_256x192",
        family="simplebaseline",
        stage="pose",
        url=f"{_ZOO}/td-hm_res50_8xb64-210e_coco-256x192-04af38ce_20220923.pth",
        filename="td-hm_res50_8xb64-210e_coco-256x192-04af38ce_20220923.pth",
        source_format="mmpose",
        hash_prefix="04af38ce",
        arch={"depth": 50, "num_joints": 17},
        input_size=(256, 192),
        mean=MMPOSE_MEAN,
        std=MMPOSE_STD,
        color="RGB",
        keypoint_names=COCO17_NAMES,
        skeleton=COCO17_SKELETON,
        license="Apache-2.0 (mmpose model zoo)",
        paper=_PAPER,
        # mmpose's model zoo for this file (resnet_coco.md / .yml), COCO val2017, detector boxes
        # of person AP 56.4, flip test. The paper's own ResNet-50 256x192: AP 70.4.
        metrics={"coco_val2017_AP": 71.8, "coco_val2017_AR": 77.4},
        gmacs=5.43,  # one crop, torch's FlopCounterMode
        notes=(
            "mmpose's training of the paper's ResNet-50 256x192 recipe (config "
            "td-hm_res50_8xb64-210e_coco-256x192.py). Written 2022-09-23, before mmpose 1.0.0: it may hold the "
            "0.x head names keypoint_head.*, which are renamed as mmpose does. Heatmaps are decoded with "
            "mmpose's MSRAHeatmap rules (not the paper's code's get_final_preds)."
        ),
    ),
}


# --------------------------------------------------------------------------------------------
# Checkpoint format
# --------------------------------------------------------------------------------------------

_LABEL = "SimpleBaseline (ResNet + deconvolution head)"
_MARKERS = ("backbone.layer1.0.conv1.weight", "head.deconv_layers.0.weight")


def remap_old_final_layer(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """``HeatmapHead``'s own load hook (heatmap_head.py:319-): a 0.x ``final_layer.N.*`` was a Sequential
    of the extra convolutions and the classifier; with no extra convolutions it is ``final_layer.*``."""
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) == 4 and parts[:2] == ["head", "final_layer"] and parts[2].isdigit():
            key = f"head.final_layer.{parts[3]}"
        out[key] = value
    return out


def checkpoint_format(obj: Any) -> str | None:
    """The supported layout of an unpickled checkpoint, by its keys; None if none."""
    return mmpose.describe_layout(obj, _LABEL, _MARKERS)


def convert_checkpoint(obj: Any) -> "OrderedDict[str, torch.Tensor]":
    """Any supported SimpleBaseline checkpoint -> the state dict of :class:`SimpleBaseline` (mmpose 1.x names)."""
    return remap_old_final_layer(mmpose.convert(obj, _LABEL, _MARKERS))


# --------------------------------------------------------------------------------------------
# Public builders and the predictor
# --------------------------------------------------------------------------------------------

def simplebaseline(*, depth: int = 50, num_joints: int = 17) -> SimpleBaseline:
    """The bare network with PyTorch's default (random) initialisation; loads nothing."""
    return SimpleBaseline(depth=depth, num_joints=num_joints)


class SimpleBaselinePose(TopdownPredictor):
    """Top-down keypoints from heatmaps, decoded as mmpose's MSRAHeatmap does. Outputs CPU numpy."""

    label = "SimpleBaseline"

    def __init__(self, model: SimpleBaseline, weights: Weights, device: torch.device, half: bool = False):
        super().__init__(model, weights, device, half)
        stride = model.heatmap_stride
        self.heatmap_size = (self.input_size[0] // stride, self.input_size[1] // stride)
        # MSRAHeatmap.scale_factor: input size / heatmap size, float32, (x, y).
        factor = np.array(self.input_size_wh) / np.array(self.heatmap_size[::-1])
        self._scale_factor = torch.from_numpy(factor.astype(np.float32)).to(self.device)

    def _merge_flip(self, raw: torch.Tensor, raw_flipped: torch.Tensor) -> torch.Tensor:
        return heatmap_ops.average_flip(raw, raw_flipped, self._flip_index, shift=True)

    def _decode_device(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coords, maxvals = heatmap_ops.decode_heatmaps(outputs, "mmpose")
        return coords * self._scale_factor, maxvals

    def heatmaps(self, inputs: np.ndarray | torch.Tensor, flip_test: bool = False) -> np.ndarray:
        """Network input (N, 3, H, W) -> heatmaps (N, J, H/4, W/4) float32: raw, or flip-averaged."""
        return self.outputs(inputs, flip_test=flip_test)


def create(spec: Weights, state_dict: Mapping[str, torch.Tensor] | None, *, device: torch.device,
           half: bool = False) -> SimpleBaselinePose:
    """Build `spec`'s architecture, load `state_dict` strictly (None: random init), eval, place."""
    model = simplebaseline(**dict(spec.arch))
    if state_dict is not None:
        load_strict(model, state_dict, what="the checkpoint")
    return SimpleBaselinePose(place(model, device), spec, torch.device(device), half=half)


__all__ = [
    "HeatmapHead", "SimpleBaseline", "SimpleBaselinePose", "WEIGHTS", "checkpoint_format", "convert_checkpoint",
    "create", "remap_old_final_layer", "simplebaseline",
]
