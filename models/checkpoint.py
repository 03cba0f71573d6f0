"""Reading checkpoint files as data, and loading state dicts strictly.

A checkpoint is a pickle, and a pickle can run code. We load with torch's ``weights_only``
unpickler, which only rebuilds tensors and plain containers. Real releases also hold a few
harmless extras that unpickler refuses by default: VideoPose3D's ``run.py`` saves
``np.random.get_state()`` (a tuple holding a numpy array), and optimizer states or metadata may
hold numpy scalars. We allow exactly the numpy reconstruction functions those need, nothing that
can call arbitrary code, and refuse everything else with an error that names the global.
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint file could not be read or does not match the model."""


def _numpy_globals() -> list[Any]:
    """numpy callables that only rebuild arrays, dtypes and scalars (both numpy 1 and 2 paths)."""
    allowed: list[Any] = [np.ndarray, np.dtype]
    for module_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            module = __import__(module_name, fromlist=["_reconstruct", "scalar"])
        except ImportError:
            continue
        for attr in ("_reconstruct", "scalar"):
            fn = getattr(module, attr, None)
            if fn is not None:
                # Register under the path old pickles name, not only the one this numpy uses.
                allowed.append((fn, f"{module_name}.{attr}"))
    # dtype classes (numpy >= 1.25 pickles name e.g. numpy.dtypes.UInt32DType).
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for attr in dir(dtypes):
            obj = getattr(dtypes, attr)
            if isinstance(obj, type) and issubclass(obj, np.dtype):
                allowed.append(obj)
    return allowed


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Unpickle a checkpoint file without executing code from it; tensors land on CPU."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint file is empty: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError / RuntimeError with long texts
        text = str(exc)
        if "Unsupported global" in text or "weights_only" in text.lower():
            found = re.search(r"GLOBAL ([\w.]+)", text)
            culprit = found.group(1) if found else "an object outside the tensor/container allow-list"
            raise CheckpointError(
                f"refused to load {path}: it asks the unpickler to call {culprit}, which a weights "
                "file has no reason to contain. posepipe never executes code from "
                "checkpoints; if this file is a genuine release, report it with its URL."
            ) from None
        raise CheckpointError(f"could not read checkpoint {path}: {text.splitlines()[0] if text else exc!r}") from exc


def tensors_only(state: Mapping[str, Any]) -> "OrderedDict[str, torch.Tensor]":
    """Keep the tensor entries of a mapping (drops stray metadata such as `_metadata`)."""
    return OrderedDict((k, v) for k, v in state.items() if isinstance(v, torch.Tensor))


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> "OrderedDict[str, torch.Tensor]":
    """Drop `prefix` from every key that has it (e.g. 'module.' from DataParallel saves)."""
    return OrderedDict((k[len(prefix):] if k.startswith(prefix) else k, v) for k, v in state.items())


def load_strict(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    optional: Iterable[str] = ("num_batches_tracked",),
    what: str = "checkpoint",
) -> None:
    """`load_state_dict(strict=True)` with an error that names missing and unexpected keys.

    `optional` lists key *leaves* that may be absent from old checkpoints (BatchNorm's
    `num_batches_tracked` predates PyTorch 0.4.1 and never affects eval); a missing optional key
    keeps the module's own value. Nothing else is relaxed.
    """
    own = module.state_dict()
    optional = tuple(optional)
    merged = OrderedDict(state)
    missing = [k for k in own if k not in merged]
    for key in missing:
        if key.rsplit(".", 1)[-1] in optional:
            merged[key] = own[key]
    missing = [k for k in own if k not in merged]
    unexpected = [k for k in merged if k not in own]
    mismatched = [
        f"{k}: file {tuple(merged[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own if k in merged and tuple(merged[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        def show(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches: {show(mismatched)}")
        raise CheckpointError(
            f"{what} does not match the {type(module).__name__} architecture ("
            + "; ".join(parts)
            + "). Check that the file is the weight set you named (architecture arguments, keypoint count)."
        )
    module.load_state_dict(merged, strict=True)
