"""RTMO: one-stage 2D pose, every person's box and keypoints from one pass over the frame (Lu et al., CVPR 2024).

"RTMO: Towards High-Performance One-Stage Real-Time Multi-Person Pose Estimation": a YOLO-style dense
head predicts, at every point of the stride-16 and stride-32 grids, a person score, a box, keypoint
visibilities and a pose vector; after NMS a dynamic coordinate classifier (DCC) turns each kept pose
vector into 1-D x and y distributions over bins laid along its own (padded) box, and the keypoints
are their expectations. A faithful re-implementation of mmpose 1.3.2's ``BottomupPoseEstimator`` with
``CSPDarknet`` + ``HybridEncoder`` + ``RTMOHead`` (config ``rtmo-s_8xb32-600e_coco-640x640.py``),
loadable from mmpose's 2023 checkpoint with ``strict=True``; ``shared/golden/rtmo_s_coco_640x640/README.md``
lists every convention checked.

Order of this file: building blocks, the model, the weights table, the checkpoint format, the
decoding, the predictor. What the predictor reproduces:

- the canvas: ``BottomupResize(input_size=(640, 640), pad_val=114)`` (``fit``: the frame zoomed into
  640x640 and **centred**, models/bottomup.py); the network sees **BGR 0..255**, unnormalised;
- the backbone is YOLOX's CSPDarknet (models/yolox.py, mmdet's names renamed on load); the neck is
  RT-DETR's hybrid encoder (one transformer layer on stride 32, then a CSP-RepVGG FPN/PAN);
- decoding: priors at ``i * s + (s - 1) / 2``; boxes ``(d * s + prior, exp(l) * s)``; score =
  sigmoid(cls) kept when ``> 0.1``, sorted; mmpose's ``nms_torch`` (greedy, IoU ``> 0.65``, eps 1e-6);
  the DCC on the kept ones (box padded x1.25, bins encoded relative to the prior, decoded absolute);
  boxes clamped to the 640 canvas, then everything mapped back to the frame (keypoints not clamped);
- no flip test (the config has none): ``flip_test`` is accepted and ignored.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from posepipe.models import mmpose, yolox
from posepipe.models.bottomup import (BottomupPredictor, bottomup_canvas, empty_persons, frames_by_shape,
                                      warp_frames_to_canvas)
from posepipe.models.checkpoint import load_strict
from posepipe.models.rtmpose import RTMCCBlock
from posepipe.models.skeletons import COCO17_NAMES, COCO17_SKELETON
from posepipe.models.topdown import place
from posepipe.models.weights import Weights

PAD_VALUE = 114
SIZE_FACTOR = 32
STRIDES = (16, 32)
SCORE_THR = 0.1
NMS_THR = 0.65
BOX_PADDING = 1.25
EPS = 1e-8                 # the DCC softmax's denominator guard
HEAD_BN_EPS = 1e-3         # the head's ConvModules (the backbone's are YOLOX's 1e-3; the neck's are BN's 1e-5)


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------

class ConvBN(nn.Module):
    """mmcv's ConvModule with BN: conv (no bias) -> BN -> SiLU (or nothing when `act` is False)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 *, act: bool = True, eps: float = 1e-5):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=eps)
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class RepVGGBlock(nn.Module):
    """3x3 conv+BN plus 1x1 conv+BN (no identity branch), summed, then SiLU (training-time form: the
    official inference path does not re-parameterise)."""

    def __init__(self, channels: int):
        super().__init__()
        self.branch_3x3 = ConvBN(channels, channels, 3, act=False)
        self.branch_1x1 = ConvBN(channels, channels, 1, act=False)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.branch_3x3(x) + self.branch_1x1(x))


class CSPRepLayer(nn.Module):
    """``conv3(blocks(conv1(x)) + conv2(x))``: two 1x1 halves, RepVGG blocks on one, summed (not concatenated)."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, expansion: float = 1.0):
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = ConvBN(in_channels, hidden, 1)
        self.conv2 = ConvBN(in_channels, hidden, 1)
        self.bottlenecks = nn.Sequential(*[RepVGGBlock(hidden) for _ in range(num_blocks)])
        self.conv3 = ConvBN(hidden, out_channels, 1) if hidden != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))


class SelfAttention(nn.Module):
    """mmcv's ``MultiheadAttention`` as the encoder layer calls it: positions added to queries and keys (not
    values), torch's attention in sequence-first layout with the weights computed (its explicit path),
    plus the input."""

    def __init__(self, dims: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dims, heads, dropout=0.0)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        qk = (x + pos).transpose(0, 1)
        out = self.attn(query=qk, key=qk, value=x.transpose(0, 1), need_weights=True)[0]
        return x + out.transpose(0, 1)


class FFN(nn.Module):
    """mmcv's FFN: ``x + Linear(GELU(Linear(x)))`` (``layers.0.0`` and ``layers.1`` in the checkpoint)."""

    def __init__(self, dims: int, hidden: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dims, hidden), nn.GELU(), nn.Dropout(0.0)),
                                    nn.Linear(hidden, dims), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class EncoderLayer(nn.Module):
    """DETR's post-norm encoder layer: attention + LayerNorm, FFN + LayerNorm."""

    def __init__(self, dims: int = 256, heads: int = 8, hidden: int = 1024):
        super().__init__()
        self.self_attn = SelfAttention(dims, heads)
        self.ffn = FFN(dims, hidden)
        self.norms = nn.ModuleList([nn.LayerNorm(dims), nn.LayerNorm(dims)])

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = self.norms[0](self.self_attn(x, pos))
        return self.norms[1](self.ffn(x))


class Encoder(nn.Module):
    def __init__(self, num_layers: int = 1, **layer: Any):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(**layer) for _ in range(num_layers)])

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, pos)
        return x


class SinePositionalEncoding(nn.Module):
    """mmpose's sine-cosine encoding: ``cat(cos(p / dim_t), sin(p / dim_t))`` with ``dim_t = T ** (i / n)``
    (a buffer, stored in the checkpoint). 1-D: any positions; 2-D: a (h, w) grid, rows then columns."""

    def __init__(self, channels: int, temperature: float):
        super().__init__()
        n = channels // 2
        self.register_buffer("dim_t", temperature ** (torch.arange(n, dtype=torch.float32) / n))

    def encode(self, position: torch.Tensor) -> torch.Tensor:
        freq = position.unsqueeze(-1) / self.dim_t.reshape(*((1,) * position.ndim), -1)
        return torch.cat((freq.cos(), freq.sin()), dim=-1)

    def grid(self, h: int, w: int) -> torch.Tensor:
        """(1, h * w, 2 * channels): each grid point's row encoding, then its column encoding."""
        rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=self.dim_t.device),
                                    torch.arange(w, dtype=torch.float32, device=self.dim_t.device), indexing="ij")
        pos = torch.stack((self.encode(rows.flatten()), self.encode(cols.flatten())), dim=-1)
        return pos.transpose(-1, -2).reshape(1, h * w, -1)


class ChannelMapper(nn.Module):
    """mmdet's ChannelMapper as configured: one 1x1 conv + BN (no activation) per level."""

    def __init__(self, channels: Sequence[int], out_channels: int):
        super().__init__()
        self.convs = nn.ModuleList([ConvBN(c, out_channels, 1, act=False) for c in channels])

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [conv(f) for conv, f in zip(self.convs, feats)]


class HybridEncoder(nn.Module):
    """RT-DETR's neck as mmpose builds it for RTMO: 1x1 projections of the stride 8/16/32 features to
    `hidden`, one transformer layer over the stride-32 tokens, a top-down FPN and a bottom-up PAN of
    CSP-RepVGG layers, the stride-16 and -32 outputs projected again."""

    def __init__(self, in_channels: Sequence[int] = (128, 256, 512), hidden: int = 256, deepen_factor: float = 0.33,
                 widen_factor: float = 0.5, temperature: float = 10000.0):
        super().__init__()
        self.hidden = hidden
        levels = len(in_channels)
        blocks = round(3 * deepen_factor)
        self.input_proj = nn.ModuleList([ConvBN(c, hidden, 1, act=False) for c in in_channels])
        self.encoder = nn.ModuleList([Encoder(1, dims=hidden, heads=8, hidden=1024)])
        self.sincos_pos_enc = SinePositionalEncoding(hidden // 2, temperature)
        self.lateral_convs = nn.ModuleList([ConvBN(hidden, hidden, 1) for _ in range(levels - 1)])
        self.fpn_blocks = nn.ModuleList([CSPRepLayer(2 * hidden, hidden, blocks, widen_factor) for _ in range(levels - 1)])
        self.downsample_convs = nn.ModuleList([ConvBN(hidden, hidden, 3, stride=2) for _ in range(levels - 1)])
        self.pan_blocks = nn.ModuleList([CSPRepLayer(2 * hidden, hidden, blocks, widen_factor) for _ in range(levels - 1)])
        self.projector = ChannelMapper([hidden, hidden], hidden)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        proj = [conv(f) for conv, f in zip(self.input_proj, feats)]
        b, c, h, w = proj[-1].shape
        tokens = proj[-1].flatten(2).permute(0, 2, 1).contiguous()
        memory = self.encoder[0](tokens, self.sincos_pos_enc.grid(h, w))
        proj[-1] = memory.permute(0, 2, 1).contiguous().view(-1, self.hidden, h, w)
        levels = len(proj)
        # top-down: the lateral conv's output replaces the coarser level (the PAN reads it)
        inner = [proj[-1]]
        for idx in range(levels - 1, 0, -1):
            high = self.lateral_convs[levels - 1 - idx](inner[0])
            inner[0] = high
            up = F.interpolate(high, scale_factor=2.0, mode="nearest")
            inner.insert(0, self.fpn_blocks[levels - 1 - idx](torch.cat([up, proj[idx - 1]], dim=1)))
        outs = [inner[0]]
        for idx in range(levels - 1):
            down = self.downsample_convs[idx](outs[-1])
            outs.append(self.pan_blocks[idx](torch.cat([down, inner[idx + 1]], dim=1)))
        return self.projector(outs[1:])


class RTMOHeadModule(nn.Module):
    """Per level: the first half of the channels -> 2 convs -> person logit; the second half -> 4 (grouped)
    convs -> box, keypoint visibilities, pose vector (``out_kpt_reg``, used in training only, is kept
    because the checkpoint holds it)."""

    def __init__(self, in_channels: int = 128, cls_channels: int = 128, groups: int = 8, per_group: int = 18,
                 num_joints: int = 17, pose_vec: int = 256, levels: int = 2):
        super().__init__()
        pose_channels = groups * per_group

        def cls_branch() -> nn.Sequential:
            return nn.Sequential(ConvBN(in_channels, cls_channels, 3, eps=HEAD_BN_EPS),
                                 ConvBN(cls_channels, cls_channels, 3, eps=HEAD_BN_EPS))

        def pose_branch() -> nn.Sequential:
            return nn.Sequential(ConvBN(in_channels, pose_channels, 3, eps=HEAD_BN_EPS),
                                 *[ConvBN(pose_channels, pose_channels, 3, groups=groups, eps=HEAD_BN_EPS) for _ in range(3)])

        self.conv_cls = nn.ModuleList([cls_branch() for _ in range(levels)])
        self.out_cls = nn.ModuleList([nn.Conv2d(cls_channels, 1, 1) for _ in range(levels)])
        self.conv_pose = nn.ModuleList([pose_branch() for _ in range(levels)])
        self.out_bbox = nn.ModuleList([nn.Conv2d(pose_channels, 4, 1) for _ in range(levels)])
        self.out_kpt_reg = nn.ModuleList([nn.Conv2d(pose_channels, 2 * num_joints, 1) for _ in range(levels)])
        self.out_kpt_vis = nn.ModuleList([nn.Conv2d(pose_channels, num_joints, 1) for _ in range(levels)])
        self.out_pose = nn.ModuleList([nn.Conv2d(pose_channels, pose_vec, 1) for _ in range(levels)])

    def forward(self, feats: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
        """Per level (cls logits (B, 1, h, w), box regressions (B, 4, h, w), visibility logits (B, J, h, w),
        pose vectors (B, P, h, w))."""
        out = []
        for i, x in enumerate(feats):
            cls_feat, reg_feat = x.split(x.size(1) // 2, 1)
            cls_feat = self.conv_cls[i](cls_feat)
            reg_feat = self.conv_pose[i](reg_feat)
            out.append((self.out_cls[i](cls_feat), self.out_bbox[i](reg_feat), self.out_kpt_vis[i](reg_feat),
                        self.out_pose[i](reg_feat)))
        return out


class GAUEncoder(RTMCCBlock):
    """mmpose's ``GAUEncoder`` with ``pos_enc='add'``: RTMPose's gated attention unit with a learned position
    encoding added to its queries and keys."""

    def attend(self, x: torch.Tensor, pos_enc: torch.Tensor) -> torch.Tensor:
        uv = self.act_fn(self.uv(self.ln(x)))
        u, v, base = torch.split(uv, [self.e, self.e, self.s], dim=-1)
        base = base.unsqueeze(-2) * self.gamma.view(*((1,) * (base.ndim - 1)), *self.gamma.shape) + self.beta
        q, k = torch.unbind(base, dim=-2)
        q, k = q + pos_enc, k + pos_enc
        kernel = torch.square(F.relu(torch.matmul(q, k.transpose(-1, -2)) / self.sqrt_s))
        return self.res_scale(x) + self.o(u * torch.matmul(kernel, v))


class ScaleParameter(nn.Module):
    """mmcv's ``Scale``: one learned scalar (the training-only sigma branch's; kept because the checkpoint holds it)."""

    def __init__(self, value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(value, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class DCC(nn.Module):
    """Dynamic coordinate classifier: pose vector (N, P) + padded box (N, 4) [cx, cy, w, h] + prior (N, 2) ->
    keypoints (N, J, 2). Bins ``linspace(-0.5, 0.5, n) * size + centre``; their sine encoding (relative to
    the prior) through ``x_fc`` / ``y_fc``; joint features from ``pose_to_kpts`` and the GAU; 1-D logits
    = features . bin encodings; clamped softmax; the expectation over the absolute bins."""

    def __init__(self, in_channels: int = 256, num_joints: int = 17, channels: int = 128,
                 num_bins: tuple[int, int] = (192, 256), spe_channels: int = 128, spe_temperature: float = 300.0):
        super().__init__()
        self.num_joints, self.channels = num_joints, channels
        self.spe = SinePositionalEncoding(spe_channels, spe_temperature)
        self.gau = GAUEncoder(channels, expansion_factor=2, s=128)
        self.pos_enc = nn.Parameter(torch.randn(num_joints, 128))
        self.pose_to_kpts = nn.Sequential(nn.Linear(in_channels, channels * num_joints), nn.BatchNorm1d(channels * num_joints))
        self.x_fc = nn.Linear(spe_channels, channels)
        self.y_fc = nn.Linear(spe_channels, channels)
        self.sigma_fc = nn.Sequential(nn.Linear(in_channels, num_joints), nn.Sigmoid(), ScaleParameter(0.1))
        self.register_buffer("y_bins", torch.linspace(-0.5, 0.5, num_bins[1]))
        self.register_buffer("x_bins", torch.linspace(-0.5, 0.5, num_bins[0]))

    @staticmethod
    def _softmax(hms: torch.Tensor) -> torch.Tensor:
        hms = hms.clamp(min=-5e4, max=5e4)
        e = (hms - hms.max(dim=-1, keepdim=True).values).exp()
        return e / (e.sum(dim=-1, keepdim=True) + EPS)

    def forward(self, pose_vecs: torch.Tensor, bbox_cs: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
        center, scale = bbox_cs.split(2, dim=-1)
        rel = center - grids
        x_rel = self.x_bins.view(1, -1) * scale[..., 0:1] + rel[..., 0:1]
        y_rel = self.y_bins.view(1, -1) * scale[..., 1:2] + rel[..., 1:2]
        x_enc = self.x_fc(self.spe.encode(x_rel))
        y_enc = self.y_fc(self.spe.encode(y_rel))
        feats = self.pose_to_kpts(pose_vecs).reshape(*pose_vecs.shape[:-1], self.num_joints, self.channels)
        feats = self.gau.attend(feats, self.pos_enc)
        prob_x = self._softmax(torch.matmul(feats, x_enc.transpose(-1, -2).contiguous()))
        prob_y = self._softmax(torch.matmul(feats, y_enc.transpose(-1, -2).contiguous()))
        x_bins = self.x_bins.view(1, -1) * scale[..., 0:1] + center[..., 0:1]
        y_bins = self.y_bins.view(1, -1) * scale[..., 1:2] + center[..., 1:2]
        x = (prob_x * x_bins.unsqueeze(1)).sum(dim=-1)
        y = (prob_y * y_bins.unsqueeze(1)).sum(dim=-1)
        return torch.stack((x, y), dim=-1)


class RTMOHead(nn.Module):
    def __init__(self, num_joints: int = 17, widen_factor: float = 0.5):
        super().__init__()
        self.head_module = RTMOHeadModule(in_channels=int(256 * widen_factor), cls_channels=int(256 * widen_factor),
                                          per_group=int(36 * widen_factor), num_joints=num_joints)
        self.dcc = DCC(num_joints=num_joints)
        # The OKS loss' COCO sigmas (training only), a buffer of the checkpoint: held, never used here.
        self.loss_oks = nn.Module()
        self.loss_oks.register_buffer("sigmas", torch.zeros(num_joints))


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class RTMO(nn.Module):
    """(N, 3, H, W) BGR 0..255 canvases -> per level (stride 16, 32) the raw head outputs (cls logits,
    box regressions, visibility logits, pose vectors); the DCC (``head.dcc``) runs after NMS."""

    def __init__(self, deepen_factor: float = 0.33, widen_factor: float = 0.5, num_joints: int = 17):
        super().__init__()
        self.num_joints = num_joints
        self.backbone = yolox.CSPDarknet(deepen_factor, widen_factor)
        c = int(64 * widen_factor)
        self.neck = HybridEncoder((4 * c, 8 * c, 16 * c), 256, deepen_factor, widen_factor)
        self.head = RTMOHead(num_joints, widen_factor)
        self.strides = STRIDES

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"RTMO input sides must be multiples of 32, got {x.shape[-2]}x{x.shape[-1]}")
        return self.head.head_module(self.neck(self.backbone(x)))


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------

_PAPER = ("RTMO: Towards High-Performance One-Stage Real-Time Multi-Person Pose Estimation "
          "(Lu, Jiang, Lyu, Chen, Yang and Zhou, CVPR 2024)")

WEIGHTS: dict[str, Weights] = {
    "rtmo_s_coco_640x640": Weights(
        name="rtmo_s_coco_640x640",
        family="rtmo",
        stage="pose",
        url="https://download.openmmlab.com/mmpose/v1/projects/rtmo/rtmo-s_8xb32-600e_coco-640x640-8db55a59_20231211.pth",
        filename="rtmo-s_8xb32-600e_coco-640x640-8db55a59_20231211.pth",
        source_format="mmpose",
        hash_prefix="8db55a59",
        arch={"deepen_factor": 0.33, "widen_factor": 0.5, "num_joints": 17},
        input_size=(640, 640),
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        color="BGR",
        keypoint_names=COCO17_NAMES,
        skeleton=COCO17_SKELETON,
        license="Apache-2.0 (mmpose model zoo)",
        paper=_PAPER,
        # mmpose's rtmo_coco.yml for this file, COCO val2017, no detector, no flip test.
        metrics={"coco_val2017_AP": 67.3, "coco_val2017_AR": 71.5},
        gmacs=12.1,  # one 640x640 canvas up to the head, torch's FlopCounterMode (the DCC adds about 11 MMACs per person kept after NMS)
        notes=(
            "One-stage: no detector; boxes and scores are the model's own (sigmoid of its person logit), keypoint "
            "scores are its visibility probabilities. No flip test. Sees BGR 0..255 on a 640x640 letterbox "
            "(centred, grey 114). The DCC's cost grows with the persons kept after NMS."
        ),
    ),
}


# --------------------------------------------------------------------------------------------
# Checkpoint format: mmdet's CSPDarknet names -> YOLOX's (the backbone is models/yolox.py's)
# --------------------------------------------------------------------------------------------

_LABEL = "RTMO (CSPDarknet + HybridEncoder + RTMOHead)"
_MARKERS = ("neck.encoder.0.layers.0.self_attn.attn.in_proj_weight", "head.dcc.x_fc.weight")
_SEGMENTS = {"main_conv": "conv1", "short_conv": "conv2", "final_conv": "conv3", "blocks": "m"}


def remap_mmpose(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """``backbone.stage{n}.`` -> ``backbone.dark{n+1}.`` with mmdet's CSPLayer names (main/short/final conv,
    blocks) as YOLOX's (conv1/conv2/conv3, m); ``head.loss_oks.sigmas`` kept under its name. Pure; the
    rest passes through so that the strict load names anything unknown."""
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "backbone" and parts[1].startswith("stage"):
            parts[1] = f"dark{int(parts[1][5:]) + 1}"
            parts = parts[:3] + [_SEGMENTS.get(p, p) for p in parts[3:]]
        out[".".join(parts)] = value
    return out


def checkpoint_format(obj: Any) -> str | None:
    """The supported layout of an unpickled checkpoint, by its keys; None if none."""
    return mmpose.describe_layout(obj, _LABEL, _MARKERS)


def convert_checkpoint(obj: Any) -> "OrderedDict[str, torch.Tensor]":
    """Any supported RTMO checkpoint -> the state dict of :class:`RTMO`."""
    return remap_mmpose(mmpose.convert(obj, _LABEL, _MARKERS))


# --------------------------------------------------------------------------------------------
# Decoding (RTMOHead.predict)
# --------------------------------------------------------------------------------------------

def priors(sizes: Sequence[tuple[int, int]], strides: Sequence[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``MlvlPointGenerator(centralize_points=True)``: (P, 2) points ``i * s + (s - 1) / 2``, row-major per level,
    levels in order, and (P,) their strides, float32."""
    points, strides_out = [], []
    for (h, w), s in zip(sizes, strides):
        xs = (torch.arange(w, device=device) * s).to(torch.float32) + float(s - 1) / 2.0
        ys = (torch.arange(h, device=device) * s).to(torch.float32) + float(s - 1) / 2.0
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1))
        strides_out.append(torch.full((h * w,), float(s), dtype=torch.float32, device=device))
    return torch.cat(points), torch.cat(strides_out)


def decode_boxes(pred: torch.Tensor, points: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """(P, 4) [dx, dy, log w, log h] in stride units -> (P, 4) xyxy canvas px (``decode_bbox``)."""
    s = strides.view(-1, 1)
    xy = pred[..., :2] * s + points
    wh = pred[..., 2:].exp() * s
    return torch.stack([xy[..., 0] - wh[..., 0] / 2, xy[..., 1] - wh[..., 1] / 2,
                        xy[..., 0] + wh[..., 0] / 2, xy[..., 1] + wh[..., 1] / 2], -1)


def box_overlaps(box: torch.Tensor, boxes: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """mmpose's ``bbox_overlaps(box, boxes)`` (mode 'iou'): (1, M), the union floored at `eps`."""
    box = box.unsqueeze(0)
    if boxes.shape[0] == 0:
        return box.new_zeros((1, 0))
    area1 = (box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1])
    area2 = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    lt = torch.max(box[:, None, :2], boxes[None, :, :2])
    rb = torch.min(box[:, None, 2:], boxes[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = torch.max(area1[..., None] + area2[..., None, :] - overlap, overlap.new_tensor([eps]))
    return overlap / union


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float = NMS_THR) -> torch.Tensor:
    """mmpose's ``nms_torch``: greedy by descending score, dropping boxes with IoU ``> threshold``; the kept
    indices in that order."""
    _, order = scores.sort(descending=True)
    keep = []
    while len(order):
        idx, order = order[0], order[1:]
        close = torch.where(box_overlaps(boxes[idx], boxes[order]) > threshold)[1]
        rest = torch.ones_like(order, dtype=torch.bool)
        rest[close] = False
        keep.append(idx)
        order = order[rest]
    return torch.stack(keep) if keep else torch.zeros(0, dtype=torch.long, device=boxes.device)


def decode(model: RTMO, outputs: Sequence[tuple[torch.Tensor, ...]], row: int, canvas_wh: tuple[int, int],
           score_thr: float = SCORE_THR, nms_thr: float = NMS_THR) -> dict[str, torch.Tensor]:
    """Image `row` of the head outputs -> boxes (N, 4) (clamped to the canvas), scores (N,), keypoint scores
    (N, J), keypoints (N, J, 2), canvas px, in NMS order."""
    sizes = [tuple(level[0].shape[-2:]) for level in outputs]
    device = outputs[0][0].device

    def flat(i: int) -> torch.Tensor:
        return torch.cat([level[i][row].permute(1, 2, 0).reshape(-1, level[i].shape[1]) for level in outputs])

    points, strides = priors(sizes, model.strides, device)
    scores = flat(0).sigmoid()
    boxes = decode_boxes(flat(1), points, strides)
    vis = flat(2).sigmoid()
    pose_vecs = flat(3)
    valid = scores > score_thr
    kept = scores[valid]
    index = torch.nonzero(valid)
    kept, order = kept.sort(descending=True)
    index = index[order][:, 0]
    boxes, vis, grids, pose_vecs = boxes[index], vis[index], points[index], pose_vecs[index]
    if boxes.numel() == 0:
        keypoints = boxes.new_zeros((0, model.num_joints, 2))
    else:
        keep = nms(boxes, kept, nms_thr)
        boxes, vis, kept, grids, pose_vecs = boxes[keep], vis[keep], kept[keep], grids[keep], pose_vecs[keep]
        bbox_cs = torch.cat([(boxes[:, 2:] + boxes[:, :2]) * 0.5, (boxes[:, 2:] - boxes[:, :2]) * BOX_PADDING], dim=1)
        keypoints = model.head.dcc(pose_vecs, bbox_cs, grids)
    boxes = boxes.clone()
    boxes[:, 0::2].clamp_(0, canvas_wh[0])
    boxes[:, 1::2].clamp_(0, canvas_wh[1])
    return {"bboxes": boxes, "scores": kept, "keypoint_scores": vis, "keypoints": keypoints}


# --------------------------------------------------------------------------------------------
# Public builders and the predictor
# --------------------------------------------------------------------------------------------

def rtmo(*, deepen_factor: float = 0.33, widen_factor: float = 0.5, num_joints: int = 17) -> RTMO:
    """The bare network with PyTorch's default (random) initialisation; loads nothing."""
    return RTMO(deepen_factor=deepen_factor, widen_factor=widen_factor, num_joints=num_joints)


class RTMOPose(BottomupPredictor):
    """Whole frames -> persons, as mmpose's ``inference_bottomup`` with this config. Outputs CPU numpy."""

    label = "RTMO"

    def canvas(self, frame_hw: tuple[int, int]):
        return bottomup_canvas(frame_hw, self.input_size_wh, size_factor=SIZE_FACTOR, mode="fit")

    @torch.inference_mode()
    def head_outputs(self, inputs: torch.Tensor | np.ndarray) -> list[tuple[torch.Tensor, ...]]:
        """Canvases (B, 3, H, W) float (BGR 0..255) -> the raw head outputs per level, float32."""
        x = inputs if isinstance(inputs, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(inputs))
        x = x.to(self.device, dtype=torch.float32)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            out = self.model(x)
        return [tuple(t.float() for t in level) for level in out]

    @torch.inference_mode()
    def predict_images(self, images_bgr: Sequence[np.ndarray], flip_test: bool = False,
                       batch_size: int = 4) -> list[dict[str, np.ndarray]]:
        """Every person in each frame (`flip_test` is ignored: RTMO has none); frames of one size go through
        the network `batch_size` at a time."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        results: list[dict[str, np.ndarray]] = [empty_persons(self.num_joints)] * len(images_bgr)
        for shape, members in frames_by_shape(images_bgr):
            canvas = self.canvas(shape)
            for start in range(0, len(members), batch_size):
                chunk = members[start:start + batch_size]
                frames = torch.from_numpy(np.stack([images_bgr[i] for i in chunk]))
                outputs = self.head_outputs(self.normalize(warp_frames_to_canvas(frames, canvas, PAD_VALUE)))
                for row, i in enumerate(chunk):
                    found = {k: v.cpu().numpy() for k, v in decode(self.model, outputs, row, canvas.size_wh).items()}
                    n = len(found["scores"])
                    results[i] = {
                        "keypoints": canvas.to_image(found["keypoints"]),
                        "keypoint_scores": found["keypoint_scores"].astype(np.float32),
                        "scores": found["scores"].astype(np.float32),
                        "bboxes_xyxy": canvas.to_image(found["bboxes"].reshape(n, 2, 2)).reshape(n, 4),
                    }
        return results


def create(spec: Weights, state_dict: Mapping[str, torch.Tensor] | None, *, device: torch.device,
           half: bool = False) -> RTMOPose:
    """Build `spec`'s architecture, load `state_dict` strictly (None: random init), eval, place.

    Random weights (plumbing checks; the caller has warned) score nearly every one of the 2,000 priors
    alike, so thousands of boxes of any size reach the NMS. So, as YOLOX's person logit is raised, the
    person logit and the box are made constant: score 0.62 at the stride-32 priors only, boxes of 12
    strides; the NMS then leaves a fixed lattice of a few dozen well-formed "persons" per frame (their
    keypoints still come from the random network), the same in every frame, so tracking, lifting and
    the exports have tracks to work on.
    """
    model = rtmo(**dict(spec.arch))
    if state_dict is not None:
        load_strict(model, state_dict, what="the checkpoint")
    else:
        _bias_random_head(model)
    return RTMOPose(place(model, device), spec, torch.device(device), half=half)


def _bias_random_head(model: RTMO) -> None:
    head = model.head.head_module
    with torch.no_grad():
        if head.out_cls[0].weight.device.type == "meta":
            return
        for level, (cls, box) in enumerate(zip(head.out_cls, head.out_bbox)):
            coarse = level == len(head.out_cls) - 1
            cls.weight.zero_()
            cls.bias.fill_(0.5 if coarse else -20.0)
            box.weight.zero_()
            box.bias.copy_(torch.tensor([0.0, 0.0, math.log(12.0), math.log(12.0)]))


__all__ = [
    "DCC", "RTMO", "RTMOPose", "WEIGHTS", "checkpoint_format", "convert_checkpoint", "create", "decode", "decode_boxes",
    "nms", "priors", "remap_mmpose", "rtmo",
]
