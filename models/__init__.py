"""posepipe's models: faithful re-implementations loadable from the official checkpoints.

    from posepipe.models import load_model
    det = load_model("yolox_s", weights="yolox_s.pth")

One explicit catalogue (no import-time registration): each family module owns a ``WEIGHTS`` dict
and the functions ``checkpoint_format`` (the layout it recognises, by keys only its architecture
has), ``convert_checkpoint`` (any supported container -> official state dict) and ``create``
(architecture + strict load + device placement). Each record's ``stage`` says which job stage it
serves; every family of a stage has the same predictor interface (2D: ``predict`` /
``predict_batch``; lifters: ``lift`` / ``lift_batch`` / ``receptive_field``).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

import torch

from posepipe.models import (
    associative_embedding, dekr, hmr, hourglass, hrnet, hrnet_mmpose, motionbert, rle, rtmo, rtmpose, simplebaseline,
    simplebaseline3d, videopose3d, vitpose, yolox,
)
from posepipe.models.checkpoint import CheckpointError, preview, read_checkpoint, sniff_container
from posepipe.models.precision import PrecisionWarning, strict_fp32
from posepipe.models.weights import Weights

# Families whose layouts are recognised by more specific keys come first: a checkpoint that is not
# the named model's is reported as the first family here that recognises it (HRNet's mmpose layout is
# recognised by its head's final_layer alone, which SimpleBaseline and RTMPose heads also have).
FAMILIES: dict[str, ModuleType] = {
    "yolox": yolox, "rtmo": rtmo, "rtmpose": rtmpose, "hourglass": hourglass, "vitpose": vitpose, "simplebaseline": simplebaseline,
    "rle": rle, "associative_embedding": associative_embedding, "hrnet": hrnet, "hrnet_mmpose": hrnet_mmpose, "videopose3d": videopose3d, "simplebaseline3d": simplebaseline3d,
    "motionbert": motionbert, "hmr": hmr, "dekr": dekr,
}
FAMILY_LABELS = {
    "yolox": "YOLOX", "hrnet": "HRNet", "rtmpose": "RTMPose", "simplebaseline": "SimpleBaseline", "rle": "RLE",
    "hourglass": "Hourglass", "vitpose": "ViTPose", "videopose3d": "VideoPose3D", "simplebaseline3d": "SimpleBaseline3D",
    "motionbert": "MotionBERT", "hmr": "HMR (SPIN)", "associative_embedding": "Associative Embedding",
    "rtmo": "RTMO", "hrnet_mmpose": "top-down HRNet (mmpose)", "dekr": "DEKR",
}
CATALOGUE: dict[str, Weights] = {
    **yolox.WEIGHTS, **hrnet.WEIGHTS, **rtmpose.WEIGHTS, **simplebaseline.WEIGHTS, **rle.WEIGHTS,
    **hourglass.WEIGHTS, **vitpose.WEIGHTS, **videopose3d.WEIGHTS, **simplebaseline3d.WEIGHTS,
    **motionbert.WEIGHTS, **hmr.WEIGHTS, **associative_embedding.WEIGHTS, **rtmo.WEIGHTS,
    **hrnet_mmpose.WEIGHTS, **dekr.WEIGHTS,
}
STAGES = ("detector", "pose", "lifter", "mesh")
# Pose families that find the people themselves (bottom-up, one-stage): a job with one runs no detector
# (pipeline.options names these models too, to stay light; a test keeps the two equal).
DETECTOR_FREE_FAMILIES = ("associative_embedding", "rtmo", "dekr")
DETECTOR_FREE = frozenset(name for name, spec in CATALOGUE.items() if spec.family in DETECTOR_FREE_FAMILIES)


class RandomWeightsWarning(UserWarning):
    """Emitted whenever a model is built with random weights (plumbing checks only)."""


@dataclass(frozen=True)
class CheckpointReport:
    """What the loader made of one checkpoint file (`posepipe weights verify` prints it)."""

    path: Path
    sha256: str
    size: int
    container: str                 # e.g. "torch legacy format (torch < 1.6), pickle protocol 2"
    layout: str                    # e.g. "mmpose 0.x HRNet, {'state_dict': ..., 'meta': ...}"
    tensors: int                   # tensors handed to the strict load
    renamed: int                   # of those, how many under another name in the file
    dropped: tuple[str, ...]       # tensors of the file's state dict deliberately left out
    ignored: tuple[str, ...]       # other top-level entries (optimizer, epoch, random_state, meta, ...)


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
    True on CUDA (fp16 autocast) and False on CPU, where True means bf16 autocast if the CPU has it;
    fp32 on CUDA turns TF32 off (see `strict_fp32`).

    Raises WeightsUnavailable (the file cannot be had) or CheckpointError (the file cannot be used),
    each with one paragraph naming the model and the file; never torch's, zipfile's or pickle's own.
    The sha256 of the file used is left in ``predictor.weights_sha256`` for provenance.
    """
    from posepipe.models.download import fetch  # local: keeps `import models` light for Ray workers

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
        return _cpu_half(predictor, name, dev, use_half)
    from posepipe.models.download import WeightsUnavailable

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
    state, report = read_weights(name, path)
    predictor = _create(name, path, spec, state, device=dev, half=use_half)
    predictor.weights_sha256 = report.sha256
    return _cpu_half(predictor, name, dev, use_half)


def _cpu_half(predictor: Any, name: str, device: torch.device, half: bool) -> Any:
    """`half` on a CPU: bf16 autocast where the CPU runs it natively, else fp32 with a warning (the
    families' constructors take `half` for CUDA's fp16 only)."""
    if not half or device.type != "cpu":
        return predictor
    from posepipe.models.precision import cpu_bf16_supported

    if cpu_bf16_supported():
        predictor.half = True
    else:
        warnings.warn(f"{name}: this CPU has no native bf16, so --half is ignored and it runs in fp32",
                      PrecisionWarning, stacklevel=3)
    return predictor


def read_weights(name: str, path: str | os.PathLike[str]) -> "tuple[Mapping[str, torch.Tensor], CheckpointReport]":
    """Read catalogue model `name`'s checkpoint file as data and convert it to the official state dict.

    Raises CheckpointError with one paragraph naming the model, the file and what is wrong: not a
    torch file (empty, cut short, an HTML page, a zip of something else), a pickle that asks to run
    code, another model's checkpoint (with the keys missing and unexpected), an unknown layout.
    """
    from posepipe.models.download import sha256_file

    spec = get_weights(name)
    family = FAMILIES[spec.family]
    path = Path(path)
    try:
        container = sniff_container(path)
        checkpoint = read_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{name}: {exc}") from None
    layout = family.checkpoint_format(checkpoint)
    if layout is None:
        foreign = _foreign_layout(name, spec, checkpoint, path)
        if foreign:
            raise CheckpointError(foreign)
    try:
        state = family.convert_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise CheckpointError(f"{name}: {path}: {exc}") from None
    except Exception as exc:  # a malformed container (a list where a dict belongs, ...): still one paragraph
        raise CheckpointError(
            f"{name}: {path}: unexpected checkpoint content ({type(exc).__name__}: {exc}); it is not laid out "
            f"as any supported {FAMILY_LABELS[spec.family]} checkpoint"
        ) from None
    renamed, dropped, ignored = _conversion_summary(checkpoint, state)
    report = CheckpointReport(
        path=path, sha256=sha256_file(path), size=path.stat().st_size, container=container,
        layout=layout or "recognised by its keys", tensors=len(state), renamed=renamed, dropped=dropped,
        ignored=ignored,
    )
    return state, report


def _create(name: str, path: Path, spec: Weights, state: Mapping[str, torch.Tensor] | None, *,
            device: torch.device, half: bool) -> Any:
    """`family.create` with its strict-load errors naming the model and the file."""
    try:
        return FAMILIES[spec.family].create(spec, state, device=device, half=half)
    except CheckpointError as exc:
        raise CheckpointError(f"{name}: {path}: {exc}") from None


def _file_tensor_keys(checkpoint: Any) -> list[str]:
    """The tensor names of the file's state dict: the mapping (top level or one down) with the most tensors."""
    if not isinstance(checkpoint, Mapping):
        return []
    candidates = [checkpoint] + [v for v in checkpoint.values() if isinstance(v, Mapping)]
    best = max(candidates, key=lambda m: sum(isinstance(v, torch.Tensor) for v in m.values()))
    return [str(k) for k, v in best.items() if isinstance(v, torch.Tensor)]


def _architecture_keys(spec: Weights) -> list[str]:
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore")
        model = FAMILIES[spec.family].create(spec, None, device=torch.device("cpu")).model
    return list(model.state_dict().keys())


def _foreign_layout(name: str, spec: Weights, checkpoint: Any, path: Path) -> str | None:
    """The message for a checkpoint that another family recognises as its own, else None."""
    for family_name, family in FAMILIES.items():
        if family_name == spec.family:
            continue
        try:
            layout = family.checkpoint_format(checkpoint)
        except Exception:  # a detector must never turn into the error itself
            layout = None
        if layout is None:
            continue
        owners = [n for n, w in CATALOGUE.items() if w.family == family_name]
        expected = _architecture_keys(spec)
        found = _file_tensor_keys(checkpoint)
        missing = [k for k in expected if k not in found]
        unexpected = [k for k in found if k not in expected]
        label = FAMILY_LABELS[spec.family]
        # an HRNet, an HMR, an RTMPose, an RLE (letters read out); a Hourglass (a word)
        article = "an" if label[:2] in ("HR", "HM") or label[0] in "RAEIO" else "a"

        def some(keys: list[str]) -> str:
            return f"{len(keys)}" + (f", e.g. {', '.join(keys[:4])}" if keys else "")

        return (
            f"{name}: {path} is not {article} {label} checkpoint: it is laid out as {layout}, the format of "
            f"{preview(owners, 3)}. {label} keys missing: {some(missing)} (of {len(expected)}). Keys the model "
            f"does not have: {some(unexpected)}. Pass it under its own model's name (--weights {owners[0]}=PATH), "
            f"or give {name} {article} {label} checkpoint."
        )
    return None


def _conversion_summary(checkpoint: Any, state: Mapping[str, torch.Tensor]) -> tuple[int, tuple[str, ...], tuple[str, ...]]:
    """(tensors renamed, tensors dropped, top-level entries ignored), by following tensor identity.

    The remaps are pure and pass tensors through unchanged, so each converted tensor is the very
    object found in the file: what the file's state dict holds and `state` lacks was dropped.
    """
    used = {id(v): k for k, v in state.items()}
    if not isinstance(checkpoint, Mapping):
        return 0, (), ()
    candidates = [(None, checkpoint)] + [(k, v) for k, v in checkpoint.items() if isinstance(v, Mapping)]
    key, source = max(candidates, key=lambda c: sum(id(v) in used for v in c[1].values()))
    tensors = [(str(k), v) for k, v in source.items() if isinstance(v, torch.Tensor)]
    renamed = sum(1 for k, v in tensors if id(v) in used and used[id(v)] != k)
    dropped = tuple(k for k, v in tensors if id(v) not in used)
    ignored = tuple(str(k) for k in checkpoint if k != key) if key is not None else ()
    return renamed, dropped, ignored


__all__ = [
    "CATALOGUE", "DETECTOR_FREE", "DETECTOR_FREE_FAMILIES", "FAMILIES", "STAGES", "CheckpointError", "CheckpointReport", "PrecisionWarning", "RandomWeightsWarning", "Weights",
    "get_weights", "load_model", "read_weights", "resolve_device", "strict_fp32",
]
