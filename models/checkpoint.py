"""Reading checkpoint files as data, and loading state dicts strictly.

A checkpoint is a pickle, and a pickle can run code. We load with torch's ``weights_only``
unpickler, which only rebuilds tensors and plain containers, in both of torch's file formats:
the zip archive (torch >= 1.6) and the legacy stream (torch < 1.6, e.g. the 2019 VideoPose3D and
SPIN releases, pickle protocol 2). Real releases also hold a few harmless extras that unpickler
refuses by default, and we allow exactly the numpy callables those need:

- arrays, dtypes and scalars (optimizer states, mmcv's ``meta`` with numpy scalars), under numpy 1's
  ``numpy.core.multiarray`` and numpy 2's ``numpy._core.multiarray`` names;
- a ``np.random.RandomState``, which VideoPose3D's ``run.py`` saves as ``'random_state'`` (the
  generator object itself). numpy 1.16 pickled it as ``numpy.random.__RandomState_ctor()`` then a
  state tuple; numpy >= 1.17 as ``numpy.random._pickle.__randomstate_ctor`` with an MT19937 bit
  generator (``__bit_generator_ctor``). Those names are bound to our own constructors, which build
  an MT19937 ``RandomState`` and nothing else, and never call a callable taken from the file.

Everything else is refused with an error that names the global. Files that are not torch
checkpoints at all (empty, cut short, an HTML error page, a zip or tar archive, a plain pickle)
are recognised from their first bytes and described in one sentence.
"""
from __future__ import annotations

import functools
import importlib
import os
import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint file could not be read or does not match the model."""


# --------------------------------------------------------------------------------------------
# The numpy allow-list
# --------------------------------------------------------------------------------------------

def _legacy_randomstate_ctor() -> np.random.RandomState:
    """Stands in for numpy <= 1.16's ``numpy.random.__RandomState_ctor()``; BUILD then sets the state."""
    return np.random.RandomState(np.random.MT19937(0))


def _bit_generator_ctor(bit_generator: Any = "MT19937") -> np.random.MT19937:
    """Stands in for ``numpy.random._pickle.__bit_generator_ctor``: MT19937 only (what RandomState uses)."""
    if bit_generator is np.random.MT19937 or (isinstance(bit_generator, str) and bit_generator == "MT19937"):
        return np.random.MT19937(0)
    raise pickle.UnpicklingError(
        f"refused numpy bit generator {bit_generator!r}: only MT19937 is allowed (a RandomState's generator)"
    )


def _randomstate_ctor(bit_generator_name: Any = "MT19937", bit_generator_ctor: Any = None) -> np.random.RandomState:
    """Stands in for ``numpy.random._pickle.__randomstate_ctor``.

    numpy calls ``bit_generator_ctor(bit_generator_name)``; a callable from a file is never called
    here, whatever it is: the bit generator is built by `_bit_generator_ctor`.
    """
    if isinstance(bit_generator_name, np.random.MT19937):
        return np.random.RandomState(bit_generator_name)
    return np.random.RandomState(_bit_generator_ctor(bit_generator_name))


@functools.lru_cache(maxsize=None)
def _allowed_globals() -> tuple[Any, ...]:
    """The numpy globals a weights file may name, each bound to what we allow it to do."""
    allowed: list[Any] = [np.ndarray, np.dtype]
    try:
        core = importlib.import_module("numpy._core.multiarray")  # numpy >= 2
    except ImportError:
        core = importlib.import_module("numpy.core.multiarray")
    for attr in ("_reconstruct", "scalar"):
        # Registered under numpy 1's and numpy 2's paths: the file names the one its writer used.
        for module_name in ("numpy.core.multiarray", "numpy._core.multiarray"):
            allowed.append((getattr(core, attr), f"{module_name}.{attr}"))
    # dtype classes (numpy >= 1.25 pickles name e.g. numpy.dtypes.UInt32DType).
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for attr in dir(dtypes):
            obj = getattr(dtypes, attr)
            if isinstance(obj, type) and issubclass(obj, np.dtype):
                allowed.append(obj)
    allowed += [
        (_legacy_randomstate_ctor, "numpy.random.__RandomState_ctor"),          # numpy <= 1.16
        (_randomstate_ctor, "numpy.random._pickle.__randomstate_ctor"),         # numpy >= 1.17
        (_bit_generator_ctor, "numpy.random._pickle.__bit_generator_ctor"),
        # The classes themselves: BUILD sets the state of allow-listed types only, and numpy 2
        # passes the MT19937 class to __bit_generator_ctor. Calling either only seeds an RNG.
        (np.random.MT19937, "numpy.random._mt19937.MT19937"),
        (np.random.RandomState, "numpy.random.mtrand.RandomState"),
    ]
    return tuple(allowed)


# --------------------------------------------------------------------------------------------
# Recognising what a file is, from its first bytes
# --------------------------------------------------------------------------------------------

# torch's legacy format starts with pickle.dump(0x1950a86a20f9469cfc6c): PROTO n, LONG1 10 bytes.
_TORCH_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_HEAD_BYTES = 4096


def _mb(size: int) -> str:
    return f"{size} bytes" if size < 100_000 else f"{size / 1e6:.1f} MB"


def _text_snippet(head: bytes) -> str:
    text = head[:200].decode("utf-8", "replace")
    text = re.sub(r"\s+", " ", text).strip()
    return text[:80] + ("..." if len(text) > 80 else "")


def _describe_text(path: str, head: bytes, size: int) -> str | None:
    """A sentence for a file that is text (an error page, a JSON error, an LFS pointer), else None."""
    body = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    try:
        body[:1024].decode("utf-8")
    except UnicodeDecodeError:
        if b"\x00" in head[:1024]:
            return None
    low = body[:2048].lower()
    if low.startswith(b"version https://git-lfs"):
        return (f"{path} is a Git LFS pointer ({size} bytes), not the checkpoint itself: fetch the real file "
                f"(git lfs pull) and use that")
    if low.startswith((b"<!doctype html", b"<html")) or b"<html" in low[:512]:
        title = re.search(rb"<title[^>]*>(.*?)</title>", body, flags=re.S | re.I)
        named = f" (title: {title.group(1).decode('utf-8', 'replace').strip()[:80]!r})" if title else ""
        return (f"{path} is an HTML page{named}, {_mb(size)}, not a checkpoint: the server sent an error, "
                f"sign-in or confirmation page instead of the file. Download the file itself (a browser may "
                f"be needed for Google Drive or OneDrive links) and point to that")
    if low.startswith(b"<?xml") or low.startswith(b"<error"):
        code = re.search(rb"<Code>(.*?)</Code>", body, flags=re.S | re.I)
        named = f" ({code.group(1).decode('utf-8', 'replace').strip()[:60]})" if code else ""
        return (f"{path} is an XML document{named}, {_mb(size)}, not a checkpoint: most likely an object "
                f"store's error response saved in place of the file")
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in body[:512])
    if body and printable >= 0.95 * min(len(body), 512):
        kind = "JSON" if body[:1] in (b"{", b"[") else "text"
        return (f"{path} is a {kind} file ({_mb(size)}; it begins {_text_snippet(body)!r}), not a checkpoint: "
                f"most likely an error message saved in place of the file")
    return None


def sniff_container(path: str | os.PathLike[str]) -> str:
    """Which torch container a checkpoint file is, e.g. ``"torch zip archive, pickle protocol 2"``.

    Raises CheckpointError, with one sentence saying what the file is instead, for anything
    torch.load cannot read as a checkpoint.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"checkpoint file {path} is empty (0 bytes): the download or copy did not complete")
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            raise CheckpointError(
                f"{path} starts like a zip archive (torch's format since 1.6) but its end is missing or "
                f"damaged ({_mb(size)}): the file was cut short; download or copy it again"
            ) from None
        pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if not pickles:
            shown = ", ".join(names[:5]) + (f", ... ({len(names)} entries)" if len(names) > 5 else "")
            npz = names and all(n.endswith(".npy") for n in names)
            what = "a numpy .npz archive" if npz else "a zip archive that is not a torch checkpoint"
            raise CheckpointError(
                f"{path} is {what} (it holds: {shown or 'nothing'}); torch checkpoints hold a data.pkl. "
                f"If the checkpoint is inside this archive, extract it and point to the extracted file"
            )
        with zipfile.ZipFile(path) as archive, archive.open(pickles[0]) as stream:
            first = stream.read(2)
        protocol = f", pickle protocol {first[1]}" if first[:1] == b"\x80" and len(first) == 2 else ""
        return f"torch zip archive (torch >= 1.6){protocol}"
    if head[:1] == b"\x80" and len(head) >= 2 and 2 <= head[1] <= 5:
        if head[2:4] == b"\x8a\x0a" and head[4:14] == _TORCH_MAGIC:
            return f"torch legacy format (torch < 1.6), pickle protocol {head[1]}"
        raise CheckpointError(
            f"{path} is a plain Python pickle (protocol {head[1]}), not a file written by torch.save; "
            f"posepipe reads torch checkpoints only (pickles outside torch's format cannot be read "
            f"without running code from them)"
        )
    if head.startswith(b"\x1f\x8b"):
        raise CheckpointError(
            f"{path} is gzip-compressed (e.g. a .tar.gz), not a checkpoint: extract the checkpoint file first"
        )
    if len(head) > 262 and head[257:262] == b"ustar":
        raise CheckpointError(f"{path} is a tar archive, not a checkpoint: extract the checkpoint file first")
    if head.startswith(b"\x93NUMPY"):
        raise CheckpointError(f"{path} is a numpy .npy array, not a torch checkpoint")
    if head.startswith(b"\x89HDF"):
        raise CheckpointError(f"{path} is an HDF5 file (e.g. Keras weights), not a torch checkpoint")
    text = _describe_text(path, head, size)
    if text:
        raise CheckpointError(text)
    raise CheckpointError(
        f"{path} is not a torch checkpoint: it is neither a torch zip archive nor torch's legacy format "
        f"(it begins with bytes {head[:8].hex(' ')}; {_mb(size)})"
    )


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

_REFUSALS = ("can only ", "trying to call reduce", "is blocked", "unsupported operand", "refused numpy bit generator")
_DAMAGE = ("unexpected eof", "ran out of input", "truncated", "corrupt")


def _load_failure(path: str, container: str, exc: BaseException) -> str:
    """One sentence for a torch.load failure: a refused global, a file cut short, or torch's own first line."""
    text = str(exc)
    low = text.lower()
    found = re.search(r"GLOBAL ((?:\w+\.)+\w+)", text)
    if "unsupported global" in low and not found:  # a GLOBAL cut in half: no module or name left
        low += " truncated"
    elif found or any(marker in low for marker in _REFUSALS):
        if found:
            asks = f"it asks the unpickler to call {found.group(1)}"
        else:
            detail = re.search(r"(refused numpy bit generator[^\n]*|Can only [^\n]*|Trying to call reduce for [^\n]*"
                               r"|[^\n]* is blocked[^\n]*)", text)
            asks = ("it asks the unpickler for something outside the tensor/container allow-list"
                    + (f" ({detail.group(1).rstrip('. ')})" if detail else ""))
        return (
            f"refused to load {path}: {asks}, which a weights file has no reason to contain. posepipe never "
            f"executes code from checkpoints; if this file is a genuine release, report it with its URL"
        )
    if isinstance(exc, (EOFError, IndexError, struct.error)) or any(marker in low for marker in _DAMAGE):
        return (
            f"{path} ends early or is damaged ({_mb(os.path.getsize(path))}; {container}): the file was cut "
            f"short or corrupted in transfer; download or copy it again"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"could not read checkpoint {path} ({container}): {type(exc).__name__}: {first}"


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Unpickle a checkpoint file without executing code from it; tensors land on CPU.

    Every failure is a CheckpointError whose message names the file and says what is wrong with it.
    """
    path = os.fspath(path)
    container = sniff_container(path)
    try:
        with torch.serialization.safe_globals(list(_allowed_globals())):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError / RuntimeError / EOFError with long texts
        raise CheckpointError(_load_failure(path, container, exc)) from None


# --------------------------------------------------------------------------------------------
# State dicts
# --------------------------------------------------------------------------------------------

def tensors_only(state: Mapping[str, Any]) -> "OrderedDict[str, torch.Tensor]":
    """Keep the tensor entries of a mapping (drops stray metadata such as `_metadata`)."""
    return OrderedDict((k, v) for k, v in state.items() if isinstance(v, torch.Tensor))


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> "OrderedDict[str, torch.Tensor]":
    """Drop `prefix` from every key that has it (e.g. 'module.' from DataParallel saves)."""
    return OrderedDict((k[len(prefix):] if k.startswith(prefix) else k, v) for k, v in state.items())


def preview(keys: Iterable[Any], limit: int = 6) -> str:
    """`a, b, c, ... (N in all)`: a few names of a long list, for one-line messages."""
    keys = [str(k) for k in keys]
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


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
        parts = []
        if missing:
            parts.append(f"missing keys: {preview(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {preview(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches: {preview(mismatched, 4)}")
        raise CheckpointError(
            f"{what} does not match the {type(module).__name__} architecture ("
            + "; ".join(parts)
            + "). Check that the file is the weight set you named (architecture arguments, keypoint count)."
        )
    module.load_state_dict(merged, strict=True)
