"""Reference vectors for posepipe's deformable convolution (models/dekr.py ``deform_conv2d``) from an independent
implementation: ``torchvision.ops.deform_conv2d`` (torchvision's C++ CPU kernel).

    .venv/bin/python tests/models/deform_conv_reference.py [--seed 0] [--out PATH]

writes ``tests/models/deform_conv_seed<SEED>.npz`` (tests/models/test_dekr.py reads every such file). The
inputs, weights and offsets are drawn here with numpy from the seed, so another seed gives another file;
the child (``--child``) runs in ``.venv-detectron2`` (gitignored; torch 2.14.1 + torchvision 0.29.1, the one
pair here that loads together on a CPU; torchvision's wheel does not load against .venv's torch), or in a
venv of the same two pins built by tests/side_venv.py when that one is absent.

Cases (``CASES``), each as ``<case>/x``, ``/offset``, ``/weight``, ``/out`` plus its stride, padding and
dilation: one group and one offset group; DEKR's layout (as many conv groups as offset groups); stride 2
with dilation 2 and two offset groups over one conv group; and offsets that put samples on, across and far
beyond the border (|offset| up to 3x the map, exact integers -1, 0, H - 1 and H included: a sample at
exactly -1 or H is zero, one just inside blends with the zero outside); and a map one pixel wide.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENV = ".venv-detectron2"
REQUIREMENTS = ["torch==2.14.1", "torchvision==0.29.1", "numpy"]

# name -> (batch, in channels, out channels, conv groups, offset groups, H, W, kernel, stride, padding,
#          dilation, offset scale)
CASES = {
    "plain": (2, 4, 6, 1, 1, 7, 9, 3, 1, 1, 1, 1.5),
    "dekr_groups": (1, 6, 9, 3, 3, 8, 6, 3, 1, 1, 1, 2.0),
    "strided_dilated": (2, 4, 4, 1, 2, 9, 11, 3, 2, 2, 2, 2.5),
    "outside": (1, 3, 3, 3, 3, 5, 6, 3, 1, 1, 1, 12.0),
    "one_column": (2, 2, 3, 1, 1, 5, 1, 3, 1, 1, 1, 1.0),
}


def draw(seed: int) -> dict[str, np.ndarray]:
    """Every case's inputs, from the seed alone."""
    out: dict[str, np.ndarray] = {"seed": np.int64(seed)}
    for index, (name, (b, c, o, groups, ogroups, h, w, k, stride, pad, dil, scale)) in enumerate(CASES.items()):
        rng = np.random.default_rng([seed, index])
        ho = (h + 2 * pad - dil * (k - 1) - 1) // stride + 1
        wo = (w + 2 * pad - dil * (k - 1) - 1) // stride + 1
        offset = rng.normal(0.0, scale, (b, 2 * ogroups * k * k, ho, wo))
        if name == "outside":
            # exact border positions: integer offsets that land a tap on -1, 0, H - 1, H (and W alike)
            flat = offset.reshape(-1)
            picks = rng.choice(flat.size, size=flat.size // 3, replace=False)
            flat[picks] = rng.integers(-h - 2, h + 2, size=picks.size)
            offset = flat.reshape(offset.shape)
        out[f"{name}/x"] = rng.normal(0.0, 1.0, (b, c, h, w)).astype(np.float32)
        out[f"{name}/weight"] = (rng.normal(0.0, 1.0, (o, c // groups, k, k)) / np.sqrt(c // groups * k * k)).astype(np.float32)
        out[f"{name}/offset"] = offset.astype(np.float32)
        out[f"{name}/geometry"] = np.array([stride, pad, dil], np.int64)
    return out


def child(path: Path) -> None:  # pragma: no cover - runs in the torchvision venv
    # Imports here: this function runs in the torchvision venv, where posepipe is not installed.
    import torch
    import torchvision
    from torchvision.ops import deform_conv2d

    data = dict(np.load(path))
    for name in CASES:
        stride, pad, dil = (int(v) for v in data[f"{name}/geometry"])
        with torch.no_grad():
            out = deform_conv2d(torch.from_numpy(data[f"{name}/x"]), torch.from_numpy(data[f"{name}/offset"]),
                                torch.from_numpy(data[f"{name}/weight"]), stride=stride, padding=pad, dilation=dil)
        data[f"{name}/out"] = out.numpy()
    data["versions"] = np.array([torch.__version__, torchvision.__version__])
    np.savez_compressed(path, **data)


def reference_python() -> Path:
    python = ROOT / VENV / "bin" / "python"
    if python.exists():
        return python
    sys.path.insert(0, str(ROOT))
    from tests.side_venv import side_python  # only when the shared venv is absent (it needs pytest)

    return side_python(".venv-torchvision", REQUIREMENTS, what="torchvision")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    out = args.out or HERE / f"deform_conv_seed{args.seed}.npz"
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "case.npz"
        np.savez(path, **draw(args.seed))
        subprocess.run([str(reference_python()), str(Path(__file__).resolve()), "--child", str(path)], check=True,
                       cwd=scratch)
        out.write_bytes(path.read_bytes())
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
