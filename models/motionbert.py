"""MotionBERT: 2D keypoint sequences to 3D with a dual-stream spatio-temporal transformer (DSTFormer).

Zhu, Ma, Liu, Liu, Wu and Wang, "MotionBERT: A Unified Perspective on Learning Human Motion
Representations", ICCV 2023. A faithful re-implementation of mmpose 1.3.2's ``PoseLifter`` with
``DSTFormer`` + ``MotionRegressionHead`` and the ``MotionBERTLabel`` codec (configs
``motionbert_dstformer-243frm_8xb32-240e_h36m.py`` and its fine-tuned ``-ft-`` sibling, one
architecture), and of the chain ``demo/body3d_pose_lifter_demo.py`` runs (``apis/inference_3d.py``),
loadable from mmpose's checkpoints with ``strict=True``; see
``shared/golden/motionbert_dstformer_243_h36m/README.md`` for every convention checked.

Order of this file: building blocks, the model, the weights table, the public builders and the
lifter (:class:`MotionBERTLifter`). What the lifter reproduces, per person:

1. COCO-17 -> Human3.6M-17 and ``norm_pose_2d`` with the person's box (as SimpleBaseline3D,
   :mod:`posepipe.models.simplebaseline3d`);
2. the codec: ``kp / w * 2 - [1, h / w]`` with mmpose's demo argument order, i.e. ``w`` = the image
   **height** and ``h`` = its width (the demo passes ``frame.shape[:2]`` where ``(w, h)`` is read),
   then the visibility 1 as a third channel;
3. the network on (B, F, 17, 3): F = 1 frame per sample in the demo's mode (``clip=False``), or
   clips of up to 243 frames (``clip=True``, how the authors lift a video: consecutive 243-frame
   clips from the track's first frame, the last one shorter; ``infer_wild.py``);
4. flip test (the config's default): x -> (1 - x) - 1 and the H36M left/right swap on the input and
   on the output, averaged;
5. decoding: the root output is discarded, ``(out + [1, h / w]) * w / 2`` (z: ``* w / 2``), x 4 (the
   codec's default factor), root-relative, / 1000: metres, root (pelvis) at (0, 0, 0).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from posepipe.models import mmpose
from posepipe.models.checkpoint import load_strict
from posepipe.models.precision import forward_half_guarded
from posepipe.models.simplebaseline3d import coco_to_h36m, keypoint_boxes, normalize_to_h36m_box
from posepipe.models.skeletons import H36M17_NAMES, H36M17_SKELETON, flip_indices
from posepipe.models.videopose3d import normalize_screen_coordinates
from posepipe.models.weights import Weights

# MotionBERTLabel's default factor (a zero factor, which the demo passes, is replaced by it).
DEFAULT_FACTOR = 4.0


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------

class Attention(nn.Module):
    """DSTFormer's attention over the joints of one frame (``spatial``) or over the frames of one
    joint (``temporal``). qkv Linear with bias laid out (3, heads, head_dim), scale head_dim^-0.5,
    softmax, output projection. ``proj`` is created before ``qkv``: that is the checkpoint's order."""

    def __init__(self, dim: int, num_heads: int, mode: str):
        super().__init__()
        if mode not in ("spatial", "temporal"):
            raise ValueError(f"attention mode must be 'spatial' or 'temporal', got {mode!r}")
        self.num_heads = num_heads
        self.mode = mode
        self.proj = nn.Linear(dim, dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=True)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        bf, joints, c = x.shape
        q, k, v = self.qkv(x).reshape(bf, joints, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        if self.mode == "spatial":  # (BF, heads, J, d): attend over the joints
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
        else:  # (B, heads, J, F, d): attend over the frames
            def by_frames(t: torch.Tensor) -> torch.Tensor:
                return t.reshape(-1, frames, self.num_heads, joints, c // self.num_heads).permute(0, 2, 3, 1, 4)

            out = F.scaled_dot_product_attention(by_frames(q), by_frames(k), by_frames(v)).permute(0, 3, 2, 1, 4)
        return self.proj(out.reshape(bf, joints, c))


def _mlp(dim: int, hidden: int) -> nn.Sequential:
    """Linear -> exact (erf) GELU -> Linear (indices 0 and 2, as the checkpoint names them)."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class AttentionBlock(nn.Module):
    """Spatial then temporal (``'st'``) or temporal then spatial (``'ts'``) pre-norm attention + MLP pairs;
    LayerNorms eps 1e-6."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, order: str):
        super().__init__()
        if order not in ("st", "ts"):
            raise ValueError(f"block order must be 'st' or 'ts', got {order!r}")
        self.order = order
        self.norm1_s = nn.LayerNorm(dim, eps=1e-6)
        self.norm1_t = nn.LayerNorm(dim, eps=1e-6)
        self.attn_s = Attention(dim, num_heads, "spatial")
        self.attn_t = Attention(dim, num_heads, "temporal")
        self.norm2_s = nn.LayerNorm(dim, eps=1e-6)
        self.norm2_t = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp_s = _mlp(dim, hidden)
        self.mlp_t = _mlp(dim, hidden)

    def _spatial(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        x = x + self.attn_s(self.norm1_s(x), frames)
        return x + self.mlp_s(self.norm2_s(x))

    def _temporal(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        x = x + self.attn_t(self.norm1_t(x), frames)
        return x + self.mlp_t(self.norm2_t(x))

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        if self.order == "st":
            return self._temporal(self._spatial(x, frames), frames)
        return self._spatial(self._temporal(x, frames), frames)


class DSTFormer(nn.Module):
    """(B, F, J, 3) -> (B, F, J, dim): joint embedding + per-joint and per-frame embeddings, then at each
    depth an 'st' and a 'ts' block on the same input, fused per token by a learned softmax weight.

    Only the first F of the ``seq_len`` temporal embedding rows are used, so F may be anything up to
    ``seq_len`` (one frame in mmpose's demo, a 243-frame clip as trained)."""

    def __init__(self, in_channels: int = 3, feat_size: int = 512, depth: int = 5, num_heads: int = 8,
                 mlp_ratio: float = 2, num_keypoints: int = 17, seq_len: int = 243):
        super().__init__()
        # Registered before the submodules: the checkpoint lists them first.
        self.temp_embed = nn.Parameter(torch.zeros(1, seq_len, 1, feat_size))
        self.spat_embed = nn.Parameter(torch.zeros(1, num_keypoints, feat_size))
        self.joints_embed = nn.Linear(in_channels, feat_size)
        self.blocks_st = nn.ModuleList(AttentionBlock(feat_size, num_heads, mlp_ratio, "st") for _ in range(depth))
        self.blocks_ts = nn.ModuleList(AttentionBlock(feat_size, num_heads, mlp_ratio, "ts") for _ in range(depth))
        self.norm = nn.LayerNorm(feat_size, eps=1e-6)
        self.attn_regress = nn.ModuleList(nn.Linear(feat_size * 2, 2) for _ in range(depth))
        self.seq_len = seq_len
        self.num_keypoints = num_keypoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, frames, joints, c = x.shape
        if frames > self.seq_len or joints != self.num_keypoints:
            raise ValueError(f"DSTFormer takes (B, F <= {self.seq_len}, {self.num_keypoints}, C), got {tuple(x.shape)}")
        x = self.joints_embed(x.reshape(b * frames, joints, c)) + self.spat_embed
        x = x.reshape(b, frames, joints, -1) + self.temp_embed[:, :frames]
        x = x.reshape(b * frames, joints, -1)
        for block_st, block_ts, regress in zip(self.blocks_st, self.blocks_ts, self.attn_regress):
            x_st, x_ts = block_st(x, frames), block_ts(x, frames)
            alpha = regress(torch.cat([x_st, x_ts], dim=-1)).softmax(dim=-1)
            x = x_st * alpha[..., 0:1] + x_ts * alpha[..., 1:2]
        return self.norm(x).reshape(b, frames, joints, -1)


class MotionRegressionHead(nn.Module):
    """``pre_logits`` (Linear + tanh) then ``fc`` (Linear to 3 coordinates)."""

    def __init__(self, in_channels: int = 512, out_channels: int = 3, embedding_size: int = 512):
        super().__init__()
        self.pre_logits = nn.Sequential(OrderedDict([("fc", nn.Linear(in_channels, embedding_size)), ("act", nn.Tanh())]))
        self.fc = nn.Linear(embedding_size, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pre_logits(x))


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class MotionBERT(nn.Module):
    """(B, F, 17, 3) normalised 2D + visibility -> (B, F, 17, 3) normalised 3D (root output unused)."""

    def __init__(self, *, feat_size: int = 512, depth: int = 5, num_heads: int = 8, mlp_ratio: float = 2,
                 num_keypoints: int = 17, seq_len: int = 243):
        super().__init__()
        self.backbone = DSTFormer(3, feat_size, depth, num_heads, mlp_ratio, num_keypoints, seq_len)
        self.head = MotionRegressionHead(feat_size, 3, feat_size)

    @property
    def clip_frames(self) -> int:
        """The longest clip the temporal embedding covers (243): the frames one output can see."""
        return self.backbone.seq_len

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"MotionBERT expects (B, F, {self.backbone.num_keypoints}, 3), got {tuple(x.shape)}")
        return self.head(self.backbone(x))


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------

_PAPER = ("MotionBERT: A Unified Perspective on Learning Human Motion Representations "
          "(Zhu et al., ICCV 2023)")
_ZOO = "https://download.openmmlab.com/mmpose/v1/body_3d_keypoint/pose_lift/h36m"
_ARCH = {"feat_size": 512, "depth": 5, "num_heads": 8, "mlp_ratio": 2, "num_keypoints": 17, "seq_len": 243}
_NOTES = (
    "Input: COCO-17 (x, y) pixels, converted to H36M-17, normalised with the person's box (norm_pose_2d) and "
    "by the image size in mmpose's demo order (w = height, h = width); output: H36M-17 root-relative 3D joints "
    "in metres, root at (0, 0, 0). The pipeline lifts each track in consecutive 243-frame clips from its first "
    "frame (the last one shorter), as the authors' infer_wild.py does; lift(clip=False) is mmpose's demo, one "
    "frame per forward. Flip augmentation (the config's test default) doubles the cost. Its figures are for "
    "Human3.6M's own 2D input; with detected 2D they are worse."
)


def _motionbert(name: str, file: str, prefix: str, mpjpe: float, p_mpjpe: float, what: str) -> Weights:
    return Weights(
        name=name,
        family="motionbert",
        stage="lifter",
        url=f"{_ZOO}/{file}",
        filename=file,
        source_format="mmpose",
        hash_prefix=prefix,
        arch=dict(_ARCH),
        keypoint_names=H36M17_NAMES,
        skeleton=H36M17_SKELETON,
        license="Apache-2.0 (mmpose model zoo; converted from the authors' Apache-2.0 release)",
        paper=_PAPER,
        # mmpose's model zoo (motionbert_h36m.md / .yml): Human3.6M protocol 1 (MPJPE) and 2 (P-MPJPE).
        metrics={"h36m_mpjpe_mm": mpjpe, "h36m_p_mpjpe_mm": p_mpjpe},
        gmacs=0.763,  # one lifted frame of a 243-frame clip, no flip; torch's FlopCounterMode
        notes=f"{what} {_NOTES}",
    )


WEIGHTS: dict[str, Weights] = {
    spec.name: spec
    for spec in (
        _motionbert("motionbert_dstformer_243_h36m", "motionbert_h36m-f554954f_20230531.pth", "f554954f", 34.5, 27.1,
                    "Config motionbert_dstformer-243frm_8xb32-240e_h36m.py: the authors' model trained on Human3.6M "
                    "alone, converted by mmpose (39.8 mm MPJPE on the authors' own Human3.6M processing)."),
        _motionbert("motionbert_dstformer_ft_243_h36m", "motionbert_ft_h36m-d80af323_20230531.pth", "d80af323", 26.9,
                    21.0, "Config motionbert_dstformer-ft-243frm_8xb32-120e_h36m.py: the authors' pretrained MotionBERT "
                    "fine-tuned on Human3.6M, converted by mmpose (37.7 mm on the authors' processing); the most "
                    "accurate lifter here, same network and cost."),
    )
}


# --------------------------------------------------------------------------------------------
# Checkpoint format
# --------------------------------------------------------------------------------------------

_LABEL = "MotionBERT (DSTFormer + motion regression head)"
_MARKERS = ("backbone.temp_embed", "backbone.blocks_st.0.attn_t.qkv.weight", "head.pre_logits.fc.weight")


def checkpoint_format(obj: Any) -> str | None:
    """The supported layout of an unpickled checkpoint, by its keys; None if none."""
    return mmpose.describe_layout(obj, _LABEL, _MARKERS)


def convert_checkpoint(obj: Any) -> "OrderedDict[str, torch.Tensor]":
    """Any supported MotionBERT checkpoint (mmpose's, or its state dict alone) -> :class:`MotionBERT`'s state dict."""
    return mmpose.convert(obj, _LABEL, _MARKERS)


# --------------------------------------------------------------------------------------------
# Public builders and the lifter
# --------------------------------------------------------------------------------------------

def motionbert(*, feat_size: int = 512, depth: int = 5, num_heads: int = 8, mlp_ratio: float = 2,
               num_keypoints: int = 17, seq_len: int = 243) -> MotionBERT:
    """The bare network with PyTorch's default (random) initialisation; loads nothing."""
    return MotionBERT(feat_size=feat_size, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                      num_keypoints=num_keypoints, seq_len=seq_len)


def create(spec: Weights, state_dict: Mapping[str, torch.Tensor] | None, *, device: str | torch.device = "cpu",
           half: bool = False) -> "MotionBERTLifter":
    """Build `spec`'s model, load `state_dict` strictly (None: random), eval, move to `device`."""
    model = motionbert(**dict(spec.arch))
    if state_dict is not None:
        load_strict(model, state_dict, what="the checkpoint")
    device = torch.device(device)
    return MotionBERTLifter(model.to(device).eval(), spec, device=device, half=half)


def clip_bounds(frames: int, clip_frames: int) -> list[tuple[int, int]]:
    """Consecutive clips of `clip_frames` from frame 0, the last one shorter: [(start, stop), ...]
    (the authors' ``WildDetDataset``). A track's clips depend on the track alone."""
    return [(start, min(start + clip_frames, frames)) for start in range(0, frames, clip_frames)]


class MotionBERTLifter:
    """Lifts COCO-17 pixel tracks to H36M-17 root-relative 3D with MotionBERT.

    The same interface as the other lifters (``receptive_field``, ``pad``, ``lift``, ``lift_batch``);
    CPU float32 numpy out, ``torch.inference_mode()`` inside. Two modes:

    - ``clip=True`` (:meth:`lift_batch`'s default, what the pipeline runs): each track in consecutive
      clips of up to 243 frames, every frame of a clip seeing the whole clip;
    - ``clip=False`` (:meth:`lift`'s default, mmpose's demo): every frame lifted alone (F = 1).
    """

    #: Clips per forward pass (each 243 x 17 tokens of 512 numbers; with the flip test twice that): a
    #: finisher lifting 486-frame tracks with the flip test peaks at about 1.2 GB resident.
    clips_per_pass: int = 2
    #: Single frames per forward pass in the demo mode.
    frames_per_pass: int = 1024
    #: The config's flip test; ``flip_augment`` turns it on or off per call.
    flip_augmentation: bool = True

    def __init__(self, model: MotionBERT, weights: Weights, *, device: str | torch.device = "cpu",
                 half: bool = False) -> None:
        self.model = model
        self.weights = weights
        self.device = torch.device(device)
        self.half = bool(half) and self.device.type == "cuda"
        self.weights_sha256: str | None = None
        self._flip_index = flip_indices(H36M17_NAMES)

    # ---- geometry ---------------------------------------------------------------------------

    @property
    def receptive_field(self) -> int:
        """Input frames one output frame can see: its whole clip, up to 243."""
        return self.model.clip_frames

    @property
    def pad(self) -> int:
        return (self.receptive_field - 1) // 2

    @property
    def causal_shift(self) -> int:
        return 0

    # ---- public API -------------------------------------------------------------------------

    def lift(
        self,
        keypoints_px: np.ndarray,
        width: float,
        height: float,
        flip_augment: bool = True,
        *,
        bboxes_xyxy: np.ndarray | None = None,
        clip: bool = False,
        norm_pose_2d: bool = True,
    ) -> np.ndarray:
        """(T, 17, 2) COCO pixel keypoints of one person -> (T, 17, 3) float32 H36M joints, metres, root at 0.

        `bboxes_xyxy` (T, 4) are the person's boxes for ``norm_pose_2d``; None uses the keypoints' extent
        plus 10 % per side. `clip` False lifts every frame alone (mmpose's demo); True lifts consecutive
        243-frame clips (the pipeline's mode). `flip_augment` is the config's flip test.
        """
        x = self.model_input(keypoints_px, width, height, bboxes_xyxy=bboxes_xyxy, norm_pose_2d=norm_pose_2d)
        return self._run([x], flip_augment, clip, width, height)[0]

    def lift_batch(
        self,
        sequences: Sequence[np.ndarray],
        width: float,
        height: float,
        flip_augment: bool = True,
        *,
        bboxes_xyxy: Sequence[np.ndarray] | None = None,
        clip: bool = True,
    ) -> list[np.ndarray]:
        """:meth:`lift` for many tracks of one video, in 243-frame clips by default (the pipeline's mode):
        clips of equal length share forward passes. A list of (T_i, 17, 3)."""
        if bboxes_xyxy is not None and len(bboxes_xyxy) != len(sequences):
            raise ValueError(f"{len(sequences)} sequences but {len(bboxes_xyxy)} box arrays")
        inputs = [self.model_input(seq, width, height, bboxes_xyxy=None if bboxes_xyxy is None else bboxes_xyxy[i])
                  for i, seq in enumerate(sequences)]
        return self._run(inputs, flip_augment, clip, width, height)

    def model_input(
        self,
        keypoints_px: np.ndarray,
        width: float,
        height: float,
        *,
        bboxes_xyxy: np.ndarray | None = None,
        norm_pose_2d: bool = True,
    ) -> np.ndarray:
        """The network input for one track: (T, 17, 3) float32 (COCO -> H36M, norm_pose_2d, the codec)."""
        kps = np.asarray(keypoints_px)
        if kps.ndim != 3 or kps.shape[1:] != (17, 2) or kps.shape[0] < 1:
            raise ValueError(f"keypoints_px must have shape (T>=1, 17, 2) in pixels, got {kps.shape}")
        if not np.isfinite(kps).all():
            bad = np.unique(np.nonzero(~np.isfinite(kps))[0])
            raise ValueError(f"keypoints_px holds NaN/inf in {bad.size} frame(s) (first: {bad[:5].tolist()}); "
                             "interpolate or drop missing detections before lifting")
        if not (float(width) > 0 and float(height) > 0):
            raise ValueError(f"image size must be positive, got width={width}, height={height}")
        h36m = coco_to_h36m(kps.astype(np.float32))
        if norm_pose_2d:
            boxes = keypoint_boxes(kps) if bboxes_xyxy is None else np.asarray(bboxes_xyxy, np.float32).reshape(-1, 4)
            if len(boxes) != len(h36m):
                raise ValueError(f"{len(h36m)} frames but {len(boxes)} boxes")
            if not (np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) > 0).all():
                raise ValueError("a person box for norm_pose_2d has no extent (all of its keypoints coincide)")
            h36m = normalize_to_h36m_box(h36m, boxes)
        # MotionBERTLabel.encode with the demo's camera_param: w = the image height, h = its width.
        xy = normalize_screen_coordinates(h36m, float(height), float(width))
        return np.concatenate([xy, np.ones((*xy.shape[:2], 1), np.float32)], axis=-1)

    def decode(self, outputs: np.ndarray, width: float, height: float) -> np.ndarray:
        """``MotionBERTLabel.decode`` (rootrel) then the factor and metres: (..., 17, 3) network output
        (flip-averaged) -> float32 metres, root at (0, 0, 0). w, h in the demo's order (height, width)."""
        w, h = float(height), float(width)
        kp = np.array(outputs, dtype=np.float32)
        kp[..., 0, :] = 0
        kp[..., :2] = (kp[..., :2] + np.array([1.0, h / w])) * w / 2
        kp[..., 2] = kp[..., 2] * w / 2
        kp *= np.float32(DEFAULT_FACTOR)
        kp -= kp[..., 0:1, :]
        kp /= np.float32(1000.0)
        return kp

    @torch.inference_mode()
    def raw_outputs(self, inputs: np.ndarray, flip_augment: bool = False) -> np.ndarray:
        """The head's output for a (B, F, 17, 3) input, flip-averaged with `flip_augment`, as CPU numpy."""
        x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).to(self.device)
        return self._forward(x, flip_augment).cpu().numpy()

    # ---- internals --------------------------------------------------------------------------

    def _flip(self, t: torch.Tensor) -> torch.Tensor:
        """mmpose's ``flip_coordinates(shift_coords=True, input_size=(1, 1))`` on (B, F, 17, C):
        x -> (1 - x) - 1 in float32, then the left/right swap."""
        out = t.clone()
        out[..., 0] = (1.0 - out[..., 0]) - 1.0
        return out[..., self._flip_index, :]

    def _forward(self, x: torch.Tensor, flip_augment: bool) -> torch.Tensor:
        if not flip_augment:
            return forward_half_guarded(self, lambda: self.model(x), "MotionBERT").float()
        n = x.shape[0]
        both = forward_half_guarded(self, lambda: self.model(torch.cat([x, self._flip(x)])), "MotionBERT").float()
        return (both[:n] + self._flip(both[n:])) * 0.5

    def _run(self, inputs: list[np.ndarray], flip_augment: bool, clip: bool, width: float,
             height: float) -> list[np.ndarray]:
        """Normalised tracks (T_i, 17, 3) -> decoded (T_i, 17, 3), in clips or frame by frame."""
        if not inputs:
            return []
        outputs = [np.empty((len(x), 17, 3), np.float32) for x in inputs]
        with torch.inference_mode():
            if not clip:  # every frame its own sample of F = 1
                frames = np.concatenate(inputs)[:, None]
                raw = np.concatenate([
                    self._forward(torch.from_numpy(frames[i:i + self.frames_per_pass]).to(self.device),
                                  flip_augment).cpu().numpy()
                    for i in range(0, len(frames), max(1, int(self.frames_per_pass)))
                ])[:, 0]
                bounds = np.cumsum([0] + [len(x) for x in inputs])
                for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
                    outputs[i][:] = raw[lo:hi]
            else:  # clips of equal length share passes
                clips: dict[int, list[tuple[int, int, int]]] = {}
                for i, x in enumerate(inputs):
                    for start, stop in clip_bounds(len(x), self.model.clip_frames):
                        clips.setdefault(stop - start, []).append((i, start, stop))
                step = max(1, int(self.clips_per_pass))
                for members in clips.values():
                    for j in range(0, len(members), step):
                        group = members[j:j + step]
                        batch = np.stack([inputs[i][start:stop] for i, start, stop in group])
                        raw = self._forward(torch.from_numpy(batch).to(self.device), flip_augment).cpu().numpy()
                        for (i, start, stop), out in zip(group, raw):
                            outputs[i][start:stop] = out
        return [self.decode(out, width, height) for out in outputs]


__all__ = [
    "Attention", "AttentionBlock", "DEFAULT_FACTOR", "DSTFormer", "MotionBERT", "MotionBERTLifter",
    "MotionRegressionHead", "WEIGHTS", "checkpoint_format", "clip_bounds", "convert_checkpoint", "create",
    "motionbert",
]
