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
from typing import Any, Iterable, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from posepipe.models.checkpoint import CheckpointError, load_strict, preview, strip_prefix, tensors_only
from posepipe.models.precision import forward_half_guarded
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
    in_h, in_w = input_size
    r = min(in_h / height, in_w / width)
    new_w, new_h = int(width * r), int(height * r)
    canvas = np.full((in_h, in_w, 3), PAD_VALUE, dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return canvas, r


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
    "WEIGHTS", "YOLOX", "YOLOXDetector", "build_yolox", "checkpoint_format", "convert_checkpoint", "create", "letterbox", "letterbox_uint8", "nms",
    "postprocess",
]
