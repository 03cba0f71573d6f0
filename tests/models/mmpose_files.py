"""Checkpoint files laid out as mmpose published them (a test helper for the mmpose families).

- mmpose 1.x / mmengine (RTMPose, 2023-01-27): zip format; ``{'meta': {... 'dataset_meta' with numpy
  arrays ...}, 'state_dict': {backbone.*, head.*}}``, and, because ``publish_model.py`` then deleted
  only the optimizer, the EMA hook's ``ema_state_dict`` (``module.``-prefixed), ``message_hub`` and
  ``param_schedulers`` beside them.
- mmpose 0.x / mmcv (SimpleBaseline and RLE, 2022-09; the lifter, 2021-04): zip format;
  ``{'meta': {mmcv_version, time, mmpose_version, config, epoch, iter}, 'state_dict'}`` with the
  head under ``keypoint_head.*`` (RLE's loss flow under ``keypoint_head.loss.*``).

Both may carry ``data_preprocessor.mean/std`` in the state dict (``with_data_preprocessor``).
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from tests.models.release_files import _with_metadata, save_as_released

COCO_FLIP_INDICES = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]


def _data_preprocessor(state: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
    out = OrderedDict(state)
    out["data_preprocessor.mean"] = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    out["data_preprocessor.std"] = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    return out


def to_0x(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """mmpose 1.x names -> 0.x: head.* -> keypoint_head.*, RLE's head.loss_module.* -> keypoint_head.loss.*."""
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in state.items():
        if key.startswith("head.loss_module."):
            key = "keypoint_head.loss." + key[len("head.loss_module."):]
        elif key.startswith("head."):
            key = "keypoint_head." + key[len("head."):]
        out[key] = value
    return out


def mmpose_1x_2023(state: Mapping[str, torch.Tensor], path: Path, *, with_data_preprocessor: bool = False) -> Path:
    """An mmengine checkpoint as RTMPose's were released (EMA entries kept beside the state dict)."""
    sd = OrderedDict(state)
    if with_data_preprocessor:
        sd = _data_preprocessor(sd)
    meta = {
        "mmengine_version": "0.4.0", "mmcv_version": "2.0.0rc3", "epoch": 420, "iter": 245_700, "seed": 21,
        "experiment_name": "rtmpose-m_8xb256-420e_coco-256x192",
        "dataset_meta": {"dataset_name": "coco", "num_keypoints": 17, "flip_indices": COCO_FLIP_INDICES,
                         "sigmas": np.array([.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062,
                                             .107, .107, .087, .087, .089, .089], dtype=np.float32),
                         "keypoint_colors": np.zeros((17, 3), dtype=np.uint8)},
    }
    ema = OrderedDict(("module." + k, v.clone()) for k, v in list(state.items())[:8])
    ema["steps"] = torch.tensor(245_700)
    return save_as_released({
        "meta": meta, "state_dict": _with_metadata(sd), "ema_state_dict": ema,
        "message_hub": {"log_scalars": {}, "runtime_info": {"epoch": 420}},
        "param_schedulers": [{"base_values": [0.004], "last_step": 245_700}],
    }, path, legacy=False, location="cpu")


def mmpose_0x(state: Mapping[str, torch.Tensor], path: Path, *, year: int = 2022,
              with_data_preprocessor: bool = False) -> Path:
    """mmcv's ``save_checkpoint`` + ``publish_model`` (optimizer removed), 0.x head names, zip format."""
    sd = to_0x(state)
    if with_data_preprocessor:
        sd = _data_preprocessor(sd)
    meta = {
        "mmcv_version": "1.3.8" if year == 2021 else "1.6.1",
        "time": "Mon Apr 19 10:12:00 2021" if year == 2021 else "Tue Sep 13 09:41:27 2022",
        "mmpose_version": "0.13.0" if year == 2021 else "0.28.1",
        "config": "model = dict(type='TopDown')\n", "epoch": 210, "iter": 245_000,
        "hook_msgs": {"best_score": np.float64(0.70), "best_epoch": np.int64(200)},
    }
    return save_as_released({"meta": meta, "state_dict": _with_metadata(sd)}, path, legacy=False, location="cpu")


__all__ = ["COCO_FLIP_INDICES", "mmpose_0x", "mmpose_1x_2023", "to_0x"]
