"""`--half` on a CPU: bf16 autocast where the CPU has it natively, within the README's measured bounds.

Loaded through `load_model`, as the workers load them, from the golden cases' weights. Each test
prints its error (`pytest -s`), the figures README "Precision on a CPU" quotes.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from posepipe.models import load_model
from posepipe.models.precision import cpu_bf16_supported
from tests.golden import generate_state_dict, golden_cases, golden_dir, load_case

pytestmark = pytest.mark.skipif(not cpu_bf16_supported(), reason="this CPU has no native bf16")


def _weights(name: str, tmp_path) -> tuple[dict, str]:
    cases = golden_cases(name)
    if not cases:
        pytest.skip(f"no golden vectors for {name}")
    case = load_case(cases[0])
    path = tmp_path / f"{name}.pth"
    torch.save(generate_state_dict(golden_dir(name) / "manifest.json", case), path)
    return case, str(path)


def test_videopose3d_bf16_is_close_to_fp32_and_really_bf16(tmp_path):
    name = "videopose3d_243_coco"
    case, path = _weights(name, tmp_path)
    fp32 = load_model(name, weights=path, device="cpu")
    bf16 = load_model(name, weights=path, device="cpu", half=True)
    assert fp32.half is False and bf16.half is True
    args = (case["keypoints_px"], int(case["width"]), int(case["height"]))
    a, b = fp32.lift(*args), bf16.lift(*args)
    err = float(np.abs(a - b).max())
    print(f"\nvideopose3d bf16 vs fp32: max|diff| {err:.3g} (range {np.abs(a).max():.3g})")
    np.testing.assert_allclose(a, case["pred_tta"], rtol=1e-4, atol=2e-5)  # fp32 is still the golden answer
    assert 0 < err < 0.03 * max(1.0, float(np.abs(a).max()))  # bf16 ran, and stayed close


def test_hmr_bf16_is_close_to_fp32(tmp_path):
    name = "hmr_spin_resnet50"
    case, path = _weights(name, tmp_path)
    fp32 = load_model(name, weights=path, device="cpu")
    bf16 = load_model(name, weights=path, device="cpu", half=True)
    a = fp32.predict(case["image_bgr"], case["bbox_xyxy"][None])
    b = bf16.predict(case["image_bgr"], case["bbox_xyxy"][None])
    errs = {k: float(np.abs(a[k] - b[k]).max()) for k in ("rotmat", "betas", "camera")}
    print("\nhmr bf16 vs fp32: " + ", ".join(f"{k} max|diff| {v:.3g}" for k, v in errs.items()))
    assert 0 < errs["rotmat"] < 0.05 and errs["betas"] < 0.15 and errs["camera"] < 0.05
