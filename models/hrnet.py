"""HRNet: top-down 2D human pose from person boxes (Sun et al., CVPR 2019).

A faithful re-implementation of ``PoseHighResolutionNet`` from
leoxiaobin/deep-high-resolution-net.pytorch (``lib/models/pose_hrnet.py``) and of its COCO
evaluation path (``lib/dataset/coco.py``, ``lib/utils/transforms.py``, ``lib/core/function.py``,
``lib/core/inference.py``). Module and attribute names reproduce the official state_dict keys
exactly, so the authors' files load with ``strict=True``; mmpose's re-hosted checkpoints are
remapped to those keys first.

Order of this file: building blocks, the model, the weights table, the public builders and
the predictor. Conventions the predictor reproduces (see the golden README for the proof):

- box -> centre/scale: 3:4 aspect fix, x1.25 padding, pixel_std 200, float32;
- affine crop as ``cv2.warpAffine`` (INTER_LINEAR, black border) of OpenCV 5.0 computes it (the
  golden case's OpenCV; :data:`CROP_KERNEL`, computed by :mod:`posepipe.models.warp`, never by the
  installed OpenCV), RGB, /255, ImageNet mean/std;
- flip test: flip the input, flip the output back, swap left/right channels, shift right by one
  column (column 0 kept), average;
- ``get_final_preds``: argmax, maxval <= 0 -> (0, 0), quarter-pixel step only for
  1 < x < W-1 and 1 < y < H-1, inverse affine back to the image, no half-pixel shift.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from posepipe.models import heatmaps as heatmap_ops
from posepipe.models import ondevice, warp
from posepipe.models.checkpoint import CheckpointError, load_strict, preview, strip_prefix, tensors_only
from posepipe.models.precision import fall_back_to_fp32, forward_half_flagged, forward_half_guarded
from posepipe.models.resnet import BasicBlock, Block, Bottleneck, make_res_layer
from posepipe.models.skeletons import COCO17_FLIP_PAIRS, COCO17_NAMES, COCO17_SKELETON
from posepipe.models.topdown import check_image as _check_image
from posepipe.models.weights import Weights

BN_MOMENTUM = 0.1
PIXEL_STD = 200.0   # box size unit of the official code
# The official evaluation path crops with cv2.warpAffine; its reference outputs (shared/golden) were made
# under OpenCV 5.0, whose float32 kernel they reproduce byte for byte. OpenCV 4.x's fixed-point crop
# differs by up to 3 grey levels and moves the heatmaps by 4e-4 of their range (40x the tolerance).
CROP_KERNEL: warp.Kernel = "float"
BOX_PADDING = 1.25  # the official detection-box loader enlarges every box by this factor
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, 0..1 scale
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------

# conv3x3, BasicBlock, Bottleneck and the residual layers are ResNet's: models/resnet.py.


class HighResolutionModule(nn.Module):
    """Parallel branches (one per resolution) followed by all-to-all fusion.

    Fusion into branch i from branch j: j > i is a 1x1 conv + BN and nearest upsampling by
    2^(j-i); j < i is (i-j) stride-2 3x3 conv + BN with ReLU between them but not after the
    last. The terms are summed starting from branch 0, then ReLU. With
    `multi_scale_output=False` only the highest-resolution output is fused and returned.
    """

    def __init__(self, block: Block, num_blocks: Sequence[int], channels: Sequence[int],
                 multi_scale_output: bool = True):
        super().__init__()
        if not len(num_blocks) == len(channels):
            raise ValueError(f"num_blocks {tuple(num_blocks)} and channels {tuple(channels)} differ in length")
        self.num_branches = len(channels)
        self.multi_scale_output = multi_scale_output
        # Every HRNet stage keeps its width (BASIC blocks), so in == out on every branch.
        self.branches = nn.ModuleList(
            make_res_layer(block, c * block.expansion, c, n) for n, c in zip(num_blocks, channels)
        )
        widths = [c * block.expansion for c in channels]
        self.fuse_layers = self._make_fuse_layers(widths) if self.num_branches > 1 else None
        self.relu = nn.ReLU(inplace=True)

    def _make_fuse_layers(self, widths: Sequence[int]) -> nn.ModuleList:
        fuse_layers = []
        for i in range(self.num_branches if self.multi_scale_output else 1):
            row: list[nn.Module | None] = []
            for j in range(self.num_branches):
                if j > i:
                    row.append(nn.Sequential(
                        nn.Conv2d(widths[j], widths[i], 1, 1, 0, bias=False),
                        nn.BatchNorm2d(widths[i]),
                        nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
                    ))
                elif j == i:
                    row.append(None)
                else:
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        out = widths[i] if last else widths[j]
                        layers: list[nn.Module] = [
                            nn.Conv2d(widths[j], out, 3, 2, 1, bias=False),
                            nn.BatchNorm2d(out),
                        ]
                        if not last:
                            layers.append(nn.ReLU(inplace=True))
                        steps.append(nn.Sequential(*layers))
                    row.append(nn.Sequential(*steps))
            fuse_layers.append(nn.ModuleList(row))
        return nn.ModuleList(fuse_layers)

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.num_branches == 1:
            return [self.branches[0](x[0])]
        x = [branch(xi) for branch, xi in zip(self.branches, x)]
        fused = []
        for i, row in enumerate(self.fuse_layers):
            y = x[0] if i == 0 else row[0](x[0])
            for j in range(1, self.num_branches):
                y = y + (x[j] if i == j else row[j](x[j]))
            fused.append(self.relu(y))
        return fused


def _make_transition(widths_pre: Sequence[int], widths_cur: Sequence[int]) -> nn.ModuleList:
    """Adapt existing branches (3x3 conv when the width changes) and add new lower-resolution
    ones from the last branch through stride-2 3x3 convs; every step is conv + BN + ReLU."""
    layers: list[nn.Module | None] = []
    for i, width in enumerate(widths_cur):
        if i < len(widths_pre):
            if width != widths_pre[i]:
                layers.append(nn.Sequential(
                    nn.Conv2d(widths_pre[i], width, 3, 1, 1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ))
            else:
                layers.append(None)
        else:
            steps = []
            for k in range(i + 1 - len(widths_pre)):
                inc = widths_pre[-1]
                out = width if k == i - len(widths_pre) else inc
                steps.append(nn.Sequential(
                    nn.Conv2d(inc, out, 3, 2, 1, bias=False),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                ))
            layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

# (num_modules, num_blocks per branch, channel multipliers of the base width), BASIC blocks.
_STAGES = {
    "stage2": (1, (4, 4), (1, 2)),
    "stage3": (4, (4, 4, 4), (1, 2, 4)),
    "stage4": (3, (4, 4, 4, 4), (1, 2, 4, 8)),
}


class PoseHighResolutionNet(nn.Module):
    """HRNet-W{width} for top-down heatmaps (the official COCO configuration).

    Input (N, 3, H, W) normalised RGB with H, W multiples of 32; output (N, num_joints, H/4, W/4)
    raw heatmaps (no sigmoid).
    """

    heatmap_stride = 4

    def __init__(self, width: int = 32, num_joints: int = 17, final_conv_kernel: int = 1):
        super().__init__()
        if final_conv_kernel not in (1, 3):
            raise ValueError(f"final_conv_kernel must be 1 or 3, got {final_conv_kernel}")
        self.width = width
        self.num_joints = num_joints
        # stem: two stride-2 3x3 convs
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(64, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_res_layer(Bottleneck, 64, 64, 4)

        pre = [64 * Bottleneck.expansion]
        for index, (stage, (num_modules, num_blocks, mult)) in enumerate(_STAGES.items(), start=1):
            channels = [width * m for m in mult]
            last_stage = stage == "stage4"
            modules = [
                HighResolutionModule(BasicBlock, num_blocks, channels,
                                     multi_scale_output=not (last_stage and m == num_modules - 1))
                for m in range(num_modules)
            ]
            setattr(self, f"transition{index}", _make_transition(pre, channels))
            setattr(self, stage, nn.Sequential(*modules))
            pre = channels

        self.final_layer = nn.Conv2d(pre[0], num_joints, kernel_size=final_conv_kernel, stride=1,
                                     padding=1 if final_conv_kernel == 3 else 0)

    @staticmethod
    def _transition(transition: nn.ModuleList, features: list[torch.Tensor]) -> list[torch.Tensor]:
        # As the official forward: an existing branch passes through (or its own layer); a new
        # branch, and any non-empty transition after stage 2, reads the lowest-resolution output.
        return [features[i] if layer is None else layer(features[-1]) for i, layer in enumerate(transition)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        y = self.stage2([x if layer is None else layer(x) for layer in self.transition1])
        y = self.stage3(self._transition(self.transition2, y))
        y = self.stage4(self._transition(self.transition3, y))
        return self.final_layer(y[0])


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------

_OFFICIAL_README = "https://github.com/leoxiaobin/deep-high-resolution-net.pytorch#main-results"
_PAPER = "Deep High-Resolution Representation Learning for Human Pose Estimation (Sun et al., CVPR 2019)"


def _coco_weights(width: int, size: tuple[int, int], file_id: str, ap_official: float, ap_mmpose: float,
                  gmacs: float) -> Weights:
    h, w = size
    name = f"hrnet_w{width}_coco_{h}x{w}"
    filename = f"{name}-{file_id}_20200708.pth"
    return Weights(
        name=name,
        family="hrnet",
        stage="pose",
        gmacs=gmacs,  # one crop, torch's FlopCounterMode (the paper's counts: 7.1 / 16.0 / 14.6 / 32.9 GFLOPs)
        url=f"https://download.openmmlab.com/mmpose/top_down/hrnet/{filename}",
        filename=filename,
        source_format="mmpose",
        arch={"width": width, "num_joints": 17},
        hash_prefix=file_id,
        input_size=size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        color="RGB",
        keypoint_names=COCO17_NAMES,
        skeleton=COCO17_SKELETON,
        license="Apache-2.0 (mmpose model zoo, the file at `url`; the authors' own pose_hrnet_*.pth files are MIT)",
        paper=_PAPER,
        metrics={
            # Official README, COCO val2017 with the detector boxes (person AP 56.4), flip test.
            "coco_val2017_AP": ap_official,
            # mmpose's model zoo for the file at `url`, same protocol.
            "coco_val2017_AP_mmpose_file": ap_mmpose,
        },
        notes=(
            f"The authors release pose_hrnet_w{width}_{h}x{w}.pth (models/pytorch/pose_coco/ on Google "
            "Drive / OneDrive, not directly downloadable; a plain state_dict, loadable here too). `url` is "
            "mmpose's public re-host: mmpose's training of the same architecture and recipe, stored in the "
            "mmpose 0.x layout (backbone.* + keypoint_head.final_layer.*) and remapped to the official keys. "
            f"Official numbers: {_OFFICIAL_README}."
        ),
    )


WEIGHTS: dict[str, Weights] = {
    spec.name: spec
    for spec in (
        _coco_weights(32, (256, 192), "c78dce93", 74.4, 74.6, 7.65),
        _coco_weights(32, (384, 288), "d9f0d786", 75.8, 76.0, 17.2),
        _coco_weights(48, (256, 192), "b9e0b3ab", 75.1, 75.6, 15.7),
        _coco_weights(48, (384, 288), "314c8528", 76.3, 76.7, 35.3),
    )
}


# --------------------------------------------------------------------------------------------
# Checkpoint formats: one pure remap per layout, all to the official keys
# --------------------------------------------------------------------------------------------

_SUPPORTED_LAYOUTS = (
    "official plain state_dict (conv1.weight ... final_layer.weight; optionally 'module.'-prefixed "
    "and/or wrapped in {'state_dict': ...}); mmpose 0.x (backbone.* + keypoint_head.final_layer.*); "
    "mmpose 1.x (backbone.* + head.final_layer.*; data_preprocessor.mean/std dropped as mmpose does)"
)


def remap_official(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """The authors' layout: keys already official (a DataParallel 'module.' prefix is dropped)."""
    return strip_prefix(state, "module.")


def _remap_mmpose(state: Mapping[str, torch.Tensor], head: str) -> "OrderedDict[str, torch.Tensor]":
    # mmpose's HRNet backbone uses the official names (conv1/bn1/.../stage4) under 'backbone.';
    # its heatmap head's 1x1 conv is `<head>.final_layer`. Anything else passes through unchanged
    # so that the strict load names it.
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in state.items():
        if key.startswith("backbone."):
            key = key[len("backbone."):]
        elif key.startswith(f"{head}.final_layer."):
            key = key[len(head) + 1:]
        out[key] = value
    return out


def remap_mmpose_v0(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """mmpose 0.x TopDown: backbone.* + keypoint_head.final_layer.* -> official keys."""
    return _remap_mmpose(state, "keypoint_head")


# mmengine's ImgDataPreprocessor buffers (normalisation constants, 0..255 scale). mmpose 1.x's
# BasePoseEstimator._load_state_dict_pre_hook deletes exactly these two keys before loading; so do we.
MMPOSE_V1_DROPPED = ("data_preprocessor.mean", "data_preprocessor.std")


def remap_mmpose_v1(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """mmpose 1.x TopdownPoseEstimator: backbone.* + head.final_layer.* -> official keys.

    ``data_preprocessor.mean`` / ``.std`` are dropped by name, as mmpose itself does on load.
    """
    return _remap_mmpose({k: v for k, v in state.items() if k not in MMPOSE_V1_DROPPED}, "head")


# (name, the keys that identify the layout, remap), checked in order.
Remap = Callable[[Mapping[str, torch.Tensor]], "OrderedDict[str, torch.Tensor]"]
_FORMATS: tuple[tuple[str, tuple[str, ...], Remap], ...] = (
    ("mmpose 0.x", ("keypoint_head.final_layer.weight",), remap_mmpose_v0),
    ("mmpose 1.x", ("head.final_layer.weight",), remap_mmpose_v1),
    ("official", ("conv1.weight", "final_layer.weight"), remap_official),
)


def detect_format(state: Mapping[str, Any]) -> str | None:
    """Which supported layout a (prefix-free) state dict is in, by its distinctive keys; None if none."""
    for name, keys, _ in _FORMATS:
        if all(key in state for key in keys):
            return name
    return None


def _state_of(obj: Any) -> tuple[bool, "OrderedDict[str, torch.Tensor] | None"]:
    """(wrapped in {'state_dict': ...}?, the tensors with a common 'module.' prefix dropped), or None."""
    wrapped = isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping)
    if wrapped:
        obj = obj["state_dict"]  # mmpose / mmcv files, the official training checkpoint.pth
    if not isinstance(obj, Mapping):
        return wrapped, None
    state = tensors_only(obj)
    if state and all(k.startswith("module.") for k in state):
        state = strip_prefix(state, "module.")
    return wrapped, state


def checkpoint_format(obj: Any) -> str | None:
    """The supported layout of an unpickled checkpoint (e.g. "mmpose 0.x, {'state_dict': ..., 'meta': ...}")."""
    wrapped, state = _state_of(obj)
    fmt = detect_format(state) if state is not None else None
    if fmt is None:
        return None
    container = "{'state_dict': ..., 'meta': ...}" if wrapped and "meta" in obj else (
        "{'state_dict': ...}" if wrapped else "plain state_dict")
    return f"{fmt} HRNet, {container}"


def convert_checkpoint(obj: Any) -> "OrderedDict[str, torch.Tensor]":
    """Any supported HRNet checkpoint (already unpickled) -> official state dict."""
    _, state = _state_of(obj)
    if state is None:
        raise CheckpointError(
            f"expected a state dict (a mapping of names to tensors), got {type(obj).__name__}; "
            f"supported: {_SUPPORTED_LAYOUTS}"
        )
    fmt = detect_format(state)
    if fmt is None:
        seen = obj["state_dict"] if isinstance(obj.get("state_dict"), Mapping) else obj
        raise CheckpointError(
            f"unrecognised HRNet checkpoint layout (keys seen: {preview(repr(k) for k in seen) or 'none'}); "
            f"supported: {_SUPPORTED_LAYOUTS}"
        )
    remap = next(fn for name, _, fn in _FORMATS if name == fmt)
    return remap(state)


# --------------------------------------------------------------------------------------------
# Pre- and post-processing (numpy, float32 where the official code is)
# --------------------------------------------------------------------------------------------

def box_to_center_scale(
    bboxes_xywh: np.ndarray, aspect_ratio: float, *, padding: float = BOX_PADDING, pixel_std: float = PIXEL_STD
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (K, 4) [x, y, w, h] -> centres (K, 2) and scales (K, 2), float32 as the official code.

    The box is widened or heightened to `aspect_ratio` (= input width / height), expressed in
    units of `pixel_std` pixels and enlarged by `padding`. (The official `_xywh2cs` skips the
    padding when the centre x is exactly -1, a sentinel of its ground-truth path; boxes from a
    detector never mean that, so it is not reproduced.)
    """
    boxes = _as_boxes(bboxes_xywh)
    x, y, w, h = (boxes[:, i].copy() for i in range(4))
    center = np.stack([x + w * 0.5, y + h * 0.5], axis=1).astype(np.float32)
    wider = w > aspect_ratio * h
    taller = w < aspect_ratio * h
    h = np.where(wider, w * 1.0 / aspect_ratio, h)
    w = np.where(taller, h * aspect_ratio, w)
    scale = np.stack([w * 1.0 / pixel_std, h * 1.0 / pixel_std], axis=1).astype(np.float32)
    return center, scale * np.float32(padding)


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a - b
    return b + np.array([-d[1], d[0]], dtype=np.float32)


def get_affine_transform(
    center: np.ndarray, scale: np.ndarray, output_size: tuple[int, int], *, inv: bool = False
) -> np.ndarray:
    """The official `get_affine_transform` without rotation: (2, 3) float64, image -> output.

    `output_size` is (width, height). Only scale[0] (width) sets the zoom; the output centre
    maps to `center`. With `inv`, output -> image.
    """
    scale_px = np.asarray(scale, dtype=np.float32) * 200.0
    center = np.asarray(center, dtype=np.float32)
    dst_w, dst_h = output_size
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = center
    # As the official get_dir(): the offset is a float64 pair, the sum is rounded to float32.
    src[1] = center + np.array([0.0, scale_px[0] * -0.5], dtype=np.float64)
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = np.array([dst_w * 0.5, dst_h * 0.5]) + np.array([0.0, dst_w * -0.5], dtype=np.float32)
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    return warp.affine_transform(dst, src) if inv else warp.affine_transform(src, dst)


def crop_images(
    image_bgr: np.ndarray,
    centers: np.ndarray,
    scales: np.ndarray,
    *,
    input_size: tuple[int, int],
    color: str = "RGB",
) -> np.ndarray:
    """Affine crops of `image_bgr` -> (K, H, W, 3) uint8 in the network's channel order.

    Kept as uint8 so a GPU predictor uploads a quarter of the bytes and normalises on the device.
    """
    height, width = input_size
    centers = np.asarray(centers, dtype=np.float32).reshape(-1, 2)
    scales = np.asarray(scales, dtype=np.float32).reshape(-1, 2)
    trans = [get_affine_transform(center, scale, (width, height)) for center, scale in zip(centers, scales)]
    out = warp.warp_crops(image_bgr, trans, (width, height), CROP_KERNEL)
    return np.ascontiguousarray(out[..., ::-1]) if color == "RGB" else out  # per-channel warp: BGR->RGB after is identical


def crop_inputs(
    image_bgr: np.ndarray,
    centers: np.ndarray,
    scales: np.ndarray,
    *,
    input_size: tuple[int, int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    color: str = "RGB",
) -> np.ndarray:
    """Affine crops of `image_bgr` -> (K, 3, H, W) float32 network input.

    `input_size` is (height, width); mean/std are per channel in the network's order, 0..1 scale.
    """
    crops = crop_images(image_bgr, centers, scales, input_size=input_size, color=color)
    mean32 = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std32 = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    chw = crops.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    return (chw - mean32) / std32


def flip_back(heatmaps: np.ndarray, flip_pairs: Sequence[tuple[int, int]] = COCO17_FLIP_PAIRS) -> np.ndarray:
    """Heatmaps of mirrored inputs (N, J, H, W) -> mirrored back, left/right channels swapped."""
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be (N, J, H, W), got shape {heatmaps.shape}")
    return heatmap_ops.flip_back(heatmaps, _flip_indices(heatmaps.shape[1], flip_pairs)).numpy()


def average_flip(
    heatmaps: np.ndarray, heatmaps_flipped: np.ndarray,
    flip_pairs: Sequence[tuple[int, int]] = COCO17_FLIP_PAIRS, *, shift: bool = True,
) -> np.ndarray:
    """The official flip test: flip back, shift right by one column (column 0 kept), average."""
    indices = _flip_indices(heatmaps.shape[1], flip_pairs)
    return heatmap_ops.average_flip(heatmaps, heatmaps_flipped, indices, shift=shift).numpy()


def _flip_indices(num_joints: int, flip_pairs: Sequence[tuple[int, int]]) -> list[int]:
    return heatmap_ops.flip_indices_from_pairs(num_joints, flip_pairs)


def decode_heatmaps(
    heatmaps: np.ndarray, centers: np.ndarray, scales: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The official `get_final_preds`: (K, J, H, W) -> keypoints (K, J, 2) in image pixels and
    scores (K, J), both float32. Scores are the raw heatmap maxima.

    The peak and its quarter-pixel step are models/heatmaps.py's "official" convention (maxval <= 0
    -> (0, 0); the step only inside 1 < x < W-1 and 1 < y < H-1); then the inverse affine.
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be (K, J, H, W), got shape {heatmaps.shape}")
    k, j, h, w = heatmaps.shape
    coords_t, maxvals_t = heatmap_ops.decode_heatmaps(heatmaps, "official")
    coords, maxvals = coords_t.numpy(), maxvals_t.numpy()

    keypoints = np.empty_like(coords)
    centers = np.asarray(centers, dtype=np.float32).reshape(-1, 2)
    scales = np.asarray(scales, dtype=np.float32).reshape(-1, 2)
    if len(centers) != k or len(scales) != k:
        raise ValueError(f"{k} heatmap sets but {len(centers)} centres and {len(scales)} scales")
    for n in range(k):
        trans = get_affine_transform(centers[n], scales[n], (w, h), inv=True)
        xy1 = np.concatenate([coords[n].astype(np.float64), np.ones((j, 1))], axis=1)
        keypoints[n] = xy1 @ trans.T
    return keypoints, maxvals.astype(np.float32)


def _as_boxes(bboxes_xywh: Any) -> np.ndarray:
    boxes = np.asarray(bboxes_xywh, dtype=np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"bboxes_xywh must be (K, 4) [x, y, w, h], got shape {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError("bboxes_xywh holds NaN or infinite values")
    if (boxes[:, 2:] < 0).any():
        raise ValueError("bboxes_xywh has a negative width or height; boxes are [x, y, w, h], not [x1, y1, x2, y2]")
    return boxes


# --------------------------------------------------------------------------------------------
# Public builders and the predictor
# --------------------------------------------------------------------------------------------

def pose_hrnet(*, width: int = 32, num_joints: int = 17, final_conv_kernel: int = 1) -> PoseHighResolutionNet:
    """The bare network with PyTorch's default (random) initialisation; loads nothing."""
    return PoseHighResolutionNet(width=width, num_joints=num_joints, final_conv_kernel=final_conv_kernel)


class HRNetPose:
    """Top-down keypoints for person boxes: crop, HRNet, (flip test), decode. Outputs CPU numpy;
    :meth:`predict_frames` does the same on the device, for frames already there (device tensors out)."""

    supports_device = True  # predict_frames: the same crop kernel, network and decoding on the device

    def __init__(self, model: PoseHighResolutionNet, weights: Weights, device: torch.device, half: bool = False):
        if weights.input_size is None:
            raise ValueError(f"{weights.name}: the weights record has no input_size")
        self.model = model
        self.weights = weights
        self.device = device
        self.half = bool(half) and device.type == "cuda"
        self.input_size: tuple[int, int] = tuple(weights.input_size)  # (height, width)
        stride = model.heatmap_stride
        self.heatmap_size = (self.input_size[0] // stride, self.input_size[1] // stride)
        self.num_joints = model.num_joints
        # Left/right pairs are known for the COCO-17 layout only; other layouts cannot flip-test.
        self.flip_pairs: tuple[tuple[int, int], ...] | None = COCO17_FLIP_PAIRS if model.num_joints == 17 else None
        self._flip_index = (torch.tensor(_flip_indices(model.num_joints, self.flip_pairs), dtype=torch.long, device=device)
                            if self.flip_pairs is not None else None)  # made once: no host copy per pass
        self.weights_sha256: str | None = None  # set by models.load_model
        mean, std = weights.mean or IMAGENET_MEAN, weights.std or IMAGENET_STD
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    # -- geometry ---------------------------------------------------------------------------
    def box_to_center_scale(self, bboxes_xywh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        height, width = self.input_size
        return box_to_center_scale(bboxes_xywh, width / height)

    def crop_inputs(self, image_bgr: np.ndarray, centers: np.ndarray, scales: np.ndarray) -> np.ndarray:
        spec = self.weights
        return crop_inputs(image_bgr, centers, scales, input_size=self.input_size,
                           mean=spec.mean or IMAGENET_MEAN, std=spec.std or IMAGENET_STD, color=spec.color)

    def normalize(self, crops: np.ndarray) -> torch.Tensor:
        """(K, H, W, 3) uint8 crops -> (K, 3, H, W) float32 input on the device; the same arithmetic
        as `crop_inputs`, done where the network runs."""
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device).permute(0, 3, 1, 2).float()
        return (x / 255.0 - self._mean) / self._std

    # -- network ----------------------------------------------------------------------------
    def _forward(self, inputs: torch.Tensor) -> np.ndarray:
        x = inputs.to(self.device, dtype=torch.float32)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return forward_half_guarded(self, lambda: self.model(x), "HRNet").cpu().numpy()

    @torch.inference_mode()
    def heatmaps(self, inputs: np.ndarray | torch.Tensor, flip_test: bool = False) -> np.ndarray:
        """Network input (N, 3, H, W) -> heatmaps (N, J, H/4, W/4) float32: raw, or flip-averaged."""
        if isinstance(inputs, torch.Tensor):
            x = inputs
        else:
            x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"inputs must be (N, 3, H, W), got shape {tuple(x.shape)}")
        x = x.to(self.device, dtype=torch.float32)  # mirror and stack where the network runs
        if not flip_test:
            return self._forward(x)
        if self.flip_pairs is None:
            raise ValueError(f"flip test needs left/right joint pairs, unknown for {self.num_joints} joints")
        n = x.shape[0]
        both = self._forward(torch.cat([x, torch.flip(x, dims=[3])]))
        return average_flip(both[:n], both[n:], self.flip_pairs)

    # -- prediction -------------------------------------------------------------------------
    def predict(self, image_bgr: np.ndarray, bboxes_xywh: np.ndarray, flip_test: bool = True
                ) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (K, 4) [x, y, w, h] in `image_bgr` -> keypoints (K, J, 2) image px and scores (K, J)."""
        return self.predict_batch([image_bgr], [bboxes_xywh], flip_test=flip_test)[0]

    @torch.inference_mode()
    def predict_batch(
        self,
        images_bgr: Sequence[np.ndarray],
        bboxes_xywh: Sequence[np.ndarray],
        flip_test: bool = True,
        batch_size: int = 32,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """`predict` for many images: crops from all of them go through the network together,
        `batch_size` crops per pass (with flip test, each pass also holds their mirrored copies,
        so 2 * batch_size network inputs). One (keypoints, scores) pair per image."""
        if len(images_bgr) != len(bboxes_xywh):
            raise ValueError(f"{len(images_bgr)} images but {len(bboxes_xywh)} box arrays")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        j = self.num_joints
        centers, scales, results = [], [], []
        for image, boxes in zip(images_bgr, bboxes_xywh):
            _check_image(image)
            c, s = self.box_to_center_scale(boxes)
            centers.append(c)
            scales.append(s)
            results.append((np.zeros((len(c), j, 2), np.float32), np.zeros((len(c), j), np.float32)))
        # every crop as (image index, box index), in order
        jobs = [(i, b) for i, c in enumerate(centers) for b in range(len(c))]
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            c = np.stack([centers[i][b] for i, b in chunk])
            s = np.stack([scales[i][b] for i, b in chunk])
            crops = np.concatenate([
                crop_images(images_bgr[i], centers[i][b:b + 1], scales[i][b:b + 1], input_size=self.input_size,
                            color=self.weights.color) for i, b in chunk
            ])
            hms = self.heatmaps(self.normalize(crops), flip_test=flip_test)
            kps, scores = decode_heatmaps(hms, c, s)
            for row, (i, b) in enumerate(chunk):
                results[i][0][b] = kps[row]
                results[i][1][b] = scores[row]
        return results


    @torch.inference_mode()
    def predict_frames(
        self,
        frames: torch.Tensor,
        frame_of_box: torch.Tensor,
        boxes_xywh: torch.Tensor,
        *,
        flip_test: bool = True,
        bucket: int = ondevice.BUCKET,
        batch_size: int = 64,
    ) -> ondevice.PoseFrames:
        """`predict_batch` on the device, with no host sync.

        frames: (B, H, W, 3) uint8 BGR on the model's device; frame_of_box: (N,) int64, the frame of each
        box; boxes_xywh: (N, 4) float [x, y, w, h] image pixels. Returns
        :class:`~posepipe.models.ondevice.PoseFrames`: keypoints (N, 17, 2) float32 image px, scores
        (N, 17) float32 (raw heatmap maxima), overflow () bool (fp16 inf/NaN in a real crop's heatmaps:
        call :meth:`fall_back_to_fp32` and run again). N is padded up to a multiple of `bucket` and run
        `batch_size` crops per pass (their mirrors in the same pass with `flip_test`).

        The crops are the reference path's (:data:`CROP_KERNEL` of :mod:`~posepipe.models.warp`, matrices
        from the same LU solve), the flip
        average and ``get_final_preds`` decoding are models/heatmaps.py's, the inverse affine the same
        matrix applied in float64.
        """
        ondevice.check_inputs(frames, frame_of_box, boxes_xywh, self.device, self.weights.name)
        if flip_test and self._flip_index is None:
            raise ValueError(f"flip test needs left/right joint pairs, unknown for {self.num_joints} joints")
        n, j = boxes_xywh.shape[0], self.num_joints
        if n == 0:
            empty = torch.zeros((0, j), dtype=torch.float32, device=self.device)
            return ondevice.PoseFrames(empty.unsqueeze(-1).expand(0, j, 2).contiguous(), empty,
                                       torch.zeros((), dtype=torch.bool, device=self.device))
        height, width = self.input_size
        hm_h, hm_w = self.heatmap_size
        total = ondevice.padded_count(n, bucket)
        step = max(bucket, batch_size // bucket * bucket)
        fob, boxes = ondevice.pad_boxes(frame_of_box, boxes_xywh, total, (0.0, 0.0, 1.0, 1.0))
        center, scale = ondevice.hrnet_center_scale(boxes, width / height, BOX_PADDING, PIXEL_STD)
        to_crop = ondevice.hrnet_affine(center, scale, (width, height), PIXEL_STD)
        to_image = ondevice.hrnet_affine(center, scale, (hm_w, hm_h), PIXEL_STD, inv=True)
        keypoints, scores, flags = [], [], []
        for start in range(0, total, step):
            stop = min(start + step, total)
            real = max(0, min(n, stop) - start)
            crops = warp.warp(CROP_KERNEL)(frames, fob[start:stop], to_crop[start:stop], (width, height))
            if self.weights.color == "RGB":
                crops = crops.flip(-1)
            x = (crops.permute(0, 3, 1, 2).float() / 255.0 - self._mean) / self._std  # as `normalize`
            m = x.shape[0]
            inputs = torch.cat([x, torch.flip(x, dims=[3])]) if flip_test else x  # as `heatmaps`
            if self.device.type == "cuda":
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            rows = [slice(0, real), slice(m, m + real)] if flip_test else [slice(0, real)]
            out, overflow = forward_half_flagged(self, partial(self.model, inputs), rows)
            hms = heatmap_ops.average_flip(out[:m], out[m:], self._flip_index) if flip_test else out
            coords, maxvals = heatmap_ops.decode_heatmaps(hms, "official")
            keypoints.append(ondevice.apply_affine(coords, to_image[start:stop]))
            scores.append(maxvals)
            flags.append(overflow)
        return ondevice.PoseFrames(torch.cat(keypoints)[:n], torch.cat(scores)[:n], torch.stack(flags).any())

    def fall_back_to_fp32(self) -> None:
        """After ``predict_frames`` reported an overflow: fp32 from now on (then run that window again)."""
        fall_back_to_fp32(self, "HRNet")


def create(spec: Weights, state_dict: Mapping[str, torch.Tensor] | None, *, device: torch.device,
           half: bool = False) -> HRNetPose:
    """Build `spec`'s architecture, load `state_dict` strictly (None: random init), eval, place.

    On CUDA the model runs channels_last, and under fp16 autocast when `half`; `half` is ignored
    on CPU. TF32 flags are left as the caller set them.
    """
    model = pose_hrnet(**dict(spec.arch))
    if state_dict is not None:
        load_strict(model, state_dict, what="the checkpoint")
    model.eval()
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return HRNetPose(model, spec, device, half=half)


__all__ = [
    "WEIGHTS", "BasicBlock", "Bottleneck", "HRNetPose", "HighResolutionModule", "PoseHighResolutionNet",
    "MMPOSE_V1_DROPPED", "average_flip", "box_to_center_scale", "checkpoint_format", "convert_checkpoint", "create", "crop_images", "crop_inputs", "decode_heatmaps",
    "detect_format", "flip_back", "get_affine_transform", "pose_hrnet", "remap_mmpose_v0", "remap_mmpose_v1",
    "remap_official",
]
