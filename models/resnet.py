"""ResNet: the residual blocks and backbone that HRNet, SimpleBaseline, RLE and HMR share.

He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, in the form
every pose codebase uses (torchvision's "v1.5", mmpose's ``style='pytorch'``): the stride of a
bottleneck sits on its 3x3 convolution. Module names reproduce the state_dict keys of torchvision,
mmpose's ``ResNet`` (``conv1``, ``bn1``, ``layer1..4``, ``downsample.0/1``), the HRNet authors'
blocks and SPIN's HMR, so each of those checkpoints loads with ``strict=True``.

Order of this file: building blocks, the backbone, the public builder.
"""
from __future__ import annotations

import torch
from torch import nn

# BatchNorm momentum only matters in training; 0.1 is PyTorch's default and the official codes'.
BN_MOMENTUM = 0.1


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------

def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and the shortcut; ReLU after the sum."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (carries the stride) -> 1x1 with 4x the channels, plus the shortcut; ReLU after the sum."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


Block = type[BasicBlock] | type[Bottleneck]


def make_res_layer(block: Block, inplanes: int, planes: int, num_blocks: int, stride: int = 1) -> nn.Sequential:
    """`num_blocks` residual blocks; the first projects the shortcut (1x1 conv with the stride + BN)
    when the stride or the width changes."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, out_channels, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
        )
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(out_channels, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------
# The backbone
# --------------------------------------------------------------------------------------------

ARCH_SETTINGS: dict[int, tuple[Block, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(nn.Module):
    """The ResNet trunk without its classifier: 7x7/2 conv, BN, ReLU, 3x3/2 max-pool, four stages.

    Input (N, 3, H, W) normalised RGB; output the last stage's map, (N, 2048, H/32, W/32) for
    depth >= 50 (mmpose's ``ResNet(depth, out_indices=(3,))``).
    """

    def __init__(self, depth: int = 50):
        super().__init__()
        if depth not in ARCH_SETTINGS:
            raise ValueError(f"ResNet depth must be one of {sorted(ARCH_SETTINGS)}, got {depth}")
        block, stages = ARCH_SETTINGS[depth]
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), stages), start=1):
            setattr(self, f"layer{index}", make_res_layer(block, inplanes, planes, blocks, stride=1 if index == 1 else 2))
            inplanes = planes * block.expansion
        self.out_channels = inplanes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


# --------------------------------------------------------------------------------------------
# Public builder
# --------------------------------------------------------------------------------------------

def resnet(*, depth: int = 50) -> ResNet:
    """The bare backbone with PyTorch's default (random) initialisation; loads nothing."""
    return ResNet(depth=depth)


__all__ = ["ARCH_SETTINGS", "BasicBlock", "Bottleneck", "ResNet", "conv3x3", "make_res_layer", "resnet"]
