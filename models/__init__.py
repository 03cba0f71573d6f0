"""posepipe's models: faithful re-implementations loadable from the official checkpoints.

    from models import load_model
    det = load_model("yolox_s", weights="yolox_s.pth")

One explicit catalogue (no import-time registration): each family module owns a ``WEIGHTS`` dict
and the functions ``convert_checkpoint`` (any supported container -> official state dict) and
``create`` (architecture + strict load + device placement).
"""
from __future__ import annotations

import os
import warnings
from types import ModuleType
from typing import Any

import torch

from models import hmr, hrnet, videopose3d, yolox
from models.checkpoint import CheckpointError, read_checkpoint
from models.precision import PrecisionWarning, strict_fp32
from models.weights import Weights

FAMILIES: dict[str, ModuleType] = {"yolox": yolox, "hrnet": hrnet, "videopose3d": videopose3d, "hmr": hmr}
CATALOGUE: dict[str, Weights] = {**yolox.WEIGHTS, **hrnet.WEIGHTS, **videopose3d.WEIGHTS, **hmr.WEIGHTS}


class RandomWeightsWarning(UserWarning):
    """Emitted whenever a model is built with random weights (plumbing checks only)."""


def get_weights(name: str) -> Weights:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(CATALOGUE))}") from None


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(device)


def load_model(
    name: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    half: bool | None = None,
    random_weights: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """Build catalogue model `name` and load its checkpoint.

    `weights` is a local path or a file://, http(s):// or s3:// URI of the checkpoint as its
    authors publish it; None means the official URL, through the local cache. `random_weights`
    must be asked for by name and warns: it exists for plumbing checks only. `half` defaults to
    True on CUDA (autocast) and False on CPU; fp32 on CUDA turns TF32 off (see `strict_fp32`).
    """
    from models.download import fetch  # local: keeps `import models` light for Ray workers

    spec = get_weights(name)
    family = FAMILIES[spec.family]
    dev = resolve_device(device)
    use_half = (dev.type == "cuda") if half is None else bool(half)
    if not use_half:
        strict_fp32(dev)
    if random_weights:
        if weights is not None:
            raise ValueError(f"{name}: pass either weights= or random_weights=True, not both")
        warnings.warn(
            f"{name}: RANDOM weights; outputs are meaningless (plumbing check only)",
            RandomWeightsWarning, stacklevel=2,
        )
        # Seeded so every worker process builds the same random network (shard results must agree).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            predictor = family.create(spec, None, device=dev, half=use_half)
        predictor.weights_sha256 = None
        return predictor
    from models.download import WeightsUnavailable

    try:
        path = fetch(
            os.fspath(weights) if weights is not None else spec.url,
            cache_dir=cache_dir,
            sha256=spec.sha256 if weights is None else None,
            hash_prefix=spec.hash_prefix if weights is None else None,
            filename=spec.filename if weights is None else None,
        )
    except WeightsUnavailable as exc:
        # fetch() does not know the model; say which one, and how to supply it by name.
        raise type(exc)(f"{name}: {str(exc).replace('NAME=', f'{name}=')}") from None
    checkpoint = read_checkpoint(path)
    try:
        state = family.convert_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise CheckpointError(f"{name}: {path}: {exc}") from None
    predictor = family.create(spec, state, device=dev, half=use_half)
    from models.download import sha256_file

    predictor.weights_sha256 = sha256_file(path)
    return predictor


__all__ = ["CATALOGUE", "FAMILIES", "PrecisionWarning", "RandomWeightsWarning", "Weights", "get_weights", "load_model", "resolve_device", "strict_fp32"]
