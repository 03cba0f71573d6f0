"""SimpleBaseline3D: one frame's 2D joints to 3D with a residual MLP (Martinez et al., ICCV 2017).

"A simple yet effective baseline for 3d human pose estimation": 16 root-relative 3D joints
regressed from the 17 normalised 2D joints of a single frame by a 1024-wide MLP with two residual
blocks. A faithful re-implementation of mmpose 1.3.2's ``PoseLifter`` with ``TCN(kernel_sizes=(1,
1, 1))`` + ``TemporalRegressionHead`` and the ``ImagePoseLifting`` codec (config
``image-pose-lift_tcn_8xb64-200e_h36m.py``) and of the chain ``demo/body3d_pose_lifter_demo.py``
runs (``apis/inference_3d.py``), loadable from mmpose's checkpoint; see
``shared/golden/simplebaseline3d_h36m/README.md``.

Order of this file: building blocks, the model, the weights table, the public builders and the
lifter (:class:`SimpleBaseline3DLifter`). What the lifter reproduces, per frame:

1. COCO-17 -> Human3.6M-17 (``convert_keypoint_definition``): pelvis = mean of the hips, thorax =
   mean of the shoulders, spine = mean of those two, head = mean of the eyes, neck = nose;
2. ``norm_pose_2d`` (the demo's default): ``(kp - c) / s * 400 + (528, 427)`` with c the centre and
   s the longer side of the person's box, in float64, stored float32 (the box is the keypoints'
   extent plus 10 % per side, rounded to half pixels, unless the caller gives one);
3. the codec: per joint and axis ``(kp - mean) / std`` (H36M pixel statistics), channel 2j + c;
4. the MLP; output channel 3j + k is coordinate k of H36M joint j + 1; then ``* std + mean``
   (metres) and the root (0, 0, 0) inserted at index 0.

There is no flip augmentation in the official test path (the config has no ``test_cfg``) and the
receptive field is one frame, so a track's frames are independent.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from posepipe.models import mmpose
from posepipe.models.checkpoint import load_strict
from posepipe.models.precision import forward_half_guarded
from posepipe.models.skeletons import H36M17_NAMES, H36M17_SKELETON
from posepipe.models.weights import Weights

# ``configs/_base_/datasets/h36m.py`` stats_info: the average person box of the H36M images.
H36M_BBOX_CENTER = (528.0, 427.0)
H36M_BBOX_SCALE = 400.0
# The stand-in box when the caller has none: the keypoints' extent plus this much per side.
KEYPOINT_BOX_MARGIN = 0.1

# The codec's tables, literal in the config (from H36M's joint2d_stats.pkl / joint3d_rel_stats.pkl).
KEYPOINTS_MEAN = (
    (532.08351635, 419.74137558), (531.80953144, 418.2607141), (530.68456967, 493.54259285),
    (529.36968722, 575.96448516), (532.29767646, 421.28483336), (531.93946631, 494.72186795),
    (529.71984447, 578.96110365), (532.93699382, 370.65225054), (534.1101856, 317.90342311),
    (534.55416813, 304.24143901), (534.86955004, 282.31030885), (534.11308566, 330.11296796),
    (533.53637525, 376.2742511), (533.49380107, 391.72324565), (533.52579142, 330.09494668),
    (532.50804964, 374.190479), (532.72786934, 380.61615716),
)
KEYPOINTS_STD = (
    (107.73640054, 63.35908715), (119.00836213, 64.1215443), (119.12412107, 50.53806215),
    (120.61688045, 56.38444891), (101.95735275, 62.89636486), (106.24832897, 48.41178119),
    (108.46734966, 54.58177071), (109.07369806, 68.70443672), (111.20130351, 74.87287863),
    (111.63203838, 77.80542514), (113.22330788, 79.90670556), (105.7145833, 73.27049436),
    (107.05804267, 73.93175781), (107.97449418, 83.30391802), (121.60675105, 74.25691526),
    (134.34378973, 77.48125087), (131.79990652, 89.86721124),
)
TARGET_MEAN = (
    (-2.55652589e-04, -7.11960570e-03, -9.81433052e-04), (-5.65463051e-03, 3.19636009e-01, 7.19329269e-02),
    (-1.01705840e-02, 6.91147892e-01, 1.55352986e-01), (2.55651315e-04, 7.11954606e-03, 9.81423866e-04),
    (-5.09729780e-03, 3.27040413e-01, 7.22258095e-02), (-9.99656606e-03, 7.08277383e-01, 1.58016408e-01),
    (2.90583676e-03, -2.11363307e-01, -4.74210915e-02), (5.67537804e-03, -4.35088906e-01, -9.76974016e-02),
    (5.93884964e-03, -4.91891970e-01, -1.10666618e-01), (7.37352083e-03, -5.83948619e-01, -1.31171400e-01),
    (5.41920653e-03, -3.83931702e-01, -8.68145417e-02), (2.95964662e-03, -1.87567488e-01, -4.34536934e-02),
    (1.26585822e-03, -1.20170579e-01, -2.82526049e-02), (4.67186639e-03, -3.83644089e-01, -8.55125784e-02),
    (1.67648571e-03, -1.97007177e-01, -4.31368364e-02), (8.70569015e-04, -1.68664569e-01, -3.73902498e-02),
)
TARGET_STD = (
    (0.11072244, 0.02238818, 0.07246294), (0.15856311, 0.18933832, 0.20880479),
    (0.19179935, 0.24320062, 0.24756193), (0.11072181, 0.02238805, 0.07246253),
    (0.15880454, 0.19977188, 0.2147063), (0.18001944, 0.25052739, 0.24853247),
    (0.05210694, 0.05211406, 0.06908241), (0.09515367, 0.10133032, 0.12899733),
    (0.11742458, 0.12648469, 0.16465091), (0.12360297, 0.13085539, 0.16433336),
    (0.14602232, 0.09707956, 0.13952731), (0.24347532, 0.12982249, 0.20230181),
    (0.2446877, 0.21501816, 0.23938235), (0.13876084, 0.1008926, 0.1424411),
    (0.23687529, 0.14491219, 0.20980829), (0.24400695, 0.23975028, 0.25520584),
)


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------

def coco_to_h36m(keypoints: np.ndarray) -> np.ndarray:
    """``convert_keypoint_definition(kp, 'coco', 'h36m')`` (inference_3d.py:29-47): (..., 17, 2) COCO ->
    (..., 17, 2) Human3.6M, in the input's dtype. The ears are unused."""
    kp = np.asarray(keypoints)
    out = np.zeros_like(kp)
    out[..., 0, :] = (kp[..., 11, :] + kp[..., 12, :]) / 2
    out[..., 8, :] = (kp[..., 5, :] + kp[..., 6, :]) / 2
    out[..., 7, :] = (out[..., 0, :] + out[..., 8, :]) / 2
    out[..., 10, :] = (kp[..., 1, :] + kp[..., 2, :]) / 2
    out[..., [1, 2, 3, 4, 5, 6, 9, 11, 12, 13, 14, 15, 16], :] = kp[..., [12, 14, 16, 11, 13, 15, 0, 5, 7, 9, 6, 8, 10], :]
    return out


def keypoint_boxes(keypoints: np.ndarray, margin: float = KEYPOINT_BOX_MARGIN) -> np.ndarray:
    """(..., J, 2) -> (..., 4) [x1, y1, x2, y2]: the joints' extent plus `margin` of it per side, rounded
    to half pixels, float32 (the person box when no detector box is given)."""
    kp = np.asarray(keypoints, dtype=np.float64)
    low, high = kp.min(axis=-2), kp.max(axis=-2)
    pad = (high - low) * margin
    box = np.concatenate([low - pad, high + pad], axis=-1)
    return (np.round(box * 2) / 2).astype(np.float32)


def normalize_to_h36m_box(keypoints: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
    """``inference_pose_lifter_model(norm_pose_2d=True)`` (inference_3d.py:262-313): move and scale each
    person's box onto the average H36M box. (T, J, 2) keypoints and (T, 4) boxes -> float32.

    As in mmpose with numpy 1.x: the box sums are float32, halving them promotes to float64, so the
    whole expression is float64 and is stored as float32.
    """
    kp = np.asarray(keypoints, dtype=np.float32)
    box = np.asarray(boxes_xyxy, dtype=np.float32)
    center = np.stack([(box[:, 0] + box[:, 2]).astype(np.float64) / 2,
                       (box[:, 1] + box[:, 3]).astype(np.float64) / 2], axis=-1)[:, None, :]
    scale = np.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]).astype(np.float64)[:, None, None]
    out = (kp - center) / scale * H36M_BBOX_SCALE + np.asarray(H36M_BBOX_CENTER, dtype=np.float64)
    return out.astype(np.float32)


class ConvModule1d(nn.Module):
    """Conv1d (no bias) -> BN1d -> ReLU, as mmcv's ConvModule with conv_cfg Conv1d and norm_cfg BN1d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, bias=False)
        self.bn = nn.BatchNorm1d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class BasicTemporalBlock(nn.Module):
    """conv1 -> (dropout) -> conv2 -> (dropout), plus the block input; no activation after the sum
    (tcn.py:103-132 with kernel size 1, so nothing is cropped and there is no shortcut conv)."""

    def __init__(self, channels: int, dropout: float = 0.5):
        super().__init__()
        self.conv1 = nn.Sequential(ConvModule1d(channels, channels))
        self.conv2 = nn.Sequential(ConvModule1d(channels, channels))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.conv2(self.dropout(self.conv1(x)))) + x


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class TCN(nn.Module):
    """mmpose's ``TCN`` with every kernel 1: an MLP over the 2 * J input numbers of one frame."""

    def __init__(self, in_channels: int, stem_channels: int = 1024, num_blocks: int = 2, dropout: float = 0.5):
        super().__init__()
        self.expand_conv = ConvModule1d(in_channels, stem_channels)
        self.tcn_blocks = nn.ModuleList(BasicTemporalBlock(stem_channels, dropout) for _ in range(num_blocks))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.expand_conv(x))
        for block in self.tcn_blocks:
            x = block(x)
        return x


class TemporalRegressionHead(nn.Module):
    """Conv1d(in, 3 * J_out, 1) with bias, reshaped to (N, J_out, 3)."""

    def __init__(self, in_channels: int, num_joints: int):
        super().__init__()
        self.num_joints = num_joints
        self.conv = nn.Conv1d(in_channels, num_joints * 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).reshape(-1, self.num_joints, 3)


class SimpleBaseline3D(nn.Module):
    """(N, 2 * J, 1) normalised 2D (channel 2j + c) -> (N, J - 1, 3) normalised root-relative 3D."""

    def __init__(self, num_joints: int = 17, channels: int = 1024, num_blocks: int = 2, dropout: float = 0.5):
        super().__init__()
        self.num_joints = num_joints
        self.backbone = TCN(2 * num_joints, channels, num_blocks, dropout)
        self.head = TemporalRegressionHead(channels, num_joints - 1)

    def receptive_field(self) -> int:
        return 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != 2 * self.num_joints or x.shape[2] != 1:
            raise ValueError(f"SimpleBaseline3D expects (N, {2 * self.num_joints}, 1), got {tuple(x.shape)}")
        return self.head(self.backbone(x))


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------

_PAPER = "A simple yet effective baseline for 3d human pose estimation (Martinez et al., ICCV 2017)"

WEIGHTS: dict[str, Weights] = {
    "simplebaseline3d_h36m": Weights(
        name="simplebaseline3d_h36m",
        family="simplebaseline3d",
        stage="lifter",
        url="https://download.openmmlab.com/mmpose/body3d/simple_baseline/simple3Dbaseline_h36m-f0ad73a4_20210419.pth",
        filename="simple3Dbaseline_h36m-f0ad73a4_20210419.pth",
        source_format="mmpose",
        hash_prefix="f0ad73a4",
        arch={"num_joints": 17, "channels": 1024, "num_blocks": 2, "dropout": 0.5},
        keypoint_names=H36M17_NAMES,
        skeleton=H36M17_SKELETON,
        license="Apache-2.0 (mmpose model zoo)",
        paper=_PAPER,
        # mmpose's model zoo (simplebaseline3d_h36m.md / .yml): Human3.6M, ground-truth 2D input,
        # protocol 1 (MPJPE) and 2 (P-MPJPE), trained without the paper's max-norm constraint.
        metrics={"h36m_mpjpe_mm": 43.4, "h36m_p_mpjpe_mm": 34.3},
        gmacs=0.0043,  # one frame, torch's FlopCounterMode
        notes=(
            "Input: COCO-17 (x, y) pixels of one frame, converted to H36M-17 and normalised with the person's "
            "box (norm_pose_2d, the demo's default) and H36M pixel statistics; output: H36M-17 root-relative "
            "3D joints in metres (camera axes), root at (0, 0, 0). Receptive field 1 frame; no flip "
            "augmentation (the official test path has none; a job's flip_augment_3d changes nothing). The 2021 "
            "mmpose 0.x file stores its head as keypoint_head.*, renamed to head.* as mmpose does. Its "
            "figures are for ground-truth 2D input; with detected 2D they are worse."
        ),
    ),
}


# --------------------------------------------------------------------------------------------
# Checkpoint format
# --------------------------------------------------------------------------------------------

_LABEL = "SimpleBaseline3D (image pose lifter)"
_MARKERS = ("backbone.expand_conv.conv.weight", "backbone.tcn_blocks.0.conv1.0.conv.weight", "head.conv.weight")


def checkpoint_format(obj: Any) -> str | None:
    """The supported layout of an unpickled checkpoint, by its keys; None if none."""
    return mmpose.describe_layout(obj, _LABEL, _MARKERS)


def convert_checkpoint(obj: Any) -> "OrderedDict[str, torch.Tensor]":
    """Any supported SimpleBaseline3D checkpoint -> the state dict of :class:`SimpleBaseline3D`."""
    return mmpose.convert(obj, _LABEL, _MARKERS)


# --------------------------------------------------------------------------------------------
# Public builders and the lifter
# --------------------------------------------------------------------------------------------

def simplebaseline3d(*, num_joints: int = 17, channels: int = 1024, num_blocks: int = 2,
                     dropout: float = 0.5) -> SimpleBaseline3D:
    """The bare network with PyTorch's default (random) initialisation; loads nothing."""
    return SimpleBaseline3D(num_joints=num_joints, channels=channels, num_blocks=num_blocks, dropout=dropout)


def create(spec: Weights, state_dict: Mapping[str, torch.Tensor] | None, *, device: str | torch.device = "cpu",
           half: bool = False) -> "SimpleBaseline3DLifter":
    """Build `spec`'s model, load `state_dict` strictly (None: random), eval, move to `device`."""
    model = simplebaseline3d(**dict(spec.arch))
    if state_dict is not None:
        load_strict(model, state_dict, what="the checkpoint")
    device = torch.device(device)
    return SimpleBaseline3DLifter(model.to(device).eval(), spec, device=device, half=half)


class SimpleBaseline3DLifter:
    """Lifts COCO-17 pixel tracks to H36M-17 root-relative 3D, one frame at a time.

    The same interface as :class:`models.videopose3d.VideoPose3DLifter` (``receptive_field``,
    ``pad``, ``lift``, ``lift_batch``); CPU float32 numpy out, ``torch.inference_mode()`` inside.
    """

    #: Frames per forward pass (each is 34 numbers in, 1024-wide activations: ~4 KB per frame).
    chunk_frames: int = 65536
    #: The official test path has no flip augmentation; ``flip_augment`` is accepted and changes nothing.
    flip_augmentation: bool = False

    def __init__(self, model: SimpleBaseline3D, weights: Weights, *, device: str | torch.device = "cpu",
                 half: bool = False) -> None:
        self.model = model
        self.weights = weights
        self.device = torch.device(device)
        self.half = bool(half) and self.device.type == "cuda"
        self.weights_sha256: str | None = None
        self._kp_mean = np.asarray(KEYPOINTS_MEAN, dtype=np.float32)
        self._kp_std = np.asarray(KEYPOINTS_STD, dtype=np.float32)
        self._target_mean = np.asarray(TARGET_MEAN, dtype=np.float32)
        self._target_std = np.asarray(TARGET_STD, dtype=np.float32)

    # ---- geometry ---------------------------------------------------------------------------

    @property
    def receptive_field(self) -> int:
        """Input frames one output frame sees: 1."""
        return self.model.receptive_field()

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
        flip_augment: bool = False,
        pad_before: int | None = None,
        pad_after: int | None = None,
        *,
        bboxes_xyxy: np.ndarray | None = None,
        norm_pose_2d: bool = True,
    ) -> np.ndarray:
        """(T, 17, 2) COCO pixel keypoints -> (T_out, 17, 3) float32 H36M joints, metres, root at 0.

        `bboxes_xyxy` (T, 4) are the person's boxes for ``norm_pose_2d``; None uses the keypoints'
        extent plus 10 % per side. `width` / `height` are checked but, as in mmpose, not used by this
        codec. Pads repeat the edge frames (``T_out = T + pad_before + pad_after``), for callers that
        treat every lifter alike; the default is none. `flip_augment` has no effect (see the class).
        """
        inputs = self.model_input(keypoints_px, width, height, bboxes_xyxy=bboxes_xyxy, norm_pose_2d=norm_pose_2d)
        out = self._run(inputs)
        before, after = (_pad_arg("pad_before", pad_before), _pad_arg("pad_after", pad_after))
        if before or after:
            out = np.pad(out, ((before, after), (0, 0), (0, 0)), mode="edge")
        return out

    def lift_batch(
        self,
        sequences: Sequence[np.ndarray],
        width: float,
        height: float,
        flip_augment: bool = False,
        *,
        bboxes_xyxy: Sequence[np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """:meth:`lift` for many tracks of one video, all frames in shared forward passes: a list of (T_i, 17, 3)."""
        if bboxes_xyxy is not None and len(bboxes_xyxy) != len(sequences):
            raise ValueError(f"{len(sequences)} sequences but {len(bboxes_xyxy)} box arrays")
        inputs = [
            self.model_input(seq, width, height, bboxes_xyxy=None if bboxes_xyxy is None else bboxes_xyxy[i])
            for i, seq in enumerate(sequences)
        ]
        if not inputs:
            return []
        out = self._run(np.concatenate(inputs))
        bounds = np.cumsum([0] + [len(x) for x in inputs])
        return [out[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]

    def model_input(
        self,
        keypoints_px: np.ndarray,
        width: float,
        height: float,
        *,
        bboxes_xyxy: np.ndarray | None = None,
        norm_pose_2d: bool = True,
    ) -> np.ndarray:
        """The network input for one track: (T, 34, 1) float32 (COCO -> H36M, norm_pose_2d, the codec)."""
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
        x = (h36m - self._kp_mean) / self._kp_std            # float32, per joint and axis
        return x.reshape(len(x), 34, 1)                      # channel 2j + c

    # ---- internals --------------------------------------------------------------------------

    def decode(self, output_raw: np.ndarray) -> np.ndarray:
        """(T, 16, 3) normalised root-relative output -> (T, 17, 3) metres with the root (0, 0, 0) inserted."""
        kp = np.asarray(output_raw, dtype=np.float32) * self._target_std + self._target_mean
        return np.insert(kp, 0, np.zeros(3, np.float32), axis=1)

    def raw_outputs(self, inputs: np.ndarray) -> np.ndarray:
        """The network's (T, 16, 3) output for a (T, 34, 1) input, CPU numpy."""
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).to(self.device)
            return forward_half_guarded(self, lambda: self.model(x), "SimpleBaseline3D").cpu().numpy()

    def _run(self, inputs: np.ndarray) -> np.ndarray:
        chunk = max(1, int(self.chunk_frames))
        raw = np.concatenate([self.raw_outputs(inputs[i:i + chunk]) for i in range(0, len(inputs), chunk)])
        return self.decode(raw)


def _pad_arg(label: str, value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{label} must be a non-negative int, got {value!r}")
    return int(value)


__all__ = [
    "BasicTemporalBlock", "ConvModule1d", "H36M_BBOX_CENTER", "H36M_BBOX_SCALE", "KEYPOINTS_MEAN", "KEYPOINTS_STD",
    "SimpleBaseline3D", "SimpleBaseline3DLifter", "TARGET_MEAN", "TARGET_STD", "TCN", "TemporalRegressionHead",
    "WEIGHTS", "checkpoint_format", "coco_to_h36m", "convert_checkpoint", "create", "keypoint_boxes",
    "normalize_to_h36m_box",
    "simplebaseline3d",
]
