"""HRNet as mmpose 1.x runs it top-down: mmpose's boxes, crops and heatmap decoding around the HRNet network.

Sun, Xiao, Liu, Wang (2019), "Deep High-Resolution Representation Learning for Human Pose Estimation",
CVPR 2019. models/hrnet.py reproduces the authors' own inference (200-px box units, their crop and
``get_final_preds``) for the COCO files; mmpose's other HRNet files were trained and are evaluated with
mmpose's top-down path, which differs in every step around the network. This file is that path: mmpose
1.3.2's ``TopdownPoseEstimator`` with ``HRNet`` + ``HeatmapHead(deconv_out_channels=None)`` (a 1x1
convolution on the highest-resolution branch) and the ``MSRAHeatmap`` codec, as its AP-10K config
``td-hm_hrnet-w32_8xb64-210e_ap10k-256x256.py`` sets them up. The network is models/hrnet.py's (mmpose's
HRNet keeps the authors' module names under ``backbone.``); the predictor is SimpleBaseline's, which is
the same mmpose heatmap path (crops, normalisation and mapping back in models/topdown.py; flip test:
mirror back, swap the skeleton's left/right pairs, shift right one column, average; decoding: argmax,
mmpose's quarter-pixel step, x 4). See ``tests/models/golden_hrnet_w32_ap10k_256x256/README.md``.

Order of this file: the model, the weights table, the checkpoint format, the public builders.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping

import torch

from posepipe.models import mmpose
from posepipe.models.checkpoint import CheckpointError, load_strict
from posepipe.models.hrnet import PoseHighResolutionNet
from posepipe.models.mmpose import MMPOSE_MEAN, MMPOSE_STD
from posepipe.models.simplebaseline import SimpleBaselinePose
from posepipe.models.skeletons import AP10K17_NAMES, AP10K17_SKELETON
from posepipe.models.topdown import place
from posepipe.models.weights import Weights


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class HRNetHeatmap(PoseHighResolutionNet):
    """HRNet-W{width} + mmpose's 1x1 heatmap head: (N, 3, H, W) normalised RGB -> (N, J, H/4, W/4) raw
    heatmaps (no sigmoid). The authors' network and names; mmpose stores them under ``backbone.`` and
    the head as ``head.final_layer`` (0.x: ``keypoint_head.final_layer``)."""

    def __init__(self, width: int = 32, num_joints: int = 17):
        super().__init__(width=width, num_joints=num_joints, final_conv_kernel=1)


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------

_PAPER = "Deep High-Resolution Representation Learning for Human Pose Estimation (Sun et al., CVPR 2019)"

WEIGHTS: dict[str, Weights] = {
    "hrnet_w32_ap10k_256x256": Weights(
        name="hrnet_w32_ap10k_256x256",
        family="hrnet_mmpose",
        stage="pose",
        url="https://download.openmmlab.com/mmpose/animal/hrnet/hrnet_w32_ap10k_256x256-18aac840_20211029.pth",
        filename="hrnet_w32_ap10k_256x256-18aac840_20211029.pth",
        source_format="mmpose",
        hash_prefix="18aac840",
        arch={"width": 32, "num_joints": 17},
        input_size=(256, 256),
        mean=MMPOSE_MEAN,
        std=MMPOSE_STD,
        color="RGB",
        keypoint_names=AP10K17_NAMES,
        skeleton=AP10K17_SKELETON,
        license="Apache-2.0 (mmpose model zoo)",
        paper=_PAPER,
        # mmpose's model zoo (configs/animal_2d_keypoint/topdown_heatmap/ap10k/hrnet_ap10k.md and .yml):
        # AP-10K val, ground-truth animal boxes, flip test.
        metrics={"ap10k_val_AP": 72.2, "ap10k_val_AP50": 93.5, "ap10k_val_AP75": 78.9},
        gmacs=10.2,  # one crop, torch's FlopCounterMode
        notes=(
            "Config td-hm_hrnet-w32_8xb64-210e_ap10k-256x256.py: AP-10K's 17 animal keypoints, square 256x256 "
            "crops, mmpose's top-down path (not the HRNet authors' inference of models/hrnet.py). A 2021 mmpose "
            "0.x release (backbone.* + keypoint_head.final_layer.*), renamed as mmpose does. The flip test swaps "
            "AP-10K's L_/R_ pairs."
        ),
    ),
}


# --------------------------------------------------------------------------------------------
# Checkpoint format
# --------------------------------------------------------------------------------------------

_LABEL = "top-down HRNet (HRNet + 1x1 heatmap head)"
_MARKERS = ("backbone.stage4.0.fuse_layers.0.1.0.weight", "head.final_layer.weight")


def _is_topdown_head(obj: Any) -> bool:
    """mmpose's HRNet file whose head is one 1x1 heatmap row per joint (not AE's 2 x 17 heatmap and tag rows)."""
    state = mmpose.state_dict_of(obj)
    if state is None:
        return False
    head = mmpose.remap_mmpose(state).get("head.final_layer.weight")
    return head is not None and head.ndim == 4 and head.shape[2:] == (1, 1) and head.shape[0] != 2 * 17


def checkpoint_format(obj: Any) -> str | None:
    """The supported layout of an unpickled checkpoint, by its keys and its head's shape; None if none."""
    return mmpose.describe_layout(obj, _LABEL, _MARKERS) if _is_topdown_head(obj) else None


def remap_mmpose(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """mmpose 1.x names (after :func:`posepipe.models.mmpose.remap_mmpose`) -> :class:`HRNetHeatmap`'s:
    ``backbone.`` dropped, ``head.final_layer.*`` -> ``final_layer.*``. Pure; anything else passes through
    so that the strict load names it."""
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in state.items():
        if key.startswith("backbone."):
            key = key[len("backbone."):]
        elif key.startswith("head.final_layer."):
            key = key[len("head."):]
        out[key] = value
    return out


def convert_checkpoint(obj: Any) -> "OrderedDict[str, torch.Tensor]":
    """Any supported mmpose top-down HRNet checkpoint -> the state dict of :class:`HRNetHeatmap`."""
    state = mmpose.convert(obj, _LABEL, _MARKERS)
    head = state["head.final_layer.weight"]
    if head.ndim != 4 or head.shape[2:] != (1, 1):
        raise CheckpointError(f"not a top-down HRNet checkpoint: its head.final_layer.weight has shape "
                              f"{tuple(head.shape)}, not (joints, channels, 1, 1)")
    return remap_mmpose(state)


# --------------------------------------------------------------------------------------------
# Public builders and the predictor
# --------------------------------------------------------------------------------------------

def hrnet_heatmap(*, width: int = 32, num_joints: int = 17) -> HRNetHeatmap:
    """The bare network with PyTorch's default (random) initialisation; loads nothing."""
    return HRNetHeatmap(width=width, num_joints=num_joints)


class HRNetHeatmapPose(SimpleBaselinePose):
    """Top-down keypoints from HRNet heatmaps on mmpose's path (MSRAHeatmap decoding). Outputs CPU numpy."""

    label = "HRNet (mmpose)"


def create(spec: Weights, state_dict: Mapping[str, torch.Tensor] | None, *, device: torch.device,
           half: bool = False) -> HRNetHeatmapPose:
    """Build `spec`'s architecture, load `state_dict` strictly (None: random init), eval, place."""
    model = hrnet_heatmap(**dict(spec.arch))
    if state_dict is not None:
        load_strict(model, state_dict, what="the checkpoint")
    return HRNetHeatmapPose(place(model, device), spec, torch.device(device), half=half)


__all__ = [
    "HRNetHeatmap", "HRNetHeatmapPose", "WEIGHTS", "checkpoint_format", "convert_checkpoint", "create",
    "hrnet_heatmap", "remap_mmpose",
]
