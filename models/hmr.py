"""HMR as trained by SPIN: a ResNet-50 and an iterative SMPL regressor with 6D rotations.

Kolotouros, Pavlakos, Black, Daniilidis, "Learning to Reconstruct 3D Human Pose and Shape via
Model-fitting in the Loop", ICCV 2019 (code: nkolot/SPIN, ``models/hmr.py``). The network reads a
224x224 crop around one person and returns, after exactly three residual refinement steps, SMPL's 24
joint rotations (6D, turned into rotation matrices), 10 shape coefficients (betas) and a
weak-perspective camera [s, tx, ty] for the crop.

Preprocessing follows SPIN's ``demo.py`` (bbox path) bit for bit, which matters: the crop box comes
from ``center = top-left + wh / 2`` and ``scale = max(w, h) / 200`` (no enlargement), its corners are
truncated toward zero (so the crop can be one pixel non-square), the float canvas is min-max stretched
to 0..255 (``scipy.misc.bytescale``) and shrunk with Pillow's antialiased bilinear filter
(``scipy.misc.imresize``), not with OpenCV. See ``shared/golden/hmr_spin_resnet50/README.md``.

Layout: building blocks (rotation conversions, cropping; the ResNet is models/resnet.py's), the
model, the weights table, then the public builders (checkpoint conversion, ``create``, ``HMRPredictor``).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from posepipe.models import ondevice
from posepipe.models.checkpoint import CheckpointError, load_strict, strip_prefix, tensors_only
from posepipe.models.precision import fall_back_to_fp32, forward_half_flagged, forward_half_guarded
from posepipe.models.resnet import Bottleneck, make_res_layer
from posepipe.models.skeletons import SMPL_JOINT_NAMES
from posepipe.models.weights import Weights

NUM_JOINTS = 24                  # SMPL: global orientation + 23 body joints
POSE_6D_DIM = NUM_JOINTS * 6     # 144
NUM_BETAS = 10
CAMERA_DIM = 3                   # weak perspective [s, tx, ty]
FEATURE_DIM = 2048               # ResNet-50 after global average pooling
INPUT_RES = 224                  # SPIN's constants.IMG_RES
N_ITER = 3                       # SPIN always runs three regressor iterations
BBOX_SCALE_UNIT = 200.0          # SPIN's "scale" is the box side in units of 200 pixels

IDENTITY_6D = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)  # R[:, :2] of the identity, read row-major
DEFAULT_CAMERA = (0.9, 0.0, 0.0)              # about SPIN's smpl_mean_params.npz['cam']
OUTPUT_KEYS = ("rotmat", "betas", "camera", "pose_6d", "global_orient", "body_pose")


# ---------------------------------------------------------------------------------------------
# Building blocks: rotations
# ---------------------------------------------------------------------------------------------


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """SPIN's 6D rotations (..., 6) -> rotation matrices (..., 3, 3).

    The 6 numbers are read row-major as a 3x2 matrix; its two *columns* are Gram-Schmidt
    orthonormalised into b1, b2, and R = [b1 | b2 | b1 x b2] with the b's as columns. So the 6D
    vector is ``R[:, :2]`` flattened row-major, and the identity is [1, 0, 0, 1, 0, 0].
    """
    if x.shape[-1] != 6:
        raise ValueError(f"rot6d_to_rotmat expects (..., 6), got {tuple(x.shape)}")
    m = x.reshape(-1, 3, 2)
    a1, a2 = m[:, :, 0], m[:, :, 1]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(dim=-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-1).reshape(*x.shape[:-1], 3, 3)


def rotmat_to_axis_angle(rotmat: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> axis-angle vectors (..., 3), angle in [0, pi].

    Robust over the whole range (computed in float64, returned in the input's dtype):
    - the axis times sin(angle) comes from the antisymmetric part, the angle from atan2(sin, cos),
      which stays accurate near 0 (no arccos);
    - beyond 90 degrees, where sin(angle) vanishes towards 180, the axis comes from the symmetric
      part instead, (R + R^T)/2 - cos I = (1 - cos) a a^T, with its sign taken from the
      antisymmetric part (at exactly 180 degrees both signs are the same rotation).
    """
    if rotmat.shape[-2:] != (3, 3):
        raise ValueError(f"rotmat_to_axis_angle expects (..., 3, 3), got {tuple(rotmat.shape)}")
    lead = rotmat.shape[:-2]
    r = rotmat.reshape(-1, 3, 3).to(torch.float64)
    v = 0.5 * torch.stack((r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0], r[:, 1, 0] - r[:, 0, 1]), dim=-1)
    sin = v.norm(dim=-1)
    cos = 0.5 * (r.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0)
    angle = torch.atan2(sin, cos)

    # Up to 90 degrees: axis * angle = v * angle / sin (-> v as the angle -> 0).
    ratio = torch.where(sin > 1e-12, angle / sin.clamp_min(1e-12), torch.ones_like(sin))
    small = v * ratio.unsqueeze(-1)

    # Beyond 90 degrees: the column of the symmetric part with the largest diagonal entry.
    eye = torch.eye(3, dtype=r.dtype, device=r.device)
    sym = 0.5 * (r + r.transpose(-1, -2)) - cos[:, None, None] * eye
    k = sym.diagonal(dim1=-2, dim2=-1).argmax(dim=-1)
    column = sym[torch.arange(r.shape[0], device=r.device), :, k]
    axis = column / column.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    axis = torch.where(((axis * v).sum(-1) < 0).unsqueeze(-1), -axis, axis)
    large = axis * angle.unsqueeze(-1)

    out = torch.where((cos < 0).unsqueeze(-1), large, small)
    return out.to(rotmat.dtype if rotmat.dtype.is_floating_point else torch.float32).reshape(*lead, 3)


def axis_angle_to_rotmat(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula, (..., 3) -> (..., 3, 3), float64 inside, exact near 0."""
    if axis_angle.shape[-1] != 3:
        raise ValueError(f"axis_angle_to_rotmat expects (..., 3), got {tuple(axis_angle.shape)}")
    lead = axis_angle.shape[:-1]
    w = axis_angle.reshape(-1, 3).to(torch.float64)
    theta2 = (w * w).sum(-1)
    theta = theta2.sqrt()
    tiny = theta < 1e-4
    safe = torch.where(tiny, torch.ones_like(theta), theta)
    a = torch.where(tiny, 1.0 - theta2 / 6.0, torch.sin(safe) / safe)                   # sin(t)/t
    b = torch.where(tiny, 0.5 - theta2 / 24.0, (1.0 - torch.cos(safe)) / (safe * safe))  # (1-cos t)/t^2
    zero = torch.zeros_like(theta)
    skew = torch.stack((zero, -w[:, 2], w[:, 1], w[:, 2], zero, -w[:, 0], -w[:, 1], w[:, 0], zero), -1)
    skew = skew.reshape(-1, 3, 3)
    eye = torch.eye(3, dtype=torch.float64, device=w.device).expand_as(skew)
    r = eye + a[:, None, None] * skew + b[:, None, None] * (skew @ skew)
    out_dtype = axis_angle.dtype if axis_angle.dtype.is_floating_point else torch.float32
    return r.to(out_dtype).reshape(*lead, 3, 3)


# ---------------------------------------------------------------------------------------------
# Building blocks: SPIN's crop (utils/imutils.crop + scipy.misc.imresize)
# ---------------------------------------------------------------------------------------------


def bbox_xyxy_to_center_scale(bboxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, 4) boxes [x1, y1, x2, y2] -> centers (K, 2) and scales (K,), float32 as in demo.py.

    ``center = top-left + 0.5 * [w, h]`` and ``scale = max(w, h) / 200``, with no enlargement
    (the 1.2 factor of SPIN's demo belongs to its OpenPose path only).
    """
    boxes = np.asarray(bboxes_xyxy, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"bboxes_xyxy must have shape (K, 4), got {boxes.shape}; slice off scores first")
    finite = np.isfinite(boxes).all(axis=1)
    if not finite.all():
        raise ValueError(f"bboxes_xyxy holds non-finite values in rows {np.flatnonzero(~finite).tolist()}")
    wh = boxes[:, 2:] - boxes[:, :2]
    centers = boxes[:, :2] + np.float32(0.5) * wh
    scales = wh.max(axis=1) / np.float32(BBOX_SCALE_UNIT)
    bad = np.flatnonzero(scales <= 0)
    if bad.size:
        raise ValueError(f"bboxes_xyxy rows {bad.tolist()} have no extent (x2 <= x1 and y2 <= y1)")
    return centers.astype(np.float32), scales.astype(np.float32)


def crop_corners(center: Sequence[float], scale: float, res: int = INPUT_RES) -> tuple[np.ndarray, np.ndarray]:
    """Integer corners (x, y) of SPIN's crop region [ul, br), as ``utils.imutils.crop`` finds them.

    They are ``center -/+ 100 * scale`` truncated toward zero, but computed through SPIN's 3x3
    transform and its inverse (float32 entries, as numpy 2 evaluates SPIN's expressions with a
    float32 center and scale), so the truncation agrees with the official code even where
    ``center +/- 100 * scale`` lands near an integer.
    """
    cx, cy = (np.float32(c) for c in center)
    h = np.float32(BBOX_SCALE_UNIT) * np.float32(scale)
    size = np.float32(res)
    t = np.zeros((3, 3))
    t[0, 0] = size / h
    t[1, 1] = size / h
    t[0, 2] = size * (-cx / h + np.float32(0.5))
    t[1, 2] = size * (-cy / h + np.float32(0.5))
    t[2, 2] = 1.0
    t_inv = np.linalg.inv(t)
    ul = np.dot(t_inv, np.array([0.0, 0.0, 1.0]))[:2].astype(int)
    br = np.dot(t_inv, np.array([float(res), float(res), 1.0]))[:2].astype(int)
    return ul, br


_SPIN_CORNERS_OK: bool | None = None


def spin_corners_match_numpy() -> bool:
    """Whether ``ondevice.spin_corners`` gives :func:`crop_corners`'s integers with the numpy installed (its
    ``inv`` and ``dot`` go through the BLAS, whose kernels decide the last bit that the truncation can
    see). Probed once, on the host, on 600 boxes of the kinds a worker sees (float, on whole pixels,
    clipped to a 768x576 frame)."""
    global _SPIN_CORNERS_OK
    if _SPIN_CORNERS_OK is None:
        rng = np.random.default_rng(0)
        xy = rng.uniform(-20, 700, (600, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(3, 500, (600, 2))], axis=1).astype(np.float32)
        boxes[200:400] = np.round(boxes[200:400])
        boxes[400:] = np.clip(boxes[400:], 0, [768, 576, 768, 576])
        boxes = boxes[((boxes[:, 2:] - boxes[:, :2]) > 1).all(axis=1)]
        centers, scales = bbox_xyxy_to_center_scale(boxes)
        want = np.array([np.concatenate(crop_corners(c, s)) for c, s in zip(centers, scales)])
        with torch.device("cpu"), torch.inference_mode():
            ul, br = ondevice.spin_corners(torch.from_numpy(boxes), INPUT_RES, BBOX_SCALE_UNIT)
        _SPIN_CORNERS_OK = bool(np.array_equal(torch.cat([ul, br], dim=1).numpy(), want))
    return _SPIN_CORNERS_OK


def bytescale(canvas: np.ndarray) -> np.ndarray:
    """``scipy.misc.bytescale`` of the (float) crop canvas: min-max stretch of all channels to 0..255.

    ``(v - min) * 255 / (max - min)``, clipped, +0.5 and truncated to uint8; a constant canvas
    maps to 0. The identity when the canvas already spans 0..255 (any crop with black padding and
    one saturated value), so that case is returned as is.
    """
    lo, hi = canvas.min(), canvas.max()
    if lo == 0 and hi == 255:
        return canvas.astype(np.uint8, copy=False)
    span = float(hi) - float(lo)
    factor = 255.0 / (span if span != 0 else 1.0)
    stretched = (canvas.astype(np.float64) - float(lo)) * factor
    return (stretched.clip(0, 255) + 0.5).astype(np.uint8)


def crop(image: np.ndarray, center: Sequence[float], scale: float, res: int = INPUT_RES) -> np.ndarray:
    """SPIN's ``crop(img, center, scale, (res, res))`` of an (H, W, 3) uint8 image -> (res, res, 3) uint8.

    The region [ul, br) is copied into a black canvas (parts outside the image stay 0), the canvas
    is byte-scaled and resized with Pillow's bilinear filter, which antialiases when shrinking.
    Channel order is kept (SPIN crops the RGB image; every step treats channels alike).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"crop expects an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    ul, br = crop_corners(center, scale, res)
    height, width = int(br[1] - ul[1]), int(br[0] - ul[0])
    if height <= 0 or width <= 0:
        raise ValueError(f"empty crop region ul={ul.tolist()} br={br.tolist()} (center {center}, scale {scale})")
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    x0, x1 = max(int(ul[0]), 0), min(int(br[0]), image.shape[1])
    y0, y1 = max(int(ul[1]), 0), min(int(br[1]), image.shape[0])
    if x1 > x0 and y1 > y0:  # the official code raises when the box misses the image entirely
        canvas[y0 - ul[1]:y1 - ul[1], x0 - ul[0]:x1 - ul[0]] = image[y0:y1, x0:x1]
    resized = Image.fromarray(bytescale(canvas)).resize((res, res), Image.Resampling.BILINEAR)
    return np.asarray(resized)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class HMROutput(NamedTuple):
    rotmat: torch.Tensor   # (B, 24, 3, 3)
    betas: torch.Tensor    # (B, 10)
    camera: torch.Tensor   # (B, 3) weak perspective [s, tx, ty]
    pose_6d: torch.Tensor  # (B, 144)


class HMR(nn.Module):
    """SPIN's HMR: ResNet-50 features, then ``n_iter`` residual updates of (pose 6D, betas, camera).

    Each iteration reads ``[feature, pose, betas, camera]`` (2205 numbers) through
    fc1 -> dropout -> fc2 -> dropout (no activation anywhere) and adds decpose / decshape / deccam
    to the previous estimate, starting from the ``init_*`` buffers (SMPL mean parameters).
    State-dict names and order equal the official checkpoint's.
    """

    input_size: tuple[int, int] = (INPUT_RES, INPUT_RES)
    feature_dim: int = FEATURE_DIM

    def __init__(self, *, n_iter: int = N_ITER, layers: Sequence[int] = (3, 4, 6, 3)):
        super().__init__()
        if n_iter < 1:
            raise ValueError(f"n_iter must be >= 1, got {n_iter}")
        self.n_iter = int(n_iter)
        # Buffers first: the official state_dict starts with them.
        self.register_buffer("init_pose", torch.tensor(IDENTITY_6D, dtype=torch.float32).repeat(NUM_JOINTS)[None])
        self.register_buffer("init_shape", torch.zeros(1, NUM_BETAS))
        self.register_buffer("init_cam", torch.tensor([DEFAULT_CAMERA], dtype=torch.float32))

        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = make_res_layer(Bottleneck, 64, 64, layers[0], stride=1)
        self.layer2 = make_res_layer(Bottleneck, 256, 128, layers[1], stride=2)
        self.layer3 = make_res_layer(Bottleneck, 512, 256, layers[2], stride=2)
        self.layer4 = make_res_layer(Bottleneck, 1024, 512, layers[3], stride=2)
        self.avgpool = nn.AvgPool2d(7, stride=1)  # the 7x7 map of a 224x224 input -> 2048 numbers

        self.fc1 = nn.Linear(FEATURE_DIM + POSE_6D_DIM + NUM_BETAS + CAMERA_DIM, 1024)
        self.drop1 = nn.Dropout()
        self.fc2 = nn.Linear(1024, 1024)
        self.drop2 = nn.Dropout()
        self.decpose = nn.Linear(1024, POSE_6D_DIM)
        self.decshape = nn.Linear(1024, NUM_BETAS)
        self.deccam = nn.Linear(1024, CAMERA_DIM)
        self._init_weights()

    def _init_weights(self) -> None:
        """SPIN's initialisation (He-normal convs, unit BN, near-zero decoders): random-weight runs stay sane."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for head in (self.decpose, self.decshape, self.deccam):
            nn.init.xavier_uniform_(head.weight, gain=0.01)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) normalised RGB -> (B, 2048) pooled ResNet-50 features."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, *self.input_size):
            height, width = self.input_size
            raise ValueError(f"HMR expects input (B, 3, {height}, {width}), got {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def regress(self, feat: torch.Tensor, n_iter: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 2048) features -> (pose 6D (B, 144), betas (B, 10), camera (B, 3)) after n_iter steps."""
        batch = feat.shape[0]
        pose = self.init_pose.expand(batch, -1)
        shape = self.init_shape.expand(batch, -1)
        cam = self.init_cam.expand(batch, -1)
        for _ in range(self.n_iter if n_iter is None else n_iter):
            xc = torch.cat([feat, pose, shape, cam], dim=1)
            xc = self.drop2(self.fc2(self.drop1(self.fc1(xc))))
            pose = self.decpose(xc) + pose
            shape = self.decshape(xc) + shape
            cam = self.deccam(xc) + cam
        return pose, shape, cam

    def forward(self, x: torch.Tensor) -> HMROutput:
        pose_6d, betas, camera = self.regress(self.features(x))
        rotmat = rot6d_to_rotmat(pose_6d.reshape(-1, NUM_JOINTS, 6))
        return HMROutput(rotmat=rotmat, betas=betas, camera=camera, pose_6d=pose_6d)


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------

_IMAGENET_MEAN = (0.485, 0.456, 0.406)  # SPIN's constants.IMG_NORM_MEAN, RGB, 0..1
_IMAGENET_STD = (0.229, 0.224, 0.225)

WEIGHTS: dict[str, Weights] = {
    "hmr_spin_resnet50": Weights(
        name="hmr_spin_resnet50",
        family="hmr",
        stage="mesh",
        gmacs=4.10,  # one 224x224 crop and the 3-step regressor, torch's FlopCounterMode
        url="http://visiondata.cis.upenn.edu/spin/model_checkpoint.pt",  # plain http: see `notes`
        filename="model_checkpoint.pt",
        sha256=None,  # unpublished; no copy we could trust was at hand to record it from
        source_format="spin",
        arch={"n_iter": N_ITER},
        input_size=(INPUT_RES, INPUT_RES),
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        color="RGB",
        keypoint_names=SMPL_JOINT_NAMES,
        license=(
            "BSD-3-Clause (nkolot/SPIN LICENSE, (c) 2019 University of Pennsylvania and Max Planck "
            "Institute for Intelligent Systems); turning the outputs into meshes needs the SMPL model, "
            "which has its own licence"
        ),
        paper=(
            "Learning to Reconstruct 3D Human Pose and Shape via Model-fitting in the Loop "
            "(Kolotouros et al., ICCV 2019)"
        ),
        metrics={"3dpw_pa_mpjpe_mm": 59.2, "h36m_p2_pa_mpjpe_mm": 41.1},  # the paper's reconstruction errors
        notes=(
            "Fetched by SPIN's fetch_data.sh over plain http (no TLS) and with no published hash: compare "
            "the sha256 that `posepipe weights verify hmr_spin_resnet50` prints with a copy you trust. The "
            "file (torch's legacy format, 2019) is {'model': state_dict, 'optimizer', 'epoch', 'batch_idx', "
            "'batch_size', 'dataset_perm', 'total_step_count'} and its state_dict already holds the SMPL mean parameters "
            "(init_pose/init_shape/init_cam), so smpl_mean_params.npz (inside "
            "http://visiondata.cis.upenn.edu/spin/data.tar.gz) is not needed to run it. Outputs are SMPL "
            "rotations, betas and a crop camera; vertices/joints need the SMPL neutral model "
            "(smplify.is.tue.mpg.de, registration required)."
        ),
    ),
}


# ---------------------------------------------------------------------------------------------
# Public builders: checkpoint conversion
# ---------------------------------------------------------------------------------------------

# mmhuman3d's ImageBodyModelEstimator keeps training-only modules next to backbone/head.
MMHUMAN3D_SKIPPED_PREFIXES = ("disc.", "smpl.", "body_model.", "body_model_train.", "body_model_test.", "registrant.")


def _preview(keys: Sequence[str], limit: int = 8) -> str:
    keys = list(keys)
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _has_key(state: Any, key: str) -> bool:
    return isinstance(state, Mapping) and (key in state or f"module.{key}" in state)


def convert_spin(checkpoint: Mapping[str, Any]) -> "OrderedDict[str, torch.Tensor]":
    """SPIN's own container ``{'model': state_dict, 'optimizer': ..., ...}`` -> state dict."""
    return strip_prefix(tensors_only(checkpoint["model"]), "module.")


def convert_state_dict(state: Mapping[str, Any]) -> "OrderedDict[str, torch.Tensor]":
    """A bare SPIN state dict (optionally saved through DataParallel, 'module.' prefix)."""
    return strip_prefix(tensors_only(state), "module.")


def convert_mmhuman3d(checkpoint: Mapping[str, Any]) -> "OrderedDict[str, torch.Tensor]":
    """mmhuman3d's HMR (``{'state_dict': {'backbone.*', 'head.*', ...}, 'meta': ...}``) -> SPIN names.

    mmhuman3d's ResNet names its layers as torchvision does (conv1, bn1, layerN.i.convK/bnK,
    downsample.0/1) and its HMRHead has SPIN's fc1/fc2/decpose/decshape/deccam/init_*; dropping the
    prefixes gives SPIN's state dict. Deliberately skipped, as training-only: the keys under
    ``MMHUMAN3D_SKIPPED_PREFIXES`` (discriminator, SMPL body-model buffers). Anything else (a neck,
    another backbone) is refused. Note that mmhuman3d crops with its own affine warp, so outputs
    through SPIN's preprocessing are close to, not identical with, mmhuman3d's own inference.
    """
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    unknown: list[str] = []
    for key, value in strip_prefix(tensors_only(checkpoint["state_dict"]), "module.").items():
        if key.startswith("backbone."):
            out[key[len("backbone."):]] = value
        elif key.startswith("head."):
            out[key[len("head."):]] = value
        elif not key.startswith(MMHUMAN3D_SKIPPED_PREFIXES):
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"mmhuman3d checkpoint has keys outside backbone./head. that HMR cannot use: {_preview(unknown)} "
            f"(only {', '.join(MMHUMAN3D_SKIPPED_PREFIXES)} are skipped as training-only)"
        )
    return out


def _is_spin(obj: Mapping[str, Any]) -> bool:
    return _has_key(obj.get("model"), "decpose.weight")


def _is_mmhuman3d(obj: Mapping[str, Any]) -> bool:
    return _has_key(obj.get("state_dict"), "head.decpose.weight")


def _is_state_dict(obj: Mapping[str, Any]) -> bool:
    return _has_key(obj, "decpose.weight")


_Converter = Callable[[Mapping[str, Any]], "OrderedDict[str, torch.Tensor]"]

# Format name -> (recognised by a key only it has, remap to SPIN's state dict).
CHECKPOINT_FORMATS: dict[str, tuple[Callable[[Mapping[str, Any]], bool], _Converter]] = {
    "spin": (_is_spin, convert_spin),
    "mmhuman3d": (_is_mmhuman3d, convert_mmhuman3d),
    "state_dict": (_is_state_dict, convert_state_dict),
}


_FORMAT_NAMES = {
    "spin": "SPIN {'model': state_dict, 'optimizer', ...} (model_checkpoint.pt)",
    "mmhuman3d": "mmhuman3d HMR {'state_dict': ..., 'meta': ...}",
    "state_dict": "bare SPIN state_dict",
}


def checkpoint_format(obj: Any) -> str | None:
    """The supported layout of an unpickled checkpoint, by its keys; None if none."""
    if not isinstance(obj, Mapping):
        return None
    return next((_FORMAT_NAMES[name] for name, (matches, _) in CHECKPOINT_FORMATS.items() if matches(obj)), None)


def convert_checkpoint(obj: Any) -> "OrderedDict[str, torch.Tensor]":
    """Any supported HMR checkpoint container -> SPIN's state dict (names as in the manifest)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"an HMR checkpoint is a dict, got {type(obj).__name__}")
    for matches, convert in CHECKPOINT_FORMATS.values():
        if matches(obj):
            return convert(obj)
    nested = {k: list(v)[:5] for k, v in obj.items() if isinstance(v, Mapping)}
    raise CheckpointError(
        f"unrecognised HMR checkpoint layout; top-level keys: {_preview([str(k) for k in obj])}"
        + (f"; nested keys: {nested}" if nested else "")
        + ". Supported: SPIN's {'model': state_dict, ...} (model_checkpoint.pt), a bare SPIN state_dict "
        "(decpose.weight, fc1.weight, ...; a 'module.' prefix is fine) and mmhuman3d's "
        "{'state_dict': {'backbone.*', 'head.*'}}"
    )


# ---------------------------------------------------------------------------------------------
# Public builders: model and predictor
# ---------------------------------------------------------------------------------------------


def hmr_resnet50(*, n_iter: int = N_ITER) -> HMR:
    """SPIN's HMR architecture with random weights and identity / zero / [0.9, 0, 0] mean parameters."""
    return HMR(n_iter=n_iter)


def create(
    spec: Weights,
    state_dict: Mapping[str, torch.Tensor] | None,
    *,
    device: str | torch.device = "cpu",
    half: bool = False,
) -> "HMRPredictor":
    """Build ``spec``'s architecture, load ``state_dict`` strictly (None keeps random weights), eval, place.

    On CUDA the ResNet runs channels_last, and under fp16 autocast when ``half`` (ignored on CPU); the
    small regressor and the rotation conversions always run in float32.
    """
    if spec.family != "hmr":
        raise ValueError(f"{spec.name} is a {spec.family} weight set, not hmr")
    model = hmr_resnet50(**dict(spec.arch))
    if spec.input_size is not None and tuple(spec.input_size) != model.input_size:
        raise ValueError(f"{spec.name}: input_size {spec.input_size} but HMR takes {model.input_size}")
    if state_dict is not None:
        load_strict(model, state_dict, what="the checkpoint")
    device = torch.device(device)
    use_half = bool(half) and device.type == "cuda"
    model = model.eval().to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return HMRPredictor(model, spec, device, half=use_half)


def _empty_result() -> dict[str, np.ndarray]:
    shapes = {
        "rotmat": (0, NUM_JOINTS, 3, 3), "betas": (0, NUM_BETAS), "camera": (0, CAMERA_DIM),
        "pose_6d": (0, POSE_6D_DIM), "global_orient": (0, 3), "body_pose": (0, NUM_JOINTS - 1, 3),
    }
    return {key: np.zeros(shapes[key], dtype=np.float32) for key in OUTPUT_KEYS}


class HMRPredictor:
    """Person boxes in a BGR frame -> SMPL parameters, with SPIN's exact preprocessing.

    Outputs per box (float32 numpy on CPU): ``rotmat`` (24, 3, 3), ``betas`` (10,), ``camera``
    (3,) weak perspective [s, tx, ty] of the crop, ``pose_6d`` (144,), and the same pose as SMPL
    axis-angle: ``global_orient`` (3,) and ``body_pose`` (23, 3). :meth:`predict_frames` gives the
    same as device tensors for frames already on the device, with no host sync.
    """

    @property
    def supports_device(self) -> bool:
        """predict_frames reproduces SPIN's crop, whose integer corners come from numpy's inv/dot: True
        when the installed numpy's last bits are the ones emulated (probed once, on the host)."""
        return spin_corners_match_numpy()

    def __init__(self, model: HMR, weights: Weights, device: torch.device, *, half: bool = False):
        if weights.mean is None or weights.std is None:
            raise ValueError(f"{weights.name}: the weights record needs mean and std")
        self.model = model
        self.weights = weights
        self.device = device
        self.half = half
        self.weights_sha256: str | None = None  # set by models.load_model
        self.input_res = model.input_size[0]
        self._mean = torch.tensor(weights.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(weights.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    # -- preprocessing -------------------------------------------------------------------------

    def crops(self, image_bgr: np.ndarray, bboxes_xyxy: np.ndarray) -> np.ndarray:
        """(K, 224, 224, 3) uint8 RGB crops, one per box, as SPIN's demo makes them."""
        image = np.asarray(image_bgr)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image_bgr must be an (H, W, 3) uint8 array, got {image.shape} {image.dtype}")
        centers, scales = bbox_xyxy_to_center_scale(bboxes_xyxy)
        out = np.empty((len(scales), self.input_res, self.input_res, 3), dtype=np.uint8)
        for i, (center, scale) in enumerate(zip(centers, scales)):
            out[i] = crop(image, center, scale, self.input_res)[:, :, ::-1]  # every step is per channel
        return out

    def normalize(self, crops_rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32 network input on the device."""
        x = crops_rgb if isinstance(crops_rgb, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(crops_rgb))
        x = x.to(self.device).permute(0, 3, 1, 2).float()
        return (x / 255.0 - self._mean) / self._std

    def preprocess(self, image_bgr: np.ndarray, bboxes_xyxy: np.ndarray) -> torch.Tensor:
        return self.normalize(self.crops(image_bgr, bboxes_xyxy))

    # -- inference -----------------------------------------------------------------------------

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return forward_half_guarded(self, lambda: self.model.features(x), "HMR")

    def _run(self, crops_rgb: np.ndarray) -> dict[str, np.ndarray]:
        pose_6d, betas, camera = self.model.regress(self._features(self.normalize(crops_rgb)))
        rotmat = rot6d_to_rotmat(pose_6d.reshape(-1, NUM_JOINTS, 6))
        axis_angle = rotmat_to_axis_angle(rotmat)
        out = {"rotmat": rotmat, "betas": betas, "camera": camera, "pose_6d": pose_6d,
               "global_orient": axis_angle[:, 0], "body_pose": axis_angle[:, 1:]}
        return {key: out[key].float().cpu().numpy() for key in OUTPUT_KEYS}

    @torch.inference_mode()
    def features(self, image_bgr: np.ndarray, bboxes_xyxy: np.ndarray) -> np.ndarray:
        """(K, 2048) pooled backbone features of the boxes' crops (for debugging and parity checks)."""
        crops_rgb = self.crops(image_bgr, bboxes_xyxy)
        if len(crops_rgb) == 0:
            return np.zeros((0, FEATURE_DIM), dtype=np.float32)
        return self._features(self.normalize(crops_rgb)).float().cpu().numpy()

    @torch.inference_mode()
    def predict(self, image_bgr: np.ndarray, bboxes_xyxy: np.ndarray) -> dict[str, np.ndarray]:
        """SMPL parameters for each of the (K, 4) boxes of one BGR frame (K may be 0)."""
        return self.predict_batch([image_bgr], [bboxes_xyxy])[0]

    @torch.inference_mode()
    def predict_batch(
        self,
        images_bgr: Sequence[np.ndarray],
        bboxes_xyxy: Sequence[np.ndarray],
        batch_size: int = 32,
    ) -> list[dict[str, np.ndarray]]:
        """``predict`` for many frames, batching the crops of all frames ``batch_size`` at a time."""
        if len(images_bgr) != len(bboxes_xyxy):
            raise ValueError(f"{len(images_bgr)} images but {len(bboxes_xyxy)} box arrays")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        counts: list[int] = []
        pending: list[np.ndarray] = []
        n_pending = 0
        chunks: list[dict[str, np.ndarray]] = []
        for image, boxes in zip(images_bgr, bboxes_xyxy):
            crops_rgb = self.crops(image, boxes)
            counts.append(len(crops_rgb))
            start = 0
            while start < len(crops_rgb):
                take = min(batch_size - n_pending, len(crops_rgb) - start)
                pending.append(crops_rgb[start:start + take])
                n_pending += take
                start += take
                if n_pending == batch_size:
                    chunks.append(self._run(np.concatenate(pending)))
                    pending, n_pending = [], 0
        if n_pending:
            chunks.append(self._run(np.concatenate(pending)))
        merged = _empty_result() if not chunks else {k: np.concatenate([c[k] for c in chunks]) for k in OUTPUT_KEYS}
        results: list[dict[str, np.ndarray]] = []
        offset = 0
        for count in counts:
            results.append({k: merged[k][offset:offset + count] for k in OUTPUT_KEYS})
            offset += count
        return results


    @torch.inference_mode()
    def predict_frames(
        self,
        frames: torch.Tensor,
        frame_of_box: torch.Tensor,
        boxes_xyxy: torch.Tensor,
        *,
        bucket: int = ondevice.BUCKET,
        batch_size: int = 64,
        max_side: int | None = None,
        box_sides: np.ndarray | None = None,
    ) -> dict[str, torch.Tensor]:
        """`predict_batch` on the device, with no host sync.

        frames: (B, H, W, 3) uint8 BGR on the model's device; frame_of_box: (N,) int64; boxes_xyxy:
        (N, 4) float [x1, y1, x2, y2] image pixels with x2 > x1 or y2 > y1 (not checked here: reading
        them would be a sync). Returns device tensors: the ``OUTPUT_KEYS`` (``global_orient`` (N, 3),
        ``body_pose`` (N, 23, 3), ``betas`` (N, 10), ``camera`` (N, 3), ``rotmat`` (N, 24, 3, 3),
        ``pose_6d`` (N, 144), float32), ``overflow`` () bool (fp16 inf/NaN in a real crop's features:
        call :meth:`fall_back_to_fp32` and run again) and ``cut`` () bool (a crop's canvas was larger
        than `max_side`, so that crop is wrong; never with the default bound and boxes inside the frame).

        The crops are SPIN's, byte for byte (:func:`~posepipe.models.ondevice.spin_crops`); `max_side`
        is their static size bound (default: the frame's longer side + 2) and sets their cost. A caller
        that has the boxes on the host passes `box_sides` ((N,) each box's longer side, px): the boxes
        are then cropped in groups by :func:`~posepipe.models.ondevice.canvas_bucket`, each crop costing
        about its own canvas instead of the frame (``cut`` still guards the bound). N is padded up to a
        multiple of `bucket` and run `batch_size` crops per pass. ``supports_device``
        is False (and this raises) where the installed numpy rounds the crop corners otherwise.
        """
        ondevice.check_inputs(frames, frame_of_box, boxes_xyxy, self.device, self.weights.name)
        if not self.supports_device:
            raise RuntimeError("the installed numpy's inv/dot round SPIN's crop corners differently from the "
                               "emulation; use predict_batch")
        n = boxes_xyxy.shape[0]
        total = ondevice.padded_count(n, bucket)
        step = max(bucket, batch_size // bucket * bucket)
        fob, boxes = ondevice.pad_boxes(frame_of_box, boxes_xyxy, total, (0.0, 0.0, 1.0, 1.0))
        grouped = None
        if box_sides is not None and max_side is None and total:
            grouped = self._bucketed_crops(frames, fob, boxes, np.asarray(box_sides, dtype=np.float64), n)
        chunks: list[dict[str, torch.Tensor]] = []
        flags, cuts = [torch.zeros((), dtype=torch.bool, device=self.device)], []
        for start in range(0, total, step):
            stop = min(start + step, total)
            real = max(0, min(n, stop) - start)
            if grouped is None:
                crops, cut = ondevice.spin_crops(frames, fob[start:stop], boxes[start:stop], res=self.input_res,
                                                 unit=BBOX_SCALE_UNIT, max_side=max_side)
            else:
                crops, cut = grouped[0][start:stop], grouped[1][start:stop]
            x = self.normalize(crops.flip(-1))  # BGR -> RGB, as `crops`
            if self.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            features, overflow = forward_half_flagged(self, partial(self.model.features, x), [slice(0, real)])
            pose_6d, betas, camera = self.model.regress(features)
            rotmat = rot6d_to_rotmat(pose_6d.reshape(-1, NUM_JOINTS, 6))
            axis_angle = rotmat_to_axis_angle(rotmat)
            chunks.append({"rotmat": rotmat, "betas": betas, "camera": camera, "pose_6d": pose_6d,
                           "global_orient": axis_angle[:, 0], "body_pose": axis_angle[:, 1:]})
            flags.append(overflow)
            cuts.append(cut[:real])
        if not chunks:
            out = {k: torch.zeros(v.shape, dtype=torch.float32, device=self.device) for k, v in _empty_result().items()}
        else:
            out = {k: torch.cat([c[k] for c in chunks])[:n].float() for k in OUTPUT_KEYS}
        out["overflow"] = torch.stack(flags).any()
        out["cut"] = torch.cat(cuts).any() if cuts else torch.zeros((), dtype=torch.bool, device=self.device)
        return out

    def _bucketed_crops(self, frames: torch.Tensor, fob: torch.Tensor, boxes: torch.Tensor, box_sides: np.ndarray,
                        n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """All `boxes`' crops (padding included), each group of boxes cropped at its canvas bucket."""
        total, res = boxes.shape[0], self.input_res
        frame_side = max(int(frames.shape[1]), int(frames.shape[2]))
        # A canvas is the box's longer side, give or take the truncation of its corners.
        sides = np.concatenate([np.ceil(box_sides[:n]) + 1, np.full(total - n, 2.0)])
        buckets = np.array([ondevice.canvas_bucket(int(v), frame_side) for v in sides])
        crops = torch.empty((total, res, res, 3), dtype=torch.uint8, device=self.device)
        cut = torch.zeros(total, dtype=torch.bool, device=self.device)
        for b in np.unique(buckets):
            rows = torch.from_numpy(np.flatnonzero(buckets == b)).to(self.device, non_blocking=True)
            part, part_cut = ondevice.spin_crops(frames, fob.index_select(0, rows), boxes.index_select(0, rows),
                                                 res=res, unit=BBOX_SCALE_UNIT, max_side=int(b))
            crops.index_copy_(0, rows, part)
            cut.index_copy_(0, rows, part_cut)
        return crops, cut

    def fall_back_to_fp32(self) -> None:
        """After ``predict_frames`` reported an overflow: fp32 from now on (then run that window again)."""
        fall_back_to_fp32(self, "HMR")


__all__ = [
    "Bottleneck", "CHECKPOINT_FORMATS", "HMR", "checkpoint_format", "HMROutput", "HMRPredictor", "WEIGHTS",
    "axis_angle_to_rotmat", "bbox_xyxy_to_center_scale", "bytescale", "convert_checkpoint",
    "convert_mmhuman3d", "convert_spin", "convert_state_dict", "create", "crop", "crop_corners",
    "hmr_resnet50", "rot6d_to_rotmat", "rotmat_to_axis_angle", "spin_corners_match_numpy",
]
