"""ViTPose: top-down 2D pose from a plain Vision Transformer and a light deconvolution head.

Xu, Zhang, Zhang and Tao, "ViTPose: Simple Vision Transformer Baselines for Human Pose Estimation",
NeurIPS 2022. A faithful re-implementation of mmpose 1.3.2's ``TopdownPoseEstimator`` with
mmpretrain 1.2.0's ``VisionTransformer`` (ViT-B/16, no class token, patch embedding with 2 px of
padding) and mmpose's ``HeatmapHead`` (two 4x4 deconvolutions), config
``td-hm_ViTPose-base_8xb64-210e_coco-256x192.py``, loadable from mmpose's checkpoint with
``strict=True``; see ``shared/golden/vitpose_b_coco_256x192/README.md`` for every convention checked.

ViTPose is the transformer family's practical heir here: PRTR and TokenPose have no maintained
checkpoints that load in current code, while ViTPose is mmpose's and scores higher.

Order of this file: building blocks (the ViT, then the UDP geometry and the DARK-UDP decoder), the
model, the weights table, the public builders and the predictor. What the predictor reproduces:

- boxes, the 3:4 aspect fix, normalisation and mapping back: mmpose 1.x's top-down path
  (models/topdown.py); the crop uses the **UDP** matrix (``get_udp_warp_matrix``): the box's edges
  map to the centres of the crop's first and last pixels, so x and y zoom by ``(192 - 1) / scale_w``
  and ``(256 - 1) / scale_h``;
- flip test: mirror back and swap left/right, **no** one-column shift, average;
- decoding (``UDPHeatmap``, 'gaussian'): integer argmax (a maximum <= 0 gives (-1, -1)), then
  DARK-UDP: Gaussian blur (11 taps, sigma 2) rescaled to the original maximum, clip to [1e-3, 50],
  log, one Newton step from the argmax with central differences on the edge-padded map, then
  ``/ (heatmap size - 1) * input size`` to crop pixels; scores are the raw heatmap maxima.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from posepipe.models import heatmaps as heatmap_ops
from posepipe.models import mmpose, warp
from posepipe.models.checkpoint import CheckpointError, load_strict
from posepipe.models.simplebaseline import MMPOSE_MEAN, MMPOSE_STD, HeatmapHead
from posepipe.models.skeletons import COCO17_NAMES, COCO17_SKELETON
from posepipe.models.topdown import TopdownPredictor, place
from posepipe.models.weights import Weights

# UDPHeatmap's decoding: the blur that modulates heatmaps before the Newton step (sigma 2 heatmaps).
BLUR_KERNEL_SIZE = 11
LOG_CLIP = (1e-3, 50.0)


# --------------------------------------------------------------------------------------------
# Building blocks: the Vision Transformer (mmpretrain 1.2.0 vision_transformer.py, mmcv's PatchEmbed/FFN)
# --------------------------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    """mmcv's ``PatchEmbed`` as ViTPose configures it: one Conv2d(k=16, s=16, padding 2, bias), no norm.

    The 2 px of zero padding (applied after normalisation) shift the token grid: token (i, j) sees input
    rows 16i-2 .. 16i+13; a 256x192 input gives 16 x 12 tokens.
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int, padding: int):
        super().__init__()
        self.projection = nn.Conv2d(in_channels, embed_dims, kernel_size=patch_size, stride=patch_size,
                                    padding=padding, bias=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.projection(x)
        grid = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), grid  # tokens row-major: index = row * cols + col


class MultiheadAttention(nn.Module):
    """mmpretrain's ``MultiheadAttention``: qkv Linear with bias split as (3, heads, head_dim), scaled
    dot-product attention (scale head_dim^-0.5), output projection. No layer scale."""

    def __init__(self, embed_dims: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=True)
        self.proj = nn.Linear(embed_dims, embed_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class FFN(nn.Module):
    """mmcv's ``FFN`` with two layers: ``layers.0.0`` Linear -> exact (erf) GELU, ``layers.1`` Linear."""

    def __init__(self, embed_dims: int, feedforward_channels: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, feedforward_channels), nn.GELU()),
            nn.Linear(feedforward_channels, embed_dims),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TransformerEncoderLayer(nn.Module):
    """Pre-norm block: ``x + attn(ln1(x))`` then ``x + ffn(ln2(x))``; LayerNorm eps 1e-6."""

    def __init__(self, embed_dims: int, num_heads: int, feedforward_channels: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.attn = MultiheadAttention(embed_dims, num_heads)
        self.ln2 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.ffn = FFN(embed_dims, feedforward_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


class VisionTransformer(nn.Module):
    """mmpretrain's ``VisionTransformer`` with ``with_cls_token=False, out_type='featmap'``:
    (N, 3, H, W) -> (N, C, H/16, W/16) (the token grid as a feature map, after the final LayerNorm).

    The learned position embedding has one row per token of the grid it was trained on; it is added
    as is, so the input must have that grid (mmpretrain would interpolate it for another size;
    ViTPose's crops always have this one).
    """

    def __init__(self, img_size: tuple[int, int] = (256, 192), embed_dims: int = 768, num_layers: int = 12,
                 num_heads: int = 12, feedforward_channels: int = 3072, patch_size: int = 16, padding: int = 2):
        super().__init__()
        self.grid = ((img_size[0] + 2 * padding - patch_size) // patch_size + 1,
                     (img_size[1] + 2 * padding - patch_size) // patch_size + 1)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], embed_dims))
        self.patch_embed = PatchEmbed(3, embed_dims, patch_size, padding)
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(embed_dims, num_heads, feedforward_channels) for _ in range(num_layers))
        self.ln1 = nn.LayerNorm(embed_dims, eps=1e-6)  # final_norm
        self.out_channels = embed_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, grid = self.patch_embed(x)
        if grid != self.grid:
            raise ValueError(f"ViT input {tuple(x.shape[-2:])} gives a {grid[0]}x{grid[1]} token grid; the position "
                             f"embedding is for {self.grid[0]}x{self.grid[1]} (crops of the weights record's input_size)")
        tokens = tokens + self.pos_embed
        for layer in self.layers:
            tokens = layer(tokens)
        tokens = self.ln1(tokens)
        b, _, c = tokens.shape
        return tokens.reshape(b, grid[0], grid[1], c).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------------------
# Building blocks: UDP geometry and DARK-UDP decoding
# --------------------------------------------------------------------------------------------

def get_udp_warp_matrix(center: np.ndarray, scale: np.ndarray, output_size_wh: tuple[int, int]) -> np.ndarray:
    """mmpose's ``get_udp_warp_matrix`` without rotation: (2, 3) float32 values (as float64), image -> crop.

    ``sx = (w_out - 1) / scale_w``, ``sy = (h_out - 1) / scale_h``, translation ``s * (0.5 * scale - center)``:
    the box's edges land on the centres of the crop's edge pixels. As in mmpose under numpy 1.x, the
    arithmetic on its float32 inputs is float64 (numpy scalars promote), stored in a float32 matrix.
    """
    cx, cy = (float(v) for v in np.asarray(center, dtype=np.float32).reshape(2))
    sw, sh = (float(v) for v in np.asarray(scale, dtype=np.float32).reshape(2))
    out_w, out_h = output_size_wh
    sx, sy = (out_w - 1) / sw, (out_h - 1) / sh
    matrix = np.array([[sx, 0.0, sx * (-0.5 * (2 * cx) + 0.5 * sw)],
                       [0.0, sy, sy * (-0.5 * (2 * cy) + 0.5 * sh)]], dtype=np.float32)
    return matrix.astype(np.float64)


def udp_warp_matrices(center: torch.Tensor, scale: torch.Tensor, output_size_wh: tuple[int, int]) -> torch.Tensor:
    """:func:`get_udp_warp_matrix` for N boxes on tensors: (N, 2, 3) float64 holding float32 values."""
    c, s = center.to(torch.float64), scale.to(torch.float64)
    out_w, out_h = output_size_wh
    sx, sy = (out_w - 1) / s[:, 0], (out_h - 1) / s[:, 1]
    zero = torch.zeros_like(sx)
    rows = torch.stack([sx, zero, sx * (-c[:, 0] + 0.5 * s[:, 0]), zero, sy, sy * (-c[:, 1] + 0.5 * s[:, 1])], 1)
    return rows.to(torch.float32).to(torch.float64).view(-1, 2, 3)


def gaussian_kernel(ksize: int) -> torch.Tensor:
    """``cv2.getGaussianKernel(ksize, 0, CV_32F)``: sigma = 0.3 * ((ksize - 1) / 2 - 1) + 0.8, taps
    computed in float64, normalised to sum 1, then rounded to float32."""
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) * 0.5
    taps = np.exp(-0.5 / sigma ** 2 * x * x)
    return torch.from_numpy((taps / taps.sum()).astype(np.float32))


def modulate(heatmaps: torch.Tensor, maxima: torch.Tensor, ksize: int = BLUR_KERNEL_SIZE) -> torch.Tensor:
    """mmpose's ``gaussian_blur`` then the clip and log of ``refine_keypoints_dark_udp``: (N, K, H, W) float32.

    mmpose pads each map with ``(ksize - 1) / 2`` zeros and blurs with ``cv2.GaussianBlur`` before
    cropping back: the cropped pixels never reach OpenCV's own border, so this is a separable
    convolution with zero padding. Each blurred map is rescaled so that its maximum is the original
    maximum (`maxima`).
    """
    n, k, h, w = heatmaps.shape
    taps = gaussian_kernel(ksize).to(heatmaps.device)
    border = (ksize - 1) // 2
    x = heatmaps.reshape(n * k, 1, h, w).float()
    with torch.autocast(x.device.type, enabled=False):  # decoding is float32 whatever the network ran in
        x = F.conv2d(x, taps.view(1, 1, 1, ksize), padding=(0, border))  # rows first, as OpenCV's sepFilter2D
        x = F.conv2d(x, taps.view(1, 1, ksize, 1), padding=(border, 0))
    x = x.reshape(n, k, h, w)
    blurred_max = x.flatten(2).amax(dim=2)
    x = x * (maxima.float() / blurred_max)[..., None, None]
    return torch.log(x.clamp(*LOG_CLIP))


def refine_dark_udp(coords: torch.Tensor, heatmaps: torch.Tensor, maxima: torch.Tensor,
                    ksize: int = BLUR_KERNEL_SIZE) -> torch.Tensor:
    """``refine_keypoints_dark_udp``: integer peaks (N, K, 2) float32 -> refined (N, K, 2) float32, heatmap px.

    One Newton step on the modulated log-heatmap: ``kp -= inv(H + eps I) @ grad``, with central
    differences on the edge-padded map (the Hessian's mixed term is mmpose's 7-point formula) and
    float32's eps on the diagonal; the inverse and the step in float64, stored into float32.

    mmpose indexes each instance's padded maps as one flat array, and a (-1, -1) peak (maximum <= 0)
    reads its neighbours at the padded corner, some of them through numpy's negative-index wrap (joint
    0's into the last map's end, others into the previous map): the same indices are read here, so
    such joints move exactly as mmpose moves them. A singular Hessian (numpy would raise) keeps the peak.
    """
    n, k, h, w = heatmaps.shape
    logs = F.pad(modulate(heatmaps, maxima, ksize), (1, 1, 1, 1), mode="replicate")
    flat = logs.reshape(n, -1)
    total = flat.shape[1]
    pw = w + 2
    index = ((coords[..., 0] + 1) + (coords[..., 1] + 1) * pw).long()
    index = index + (pw * (h + 2)) * torch.arange(k, device=coords.device)

    def at(offset: int) -> torch.Tensor:
        return torch.gather(flat, 1, (index + offset) % total)  # % total: numpy's wrap of negative indices

    i_, ix1, iy1, ix1y1 = at(0), at(1), at(pw), at(pw + 1)
    ix1_y1_, ix1_, iy1_ = at(-pw - 1), at(-1), at(-pw)
    dx = 0.5 * (ix1 - ix1_)
    dy = 0.5 * (iy1 - iy1_)
    dxx = ix1 - 2 * i_ + ix1_
    dyy = iy1 - 2 * i_ + iy1_
    dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
    eps = float(np.finfo(np.float32).eps)
    hessian = torch.stack([dxx.double() + eps, dxy.double(), dxy.double(), dyy.double() + eps], -1).view(n, k, 2, 2)
    inverse, info = torch.linalg.inv_ex(hessian)
    step = (inverse @ torch.stack([dx, dy], -1).double().unsqueeze(-1)).squeeze(-1)
    step = torch.where((info == 0).unsqueeze(-1) & torch.isfinite(step), step, torch.zeros_like(step))
    return (coords.double() - step).float()


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class ViTPose(nn.Module):
    """ViT backbone + deconvolution head: (N, 3, H, W) normalised RGB -> (N, J, H/4, W/4) raw heatmaps."""

    def __init__(self, *, img_size: tuple[int, int] = (256, 192), embed_dims: int = 768, num_layers: int = 12,
                 num_heads: int = 12, feedforward_channels: int = 3072, num_joints: int = 17,
                 deconv_channels: tuple[int, ...] = (256, 256)):
        super().__init__()
        self.num_joints = num_joints
        self.backbone = VisionTransformer(tuple(img_size), embed_dims, num_layers, num_heads, feedforward_channels)
        self.head = HeatmapHead(embed_dims, num_joints, deconv_channels=tuple(deconv_channels))
        self.heatmap_stride = 16 // self.head.upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------

_PAPER = "ViTPose: Simple Vision Transformer Baselines for Human Pose Estimation (Xu et al., NeurIPS 2022)"
_ZOO = "https://download.openmmlab.com/mmpose/v1/body_2d_keypoint/topdown_heatmap/coco"

WEIGHTS: dict[str, Weights] = {
    "vitpose_b_coco_256x192": Weights(
        name="vitpose_b_coco_256x192",
        family="vitpose",
        stage="pose",
        url=f"{_ZOO}/td-hm_ViTPose-base_8xb64-210e_coco-256x192-216eae50_20230314.pth",
        filename="td-hm_ViTPose-base_8xb64-210e_coco-256x192-216eae50_20230314.pth",
        source_format="mmpose",
        hash_prefix="216eae50",
        arch={"embed_dims": 768, "num_layers": 12, "num_heads": 12, "feedforward_channels": 3072, "num_joints": 17},
        input_size=(256, 192),
        mean=MMPOSE_MEAN,
        std=MMPOSE_STD,
        color="RGB",
        keypoint_names=COCO17_NAMES,
        skeleton=COCO17_SKELETON,
        license="Apache-2.0 (mmpose model zoo)",
        paper=_PAPER,
        # mmpose's model zoo for this file (vitpose_coco.md / .yml), COCO val2017, detector boxes of
        # person AP 56.4, flip test.
        metrics={"coco_val2017_AP": 75.7, "coco_val2017_AR": 81.0},
        gmacs=18.5,  # one crop, torch's FlopCounterMode
        notes=(
            "ViT-B/16 (MAE-pretrained, no class token) + two deconvolutions, trained by mmpose (config "
            "td-hm_ViTPose-base_8xb64-210e_coco-256x192.py). UDP crops and DARK-UDP decoding. The transformer "
            "family's practical heir: PRTR and TokenPose have no maintained checkpoints that load in current code."
        ),
    ),
}


# --------------------------------------------------------------------------------------------
# Checkpoint format
# --------------------------------------------------------------------------------------------

_LABEL = "ViTPose (Vision Transformer + heatmap head)"
_MARKERS = ("backbone.patch_embed.projection.weight", "backbone.layers.0.attn.qkv.weight",
            "head.deconv_layers.0.weight")
_POS_EMBED = "backbone.pos_embed"


def drop_class_token_row(state: Mapping[str, torch.Tensor], rows: int) -> "OrderedDict[str, torch.Tensor]":
    """mmpretrain's ``_prepare_pos_embed`` load hook, its class-token case: a stored ``pos_embed`` with
    one row more than the model's tokens (a class-token ViT's) loses its first row. Any other
    mismatch is left for the strict load to report (mmpretrain would interpolate a square grid)."""
    out = OrderedDict(state)
    pos = out.get(_POS_EMBED)
    if pos is not None and pos.ndim == 3 and pos.shape[1] == rows + 1:
        out[_POS_EMBED] = pos[:, 1:]
    return out


def checkpoint_format(obj: Any) -> str | None:
    """The supported layout of an unpickled checkpoint, by its keys; None if none."""
    return mmpose.describe_layout(obj, _LABEL, _MARKERS)


def convert_checkpoint(obj: Any) -> "OrderedDict[str, torch.Tensor]":
    """Any supported ViTPose checkpoint -> the state dict of :class:`ViTPose` (mmpose 1.x names)."""
    state = mmpose.convert(obj, _LABEL, _MARKERS)
    pos = state.get(_POS_EMBED)
    if pos is None:
        raise CheckpointError(f"not a {_LABEL} checkpoint: its state_dict has no {_POS_EMBED}")
    return drop_class_token_row(state, 192) if pos.ndim == 3 and pos.shape[1] == 193 else state


# --------------------------------------------------------------------------------------------
# Public builders and the predictor
# --------------------------------------------------------------------------------------------

def vitpose(*, img_size: tuple[int, int] = (256, 192), embed_dims: int = 768, num_layers: int = 12,
            num_heads: int = 12, feedforward_channels: int = 3072, num_joints: int = 17) -> ViTPose:
    """The bare network with PyTorch's default (random) initialisation; loads nothing."""
    return ViTPose(img_size=img_size, embed_dims=embed_dims, num_layers=num_layers, num_heads=num_heads,
                   feedforward_channels=feedforward_channels, num_joints=num_joints)


class ViTPosePredictor(TopdownPredictor):
    """Top-down keypoints from heatmaps with UDP crops and DARK-UDP decoding. Outputs CPU numpy.

    Both paths crop with UDP's matrices (:meth:`warp_matrices` on the host, :meth:`device_warp_matrices`
    on the device) through the same fixed-point kernel, and decode with the same torch DARK-UDP.
    """

    label = "ViTPose"

    def __init__(self, model: ViTPose, weights: Weights, device: torch.device, half: bool = False):
        super().__init__(model, weights, device, half)
        stride = model.heatmap_stride
        self.heatmap_size = (self.input_size[0] // stride, self.input_size[1] // stride)  # (h, w)

    def warp_matrices(self, centers: np.ndarray, scales: np.ndarray) -> list[np.ndarray]:
        centers = np.asarray(centers, dtype=np.float32).reshape(-1, 2)
        scales = np.asarray(scales, dtype=np.float32).reshape(-1, 2)
        return [get_udp_warp_matrix(c, s, self.input_size_wh) for c, s in zip(centers, scales)]

    def _merge_flip(self, raw: torch.Tensor, raw_flipped: torch.Tensor) -> torch.Tensor:
        return heatmap_ops.average_flip(raw, raw_flipped, self._flip_index, shift=False)

    def _decode_device(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hm = outputs.float()
        coords, maxvals = heatmap_ops.heatmap_maxima(hm)
        coords = torch.where((maxvals <= 0.0).unsqueeze(-1), torch.full_like(coords, -1.0), coords)
        refined = refine_dark_udp(coords, hm, maxvals) if coords.numel() else coords
        h, w = hm.shape[-2:]
        in_w, in_h = self.input_size_wh
        # keypoints / [W - 1, H - 1] * input_size: float64, as numpy computes it in mmpose. Python floats,
        # not tensors: a tensor made here would be a blocking host-to-device copy on CUDA.
        x = warp.true_divide(refined[..., 0].double(), float(w - 1)) * float(in_w)
        y = warp.true_divide(refined[..., 1].double(), float(h - 1)) * float(in_h)
        return torch.stack([x, y], dim=-1), maxvals

    def heatmaps(self, inputs: np.ndarray | torch.Tensor, flip_test: bool = False) -> np.ndarray:
        """Network input (N, 3, 256, 192) -> heatmaps (N, J, 64, 48) float32: raw, or flip-averaged."""
        return self.outputs(inputs, flip_test=flip_test)

    def device_warp_matrices(self, center: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return udp_warp_matrices(center, scale, self.input_size_wh)


def create(spec: Weights, state_dict: Mapping[str, torch.Tensor] | None, *, device: torch.device,
           half: bool = False) -> ViTPosePredictor:
    """Build `spec`'s architecture, load `state_dict` strictly (None: random init), eval, place."""
    model = vitpose(img_size=tuple(spec.input_size), **dict(spec.arch))
    if state_dict is not None:
        load_strict(model, state_dict, what="the checkpoint")
    return ViTPosePredictor(place(model, device), spec, torch.device(device), half=half)


__all__ = [
    "BLUR_KERNEL_SIZE", "FFN", "MultiheadAttention", "PatchEmbed", "TransformerEncoderLayer", "ViTPose",
    "ViTPosePredictor", "VisionTransformer", "WEIGHTS", "checkpoint_format", "convert_checkpoint", "create",
    "drop_class_token_row", "gaussian_kernel", "get_udp_warp_matrix", "modulate", "refine_dark_udp",
    "udp_warp_matrices", "vitpose",
]
