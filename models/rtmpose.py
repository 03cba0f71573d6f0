"""RTMPose: real-time top-down 2D pose with a CSPNeXt backbone and SimCC coordinate classification.

Jiang, Lu, Zhang, Ma, Li, Lyu, Wang, Chen (2023), "RTMPose: Real-Time Multi-Person Pose Estimation
based on MMPose", arXiv:2303.07399. A faithful re-implementation of mmpose 1.3.2's
``TopdownPoseEstimator`` with mmdet 3.2's ``CSPNeXt`` backbone and mmpose's ``RTMCCHead`` (a 7x7
convolution, a per-joint MLP, one gated attention unit over the joint tokens, and two linear
classifiers over 2x sub-pixel bins of x and y). Module names reproduce the official state_dict
keys, so mmpose's checkpoints load with ``strict=True``; the same code builds the t/s/m/l sizes.
See ``shared/golden/rtmpose_m_coco_256x192/README.md`` for every convention checked.

Order of this file: building blocks (CSPNeXt, then the head), the model, the weights table, the
public builders and the predictor. What the predictor reproduces:

- crops, normalisation and mapping back: mmpose 1.x's top-down path (models/topdown.py);
- flip test: the mirrored pass's x-vectors are swapped left/right and reversed (bin i takes bin
  W-1-i, no shift), its y-vectors only swapped; ``(a + b) * 0.5``;
- decoding (``SimCCLabel``): argmax of x and of y (first on ties), score = min of the two maxima
  (raw logits, no softmax), a score <= 0 gives (-1, -1); divided by the split ratio 2.0.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from posepipe.models import mmpose
from posepipe.models.checkpoint import load_strict
from posepipe.models.skeletons import (AP10K17_NAMES, AP10K17_SKELETON, COCO17_NAMES, COCO17_SKELETON,
                                       WHOLEBODY133_NAMES, WHOLEBODY133_SKELETON)
from posepipe.models.topdown import TopdownPredictor, place
from posepipe.models.weights import Weights

MMPOSE_MEAN, MMPOSE_STD = mmpose.MMPOSE_MEAN, mmpose.MMPOSE_STD  # PoseDataPreprocessor, RGB, 0..255
SIMCC_SPLIT_RATIO = 2.0


# --------------------------------------------------------------------------------------------
# Building blocks: CSPNeXt (mmdet 3.2 models/backbones/cspnext.py, layers/csp_layer.py)
# --------------------------------------------------------------------------------------------

class ConvModule(nn.Module):
    """mmcv's ConvModule as CSPNeXt configures it: conv (no bias) -> BN (eps 1e-5) -> SiLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class DepthwiseSeparableConvModule(nn.Module):
    """Depthwise k x k ConvModule, then pointwise 1x1 ConvModule."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.depthwise_conv = ConvModule(in_channels, in_channels, kernel_size, groups=in_channels)
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class CSPNeXtBlock(nn.Module):
    """3x3 ConvModule -> depthwise-separable 5x5, plus the identity when `add_identity` (csp_layer.py:141-150)."""

    def __init__(self, channels: int, add_identity: bool, kernel_size: int = 5):
        super().__init__()
        self.conv1 = ConvModule(channels, channels, 3)
        self.conv2 = DepthwiseSeparableConvModule(channels, channels, kernel_size)
        self.add_identity = add_identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class ChannelAttention(nn.Module):
    """``x * hardsigmoid(fc(avgpool(x)))``, fc a 1x1 convolution with bias (se_layer.py:156-162)."""

    def __init__(self, channels: int):
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(channels, channels, 1, 1, 0, bias=True)
        self.act = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.act(self.fc(self.global_avgpool(x)))


class CSPLayer(nn.Module):
    """Cross-stage partial layer: ``final_conv(attention(cat(blocks(main_conv(x)), short_conv(x))))``.

    ``final_conv`` is created (and stored) before ``blocks`` although it runs last, as upstream.
    """

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, add_identity: bool,
                 expand_ratio: float = 0.5, channel_attention: bool = True):
        super().__init__()
        mid = int(out_channels * expand_ratio)
        self.main_conv = ConvModule(in_channels, mid, 1)
        self.short_conv = ConvModule(in_channels, mid, 1)
        self.final_conv = ConvModule(2 * mid, out_channels, 1)
        self.blocks = nn.Sequential(*[CSPNeXtBlock(mid, add_identity) for _ in range(num_blocks)])
        self.attention = ChannelAttention(2 * mid) if channel_attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat((self.blocks(self.main_conv(x)), self.short_conv(x)), dim=1)
        if self.attention is not None:
            x = self.attention(x)
        return self.final_conv(x)


class SPPBottleneck(nn.Module):
    """1x1 to half the channels, max-pools 5/9/13 (stride 1, same size), concat, 1x1 back."""

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: tuple[int, ...] = (5, 9, 13)):
        super().__init__()
        mid = in_channels // 2
        self.conv1 = ConvModule(in_channels, mid, 1)
        self.poolings = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes)
        self.conv2 = ConvModule(mid * (len(kernel_sizes) + 1), out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.poolings], dim=1))


# (in, out, blocks, add_identity, use_spp) of the P5 architecture, before the width/depth factors.
_P5 = ((64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False), (512, 1024, 3, False, True))


class CSPNeXt(nn.Module):
    """mmdet's CSPNeXt (arch P5, expand ratio 0.5, channel attention), returning the last stage only."""

    def __init__(self, deepen_factor: float, widen_factor: float, expand_ratio: float = 0.5):
        super().__init__()
        stem = int(_P5[0][0] * widen_factor)
        self.stem = nn.Sequential(
            ConvModule(3, stem // 2, 3, stride=2),
            ConvModule(stem // 2, stem // 2, 3),
            ConvModule(stem // 2, stem, 3),
        )
        for i, (c_in, c_out, blocks, add_identity, use_spp) in enumerate(_P5, start=1):
            c_in, c_out = int(c_in * widen_factor), int(c_out * widen_factor)
            stage: list[nn.Module] = [ConvModule(c_in, c_out, 3, stride=2)]
            if use_spp:
                stage.append(SPPBottleneck(c_out, c_out))
            stage.append(CSPLayer(c_out, c_out, max(round(blocks * deepen_factor), 1), add_identity, expand_ratio))
            self.add_module(f"stage{i}", nn.Sequential(*stage))
        self.out_channels = int(_P5[-1][1] * widen_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.stage4(self.stage3(self.stage2(self.stage1(x))))


# --------------------------------------------------------------------------------------------
# Building blocks: the RTMCC head (mmpose models/heads/coord_cls_heads/rtmcc_head.py,
# models/utils/rtmcc_block.py, models/utils/transformer.py)
# --------------------------------------------------------------------------------------------

class ScaleNorm(nn.Module):
    """``x / clamp(||x||_2 * dim**-0.5, min=eps) * g``: no mean subtraction, one scalar gain."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.scale = dim ** -0.5
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.norm(x, dim=-1, keepdim=True) * self.scale
        return x / norm.clamp(min=self.eps) * self.g


class Scale(nn.Module):
    """A learned per-channel multiplier."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class RTMCCBlock(nn.Module):
    """The gated attention unit over the joint tokens (self-attention, no relative bias, no rotary
    encoding, dropout 0): ``res_scale * x + o(u * (relu(q k^T / sqrt(s))^2 @ v))`` with
    ``u, v, base = split(SiLU(uv(ScaleNorm(x))))``, ``q, k = base * gamma + beta``."""

    def __init__(self, dims: int, expansion_factor: int = 2, s: int = 128, eps: float = 1e-5):
        super().__init__()
        self.s = s
        self.e = int(dims * expansion_factor)
        self.o = nn.Linear(self.e, dims, bias=False)
        self.uv = nn.Linear(dims, 2 * self.e + self.s, bias=False)
        self.gamma = nn.Parameter(torch.rand((2, self.s)))
        self.beta = nn.Parameter(torch.rand((2, self.s)))
        self.ln = ScaleNorm(dims, eps=eps)
        self.act_fn = nn.SiLU(True)
        self.res_scale = Scale(dims)
        self.sqrt_s = math.sqrt(s)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        uv = self.act_fn(self.uv(self.ln(x)))
        u, v, base = torch.split(uv, [self.e, self.e, self.s], dim=2)
        base = base.unsqueeze(2) * self.gamma[None, None, :] + self.beta
        q, k = torch.unbind(base, dim=2)
        kernel = torch.square(F.relu(torch.bmm(q, k.permute(0, 2, 1)) / self.sqrt_s))
        return self.o(u * torch.bmm(kernel, v))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_scale(x) + self._attention(x)


class RTMCCHead(nn.Module):
    """Conv k x k -> flatten each joint's map -> ScaleNorm + Linear -> RTMCCBlock -> x/y bin logits."""

    def __init__(self, in_channels: int, num_joints: int, input_size_wh: tuple[int, int],
                 featuremap_size_wh: tuple[int, int], *, final_layer_kernel_size: int = 7, hidden_dims: int = 256,
                 s: int = 128, expansion_factor: int = 2, simcc_split_ratio: float = SIMCC_SPLIT_RATIO):
        super().__init__()
        self.final_layer = nn.Conv2d(in_channels, num_joints, kernel_size=final_layer_kernel_size, stride=1,
                                     padding=final_layer_kernel_size // 2)
        flatten_dims = featuremap_size_wh[0] * featuremap_size_wh[1]
        self.mlp = nn.Sequential(ScaleNorm(flatten_dims), nn.Linear(flatten_dims, hidden_dims, bias=False))
        self.gau = RTMCCBlock(hidden_dims, expansion_factor=expansion_factor, s=s)
        self.cls_x = nn.Linear(hidden_dims, int(input_size_wh[0] * simcc_split_ratio), bias=False)
        self.cls_y = nn.Linear(hidden_dims, int(input_size_wh[1] * simcc_split_ratio), bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.gau(self.mlp(torch.flatten(self.final_layer(x), 2)))
        return self.cls_x(feats), self.cls_y(feats)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class RTMPose(nn.Module):
    """CSPNeXt + RTMCC head: (N, 3, H, W) normalised RGB -> (N, J, 2W) x-logits and (N, J, 2H) y-logits."""

    def __init__(self, *, deepen_factor: float, widen_factor: float, num_joints: int = 17,
                 input_size: tuple[int, int] = (256, 192), simcc_split_ratio: float = SIMCC_SPLIT_RATIO):
        super().__init__()
        height, width = input_size
        if height % 32 or width % 32:
            raise ValueError(f"input_size must be multiples of 32, got {input_size}")
        self.num_joints = num_joints
        self.simcc_split_ratio = simcc_split_ratio
        self.backbone = CSPNeXt(deepen_factor, widen_factor)
        self.head = RTMCCHead(self.backbone.out_channels, num_joints, (width, height), (width // 32, height // 32),
                              simcc_split_ratio=simcc_split_ratio)
        self.bins_x = self.head.cls_x.out_features

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.backbone(x))


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------

_PAPER = "RTMPose: Real-Time Multi-Person Pose Estimation based on MMPose (Jiang et al., arXiv:2303.07399, 2023)"
_ZOO = "https://download.openmmlab.com/mmpose/v1/projects/rtmposev1"


def _rtmpose(size: str, file_size: str, file_id: str, deepen: float, widen: float, ap: float, ar: float,
             gmacs: float) -> Weights:
    name = f"rtmpose_{size}_coco_256x192"
    filename = f"rtmpose-{file_size}_simcc-coco_pt-aic-coco_420e-256x192-{file_id}_20230127.pth"
    return Weights(
        name=name,
        family="rtmpose",
        stage="pose",
        url=f"{_ZOO}/{filename}",
        filename=filename,
        source_format="mmpose",
        hash_prefix=file_id,
        arch={"deepen_factor": deepen, "widen_factor": widen, "num_joints": 17},
        input_size=(256, 192),
        mean=MMPOSE_MEAN,
        std=MMPOSE_STD,
        color="RGB",
        keypoint_names=COCO17_NAMES,
        skeleton=COCO17_SKELETON,
        license="Apache-2.0 (mmpose model zoo)",
        paper=_PAPER,
        # mmpose's model zoo for the file at `url` (configs/body_2d_keypoint/rtmpose/coco/rtmpose_coco.md
        # and .yml): COCO val2017, detector boxes of person AP 56.4, flip test.
        metrics={"coco_val2017_AP": ap, "coco_val2017_AR": ar},
        gmacs=gmacs,
        notes=(
            f"Config rtmpose-{size}_8xb256-420e_coco-256x192.py (CSPNeXt deepen {deepen}, widen {widen}, pretrained "
            "on AIC+COCO, fine-tuned on COCO). mmpose's sibling files trained on AIC+COCO score higher "
            "(rtmpose-m: 75.8 AP) and load with the same code. The file may still hold EMA/optimizer entries "
            "next to 'state_dict' (published before publish_model.py kept only meta and state_dict); only "
            "'state_dict' is read."
        ),
    )


WEIGHTS: dict[str, Weights] = {
    spec.name: spec
    for spec in (
        # gmacs: one crop, torch's FlopCounterMode (mmpose's table: 0.36 / 0.68 / 1.93 / 4.16 GFLOPs)
        _rtmpose("t", "tiny", "e613ba3f", 0.167, 0.375, 68.2, 73.6, 0.355),
        _rtmpose("s", "s", "8edcf0d7", 0.33, 0.5, 71.6, 76.8, 0.676),
        _rtmpose("m", "m", "d8dd5ca4", 0.67, 0.75, 74.6, 79.5, 1.92),
        _rtmpose("l", "l", "1352a4d2", 1.0, 1.0, 75.8, 80.6, 4.14),
    )
}

# Beyond COCO-17: the same network with another head size (and input), mmpose's model zoo files.
WEIGHTS["rtmpose_m_coco_wholebody_256x192"] = Weights(
    name="rtmpose_m_coco_wholebody_256x192",
    family="rtmpose",
    stage="pose",
    url=f"{_ZOO}/rtmpose-m_simcc-coco-wholebody_pt-aic-coco_270e-256x192-cd5e845c_20230123.pth",
    filename="rtmpose-m_simcc-coco-wholebody_pt-aic-coco_270e-256x192-cd5e845c_20230123.pth",
    source_format="mmpose",
    hash_prefix="cd5e845c",
    arch={"deepen_factor": 0.67, "widen_factor": 0.75, "num_joints": 133},
    input_size=(256, 192),
    mean=MMPOSE_MEAN,
    std=MMPOSE_STD,
    color="RGB",
    keypoint_names=WHOLEBODY133_NAMES,
    skeleton=WHOLEBODY133_SKELETON,
    license="Apache-2.0 (mmpose model zoo)",
    paper=_PAPER,
    # mmpose's model zoo for the file at `url` (configs/wholebody_2d_keypoint/rtmpose/coco-wholebody/
    # rtmpose_coco-wholebody.md and .yml): COCO-WholeBody v1.0 val, detector boxes of person AP 56.4, flip test.
    metrics={"coco_wholebody_val_whole_AP": 58.2, "coco_wholebody_val_whole_AR": 67.4,
             "coco_wholebody_val_body_AP": 67.3, "coco_wholebody_val_foot_AP": 61.5,
             "coco_wholebody_val_face_AP": 81.3, "coco_wholebody_val_hand_AP": 47.5},
    gmacs=2.22,  # one crop, torch's FlopCounterMode
    notes=(
        "Config rtmpose-m_8xb64-270e_coco-wholebody-256x192.py: COCO-WholeBody's 133 keypoints (body 0-16 = "
        "COCO-17 in the same order, feet 17-22, face 23-90, left hand 91-111, right hand 112-132). The flip "
        "test swaps mmpose's pairs for this skeleton (the face's mirrored landmarks included). A 2023-01 "
        "release: the file may still hold EMA entries next to 'state_dict'; only 'state_dict' is read."
    ),
)
WEIGHTS["rtmpose_m_ap10k_256x256"] = Weights(
    name="rtmpose_m_ap10k_256x256",
    family="rtmpose",
    stage="pose",
    url=f"{_ZOO}/rtmpose-m_simcc-ap10k_pt-aic-coco_210e-256x256-7a041aa1_20230206.pth",
    filename="rtmpose-m_simcc-ap10k_pt-aic-coco_210e-256x256-7a041aa1_20230206.pth",
    source_format="mmpose",
    hash_prefix="7a041aa1",
    arch={"deepen_factor": 0.67, "widen_factor": 0.75, "num_joints": 17},
    input_size=(256, 256),
    mean=MMPOSE_MEAN,
    std=MMPOSE_STD,
    color="RGB",
    keypoint_names=AP10K17_NAMES,
    skeleton=AP10K17_SKELETON,
    license="Apache-2.0 (mmpose model zoo)",
    paper=_PAPER,
    # mmpose's model zoo (configs/animal_2d_keypoint/rtmpose/ap10k/rtmpose_ap10k.md and .yml): AP-10K val,
    # ground-truth animal boxes, flip test.
    metrics={"ap10k_val_AP": 72.2, "ap10k_val_AP50": 93.9, "ap10k_val_AP75": 78.8},
    gmacs=2.55,  # one crop, torch's FlopCounterMode
    notes=(
        "Config rtmpose-m_8xb64-210e_ap10k-256x256.py: AP-10K's 17 animal keypoints (not COCO-17: eyes, nose, "
        "neck, tail root, four legs), square 256x256 crops. The flip test swaps AP-10K's L_/R_ pairs."
    ),
)


# --------------------------------------------------------------------------------------------
# Checkpoint format
# --------------------------------------------------------------------------------------------

_LABEL = "RTMPose (CSPNeXt + RTMCC head)"
_MARKERS = ("backbone.stem.0.conv.weight", "head.gau.uv.weight", "head.cls_x.weight")


def checkpoint_format(obj: Any) -> str | None:
    """The supported layout of an unpickled checkpoint, by its keys; None if none."""
    return mmpose.describe_layout(obj, _LABEL, _MARKERS)


def convert_checkpoint(obj: Any) -> "OrderedDict[str, torch.Tensor]":
    """Any supported RTMPose checkpoint -> the state dict of :class:`RTMPose` (mmpose 1.x names)."""
    return mmpose.convert(obj, _LABEL, _MARKERS)


# --------------------------------------------------------------------------------------------
# Public builders and the predictor
# --------------------------------------------------------------------------------------------

def rtmpose(*, deepen_factor: float, widen_factor: float, num_joints: int = 17,
            input_size: tuple[int, int] = (256, 192)) -> RTMPose:
    """The bare network with PyTorch's default (random) initialisation; loads nothing."""
    return RTMPose(deepen_factor=deepen_factor, widen_factor=widen_factor, num_joints=num_joints, input_size=input_size)


class RTMPosePredictor(TopdownPredictor):
    """Top-down keypoints from SimCC x/y logits. The outputs of a pass are the x and y logits
    concatenated on the last axis, (N, J, 2W + 2H); :meth:`simcc` splits them."""

    label = "RTMPose"

    def __init__(self, model: RTMPose, weights: Weights, device: torch.device, half: bool = False):
        super().__init__(model, weights, device, half)
        self.bins_x = model.bins_x
        self.split_ratio = model.simcc_split_ratio

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.model(x), dim=-1)

    def _merge_flip(self, raw: torch.Tensor, raw_flipped: torch.Tensor) -> torch.Tensor:
        # flip_vectors (tta.py:82-88): x[:, flip_indices].flip(-1); y[:, flip_indices].
        swapped = raw_flipped.index_select(1, self._flip_index)
        fx = swapped[..., : self.bins_x].flip(-1)
        fy = swapped[..., self.bins_x:]
        return (raw + torch.cat([fx, fy], dim=-1)) * 0.5

    def _decode_device(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # get_simcc_maximum (post_processing.py:90-99), then keypoints /= simcc_split_ratio.
        simcc_x, simcc_y = outputs[..., : self.bins_x], outputs[..., self.bins_x:]
        x_locs, y_locs = simcc_x.argmax(dim=-1), simcc_y.argmax(dim=-1)
        max_x = torch.gather(simcc_x, -1, x_locs.unsqueeze(-1)).squeeze(-1)
        max_y = torch.gather(simcc_y, -1, y_locs.unsqueeze(-1)).squeeze(-1)
        scores = torch.where(max_x > max_y, max_y, max_x)
        locs = torch.stack([x_locs, y_locs], dim=-1).float()
        locs = torch.where((scores <= 0.0).unsqueeze(-1), torch.full_like(locs, -1.0), locs)
        return locs / self.split_ratio, scores

    def simcc(self, inputs: np.ndarray | torch.Tensor, flip_test: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Network input (N, 3, H, W) -> (x-logits (N, J, 2W), y-logits (N, J, 2H)): raw, or flip-averaged."""
        out = self.outputs(inputs, flip_test=flip_test)
        return out[..., : self.bins_x], out[..., self.bins_x:]


def create(spec: Weights, state_dict: Mapping[str, torch.Tensor] | None, *, device: torch.device,
           half: bool = False) -> RTMPosePredictor:
    """Build `spec`'s architecture, load `state_dict` strictly (None: random init), eval, place."""
    model = rtmpose(**dict(spec.arch), input_size=tuple(spec.input_size))
    if state_dict is not None:
        load_strict(model, state_dict, what="the checkpoint")
    return RTMPosePredictor(place(model, device), spec, torch.device(device), half=half)


__all__ = [
    "CSPLayer", "CSPNeXt", "CSPNeXtBlock", "ChannelAttention", "ConvModule", "DepthwiseSeparableConvModule",
    "RTMCCBlock", "RTMCCHead", "RTMPose", "RTMPosePredictor", "SPPBottleneck", "Scale", "ScaleNorm", "WEIGHTS",
    "checkpoint_format", "convert_checkpoint", "create", "rtmpose",
]
