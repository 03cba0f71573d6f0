"""YOLOX detector, re-implemented from Megvii's official code.

Ge, Liu, Wang, Li, Sun, "YOLOX: Exceeding YOLO Series in 2021", arXiv:2107.08430.
Reference: Megvii-BaseDetection/YOLOX (``yolox/models/{network_blocks,darknet,yolo_pafpn,yolo_head}.py``,
``yolox/data/data_augment.py::ValTransform(legacy=False)``, ``yolox/utils/boxes.py::postprocess``).

One implementation serves nano, tiny, s, m, l and x; they differ only in the depth/width multipliers,
depthwise convolutions (nano) and the test size (416 for nano/tiny). Module and attribute names
reproduce the official state_dict keys exactly (``backbone.backbone.stem.conv.conv.weight``, the head's
``stems`` registered last), so the released ``{'model': state_dict}`` files load with an identity remap.

Conventions that matter for parity (checked by ``tests/models/test_yolox.py`` against golden vectors):
BGR input in 0..255 with no normalisation; letterbox to the top-left corner with 114 padding and a
resized size truncated by ``int()``; BatchNorm eps 1e-3; Focus order TL, BL, TR, BR; decoding
``(t + grid) * stride`` and ``exp(t) * stride``; the confidence test is ``obj * cls >= thr``; NMS suppresses
when IoU > thr; boxes are not clipped to the image.

File order: building blocks, the model, the weights table, checkpoint conversion, the predictor and the
public builders.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from posepipe.models.checkpoint import CheckpointError, load_strict, preview, strip_prefix, tensors_only
from posepipe.models.precision import forward_half_flagged, forward_half_guarded
from posepipe.models.weights import Weights

BN_EPS = 1e-3        # set by the official Exp.get_model after construction
BN_MOMENTUM = 0.03
PAD_VALUE = 114
STRIDES = (8, 16, 32)


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------

class BaseConv(nn.Module):
    """Conv2d (no bias, same padding) -> BatchNorm2d(eps 1e-3) -> SiLU."""

    def __init__(self, in_channels: int, out_channels: int, ksize: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size=ksize, stride=stride, padding=(ksize - 1) // 2,
            groups=groups, bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DWConv(nn.Module):
    """Depthwise ksize x ksize BaseConv followed by a pointwise 1x1 BaseConv (YOLOX-nano)."""

    def __init__(self, in_channels: int, out_channels: int, ksize: int, stride: int = 1):
        super().__init__()
        self.dconv = BaseConv(in_channels, in_channels, ksize, stride, groups=in_channels)
        self.pconv = BaseConv(in_channels, out_channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pconv(self.dconv(x))


def _conv_type(depthwise: bool) -> type[nn.Module]:
    return DWConv if depthwise else BaseConv


class Bottleneck(nn.Module):
    """1x1 conv -> 3x3 conv, plus the input when `shortcut` and the channel counts agree."""

    def __init__(self, in_channels: int, out_channels: int, shortcut: bool = True, expansion: float = 0.5,
                 depthwise: bool = False):
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = BaseConv(in_channels, hidden, 1, 1)
        self.conv2 = _conv_type(depthwise)(hidden, out_channels, 3, 1)
        self.use_add = shortcut and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class CSPLayer(nn.Module):
    """CSP bottleneck with three convolutions (YOLOv5's C3): conv1 -> n bottlenecks, conv2, concat, conv3."""

    def __init__(self, in_channels: int, out_channels: int, n: int = 1, shortcut: bool = True,
                 expansion: float = 0.5, depthwise: bool = False):
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = BaseConv(in_channels, hidden, 1, 1)
        self.conv2 = BaseConv(in_channels, hidden, 1, 1)
        self.conv3 = BaseConv(2 * hidden, out_channels, 1, 1)
        self.m = nn.Sequential(*[Bottleneck(hidden, hidden, shortcut, 1.0, depthwise) for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat((self.m(self.conv1(x)), self.conv2(x)), dim=1))


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling (YOLOv3-SPP): 1x1 conv, max-pools 5/9/13 (stride 1), concat, 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: Sequence[int] = (5, 9, 13)):
        super().__init__()
        hidden = in_channels // 2
        self.conv1 = BaseConv(in_channels, hidden, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2) for k in kernel_sizes)
        self.conv2 = BaseConv(hidden * (len(kernel_sizes) + 1), out_channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.m], dim=1))


class Focus(nn.Module):
    """Space-to-depth (channel blocks top-left, bottom-left, top-right, bottom-right), then a conv."""

    def __init__(self, in_channels: int, out_channels: int, ksize: int = 1, stride: int = 1):
        super().__init__()
        self.conv = BaseConv(in_channels * 4, out_channels, ksize, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat(
            (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), dim=1,
        )
        return self.conv(x)


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------

class CSPDarknet(nn.Module):
    """CSPDarknet backbone; returns the dark3, dark4, dark5 features (strides 8, 16, 32)."""

    def __init__(self, depth: float, width: float, depthwise: bool = False):
        super().__init__()
        Conv = _conv_type(depthwise)
        base_channels = int(width * 64)
        base_depth = max(round(depth * 3), 1)
        c = base_channels
        self.stem = Focus(3, c, ksize=3)
        self.dark2 = nn.Sequential(
            Conv(c, c * 2, 3, 2), CSPLayer(c * 2, c * 2, n=base_depth, depthwise=depthwise),
        )
        self.dark3 = nn.Sequential(
            Conv(c * 2, c * 4, 3, 2), CSPLayer(c * 4, c * 4, n=base_depth * 3, depthwise=depthwise),
        )
        self.dark4 = nn.Sequential(
            Conv(c * 4, c * 8, 3, 2), CSPLayer(c * 8, c * 8, n=base_depth * 3, depthwise=depthwise),
        )
        self.dark5 = nn.Sequential(
            Conv(c * 8, c * 16, 3, 2),
            SPPBottleneck(c * 16, c * 16),
            CSPLayer(c * 16, c * 16, n=base_depth, shortcut=False, depthwise=depthwise),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.dark2(self.stem(x))
        dark3 = self.dark3(x)
        dark4 = self.dark4(dark3)
        dark5 = self.dark5(dark4)
        return dark3, dark4, dark5


class YOLOPAFPN(nn.Module):
    """CSPDarknet plus the PAFPN neck (top-down then bottom-up path)."""

    def __init__(self, depth: float, width: float, in_channels: Sequence[int] = (256, 512, 1024),
                 depthwise: bool = False):
        super().__init__()
        Conv = _conv_type(depthwise)
        c0, c1, c2 = (int(ch * width) for ch in in_channels)
        n = round(3 * depth)
        self.backbone = CSPDarknet(depth, width, depthwise=depthwise)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.lateral_conv0 = BaseConv(c2, c1, 1, 1)
        self.C3_p4 = CSPLayer(2 * c1, c1, n, False, depthwise=depthwise)
        self.reduce_conv1 = BaseConv(c1, c0, 1, 1)
        self.C3_p3 = CSPLayer(2 * c0, c0, n, False, depthwise=depthwise)
        self.bu_conv2 = Conv(c0, c0, 3, 2)
        self.C3_n3 = CSPLayer(2 * c0, c1, n, False, depthwise=depthwise)
        self.bu_conv1 = Conv(c1, c1, 3, 2)
        self.C3_n4 = CSPLayer(2 * c1, c2, n, False, depthwise=depthwise)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x2, x1, x0 = self.backbone(x)
        fpn_out0 = self.lateral_conv0(x0)
        f_out0 = self.C3_p4(torch.cat([self.upsample(fpn_out0), x1], 1))
        fpn_out1 = self.reduce_conv1(f_out0)
        pan_out2 = self.C3_p3(torch.cat([self.upsample(fpn_out1), x2], 1))
        pan_out1 = self.C3_n3(torch.cat([self.bu_conv2(pan_out2), fpn_out1], 1))
        pan_out0 = self.C3_n4(torch.cat([self.bu_conv1(pan_out1), fpn_out0], 1))
        return pan_out2, pan_out1, pan_out0


class YOLOXHead(nn.Module):
    """Decoupled anchor-free head, inference path only (eval mode with decoding, as the official head).

    ModuleLists are created in the official order (cls_convs, reg_convs, cls_preds, reg_preds, obj_preds,
    stems) so that the state_dict order matches the released files, although the stems run first.
    """

    def __init__(self, num_classes: int, width: float, strides: Sequence[int] = STRIDES,
                 in_channels: Sequence[int] = (256, 512, 1024), depthwise: bool = False):
        super().__init__()
        Conv = _conv_type(depthwise)
        hidden = int(256 * width)
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        self.cls_preds = nn.ModuleList()
        self.reg_preds = nn.ModuleList()
        self.obj_preds = nn.ModuleList()
        self.stems = nn.ModuleList()
        for ch in in_channels:
            self.stems.append(BaseConv(int(ch * width), hidden, 1, 1))
            self.cls_convs.append(nn.Sequential(Conv(hidden, hidden, 3, 1), Conv(hidden, hidden, 3, 1)))
            self.reg_convs.append(nn.Sequential(Conv(hidden, hidden, 3, 1), Conv(hidden, hidden, 3, 1)))
            self.cls_preds.append(nn.Conv2d(hidden, num_classes, 1, 1, 0))
            self.reg_preds.append(nn.Conv2d(hidden, 4, 1, 1, 0))
            self.obj_preds.append(nn.Conv2d(hidden, 1, 1, 1, 0))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Features of strides 8/16/32 -> (B, A, 5 + C): [cx, cy, w, h] in input pixels, obj, class scores.

        Anchors are ordered stride 8, 16, 32 and row-major inside a level. Decoding runs in float32 even
        under fp16 autocast (the official head decodes in the feature dtype; exp() could overflow fp16).
        """
        outputs, sizes = [], []
        for k, x in enumerate(features):
            x = self.stems[k](x)
            cls_out = self.cls_preds[k](self.cls_convs[k](x))
            reg_feat = self.reg_convs[k](x)
            reg_out = self.reg_preds[k](reg_feat)
            obj_out = self.obj_preds[k](reg_feat)
            out = torch.cat([reg_out, obj_out.sigmoid(), cls_out.sigmoid()], 1)
            sizes.append(out.shape[-2:])
            outputs.append(out.float().flatten(start_dim=2))
        raw = torch.cat(outputs, dim=2).permute(0, 2, 1)
        return self._decode(raw, sizes)

    def _decode(self, raw: torch.Tensor, sizes: Sequence[torch.Size]) -> torch.Tensor:
        grids, strides = [], []
        for (h, w), stride in zip(sizes, self.strides):
            yv, xv = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            grid = torch.stack((xv, yv), 2).view(1, -1, 2)
            grids.append(grid)
            strides.append(torch.full((1, grid.shape[1], 1), stride))
        grid = torch.cat(grids, dim=1).to(device=raw.device, dtype=raw.dtype)
        stride = torch.cat(strides, dim=1).to(device=raw.device, dtype=raw.dtype)
        return torch.cat(
            [(raw[..., 0:2] + grid) * stride, torch.exp(raw[..., 2:4]) * stride, raw[..., 4:]], dim=-1,
        )


class YOLOX(nn.Module):
    """YOLOPAFPN backbone+neck and the decoupled head; forward returns the decoded (B, A, 5 + C)."""

    def __init__(self, depth: float, width: float, depthwise: bool = False, num_classes: int = 80):
        super().__init__()
        in_channels = (256, 512, 1024)
        self.backbone = YOLOPAFPN(depth, width, in_channels, depthwise=depthwise)
        self.head = YOLOXHead(num_classes, width, STRIDES, in_channels, depthwise=depthwise)

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def strides(self) -> tuple[int, ...]:
        return self.head.strides

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


# --------------------------------------------------------------------------------------------------
# Weights table
# --------------------------------------------------------------------------------------------------

_RELEASE = "https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0"
_PAPER = "Ge et al., YOLOX: Exceeding YOLO Series in 2021, arXiv:2107.08430"


# Multiply-accumulates of one letterboxed image (torch's FlopCounterMode; tests/models/test_catalogue.py).
_GMACS = {"yolox_nano": 0.523, "yolox_tiny": 3.21, "yolox_s": 13.3, "yolox_m": 36.8, "yolox_l": 77.6, "yolox_x": 140.7}


def _entry(name: str, depth: float, width: float, size: int, ap: float, *, depthwise: bool = False,
           notes: str = "") -> Weights:
    return Weights(
        name=name,
        family="yolox",
        stage="detector",
        gmacs=_GMACS[name],
        url=f"{_RELEASE}/{name}.pth",
        filename=f"{name}.pth",
        source_format="yolox",
        arch={"depth": depth, "width": width, "depthwise": depthwise, "num_classes": 80},
        sha256=None,  # Megvii publishes no hashes for these files
        input_size=(size, size),
        mean=None,
        std=None,
        color="BGR",
        license="Apache-2.0",
        paper=_PAPER,
        metrics={"coco_val2017_ap": ap},
        notes=notes or "COCO 80 classes; BGR 0..255 input, letterbox top-left with 114 padding.",
    )


WEIGHTS: dict[str, Weights] = {
    "yolox_nano": _entry("yolox_nano", 0.33, 0.25, 416, 25.8, depthwise=True,
                         notes="COCO 80 classes; depthwise convolutions; BGR 0..255 input, 416 letterbox."),
    "yolox_tiny": _entry("yolox_tiny", 0.33, 0.375, 416, 32.8,
                         notes="COCO 80 classes; BGR 0..255 input, 416 letterbox."),
    "yolox_s": _entry("yolox_s", 0.33, 0.50, 640, 40.5),
    "yolox_m": _entry("yolox_m", 0.67, 0.75, 640, 46.9),
    "yolox_l": _entry("yolox_l", 1.0, 1.0, 640, 49.7),
    "yolox_x": _entry("yolox_x", 1.33, 1.25, 640, 51.1),
}


# --------------------------------------------------------------------------------------------------
# Checkpoint conversion
# --------------------------------------------------------------------------------------------------

_OFFICIAL_KEY = "backbone.backbone.stem.conv.conv.weight"
_MMDET_MARKER = "bbox_head.multi_level_conv_obj."
_SUPPORTED = (
    "official Megvii {'model': state_dict, ...} or a bare state_dict with 'backbone.backbone.*' keys; "
    "mmdetection {'state_dict': ..., 'meta': ...} with 'backbone.stage*', 'neck.*', "
    "'bbox_head.multi_level_*' keys; an optional 'module.' prefix"
)

# mmdetection module path prefix -> official prefix (mmdet's CSPDarknet / YOLOXPAFPN / YOLOXHead).
_MMDET_PREFIXES: tuple[tuple[str, str], ...] = (
    ("backbone.stem.", "backbone.backbone.stem."),
    ("backbone.stage1.", "backbone.backbone.dark2."),
    ("backbone.stage2.", "backbone.backbone.dark3."),
    ("backbone.stage3.", "backbone.backbone.dark4."),
    ("backbone.stage4.", "backbone.backbone.dark5."),
    ("neck.reduce_layers.0.", "backbone.lateral_conv0."),
    ("neck.reduce_layers.1.", "backbone.reduce_conv1."),
    ("neck.top_down_blocks.0.", "backbone.C3_p4."),
    ("neck.top_down_blocks.1.", "backbone.C3_p3."),
    ("neck.downsamples.0.", "backbone.bu_conv2."),
    ("neck.downsamples.1.", "backbone.bu_conv1."),
    ("neck.bottom_up_blocks.0.", "backbone.C3_n3."),
    ("neck.bottom_up_blocks.1.", "backbone.C3_n4."),
    ("neck.out_convs.", "head.stems."),  # mmdet moved the head's 1x1 stems into the neck
    ("bbox_head.multi_level_cls_convs.", "head.cls_convs."),
    ("bbox_head.multi_level_reg_convs.", "head.reg_convs."),
    ("bbox_head.multi_level_conv_cls.", "head.cls_preds."),
    ("bbox_head.multi_level_conv_reg.", "head.reg_preds."),
    ("bbox_head.multi_level_conv_obj.", "head.obj_preds."),
)
# mmdet module names inside CSPLayer / DepthwiseSeparableConvModule -> official names.
_MMDET_SEGMENTS = {
    "main_conv": "conv1", "short_conv": "conv2", "final_conv": "conv3", "blocks": "m",
    "depthwise_conv": "dconv", "pointwise_conv": "pconv",
}
# mmcv 1.x's EMA hook registers one top-level buffer per parameter, e.g. 'ema_backbone_stem_conv_conv_weight'
# (it holds the raw training weights; the regular keys hold the EMA weights after the swap at save time).
_MMDET_EMA_KEY = re.compile(r"ema_[^.]+")


def _convert_mmdet(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    unknown = []
    for key, value in state.items():
        if _MMDET_EMA_KEY.fullmatch(key):
            continue
        for old, new in _MMDET_PREFIXES:
            if key.startswith(old):
                rest = ".".join(_MMDET_SEGMENTS.get(part, part) for part in key[len(old):].split("."))
                out[new + rest] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"mmdetection YOLOX checkpoint has keys with no official counterpart: {preview(unknown, 8)}")
    return out


def _inner_state(checkpoint: Mapping[str, Any]) -> tuple[str | None, "OrderedDict[str, torch.Tensor]"]:
    """(wrapper key or None, the tensors of the state dict, 'module.' prefix dropped)."""
    for wrapper in ("model", "state_dict"):
        inner = checkpoint.get(wrapper)
        if isinstance(inner, Mapping):
            return wrapper, strip_prefix(tensors_only(inner), "module.")
    return None, strip_prefix(tensors_only(checkpoint), "module.")


def checkpoint_format(checkpoint: Any) -> str | None:
    """The supported layout `checkpoint` (already unpickled) is in, by its distinctive keys; None if none."""
    if not isinstance(checkpoint, Mapping):
        return None
    wrapper, state = _inner_state(checkpoint)
    container = f"{{'{wrapper}': state_dict, ...}}" if wrapper else "bare state_dict"
    if _OFFICIAL_KEY in state:
        return f"official YOLOX (Megvii), {container}"
    if any(key.startswith(_MMDET_MARKER) for key in state):
        return f"mmdetection YOLOX, {container}"
    return None


def convert_checkpoint(checkpoint: Any) -> "OrderedDict[str, torch.Tensor]":
    """Any supported YOLOX container -> the official state dict (pure: dict in, new dict out).

    Recognised by their keys:
    - official Megvii release ``{'model': sd, 'start_epoch', 'optimizer', 'amp', ...}`` (extra top-level
      entries ignored) or a bare state dict, with ``backbone.backbone.stem.conv.conv.weight``: identity;
    - mmdetection's re-trained YOLOX ``{'state_dict': sd, 'meta': ...}`` (or bare), recognised by
      ``bbox_head.multi_level_conv_obj.*``: renamed module by module (``backbone.stageN`` -> ``darkN+1``,
      ``neck.*`` -> PAFPN names, ``neck.out_convs`` -> ``head.stems``, CSP ``main/short/final_conv, blocks``
      -> ``conv1/2/3, m``). Its mmcv EMA-hook buffers ``ema_<flattened name>`` are dropped on purpose: they
      hold the raw training weights, while the regular keys hold the EMA weights (swapped at save time).
      mmengine's top-level ``ema_state_dict`` is ignored for the same reason (its EMAHook also swaps
      before saving, so ``state_dict`` is the EMA model).
    A ``module.`` prefix (DataParallel saves) is stripped. Anything else raises CheckpointError.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"expected a dict checkpoint, got {type(checkpoint).__name__}; supported: {_SUPPORTED}")
    _, state = _inner_state(checkpoint)
    if _OFFICIAL_KEY in state:
        return OrderedDict(state)
    if any(key.startswith(_MMDET_MARKER) for key in state):
        return _convert_mmdet(state)
    keys = list(state.keys()) or [f"{k} (top level)" for k in checkpoint.keys()]
    raise CheckpointError(
        f"unrecognised YOLOX checkpoint layout (keys: {preview(keys) or 'none'}); supported: {_SUPPORTED}"
    )


# --------------------------------------------------------------------------------------------------
# Pre/post-processing and the predictor
# --------------------------------------------------------------------------------------------------

def _check_image(image_bgr: np.ndarray) -> np.ndarray:
    image = np.asarray(image_bgr)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"YOLOX expects an (H, W, 3) uint8 BGR image, got shape {image.shape} dtype {image.dtype}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    return image


def letterbox(image_bgr: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """ValTransform(legacy=False): resize by r = min(H_in/H, W_in/W) with the size truncated by int(),
    INTER_LINEAR, paste at the top-left of a 114-filled canvas; returns (3, H_in, W_in) float32, r.
    """
    image = _check_image(image_bgr)
    canvas, r = letterbox_uint8(image, input_size)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32), r


def letterbox_uint8(image_bgr: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """`letterbox` before the float conversion: the (H_in, W_in, 3) uint8 canvas and r. The network
    input is exactly this as float32 (channels first), so a GPU can convert after a 4x smaller copy."""
    image = np.asarray(image_bgr)
    height, width = image.shape[:2]
    r, (new_h, new_w) = letterbox_size((height, width), input_size)
    canvas = np.full((input_size[0], input_size[1], 3), PAD_VALUE, dtype=np.uint8)
    frame = torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0)
    with torch.inference_mode():
        canvas[:new_h, :new_w] = resize_linear_uint8(frame, new_h, new_w)[0].numpy()
    return canvas, r


def letterbox_size(frame_hw: tuple[int, int], input_size: tuple[int, int]) -> tuple[float, tuple[int, int]]:
    """ValTransform's ratio r = min(H_in/H, W_in/W) and the resized (height, width), truncated by int()
    as the official code does, but never below 1 px: a 4096x2 frame (r = 0.156) would resize to a height
    of 0, where the official cv2.resize asserts; it gets one row instead."""
    height, width = frame_hw
    in_h, in_w = input_size
    r = min(in_h / height, in_w / width)
    return r, (max(1, int(height * r)), max(1, int(width * r)))


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, labels: np.ndarray | None = None,
        max_keep: int | None = None) -> np.ndarray:
    """Greedy NMS with torchvision's CPU semantics; returns kept indices, highest score first.

    Boxes are visited by descending score (stable sort); a box is dropped when its IoU with a kept box
    is strictly greater than `iou_threshold` (IoU in float32, areas without +1, the comparison in double
    as torchvision's kernel does). With `labels`, only boxes of the same label suppress each other,
    which is torchvision's per-class `batched_nms` path (free of the coordinate-offset trick's rounding).
    `max_keep` stops after that many kept boxes; the kept prefix is exactly the uncapped result's, since
    a box's fate depends only on higher-scored boxes.
    """
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    b = np.asarray(boxes, dtype=np.float32)[order]
    x1, y1, x2, y2 = (np.ascontiguousarray(b[:, i]) for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    lab = None if labels is None else np.asarray(labels)[order]
    zero = np.float32(0)
    suppressed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    limit = n if max_keep is None else max(int(max_keep), 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(n):
            if len(keep) >= limit:
                break
            if suppressed[i]:
                continue
            keep.append(i)
            if i + 1 == n:
                break
            w = np.maximum(zero, np.minimum(x2[i], x2[i + 1:]) - np.maximum(x1[i], x1[i + 1:]))
            h = np.maximum(zero, np.minimum(y2[i], y2[i + 1:]) - np.maximum(y1[i], y1[i + 1:]))
            inter = w * h
            iou = inter / (areas[i] + areas[i + 1:] - inter)
            drop = iou.astype(np.float64) > iou_threshold
            if lab is not None:
                drop &= lab[i + 1:] == lab[i]
            suppressed[i + 1:] |= drop
    return order[np.asarray(keep, dtype=np.int64)]


def postprocess(raw: np.ndarray, conf_threshold: float, nms_threshold: float, *, class_agnostic: bool = False,
                classes: Iterable[int] | None = None, max_detections: int | None = None) -> np.ndarray:
    """Official `postprocess` for one image: raw (A, 5 + C) -> (N, 7) [x1, y1, x2, y2, obj, cls_conf, cls].

    Boxes stay in network-input pixels. `classes` keeps rows whose arg-max class is listed: for
    class-aware NMS they are selected before NMS (equivalent, faster), for class-agnostic NMS after it,
    so other classes still suppress as in the official code. `max_detections` keeps the top rows.
    """
    raw = np.asarray(raw, dtype=np.float32)
    cx, cy, w, h = raw[:, 0], raw[:, 1], raw[:, 2], raw[:, 3]
    cls_scores = raw[:, 5:]
    if cls_scores.shape[1] == 0:
        raise ValueError(f"raw output needs 5 + num_classes columns, got {raw.shape}")
    cls_id = cls_scores.argmax(axis=1)
    cls_conf = np.take_along_axis(cls_scores, cls_id[:, None], axis=1)[:, 0]
    obj = raw[:, 4]
    mask = obj * cls_conf >= np.float32(conf_threshold)
    wanted = None if classes is None else np.asarray(sorted({int(c) for c in classes}), dtype=np.int64)
    if wanted is not None and not class_agnostic:
        mask &= np.isin(cls_id, wanted)
    dets = np.stack(
        [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, obj, cls_conf, cls_id.astype(np.float32)], axis=1,
    )[mask]
    if len(dets) == 0:
        return np.zeros((0, 7), dtype=np.float32)
    scores = dets[:, 4] * dets[:, 5]
    # Early stop is exact only when every kept row is returned; class filtering after NMS needs them all.
    cap = max_detections if wanted is None or not class_agnostic else None
    keep = nms(dets[:, :4], scores, nms_threshold, None if class_agnostic else dets[:, 6], max_keep=cap)
    dets = dets[keep]
    if wanted is not None and class_agnostic:
        dets = dets[np.isin(dets[:, 6].astype(np.int64), wanted)]
    if max_detections is not None:
        dets = dets[: max(int(max_detections), 0)]
    return np.ascontiguousarray(dets, dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# The device path: uint8 frames already on the model's device -> fixed-shape detections, no host sync
# --------------------------------------------------------------------------------------------------
#
# `YOLOXDetector.detect_frames` does on the device what `detect_batch` + `postprocess` do on the host,
# with the same results: the letterbox reproduces cv2.resize(INTER_LINEAR) bit for bit (below), the
# forward is the same, and the post-processing reproduces `postprocess` / `nms` exactly (float32 IoU,
# strict >, stable score order, per-class). Every shape depends only on the batch and frame sizes and
# the arguments, never on the data, and nothing reads a value back to the host (no .item(), .cpu(),
# .tolist(), bool(tensor), nonzero()), so the caller can queue a whole window and read the results
# once, and the path can later be CUDA-graphed or compiled. What static shapes cannot decide comes
# back as device flags (`DeviceDetections.fallback`) that the caller reads once per window.

_RESIZE_COEF_BITS = 11   # OpenCV's INTER_RESIZE_COEF_BITS: bilinear weights are multiples of 1/2048
_TAPS: dict[tuple[int, int, bool, str], tuple[torch.Tensor, ...]] = {}
_CLASS_TABLES: dict[tuple[tuple[int, ...], int, str], torch.Tensor] = {}


def _linear_taps(src: int, dst: int, clamp_weights: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One axis of OpenCV's INTER_LINEAR (imgproc/src/resize.cpp, resizeGeneric_): for each output
    index d, source indices s0, s1 and 11-bit weights w0, w1 of f = float32((d + 0.5) * (src / dst) - 0.5).

    Columns (`clamp_weights`) clamp like OpenCV: left of the image f = 0 at the first pixel, right of
    it f = 0 at the last. Rows keep the fractional weight and only clamp the source rows, so the
    first and last output rows can mix a row with itself (it matters for the rounding below).
    """
    scale = 1.0 / (dst / src)   # OpenCV: inv_scale = (double)dst / src, scale = 1. / inv_scale
    f = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s.astype(np.float32)).astype(np.float32)
    if clamp_weights:
        low, high = s < 0, s >= src - 1
        f[low], s[low] = 0, 0
        f[high], s[high] = 0, src - 1
    one = 1 << _RESIZE_COEF_BITS
    w0 = np.rint((np.float32(1) - f) * np.float32(one)).astype(np.int32)  # saturate_cast<short>: round half even
    w1 = np.rint(f * np.float32(one)).astype(np.int32)
    return np.clip(s, 0, src - 1), np.clip(s + 1, 0, src - 1), w0, w1


def _taps(src: int, dst: int, columns: bool, device: torch.device) -> tuple[torch.Tensor, ...]:
    """`_linear_taps` as device tensors, made once per (size, device): a later call copies nothing to
    the device (a copy from pageable host memory would wait for the stream, and CUDA graphs forbid it)."""
    key = (src, dst, columns, str(device))
    taps = _TAPS.get(key)
    if taps is None:
        if len(_TAPS) >= 256:
            _TAPS.clear()
        s0, s1, w0, w1 = _linear_taps(src, dst, columns)
        shape = (1, 1, dst, 1) if columns else (1, dst, 1, 1)
        taps = (torch.as_tensor(s0, device=device), torch.as_tensor(s1, device=device),
                torch.as_tensor(w0, device=device).view(shape), torch.as_tensor(w1, device=device).view(shape))
        _TAPS[key] = taps
    return taps


def resize_linear_uint8(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR) for a (B, H, W, C) uint8
    tensor, on its device, in integer arithmetic: bit-identical to OpenCV's 8-bit path.

    OpenCV's 8-bit INTER_LINEAR is fixed point: 11-bit weights, a horizontal pass kept exact in int32,
    then a vertical pass in its SIMD form ((row0 >> 4) * b0 >> 16) + ((row1 >> 4) * b1 >> 16), rounded
    by (+2) >> 2. That is reproduced here; it matched cv2.resize of opencv-python-headless 5.0.0 (the
    venv's) and 4.10.0.84 (the GPU image's) on every pixel of 309 size pairs, up and down, 2x and 3x
    included (tests/models/test_yolox_device.py checks the installed one). A build without SIMD
    would round the vertical pass once, (b0 * row0 + b1 * row1 + 2**21) >> 22, and differ by 1 on
    ~10% of the pixels. So does the float alternative, F.interpolate(mode="bilinear",
    align_corners=False, antialias=False) rounded to uint8: the same filter (no antialiasing,
    half-pixel centres, edge clamp), but 1 off on ~11% of the pixels of a 768x576 -> 640x480
    letterbox, which moves boxes by a fraction of a pixel and can flip a detection that sits on the
    confidence or NMS threshold.
    """
    if frames.dtype != torch.uint8 or frames.ndim != 4:
        raise ValueError(f"expected (B, H, W, C) uint8 frames, got {tuple(frames.shape)} {frames.dtype}")
    src_h, src_w = int(frames.shape[1]), int(frames.shape[2])
    if (src_h, src_w) == (height, width):
        return frames
    ys0, ys1, wy0, wy1 = _taps(src_h, height, False, frames.device)
    xs0, xs1, wx0, wx1 = _taps(src_w, width, True, frames.device)

    def columns(rows: torch.Tensor) -> torch.Tensor:  # exact int32 horizontal pass
        return rows.index_select(2, xs0).int() * wx0 + rows.index_select(2, xs1).int() * wx1

    top, bottom = columns(frames.index_select(1, ys0)), columns(frames.index_select(1, ys1))
    out = (((top >> 4) * wy0) >> 16) + (((bottom >> 4) * wy1) >> 16)
    return ((out + 2) >> 2).clamp_(0, 255).to(torch.uint8)


def letterbox_frames(frames: torch.Tensor, input_size: tuple[int, int]) -> tuple[torch.Tensor, float]:
    """`letterbox_uint8` for a batch of same-sized frames on a device: (B, H, W, 3) uint8 ->
    (B, H_in, W_in, 3) uint8 canvas (the resize at the top-left, PAD_VALUE around it) and the ratio r.
    Bit-identical to `letterbox_uint8` (see `resize_linear_uint8`)."""
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"YOLOX expects (B, H, W, 3) uint8 BGR frames, got {tuple(frames.shape)} {frames.dtype}")
    height, width = int(frames.shape[1]), int(frames.shape[2])
    if height == 0 or width == 0:
        raise ValueError(f"empty frames of shape {tuple(frames.shape)}")
    in_h, in_w = input_size
    r, (new_h, new_w) = letterbox_size((height, width), input_size)
    resized = resize_linear_uint8(frames, new_h, new_w)
    canvas = torch.nn.functional.pad(resized, (0, 0, 0, in_w - new_w, 0, in_h - new_h), value=PAD_VALUE)
    return canvas, r


def _class_table(classes: Iterable[int], num_classes: int, device: torch.device) -> torch.Tensor:
    """(C,) bool, true at the wanted class ids; cached per device like `_taps`."""
    wanted = tuple(sorted({int(c) for c in classes}))
    key = (wanted, num_classes, str(device))
    table = _CLASS_TABLES.get(key)
    if table is None:
        if len(_CLASS_TABLES) >= 256:
            _CLASS_TABLES.clear()
        table = torch.zeros(num_classes, dtype=torch.bool)
        table[[c for c in wanted if 0 <= c < num_classes]] = True
        table = _CLASS_TABLES[key] = table.to(device)
    return table


def _float32_at_most(value: float) -> float:
    """The largest float32 <= value: for a float32 x, x > value (in double, as `nms` compares)
    exactly when x > this (compared in float32)."""
    v = np.float32(value)
    if float(v) > value:
        v = np.nextafter(v, np.float32(-np.inf))
    return float(v)


def pairwise_iou(boxes: torch.Tensor) -> torch.Tensor:
    """(B, M, 4) xyxy float32 -> (B, M, M) IoU, computed as `nms` does (float32, areas without +1,
    union = area_i + area_j - inter); 0/0 is NaN, which suppresses nothing."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    areas = (x2 - x1) * (y2 - y1)
    # In place where it can be: at most three (B, M, M) float32 buffers at a time.
    inter = torch.minimum(x2[:, :, None], x2[:, None, :]).sub_(torch.maximum(x1[:, :, None], x1[:, None, :])).clamp_(min=0)
    h = torch.minimum(y2[:, :, None], y2[:, None, :]).sub_(torch.maximum(y1[:, :, None], y1[:, None, :])).clamp_(min=0)
    inter.mul_(h)
    union = torch.add(areas[:, :, None], areas[:, None, :], out=h).sub_(inter)
    return inter.div_(union)


def greedy_nms_static(boxes: torch.Tensor, valid: torch.Tensor, labels: torch.Tensor | None, iou_threshold: float,
                      *, iterations: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy NMS over candidates already in visiting order (best first), batched, with static shapes.

    boxes (B, M, 4) float32, valid (B, M) bool, labels (B, M) or None (class-agnostic). Returns
    keep (B, M) bool, the greedy result exactly as `nms` (strict >, float32 IoU, per label) when
    converged (B,) is true.

    Greedy NMS is the unique solution of keep_i = valid_i and not any(keep_j and S_ij for j < i),
    S_ij = "j would suppress i". It is found as a fixed point: starting from keep = valid, each
    iteration recomputes every keep_i from the previous keep (one batched mat-vec). After t
    iterations every box whose chain of suppressions is shorter than t is final; when an iteration
    changes nothing the fixed point, i.e. the greedy result, is reached. The iterations are a fixed
    number (no data-dependent loop, no sync); `converged` reports whether that was enough.

    Why not torchvision.ops.batched_nms: its output size depends on the data (a sync), and PyPI's
    torchvision wheels for Linux are CUDA builds that do not load beside the CPU torch wheel of the
    development venv (libtorch_cuda.so missing: "operator torchvision::nms does not exist").
    """
    m = boxes.shape[1]
    suppress = pairwise_iou(boxes) > _float32_at_most(iou_threshold)
    earlier = torch.ones(m, m, dtype=torch.bool, device=boxes.device).tril_(-1)  # [i, j]: j visited before i
    suppress &= earlier & valid[:, None, :]
    if labels is not None:
        suppress &= labels[:, :, None] == labels[:, None, :]
    # 0/1 entries and a sum tested for > 0: a 16-bit mat-vec is exact for that (rounding never takes a
    # positive sum of non-negative terms to 0) and moves half the bytes of float32.
    dtype = torch.float16 if boxes.device.type == "cuda" else torch.bfloat16
    s = suppress.to(dtype)

    def step(keep: torch.Tensor) -> torch.Tensor:
        hits = torch.bmm(s, keep.to(dtype).unsqueeze(-1)).squeeze(-1)
        return valid & (hits == 0)

    keep = valid
    for _ in range(max(int(iterations), 0)):
        keep = step(keep)
    converged = (step(keep) == keep).all(dim=1)
    return keep, converged


def first_true(mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the first `k` true entries of each row of `mask` (B, M), in order, padded with
    other indices; and the count of true entries, capped at k. Static shapes (a stable sort)."""
    m = mask.shape[1]
    order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)
    if k > m:
        order = torch.cat([order, order.new_zeros(order.shape[0], k - m)], dim=1)
    return order[:, :k], mask.sum(dim=1).clamp(max=k)


@dataclass
class DeviceDetections:
    """Detections of a batch of frames, fixed-shape, on the device. Row b holds frame b's detections
    best first (score = obj * cls_conf, descending; ties in anchor order) in its first count[b] rows
    (valid[b]); the other rows are zeros. Boxes are xyxy in original frame pixels, not clipped: row for
    row what `YOLOXDetector.detect_batch` returns for the frame, when `fallback` is false.

    `fallback` (a 0-d bool tensor) is what the caller reads once per window (one sync): true when
    the fp16 forward overflowed (`overflow`; rerun in fp32 after `precision.fall_back_to_fp32`) or
    the result is not certainly exact for some frame (`exact`: NMS not converged in its iterations,
    or more candidates passed the threshold than were considered while fewer than max_detections
    were kept); then rerun the window with more `candidates` / `nms_iterations`, or on the host.
    """
    boxes: torch.Tensor      # (B, K, 4) float32
    obj: torch.Tensor        # (B, K) float32
    cls_conf: torch.Tensor   # (B, K) float32
    labels: torch.Tensor     # (B, K) int64
    valid: torch.Tensor      # (B, K) bool, a prefix of each row
    count: torch.Tensor      # (B,) int64
    overflow: torch.Tensor   # () bool
    exact: torch.Tensor      # (B,) bool

    @property
    def scores(self) -> torch.Tensor:
        """(B, K) obj * cls_conf, the ranking score (0 in invalid rows)."""
        return self.obj * self.cls_conf

    @property
    def fallback(self) -> torch.Tensor:
        return self.overflow | ~self.exact.all()

    def to_host(self) -> list[np.ndarray]:
        """Per frame (N, 7) float32 [x1, y1, x2, y2, obj, cls_conf, cls]: `detect_batch`'s output (a sync)."""
        rows = torch.cat([self.boxes, self.obj[..., None], self.cls_conf[..., None],
                          self.labels[..., None].to(torch.float32)], dim=-1).cpu().numpy()
        return [np.ascontiguousarray(r[:n]) for r, n in zip(rows, self.count.cpu().tolist())]


def postprocess_device(raw: torch.Tensor, conf_threshold: float, nms_threshold: float, *,
                       classes: Iterable[int] | None = None, max_detections: int | None = None,
                       candidates: int = 1024, nms_iterations: int = 16) -> DeviceDetections:
    """`postprocess` (class-aware) for a batch, on raw's device, static shapes: raw (B, A, 5 + C)
    float32 -> DeviceDetections in network-input pixels (overflow false).

    The `candidates` best-scored anchors that pass the threshold (stable order) go through NMS: exact
    when all that passed fit, or when max_detections boxes were kept among them (a box's fate depends
    only on better-scored ones); `exact` says which. K = max_detections, or `candidates` if None.
    """
    if raw.ndim != 3 or raw.shape[-1] < 6:
        raise ValueError(f"raw output must be (B, A, 5 + num_classes), got {tuple(raw.shape)}")
    raw = raw.float()
    anchors, num_classes = raw.shape[1], raw.shape[2] - 5
    m = min(int(candidates), anchors)
    k = m if max_detections is None else max(int(max_detections), 0)
    cls_scores = raw[..., 5:]
    cls_id = cls_scores.argmax(dim=-1)                     # first maximum, as numpy's argmax
    cls_conf = cls_scores.gather(-1, cls_id[..., None])[..., 0]
    obj = raw[..., 4]
    score = obj * cls_conf
    passed = score >= float(np.float32(conf_threshold))
    if classes is not None:
        passed &= _class_table(classes, num_classes, raw.device)[cls_id]
    # Visiting order: passed anchors by descending score, ties in anchor order (np.argsort(-s, "stable")).
    key = torch.where(passed, score, torch.full_like(score, -torch.inf))
    order = torch.sort(key, dim=1, descending=True, stable=True).indices[:, :m]
    cand_passed = passed.gather(1, order)
    cx, cy, w, h = (raw[..., i].gather(1, order) for i in range(4))
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
    cand_labels = cls_id.gather(1, order)
    keep, converged = greedy_nms_static(boxes, cand_passed, cand_labels, nms_threshold, iterations=nms_iterations)
    pick, count = first_true(keep, k)
    valid = torch.arange(k, device=raw.device)[None, :] < count[:, None]
    anchor = order.gather(1, pick)
    exact = converged & (passed.sum(dim=1) <= m)
    if max_detections is not None:  # k kept among the candidates: the rest could not change them
        exact |= converged & (keep.sum(dim=1) >= k)
    zero = torch.zeros((), dtype=raw.dtype, device=raw.device)
    return DeviceDetections(
        boxes=torch.where(valid[..., None], boxes.gather(1, pick[..., None].expand(-1, -1, 4)), zero),
        obj=torch.where(valid, obj.gather(1, anchor), zero),
        cls_conf=torch.where(valid, cls_conf.gather(1, anchor), zero),
        labels=torch.where(valid, cls_id.gather(1, anchor), torch.zeros_like(anchor)),
        valid=valid,
        count=count,
        overflow=torch.zeros((), dtype=torch.bool, device=raw.device),
        exact=exact,
    )


class YOLOXDetector:
    """A YOLOX model with the official pre/post-processing; images in, CPU numpy detections out.

    Detections are (N, 7) float32 rows [x1, y1, x2, y2, obj_conf, cls_conf, cls_id] in original image
    pixels (not clipped), sorted by score = obj_conf * cls_conf, descending.
    """

    def __init__(self, model: YOLOX, weights: Weights, *, device: torch.device, half: bool = False):
        self.model = model
        self.weights = weights
        self.device = device
        self.half = bool(half) and device.type == "cuda"
        self.input_size: tuple[int, int] = tuple(weights.input_size or (640, 640))  # (height, width)
        self.num_classes = model.num_classes
        self.weights_sha256: str | None = None  # set by models.load_model

    def preprocess(self, image_bgr: np.ndarray) -> tuple[np.ndarray, float]:
        """(3, H_in, W_in) float32 network input and the resize ratio."""
        return letterbox(image_bgr, self.input_size)

    @torch.inference_mode()
    def forward_raw(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) float32 BGR 0..255 (H, W multiples of 32) -> decoded (B, A, 5 + C) float32, CPU."""
        x = torch.as_tensor(batch)
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % 32 or x.shape[3] % 32:
            raise ValueError(f"YOLOX input must be (B, 3, H, W) with H, W multiples of 32, got {tuple(x.shape)}")
        x = x.to(self.device, dtype=torch.float32)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return forward_half_guarded(self, lambda: self.model(x), "YOLOX").cpu().numpy()

    def detect(self, image_bgr: np.ndarray, conf_threshold: float = 0.25, nms_threshold: float = 0.45,
               class_agnostic: bool = False, classes: Iterable[int] | None = None) -> np.ndarray:
        """Detections of one image; `classes` (e.g. (0,) for persons) keeps only those class ids."""
        return self.detect_batch([image_bgr], conf_threshold, nms_threshold, class_agnostic, classes)[0]

    def detect_batch(self, images_bgr: Sequence[np.ndarray], conf_threshold: float = 0.25,
                     nms_threshold: float = 0.45, class_agnostic: bool = False,
                     classes: Iterable[int] | None = None, max_detections: int | None = None) -> list[np.ndarray]:
        """Letterbox each image (sizes may differ), run one forward, post-process per image.

        `max_detections` keeps at most that many rows per image, the highest-scored after NMS. NMS then
        stops as soon as it has kept that many boxes, which is exact (a box's fate depends only on
        higher-scored ones) and keeps random weights, where thousands of anchors pass the threshold,
        from making NMS quadratic.
        """
        if len(images_bgr) == 0:
            return []
        classes = None if classes is None else tuple(classes)
        for image in images_bgr:
            _check_image(image)
        canvases, ratios = zip(*(letterbox_uint8(image, self.input_size) for image in images_bgr))
        x = torch.from_numpy(np.stack(canvases)).to(self.device).permute(0, 3, 1, 2).float()
        raw = self.forward_raw(x)
        return [
            self.postprocess(raw_i, ratio, conf_threshold, nms_threshold, class_agnostic, classes, max_detections)
            for raw_i, ratio in zip(raw, ratios)
        ]

    @torch.inference_mode()
    def detect_frames(self, frames: torch.Tensor, *, conf_threshold: float = 0.25, nms_threshold: float = 0.45,
                      classes: Iterable[int] | None = None, max_detections: int | None = None,
                      candidates: int = 1024, nms_iterations: int = 16) -> DeviceDetections:
        """`detect_batch` (class-aware NMS) for same-sized frames already on the model's device, all on
        that device, without a host sync: (B, H, W, 3) uint8 BGR -> DeviceDetections (B rows of K =
        max_detections, or `candidates` if None), boxes in frame pixels.

        Letterbox bit-identical to `letterbox_uint8` (`resize_linear_uint8`), the same forward (fp16
        autocast when `half` on CUDA), post-processing identical to `postprocess` + the division by the
        ratio. Instead of `forward_half_guarded`'s per-forward check, `overflow` flags a non-finite fp16
        output (`precision.forward_half_flagged`); read `fallback` once per window (see
        DeviceDetections). At most `candidates` anchors go through NMS, with `nms_iterations`
        fixed-point iterations (`greedy_nms_static`).
        """
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"YOLOX expects (B, H, W, 3) uint8 BGR frames, got {tuple(frames.shape)} {frames.dtype}")
        frames = frames.to(self.device)  # a no-op when the caller uploaded them, as it should
        canvas, ratio = letterbox_frames(frames, self.input_size)
        x = canvas.permute(0, 3, 1, 2).float()  # channels_last memory, as detect_batch's input
        raw, overflow = forward_half_flagged(self, lambda: self.model(x))
        dets = postprocess_device(raw, conf_threshold, nms_threshold, classes=classes, max_detections=max_detections,
                                  candidates=candidates, nms_iterations=nms_iterations)
        # A division by a device scalar: CUDA turns a division by a Python number into a multiplication
        # by its reciprocal, which can differ from numpy's division by one ulp.
        dets.boxes = dets.boxes / torch.full((), float(np.float32(ratio)), dtype=torch.float32, device=raw.device)
        dets.overflow = overflow
        return dets

    def postprocess(self, raw: np.ndarray, ratio: float, conf_threshold: float = 0.25, nms_threshold: float = 0.45,
                    class_agnostic: bool = False, classes: Iterable[int] | None = None,
                    max_detections: int | None = None) -> np.ndarray:
        """One image's `forward_raw` output (A, 5 + C) -> detections in original pixels (boxes / ratio)."""
        dets = postprocess(raw, conf_threshold, nms_threshold, class_agnostic=class_agnostic,
                           classes=classes, max_detections=max_detections)
        dets[:, :4] /= np.float32(ratio)
        return dets


# --------------------------------------------------------------------------------------------------
# Public builders
# --------------------------------------------------------------------------------------------------

def build_yolox(*, depth: float, width: float, depthwise: bool = False, num_classes: int = 80) -> YOLOX:
    """The bare network (PyTorch default init, no weights loaded)."""
    return YOLOX(depth, width, depthwise=depthwise, num_classes=num_classes)


def create(spec: Weights, state_dict: Mapping[str, torch.Tensor] | None, *, device: torch.device,
           half: bool = False) -> YOLOXDetector:
    """Build `spec`'s architecture, load `state_dict` strictly, eval mode, on `device`.

    `state_dict=None` gives random weights (the caller has warned) for plumbing checks: PyTorch's default
    init drawn from a fixed seed, so runs are reproducible, without touching the global RNG. Such a
    network outputs nearly the same class at every anchor, so the class-0 (COCO person) bias of each
    `cls_pred` is raised above the others: random weights then yield person boxes for the stages
    downstream to consume. On CUDA the model uses channels_last, and fp16 autocast when `half`; `half`
    is ignored on CPU.
    """
    if state_dict is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_yolox(**spec.arch)
        with torch.no_grad():
            for conv in model.head.cls_preds:
                conv.bias[0] = conv.bias.max() + 1.0
    else:
        model = build_yolox(**spec.arch)
        load_strict(model, state_dict, what="the checkpoint")
    model.eval()
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return YOLOXDetector(model, spec, device=device, half=half)


__all__ = [
    "WEIGHTS", "YOLOX", "DeviceDetections", "YOLOXDetector", "build_yolox", "checkpoint_format", "convert_checkpoint", "create",
    "first_true", "greedy_nms_static", "letterbox", "letterbox_frames", "letterbox_size", "letterbox_uint8", "nms", "pairwise_iou", "postprocess",
    "postprocess_device", "resize_linear_uint8",
]
