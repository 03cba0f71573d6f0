"""detectron2's ResNet + FPN backbone (``build_resnet_fpn_backbone``), as its R-CNN model zoo builds it.

Lin, Dollar, Girshick, He, Hariharan, Belongie, "Feature Pyramid Networks for Object Detection", CVPR
2017, in detectron2's form (``detectron2/modeling/backbone/resnet.py`` and ``fpn.py``). It is not
models/resnet.py's ResNet, on three counts that change the numbers:

- the stride of a bottleneck's first block sits on its *1x1* convolution (``RESNETS.STRIDE_IN_1X1 =
  True``, the MSRA/Caffe2 layout every detectron2 R-50 model was trained from), not on the 3x3;
- every convolution carries its normalisation as a child (``conv1.norm``), a ``FrozenBatchNorm2d``
  whose four statistics are buffers (``num_batches_tracked`` does not exist), eps 1e-5;
- the stem is ``stem.conv1`` (7x7/2, norm, ReLU) then a 3x3/2 max-pool with padding 1, and the stages
  are ``res2`` .. ``res5`` with ``shortcut`` (not ``downsample``) projections.

The FPN has 1x1 lateral and 3x3 output convolutions with biases (``FPN.NORM = ""``), a nearest
x2 top-down path summed with the laterals (``FUSE_TYPE = "sum"``). Module names reproduce the
checkpoint keys under ``backbone.`` (``bottom_up.res2.0.conv1.norm.running_var``, ``fpn_lateral2.weight``).
``p6`` (``LastLevelMaxPool``, a 1x1/2 max-pool of p5 with no weights) only feeds the RPN, which a
model run on given boxes does not have: it is not computed.

Order of this file: building blocks, the ResNet, the FPN.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-5                      # FrozenBatchNorm2d's default, what detectron2 builds with
RESNET_STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
FPN_STRIDES = (4, 8, 16, 32)       # p2 .. p5
SIZE_DIVISIBILITY = 32             # the FPN's coarsest stride: images are padded to a multiple of it


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


class FrozenBatchNorm2d(nn.Module):
    """detectron2's FrozenBatchNorm2d: BatchNorm with fixed statistics and affine, all four buffers.

    In inference (no grad) detectron2 runs ``F.batch_norm(training=False)``; so does this.
    """

    def __init__(self, num_features: int, eps: float = BN_EPS):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps)


class Conv2d(nn.Conv2d):
    """detectron2's ``layers.Conv2d``: a convolution, then its optional ``norm`` child, then an activation.

    The norm is a child module (so its keys are ``<conv>.norm.*``) and the activation a plain function
    (so it has no index of its own in an ``nn.Sequential``: detectron2's DensePose decoder relies on it).
    """

    def __init__(self, *args, norm: nn.Module | None = None, activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


class BottleneckBlock(nn.Module):
    """1x1 (carries the stride: STRIDE_IN_1X1) -> 3x3 -> 1x1, each with a frozen norm; ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, *, bottleneck_channels: int, stride: int = 1,
                 stride_in_1x1: bool = True):
        super().__init__()
        self.shortcut = (Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False,
                                norm=FrozenBatchNorm2d(out_channels)) if in_channels != out_channels else None)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(in_channels, bottleneck_channels, kernel_size=1, stride=stride_1x1, bias=False,
                            norm=FrozenBatchNorm2d(bottleneck_channels))
        self.conv2 = Conv2d(bottleneck_channels, bottleneck_channels, kernel_size=3, stride=stride_3x3, padding=1,
                            bias=False, norm=FrozenBatchNorm2d(bottleneck_channels))
        self.conv3 = Conv2d(bottleneck_channels, out_channels, kernel_size=1, bias=False,
                            norm=FrozenBatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        out = out + (x if self.shortcut is None else self.shortcut(x))
        return F.relu(out)


class BasicStem(nn.Module):
    """7x7/2 convolution with its frozen norm, ReLU, 3x3/2 max-pool (padding 1): stride 4."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64):
        super().__init__()
        self.conv1 = Conv2d(in_channels, out_channels, kernel_size=7, stride=2, padding=3, bias=False,
                            norm=FrozenBatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.conv1(x)), kernel_size=3, stride=2, padding=1)


# --------------------------------------------------------------------------------------------
# The ResNet
# --------------------------------------------------------------------------------------------


class ResNet(nn.Module):
    """``build_resnet_backbone`` with the model zoo's settings (NORM FrozenBN, NUM_GROUPS 1,
    WIDTH_PER_GROUP 64, STRIDE_IN_1X1, RES5_DILATION 1, no deformable stages); returns res2..res5."""

    def __init__(self, depth: int = 50, *, stride_in_1x1: bool = True):
        super().__init__()
        if depth not in RESNET_STAGES:
            raise ValueError(f"detectron2 ResNet depth must be one of {sorted(RESNET_STAGES)}, got {depth}")
        self.stem = BasicStem(3, 64)
        in_channels, out_channels, bottleneck = 64, 256, 64
        self.stage_names = []
        for index, blocks in enumerate(RESNET_STAGES[depth]):
            first_stride = 1 if index == 0 else 2
            stage = nn.Sequential(*[
                BottleneckBlock(in_channels if b == 0 else out_channels, out_channels, bottleneck_channels=bottleneck,
                                stride=first_stride if b == 0 else 1, stride_in_1x1=stride_in_1x1)
                for b in range(blocks)])
            name = f"res{index + 2}"
            self.add_module(name, stage)
            self.stage_names.append(name)
            in_channels, out_channels, bottleneck = out_channels, out_channels * 2, bottleneck * 2
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outputs = []
        for name in self.stage_names:
            x = getattr(self, name)(x)
            outputs.append(x)
        return outputs


# --------------------------------------------------------------------------------------------
# The FPN
# --------------------------------------------------------------------------------------------


class FPN(nn.Module):
    """ResNet res2..res5 -> p2..p5, 256 channels each (p6 left out: it feeds only the RPN).

    Input (N, 3, H, W), H and W multiples of 32 (``SIZE_DIVISIBILITY``), normalised BGR.
    """

    def __init__(self, depth: int = 50, out_channels: int = 256):
        super().__init__()
        in_channels = (256, 512, 1024, 2048)
        # detectron2 registers each level's lateral then output conv, finest level first (state_dict order).
        for level, channels in zip(range(2, 6), in_channels):
            self.add_module(f"fpn_lateral{level}", nn.Conv2d(channels, out_channels, kernel_size=1))
            self.add_module(f"fpn_output{level}", nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1))
        self.bottom_up = ResNet(depth)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-2] % SIZE_DIVISIBILITY or x.shape[-1] % SIZE_DIVISIBILITY:
            raise ValueError(f"the FPN input must be padded to multiples of {SIZE_DIVISIBILITY}, got {tuple(x.shape)}")
        res = self.bottom_up(x)
        prev = self.fpn_lateral5(res[3])
        results = [self.fpn_output5(prev)]
        for level in (4, 3, 2):
            top_down = F.interpolate(prev, scale_factor=2.0, mode="nearest")
            prev = getattr(self, f"fpn_lateral{level}")(res[level - 2]) + top_down
            results.insert(0, getattr(self, f"fpn_output{level}")(prev))
        return results


__all__ = ["BN_EPS", "FPN", "FPN_STRIDES", "SIZE_DIVISIBILITY", "BasicStem", "BottleneckBlock", "Conv2d",
           "FrozenBatchNorm2d", "ResNet"]
