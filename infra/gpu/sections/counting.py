"""Where a worker's time goes, per stage: kernels and their GPU time (torch.profiler), or, on a CPU,
the operators dispatched (a TorchDispatchMode: each non-view operator is one kernel launch on a GPU).

`stage_labels(worker)` wraps the stage methods of one PoseWorker (detector, 2D, SMPL, the upload and
the reference path that a window falls back to) so each call is a named range; the wrappers are
instance attributes, removed on exit, so the worker's own code is what runs.
"""
from __future__ import annotations

import contextlib
import functools
from collections import Counter
from typing import Any, Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

PREFIX = "posepipe::"
_stack: list[str] = []


class OpCounter(TorchDispatchMode):
    """Counts the operators dispatched, by the innermost stage label active (or "other")."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.launches: Counter[str] = Counter()   # without views and aliases, which launch nothing

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        stage = _stack[-1] if _stack else "other"
        self.ops[stage] += 1
        if not getattr(func, "is_view", False):
            self.launches[stage] += 1
        return func(*args, **(kwargs or {}))


def _labelled(label: str, method: Callable[..., Any], profile: bool) -> Callable[..., Any]:
    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        _stack.append(label)
        try:
            # A profiler range is itself a dispatched operator: only when profiling, not when counting.
            with torch.profiler.record_function(PREFIX + label) if profile else contextlib.nullcontext():
                return method(*args, **kwargs)
        finally:
            _stack.pop()
    return run


@contextlib.contextmanager
def stage_labels(worker: Any, *, profile: bool) -> Iterator[None]:
    """Name the stages of `worker`'s per-frame work while inside: profiler ranges when `profile`,
    else labels for an `OpCounter`."""
    windows = worker.device_windows()
    targets = [(worker.detector, "detect_frames", "detect"), (worker.pose, "predict_frames", "pose2d"),
               (worker.mesh, "predict_frames", "smpl"), (windows, "_upload", "upload"),
               (worker, "_frames", "reference"), (worker.pose, "predict_batch", "reference"),
               (worker.mesh, "predict_batch", "reference")]
    patched = []
    for obj, name, label in targets:
        if not hasattr(obj, name):
            continue
        own = name in vars(obj)
        original = getattr(obj, name)
        setattr(obj, name, _labelled(label, original, profile))
        patched.append((obj, name, own, original))
    try:
        yield
    finally:
        for obj, name, own, original in reversed(patched):
            if own:
                setattr(obj, name, original)
            else:
                delattr(obj, name)


def kernel_tally(prof: Any) -> dict[str, Any]:
    """Kernels (memory copies and sets counted apart) and their GPU time, in all and per stage label,
    from a finished torch.profiler run with CUDA activity. A stage's figures are the kernels launched
    inside its outermost range (a reference-path window inside another stage counts once)."""
    from torch.autograd import DeviceType

    events = prof.events()
    on_device = [e for e in events if e.device_type != DeviceType.CPU and not getattr(e, "is_user_annotation", False)
                 and not e.name.startswith(PREFIX)]

    def is_copy(name: str) -> bool:
        return name.startswith(("Memcpy", "Memset"))

    total = {"kernels": sum(not is_copy(e.name) for e in on_device), "copies": sum(is_copy(e.name) for e in on_device),
             "kernel_ms": round(sum(e.time_range.elapsed_us() for e in on_device if not is_copy(e.name)) / 1000, 3),
             "copy_ms": round(sum(e.time_range.elapsed_us() for e in on_device if is_copy(e.name)) / 1000, 3)}

    def below(event: Any) -> tuple[int, int, float, float]:
        kernels = [k for k in event.kernels]
        n = sum(not is_copy(k.name) for k in kernels)
        c = sum(is_copy(k.name) for k in kernels)
        us = sum(k.duration for k in kernels if not is_copy(k.name))
        cus = sum(k.duration for k in kernels if is_copy(k.name))
        for child in event.cpu_children:
            dn, dc, dus, dcus = below(child)
            n, c, us, cus = n + dn, c + dc, us + dus, cus + dcus
        return n, c, us, cus

    def inside_label(event: Any) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith(PREFIX):
                return True
            parent = parent.cpu_parent
        return False

    stages: dict[str, dict[str, float]] = {}
    for event in events:
        if event.device_type == DeviceType.CPU and event.name.startswith(PREFIX) and not inside_label(event):
            n, c, us, cus = below(event)
            label = event.name[len(PREFIX):]
            row = stages.setdefault(label, {"calls": 0, "kernels": 0, "copies": 0, "kernel_ms": 0.0, "copy_ms": 0.0})
            row["calls"] += 1
            row["kernels"] += n
            row["copies"] += c
            row["kernel_ms"] = round(row["kernel_ms"] + us / 1000, 3)
            row["copy_ms"] = round(row["copy_ms"] + cus / 1000, 3)
    return {"total": total, "stages": stages}
