"""fp16 overflow handling: a pass (or window) that overflowed is redone in strict fp32, then the
predictor's precision state is what it was; the first overflow warns, every one is counted."""
from __future__ import annotations

import warnings

import pytest
import torch

from posepipe.models.precision import PrecisionWarning, fp32_pass, note_overflow


class Predictor:
    def __init__(self, device: str = "cuda") -> None:
        self.half = True
        self.device = torch.device(device)  # a CUDA device object needs no GPU; nothing runs on it here


def test_fp32_pass_turns_half_and_tf32_off_inside_and_restores_them():
    a, b = Predictor(), Predictor("cpu")
    b.half = False
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with fp32_pass(a, b):
            assert a.half is False and b.half is False
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert a.half is True and b.half is False
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        with pytest.raises(RuntimeError), fp32_pass(a):
            raise RuntimeError("a failed pass restores the state too")
        assert a.half is True and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_the_first_overflow_warns_and_every_one_is_counted():
    p = Predictor()
    with pytest.warns(PrecisionWarning, match="YOLOX: fp16 overflowed.*redone in fp32.*--no-half"):
        note_overflow(p, "YOLOX")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise
        note_overflow(p, "YOLOX")
        note_overflow(p, "YOLOX")
    assert p.fp16_overflows == 3 and p.half is True
