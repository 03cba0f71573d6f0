"""DEKR HRNet-W32: the deformable convolution against torchvision's (tests/models/deform_conv_reference.py),
the architecture against mmpose's state dict, the weights record, and golden parity with mmpose 1.3.2's
whole bottom-up path (tests/models/dekr_reference.py, tests/models/golden_dekr_hrnet_w32_coco_512x512/)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from posepipe.models import dekr
from tests.golden import assert_close

HERE = Path(__file__).resolve().parent
NAME = "dekr_hrnet_w32_coco_512x512"
CPU = torch.device("cpu")
DEFORM_CASES = sorted(HERE.glob("deform_conv_seed*.npz"))


# ---------------------------------------------------------------------------------------------
# The deformable convolution against torchvision.ops.deform_conv2d
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", DEFORM_CASES, ids=lambda p: p.stem)
def test_deform_conv2d_matches_torchvision(path):
    """Every case of the file (one group, DEKR's groups, stride + dilation, samples on and beyond the
    border): torchvision's C++ kernel's output within float32 summation-order noise (measured 2.4e-7)."""
    data = np.load(path)
    names = sorted({key.split("/")[0] for key in data.files if "/" in key})
    assert names == sorted(["plain", "dekr_groups", "strided_dilated", "outside"])
    for name in names:
        stride, padding, dilation = (int(v) for v in data[f"{name}/geometry"])
        out = dekr.deform_conv2d(torch.from_numpy(data[f"{name}/x"]), torch.from_numpy(data[f"{name}/offset"]),
                                 torch.from_numpy(data[f"{name}/weight"]), stride=stride, padding=padding,
                                 dilation=dilation)
        assert_close(out.numpy(), data[f"{name}/out"], f"deform_conv2d {name}", rtol=0, atol=2e-6)


def test_deform_conv2d_reference_samples_beyond_the_border():
    """The 'outside' case is what its name says: many taps fall at or past -1 / H / W, and whole outputs vanish."""
    data = np.load(DEFORM_CASES[0])
    assert (data["outside/out"] == 0).mean() > 0.2
    assert np.abs(data["outside/offset"]).max() > 3 * data["outside/x"].shape[-1]


def test_deform_conv2d_with_zero_offsets_is_a_convolution():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 9, 7, generator=g)
    weight = torch.randn(6, 2, 3, 3, generator=g)
    offset = torch.zeros(2, 2 * 3 * 9, 9, 7)
    out = dekr.deform_conv2d(x, offset, weight, padding=1)
    ref = torch.nn.functional.conv2d(x, weight, padding=1, groups=3)
    assert_close(out.numpy(), ref.numpy(), "zero-offset deform conv", rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="offset"):
        dekr.deform_conv2d(x, offset[:, :-1], weight, padding=1)
