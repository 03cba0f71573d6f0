"""RLE: top-down 2D pose by direct regression, trained with residual log-likelihood estimation.

Li, Bian, Zeng, Wang, Cao, Liu and Lu, "Human Pose Regression with Residual Log-likelihood
Estimation", ICCV 2021. At inference the network is a ResNet, global average pooling and one linear
layer that gives, per joint, (mu_x, mu_y) in crop units and the logits of (sigma_x, sigma_y): no
heatmaps, the cheapest head. The RealNVP flow that shapes the loss is training-only. A faithful
re-implementation of mmpose 1.3.2's ``TopdownPoseEstimator`` with ``ResNet`` +
``GlobalAveragePooling`` + ``RLEHead`` (config ``td-reg_res50_rle-8xb64-210e_coco-256x192.py``),
loadable from mmpose's checkpoints; see ``shared/golden/rle_res50_coco_256x192/README.md``.

Order of this file: the model, the weights table, the public builders and the predictor. What the
predictor reproduces:

- crops, normalisation and mapping back: mmpose 1.x's top-down path (models/topdown.py);
- sigma = sigmoid(logit); flip test (``flip_coordinates`` with ``shift_coords``): the mirrored
  pass's ``mu_x = 1 - mu_x - 1/W``, joints swapped left/right, then its sigmoid; mu and sigma of
  both passes averaged (sigma after its sigmoid);
- decoding (``RegressionLabel``): keypoints = mu * (W, H) in float64 (kept float64 until mapped
  back to the image), scores = mean(1 - sigma) over x and y.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from posepipe.models import mmpose
from posepipe.models.checkpoint import load_strict
from posepipe.models.resnet import ResNet
from posepipe.models.skeletons import COCO17_NAMES, COCO17_SKELETON
from posepipe.models.topdown import TopdownPredictor, place
from posepipe.models.weights import Weights

MMPOSE_MEAN, MMPOSE_STD = mmpose.MMPOSE_MEAN, mmpose.MMPOSE_STD  # PoseDataPreprocessor, RGB, 0..255


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class RLEHead(nn.Module):
    """``fc``: Linear(in, J * 4) with bias, reshaped to (N, J, 4) = (mu_x, mu_y, sigma_x logit, sigma_y logit)."""

    def __init__(self, in_channels: int, num_joints: int):
        super().__init__()
        self.num_joints = num_joints
        self.fc = nn.Linear(in_channels, num_joints * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(x, 1)).reshape(-1, self.num_joints, 4)


class RLE(nn.Module):
    """ResNet-`depth` -> global average pooling (the neck) -> RLE head: (N, 3, H, W) -> (N, J, 4) raw."""

    def __init__(self, depth: int = 50, num_joints: int = 17):
        super().__init__()
        self.num_joints = num_joints
        self.backbone = ResNet(depth)
        self.neck = nn.AdaptiveAvgPool2d((1, 1))  # mmpose's GlobalAveragePooling; no weights
        self.head = RLEHead(self.backbone.out_channels, num_joints)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.neck(self.backbone(x)))


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------

_PAPER = "Human Pose Regression with Residual Log-likelihood Estimation (Li et al., ICCV 2021)"
_ZOO = "https://download.openmmlab.com/mmpose/v1/body_2d_keypoint/topdown_regression/coco"

WEIGHTS: dict[str, Weights] = {
    "rle_res50_coco_256x192": Weights(
        name="rle_res50_coco_256x192",
        family="rle",
        stage="pose",
        url=f"{_ZOO}/td-reg_res50_rle-8xb64-210e_coco-256x192-d37efd64_20220913.pth",
        filename="td-reg_res50_rle-8xb64-210e_coco-256x192-d37efd64_20220913.pth",
        source_format="mmpose",
        hash_prefix="d37efd64",
        arch={"depth": 50, "num_joints": 17},
        input_size=(256, 192),
        mean=MMPOSE_MEAN,
        std=MMPOSE_STD,
        color="RGB",
        keypoint_names=COCO17_NAMES,
        skeleton=COCO17_SKELETON,
        license="Apache-2.0 (mmpose model zoo)",
        paper=_PAPER,
        # mmpose's model zoo for this file (resnet_rle_coco.md / .yml), COCO val2017, detector boxes of
        # person AP 56.4, flip test; scores there are rescored by the evaluator (score_mode='bbox_rle'),
        # which inference does not do.
        metrics={"coco_val2017_AP": 70.6, "coco_val2017_AR": 75.3},
        gmacs=4.00,  # one crop, torch's FlopCounterMode
        notes=(
            "mmpose's training of the paper's ResNet-50 recipe (config td-reg_res50_rle-8xb64-210e_coco-256x192.py). "
            "Written 2022-09-13, before mmpose 1.0.0: 0.x names (keypoint_head.*, head.loss.*) are renamed as "
            "mmpose does. The state_dict holds the RealNVP flow of the training loss "
            "(head.loss_module.flow_model.*, 75 tensors); inference does not use it and the loader drops "
            "exactly those keys, by name. Scores are mean(1 - sigma), in (0, 1)."
        ),
    ),
}


# --------------------------------------------------------------------------------------------
# Checkpoint format
# --------------------------------------------------------------------------------------------

_LABEL = "RLE (ResNet + regression head)"
_MARKERS = ("backbone.layer1.0.conv1.weight", "head.fc.weight")
TRAINING_ONLY_PREFIX = "head.loss_module."  # the RealNVP flow of RLELoss


def remap_old_loss(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """``RLEHead``'s own load hook (rle_head.py:155-181): 0.x ``head.loss.*`` is ``head.loss_module.*``."""
    return OrderedDict(
        ("head.loss_module." + key[len("head.loss."):] if key.startswith("head.loss.") else key, value)
        for key, value in state.items()
    )


def drop_training_only(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Leave out the loss module's flow (``head.loss_module.*``), by name: it is not part of inference."""
    return OrderedDict((k, v) for k, v in state.items() if not k.startswith(TRAINING_ONLY_PREFIX))


def checkpoint_format(obj: Any) -> str | None:
    """The supported layout of an unpickled checkpoint, by its keys; None if none."""
    return mmpose.describe_layout(obj, _LABEL, _MARKERS)


def convert_checkpoint(obj: Any) -> "OrderedDict[str, torch.Tensor]":
    """Any supported RLE checkpoint -> the state dict of :class:`RLE` (mmpose 1.x names, flow dropped)."""
    return drop_training_only(remap_old_loss(mmpose.convert(obj, _LABEL, _MARKERS)))


# --------------------------------------------------------------------------------------------
# Public builders and the predictor
# --------------------------------------------------------------------------------------------

def rle(*, depth: int = 50, num_joints: int = 17) -> RLE:
    """The bare network with PyTorch's default (random) initialisation; loads nothing."""
    return RLE(depth=depth, num_joints=num_joints)


class RLEPose(TopdownPredictor):
    """Top-down keypoints by regression. :meth:`outputs` are (N, J, 4) = (mu_x, mu_y, sigma_x, sigma_y),
    sigma after its sigmoid (flip-averaged with the flip test): what mmpose decodes."""

    label = "RLE"

    def __init__(self, model: RLE, weights: Weights, device: torch.device, half: bool = False):
        super().__init__(model, weights, device, half)
        self._size = np.asarray(self.input_size_wh)  # ints, so mu * size is float64 as in mmpose

    def _post(self, raw: torch.Tensor) -> torch.Tensor:
        out = raw.clone()
        out[..., 2:] = out[..., 2:].sigmoid()
        return out

    def _merge_flip(self, raw: torch.Tensor, raw_flipped: torch.Tensor) -> torch.Tensor:
        flipped = raw_flipped.clone()
        flipped[:, :, 0] = 1.0 - flipped[:, :, 0]
        flipped[:, :, 0] -= 1.0 / self.input_size_wh[0]  # shift_coords
        flipped = flipped.index_select(1, self._flip_index)
        flipped[..., 2:] = flipped[..., 2:].sigmoid()
        return (self._post(raw) + flipped) * 0.5

    def _decode(self, outputs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        out = outputs.float().cpu().numpy()
        keypoints = out[..., :2] * self._size          # float64
        scores = (1 - out[..., 2:4]).mean(axis=-1)     # float32
        return keypoints, scores.astype(np.float32)

    def _decode_device(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`_decode` on the device: mu * (W, H) in float64, scores mean(1 - sigma) in float32."""
        w, h = self.input_size_wh
        mu = outputs[..., :2].to(torch.float64)
        keypoints = torch.stack([mu[..., 0] * w, mu[..., 1] * h], dim=-1)
        rest = 1 - outputs[..., 2:4].float()
        return keypoints, (rest[..., 0] + rest[..., 1]) / 2

    def regress(self, inputs: np.ndarray | torch.Tensor, flip_test: bool = False) -> np.ndarray:
        """Network input (N, 3, H, W) -> (N, J, 4) (mu, sigma): the no-flip or flip-averaged output."""
        return self.outputs(inputs, flip_test=flip_test)


def create(spec: Weights, state_dict: Mapping[str, torch.Tensor] | None, *, device: torch.device,
           half: bool = False) -> RLEPose:
    """Build `spec`'s architecture, load `state_dict` strictly (None: random init), eval, place."""
    model = rle(**dict(spec.arch))
    if state_dict is not None:
        load_strict(model, state_dict, what="the checkpoint")
    return RLEPose(place(model, device), spec, torch.device(device), half=half)


__all__ = [
    "RLE", "RLEHead", "RLEPose", "TRAINING_ONLY_PREFIX", "WEIGHTS", "checkpoint_format", "convert_checkpoint", "create",
    "drop_training_only", "remap_old_loss", "rle",
]
