"""Numeric precision on GPUs: fp32 that means fp32, and fp16 autocast that never returns inf/NaN.

fp16 holds values up to 65504. Trained pose networks stay far below that, but nothing guarantees
it for every checkpoint (HRNet's fused branches reach ~1e5 with the golden test weights), and an
overflow turns whole heatmaps into NaN keypoints silently. So the fp16 output is checked, and a pass
(or, on the device path, a window) that overflowed is redone in strict fp32 (:func:`fp32_pass`),
after which the predictor's precision state is what it was: one crowded frame does not make the
rest of a job run at fp32 speed. The first overflow of each predictor warns; all are counted
(``fp16_overflows``).

On a CPU, `half` means bf16 autocast (`--half`; off by default, README "Precision on a CPU"): bf16
has fp32's range, so it cannot overflow, but it keeps 8 bits of mantissa to fp16's 11.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch


class PrecisionWarning(RuntimeWarning):
    """fp16 overflowed in a network; it now runs in fp32."""


def strict_fp32(device: torch.device) -> None:
    """Make fp32 on a GPU mean fp32: cuDNN runs convolutions in TF32 by default (10-bit mantissa),
    which moves HRNet heatmaps by ~1e-3 relative and breaks parity with the official outputs.
    Process-wide, so a worker process calls it once, before its first forward pass."""
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def fall_back_to_fp32(predictor: Any, what: str) -> None:
    """Turn `predictor`'s fp16 off for good, with a warning (strict fp32 on its device from now on)."""
    warnings.warn(
        f"{what}: fp16 overflowed (inf/NaN in its output) with these weights; this worker runs it in "
        "fp32 from now on. Pass --no-half to skip fp16 altogether.",
        PrecisionWarning, stacklevel=3,
    )
    predictor.half = False
    strict_fp32(predictor.device)


def note_overflow(predictor: Any, what: str) -> None:
    """Count an fp16 overflow of `predictor` (``fp16_overflows``), warning on its first."""
    count = int(getattr(predictor, "fp16_overflows", 0)) + 1
    predictor.fp16_overflows = count
    if count == 1:
        warnings.warn(
            f"{what}: fp16 overflowed (inf/NaN in its output) with these weights; what overflowed is redone "
            "in fp32, and fp16 stays on for the rest. Pass --no-half to skip fp16 altogether.",
            PrecisionWarning, stacklevel=3,
        )


@contextmanager
def fp32_pass(*predictors: Any) -> Iterator[None]:
    """Within the block, `predictors` run in strict fp32 (``half`` off, TF32 off on CUDA); on leaving,
    their ``half`` and the process's TF32 flags are restored."""
    saved = [bool(getattr(p, "half", False)) for p in predictors]
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    for p in predictors:
        p.half = False
        strict_fp32(torch.device(p.device))
    try:
        yield
    finally:
        for p, half in zip(predictors, saved):
            p.half = half
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bf16 convolutions natively (oneDNN's check: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def forward_half_guarded(predictor: Any, run: Callable[[], torch.Tensor], what: str) -> torch.Tensor:
    """`run()` under fp16 autocast when `predictor.half` on CUDA, else as is; float32 out.

    `predictor` needs `.half` (bool) and `.device`. If the fp16 output has a non-finite value, `run()`
    repeats in strict fp32 (:func:`fp32_pass`; counted and, the first time, warned about) and the next
    call tries fp16 again. Checking reads the output on the host (a sync per pass);
    :func:`forward_half_flagged` does not.
    """
    if predictor.half and predictor.device.type == "cpu":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return run().float()
    if not (predictor.half and predictor.device.type == "cuda"):
        return run().float()
    with torch.autocast("cuda", dtype=torch.float16):
        out = run()
    if bool(torch.isfinite(out).all()):
        return out.float()
    note_overflow(predictor, what)
    with fp32_pass(predictor):
        return run().float()


def forward_half_flagged(predictor: Any, run: Callable[[], torch.Tensor],
                         rows: Sequence[slice] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`run()` as :func:`forward_half_guarded` runs it, without reading anything on the host.

    Returns the float32 output and a () bool tensor on its device: True when this was an fp16 pass
    and its output (only the batch `rows` given, e.g. not the padding) holds inf or NaN. The caller
    reads the flag once per window (one sync for many passes); when it is set, it runs that window again
    within :func:`fp32_pass` (and :func:`note_overflow`). Always False in fp32.
    """
    if predictor.half and predictor.device.type == "cpu":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = run().float()
        return out, torch.zeros((), dtype=torch.bool, device=out.device)
    if not (predictor.half and predictor.device.type == "cuda"):
        out = run().float()
        return out, torch.zeros((), dtype=torch.bool, device=out.device)
    with torch.autocast("cuda", dtype=torch.float16):
        out = run()
    parts = [out[r] for r in rows] if rows is not None else [out]
    finite = torch.stack([torch.isfinite(p).all() for p in parts]).all()
    return out.float(), ~finite


__all__ = ["PrecisionWarning", "cpu_bf16_supported", "fall_back_to_fp32", "forward_half_flagged", "forward_half_guarded",
           "fp32_pass", "note_overflow", "strict_fp32"]
