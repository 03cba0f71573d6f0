"""mmpose's checkpoint containers, shared by the families whose official files mmpose publishes.

mmpose 1.x (mmengine) and 0.x (mmcv) save ``{'meta': {...}, 'state_dict': {...}}``; files written
before ``tools/misc/publish_model.py`` kept only those two (2023-03-10) may also hold
``message_hub``, ``param_schedulers``, ``ema_state_dict`` ... of which only ``state_dict`` is the
model. The state dict's keys are ``backbone.*`` / ``head.*`` (mmpose 1.x) or ``backbone.*`` /
``keypoint_head.*`` (0.x). When loading, mmpose 1.3.2 itself
(``models/pose_estimators/base.py:213-246``):

- deletes ``data_preprocessor.mean`` and ``data_preprocessor.std`` (normalisation constants that
  mmengine once stored; they are fixed by the config, here by the weights record);
- renames ``keypoint_head`` to ``head`` when the stored ``_metadata`` version is missing or < 2;

and mmengine's ``load_checkpoint`` strips a DataParallel ``module.`` prefix. We do exactly these,
by name, in one pure function; each family adds its own head renames and recognises its layout
by keys only its architecture has.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Iterable

import torch

from posepipe.models.checkpoint import CheckpointError, preview, strip_prefix, tensors_only

# PoseDataPreprocessor's normalisation in every mmpose COCO config (RGB, on 0..255 values).
MMPOSE_MEAN = (123.675, 116.28, 103.53)
MMPOSE_STD = (58.395, 57.12, 57.375)

# Dropped by name, as mmpose's load hook does; nothing else is dropped here.
DATA_PREPROCESSOR_KEYS = ("data_preprocessor.mean", "data_preprocessor.std")

SUPPORTED_CONTAINERS = (
    "mmpose 1.x / mmengine {'meta', 'state_dict'[, 'message_hub', 'ema_state_dict', ...]} with backbone.*/head.* "
    "keys, or mmpose 0.x / mmcv {'meta', 'state_dict'} with backbone.*/keypoint_head.* keys "
    "(or such a state dict alone; a 'module.' prefix is stripped; data_preprocessor.mean/std are dropped by name, "
    "as mmpose does)"
)


def state_dict_of(obj: Any) -> "OrderedDict[str, torch.Tensor] | None":
    """The tensors of an mmpose container's ``state_dict`` (or of a bare state dict, which mmengine's
    loader takes too), a common ``module.`` prefix removed; None if `obj` is neither."""
    if not isinstance(obj, Mapping):
        return None
    if isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    state = tensors_only(obj)
    if not state:
        return None
    if state and all(k.startswith("module.") for k in state):
        state = strip_prefix(state, "module.")
    return state


def mmpose_version(state: Mapping[str, Any]) -> str:
    """"mmpose 0.x" when the head is stored under 0.x's ``keypoint_head`` name, else "mmpose 1.x"."""
    return "mmpose 0.x" if any(k.startswith("keypoint_head.") for k in state) else "mmpose 1.x"


def remap_mmpose(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """mmpose's own load-time renames: ``keypoint_head`` -> ``head`` (``str.replace``, as mmpose), and
    ``data_preprocessor.mean/std`` dropped. Pure; tensors pass through unchanged."""
    return OrderedDict(
        (key.replace("keypoint_head", "head"), value) for key, value in state.items() if key not in DATA_PREPROCESSOR_KEYS
    )


def container_label(obj: Mapping[str, Any]) -> str:
    if not isinstance(obj.get("state_dict"), Mapping):
        return "bare state_dict"
    extra = [str(k) for k in obj if k not in ("meta", "state_dict")]
    return "{'meta', 'state_dict'" + (", " + ", ".join(repr(k) for k in extra[:4]) if extra else "") + "}"


def describe_layout(obj: Any, label: str, markers: Iterable[str]) -> str | None:
    """"<mmpose version> <label>, <container>" if `obj` is an mmpose container whose (renamed) state
    dict holds every key in `markers` (keys only this family's architecture has); else None."""
    state = state_dict_of(obj)
    if state is None:
        return None
    renamed = remap_mmpose(state)
    if not all(key in renamed for key in markers):
        return None
    return f"{mmpose_version(state)} {label}, {container_label(obj)}"


def convert(obj: Any, label: str, markers: Iterable[str]) -> "OrderedDict[str, torch.Tensor]":
    """An mmpose container -> the state dict with mmpose 1.x names (``backbone.*``, ``head.*``), or a
    CheckpointError naming what was found and what is supported."""
    state = state_dict_of(obj)
    if state is None:
        if isinstance(obj, Mapping):
            found = f"top-level keys {preview(repr(k) for k in obj) or 'none'}"
        else:
            found = f"a {type(obj).__name__}"
        raise CheckpointError(f"expected an mmpose checkpoint (a 'state_dict' of tensors), found {found}; supported: "
                              f"{SUPPORTED_CONTAINERS}")
    renamed = remap_mmpose(state)
    missing = [key for key in markers if key not in renamed]
    if missing:
        raise CheckpointError(
            f"not a {label} checkpoint: its state_dict lacks {', '.join(missing)} (keys seen: "
            f"{preview(state) or 'none'}); supported: {SUPPORTED_CONTAINERS}"
        )
    return renamed


__all__ = [
    "DATA_PREPROCESSOR_KEYS", "SUPPORTED_CONTAINERS", "container_label", "convert", "describe_layout",
    "mmpose_version", "remap_mmpose", "state_dict_of",
]
