"""`posepipe weights verify`: load a checkpoint through the real loader and say what it found.

Offline by design for the catalogue's own files (only the cache is read); a file or URI the user
names is fetched as `posepipe run --weights` would. Nothing here prints: the CLI renders the result.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from posepipe.models import CheckpointReport, _create, get_weights, read_weights
from posepipe.models.checkpoint import CheckpointError


@dataclass(frozen=True)
class Verification:
    name: str
    source: str                          # "cache" or the given URI (credentials and query removed)
    ok: bool
    problem: str | None = None           # the error paragraph when not ok
    path: Path | None = None
    report: CheckpointReport | None = None
    integrity: str = ""                  # what the hash check found
    origin: str | None = None            # where a cached file came from, per its cache record
    warnings: tuple[str, ...] = ()


def _integrity(spec, sha: str, official: bool, mismatch_warned: bool) -> str:
    if spec.sha256:
        if sha == spec.sha256:
            return "sha256 matches the pinned official sha256"
        return "a file you supplied: its sha256 differs from the pinned official sha256"
    if spec.hash_prefix:
        if sha.startswith(spec.hash_prefix):
            return f"sha256 starts with the official file name's prefix {spec.hash_prefix}"
        if official or mismatch_warned:
            return (f"sha256 does NOT start with the official file name's prefix {spec.hash_prefix} "
                    f"(warned; loaded anyway)")
        return f"a file you supplied: its sha256 does not start with the official prefix {spec.hash_prefix}"
    return "no published hash to compare with (the sha256 above is what a run's provenance records)"


def verify_weights(name: str, weights: str | os.PathLike[str] | None = None, *,
                   cache_dir: str | os.PathLike[str] | None = None) -> Verification:
    """Check catalogue model `name`'s cached official file, or the file/URI `weights`, end to end.

    Runs what `load_model` runs (fetch with the hash policy, read as data, recognise the layout,
    remap, strict load into the architecture on CPU) and reports each step's finding.
    Raises KeyError for an unknown `name`; every problem with the file is reported, not raised.
    """
    from posepipe.models.download import WeightsUnavailable, _display_uri, cache_record, fetch

    spec = get_weights(name)
    official = weights is None
    source = "cache" if official else _display_uri(os.fspath(weights))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            path = fetch(spec.url if official else os.fspath(weights), cache_dir=cache_dir,
                         sha256=spec.sha256 if official else None,
                         hash_prefix=spec.hash_prefix if official else None,
                         filename=spec.filename if official else None, download=not official)
            state, report = read_weights(name, path)
            _create(name, Path(path), spec, state, device=torch.device("cpu"), half=False)
        except (WeightsUnavailable, CheckpointError) as exc:
            text = str(exc)
            text = text if text.startswith(f"{name}:") else f"{name}: {text.replace('NAME=', f'{name}=')}"
            return Verification(name, source, ok=False, problem=text,
                                warnings=tuple(str(w.message) for w in caught))
    messages = tuple(str(w.message) for w in caught)
    record = cache_record(path)
    origin = None
    if record is not None:
        origin = f"downloaded from {record.get('source')} on {record.get('fetched', '?')}"
    elif official:
        origin = "placed in the cache by hand (no download record)"
    warned = any("hash prefix" in m for m in messages)
    return Verification(name, source, ok=True, path=Path(path), report=report,
                        integrity=_integrity(spec, report.sha256, official, warned), origin=origin,
                        warnings=messages)


__all__ = ["Verification", "verify_weights"]
