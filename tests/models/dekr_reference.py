"""Reference vectors from mmpose 1.3.2's own DEKR (``dekr_hrnet-w32_8xb10-140e_coco-512x512.py``), run as
installed, for tests/models/test_dekr.py.

    .venv/bin/python tests/models/dekr_reference.py [--seed 0] [--out-root DIR]

writes ``tests/models/golden_dekr_hrnet_w32_coco_512x512/manifest.json`` and ``case_seed<SEED>.npz`` as
../shared/golden/README.md asks: the weights are not stored but generated from the manifest and the seed by
that rule (tests/golden.py's ``generate_state_dict``, the code the tests use) plus the amendments below
(recorded in the npz), written in the official file's container (mmengine's ``{'meta', 'state_dict'}``, the
state dict with ``nn.Module.state_dict()``'s ``_metadata``, so that ``DEKRHead``'s version-2 load hook leaves
it as it is, as it leaves the published file), loaded by mmpose's ``init_model`` (every tensor then checked
equal to the generated one) and run with ``inference_bottomup`` (the config's flip test) on one frame of
../shared/media/vtest.avi, shrunk here in posepipe's venv (``cv2.INTER_AREA``) to keep the npz small; the
frame is chosen by the seed.

**What is substituted, and why.** DEKR's adaptive convolutions call ``mmcv.ops.DeformConv2d``, a compiled op
of mmcv-full; mmcv-full is not available here (OpenMMLab publishes no mmcv 2.x wheel for these torch versions,
and building it from source does not work on this machine, so it was not used) and .venv-mmpose has
mmcv-lite, without ``mmcv.ops``. So the child runs under
``.venv-detectron2``'s python (torch 2.14.1 + torchvision 0.29.1, the pair that loads together on a CPU here)
with .venv-mmpose's packages (mmpose 1.3.2, mmengine, mmcv-lite, numpy 1.26.4, ...; everything but torch)
put first on ``PYTHONPATH`` through a folder of links, and ``mmcv.ops`` is an import stub whose
``DeformConv2d`` is a module of mmcv's signature and parameters (``weight`` (O, C / groups, 3, 3), no bias)
calling ``torchvision.ops.deform_conv2d(x, offset, weight, stride, padding, dilation)``: the same operation
(DCN v1, mmcv's offset layout (dy, dx) per tap and group, zero outside the map), from an implementation that
is not posepipe's. Every other name of ``mmcv.ops`` raises if used (nothing else is, on this path). So these
vectors test posepipe's DEKR against mmpose's DEKR around torchvision's deformable convolution, not mmcv's
kernel itself (tests/models/deform_conv_reference.py checks that operation alone).

**Amendments** (``weight_multiplier/``, ``buffer/`` in the npz): the adaptive blocks' ``regular_matrix``
buffers are the constants they are (not drawn); with the plain rule the maps are unusable (the affine
matrices put every tap hundreds of pixels outside the map, the displacements are thousands of pixels and
the root heatmap ~1e3 everywhere), so the transform convolutions are scaled to give taps within a few
pixels, the last displacement conv to displacements of tens of pixels and the heatmap conv to values of
order 1, so that peaks, joints inside the canvas, joint scores and the NMS all mean something.

Recorded: the canvas (``BottomupResize``'s ``input_size``, ``input_center``, ``input_scale`` and the
canvas bytes), the head's raw heatmaps and displacements of both passes and the flip-aggregated ones at
``SAMPLES`` fixed pixels (all channels), the codec's output (canvas-pixel keypoints, root scores and joint
scores before rescoring), the rescore net's output, and the final persons (image-pixel keypoints, keypoint
scores) in mmpose's order, with mmpose's parsed COCO meta (flip indices, skeleton links).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NAME = "dekr_hrnet_w32_coco_512x512"
CONFIG = "body_2d_keypoint/dekr/coco/dekr_hrnet-w32_8xb10-140e_coco-512x512.py"
TORCH_VENV = ".venv-detectron2"    # torch 2.14.1 + torchvision 0.29.1
MMPOSE_VENV = ".venv-mmpose"       # tests/models/mmpose_skeletons_reference.py builds it
VIDEO = "vtest.avi"
FRAMES = {0: 60, 1: 300}           # seed -> frame index (other seeds: 10 * seed)
SHRINK = 0.5                       # 768x576 -> 384x288 (a 704x512 canvas)
SAMPLES = 400                      # pixels of the maps recorded (all channels)
TRANSFORM_SCALE = 1e-4            # the adaptive blocks' affine matrices: taps within a few pixels
DISPLACEMENT_SCALE = 5e-4          # displacements of tens of heatmap pixels
HEATMAP_SCALE = 2.5e-5             # joint heatmaps of order 1
ROOT_SCALE = -2.5e-4               # the root heatmap: positive, peaks of order 0.1 to 1
EXCLUDED = ("torch", "torchgen", "functorch", "torchvision", "triton", "nvidia")


# ---------------------------------------------------------------------------------------------
# Weight amendments (recorded in the npz, so ../shared/golden/README.md's rule reproduces the weights)
# ---------------------------------------------------------------------------------------------

def amendments(manifest: list[dict]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for entry in manifest:
        name, shape = entry["name"], tuple(entry["shape"])
        if name.endswith("regular_matrix"):
            out[f"buffer/{name}"] = np.array([[-1, -1, -1, 0, 0, 0, 1, 1, 1], [-1, 0, 1, -1, 0, 1, -1, 0, 1],
                                              [1] * 9], np.float32).reshape(shape)
        elif name.endswith("transform_matrix_conv.weight"):
            out[f"weight_multiplier/{name}"] = np.float32(TRANSFORM_SCALE)
        elif name == "head.displacement_conv_layers.3.weight":
            out[f"weight_multiplier/{name}"] = np.float32(DISPLACEMENT_SCALE)
        elif name == "head.heatmap_conv_layers.2.weight":
            rows = np.full((shape[0], 1, 1, 1), HEATMAP_SCALE, np.float32)
            rows[-1] = ROOT_SCALE  # the root row, negated: positive where the plain rule is most negative
            out[f"weight_multiplier/{name}"] = rows
    return out


# ---------------------------------------------------------------------------------------------
# The child: mmpose's code, under .venv-detectron2's torch with .venv-mmpose's packages
# ---------------------------------------------------------------------------------------------

def overlay(scratch: Path) -> Path:
    """A folder of links to .venv-mmpose's site-packages entries, torch and its kin left out."""
    site = next((ROOT / MMPOSE_VENV / "lib").glob("python*/site-packages"))
    folder = scratch / "mmpose-site"
    folder.mkdir()
    for entry in site.iterdir():
        if entry.name.split("-")[0].split(".")[0] in EXCLUDED or entry.suffix == ".pth":
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


def install_mmcv_ops() -> None:  # pragma: no cover - runs in the child
    """``mmcv.ops`` as a module whose ``DeformConv2d`` calls torchvision's op; every other name raises."""
    # Imports here: the child's torch and torchvision are not posepipe's (see the module docstring).
    import importlib.abc
    import importlib.machinery
    import types

    import torch
    from torchvision.ops import deform_conv2d

    class DeformConv2d(torch.nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                     deform_groups=1, bias=False, im2col_step=32):
            super().__init__()
            assert not bias, "mmcv's DeformConv2d has no bias"
            self.stride, self.padding, self.dilation = stride, padding, dilation
            self.weight = torch.nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))

        def forward(self, x, offset):
            return deform_conv2d(x, offset, self.weight, stride=self.stride, padding=self.padding,
                                 dilation=self.dilation)

    class Unavailable:
        def __init__(self, *args, **kwargs):
            raise RuntimeError(f"{type(self).__name__}: an import stub was used (see the module docstring)")

    class OpsModule(types.ModuleType):
        def __getattr__(self, attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return DeformConv2d if attr == "DeformConv2d" else type(attr, (Unavailable,), {})

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):
            if name == "mmcv.ops" or name.startswith("mmcv.ops."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            module = OpsModule(spec.name)
            module.__path__ = []
            return module

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, Finder())


def child(scratch: Path, seed: int) -> None:  # pragma: no cover - runs in the child
    # Imports here: they are mmpose's venv's (the overlay and the repository root lead PYTHONPATH) under
    # another torch, and the mmcv.ops stub must be in place first.
    install_mmcv_ops()
    import mmpose
    import torch
    import torchvision
    from mmpose.apis import inference_bottomup, init_model

    from tests.golden import generate_state_dict

    torch.set_num_threads(2)
    config = Path(mmpose.__file__).parent / ".mim" / "configs" / CONFIG
    model = init_model(str(config), None, device="cpu")
    template = model.state_dict()
    manifest = [{"name": k, "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                for k, v in template.items()]
    (scratch / "manifest.json").write_text(json.dumps(manifest, indent=0))
    extra = amendments(manifest)
    case = {"seed": np.int64(seed), **extra}
    state = generate_state_dict(scratch / "manifest.json", case)
    for k, v in state.items():  # into the module's own OrderedDict: its _metadata (head version 2) kept
        template[k] = v
    meta = {"mmengine_version": "0.4.0", "mmcv_version": "2.0.0rc3", "mmpose_version": "1.0.0rc0",
            "epoch": 140, "iter": 164_220, "seed": 0}
    torch.save({"meta": meta, "state_dict": template}, scratch / "checkpoint.pth")
    model = init_model(str(config), str(scratch / "checkpoint.pth"), device="cpu")
    loaded = model.state_dict()
    assert list(loaded) == list(state), "init_model's state_dict keys differ from the manifest's"
    for k, v in state.items():
        assert torch.equal(loaded[k], v), f"{k} was not loaded as generated"
    assert model.test_cfg["flip_test"] and model.head.rescore_net is not None

    record: dict[str, list] = {"input": [], "forward": [], "decode_in": [], "codec": [], "rescore": []}
    head = model.head
    extract, forward, decode = model.extract_feat, head.forward, head.decode
    codec_decode, rescore = head.decoder.decode, head.rescore_net.forward

    def extract_feat(inputs):
        record["input"].append(inputs.detach().clone())
        return extract(inputs)

    def head_forward(feats):
        out = forward(feats)
        record["forward"].append(tuple(t.detach().clone() for t in out))
        return out

    def head_decode(heatmaps, displacements, test_cfg={}, metainfo={}):
        record["decode_in"].append((heatmaps[0].detach().clone(), displacements[0].detach().clone()))
        return decode(heatmaps, displacements, test_cfg, metainfo)

    def decoder_decode(heatmaps, displacements):
        keypoints, (roots, scores) = codec_decode(heatmaps, displacements)
        record["codec"].append((keypoints.clone(), roots.clone(), scores.clone()))
        return keypoints, (roots, scores)

    def rescore_forward(keypoints, keypoint_scores, skeleton):
        out = rescore(keypoints, keypoint_scores, skeleton)
        record["rescore"].append(out.detach().clone())
        return out

    model.extract_feat, head.forward, head.decode = extract_feat, head_forward, head_decode
    head.decoder.decode, head.rescore_net.forward = decoder_decode, rescore_forward

    image = np.load(scratch / "inputs.npz")["image_bgr"]
    with torch.no_grad():
        result = inference_bottomup(model, image)[0]
    meta_info = result.metainfo
    x = record["input"][0][0]
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    canvas_rgb = (x * std + mean).round().clamp(0, 255).to(torch.uint8)
    assert torch.allclose((canvas_rgb.float() - mean) / std, x, atol=1e-5), "the input is not a uint8 canvas"
    heat, disp = record["forward"][0]
    heat_flip, disp_flip = record["forward"][1]
    heat_avg, disp_avg = record["decode_in"][0]
    h, w = heat.shape[-2:]
    rng = np.random.default_rng([seed, 1])
    ys, xs = rng.integers(0, h, SAMPLES), rng.integers(0, w, SAMPLES)
    ys[:4], xs[:4] = [0, 0, h - 1, h - 1], [0, w - 1, 0, w - 1]  # the corners, where the flip shift acts

    def pick(t) -> np.ndarray:
        return t[0][:, ys, xs].numpy().astype(np.float32) if t.ndim == 4 else t[:, ys, xs].numpy().astype(np.float32)

    keypoints, roots, kp_scores = record["codec"][0]
    meta = model.dataset_meta
    out = {
        "image_bgr": image,
        "input_bgr": canvas_rgb.flip(0).permute(1, 2, 0).contiguous().numpy(),
        "input_size": np.array(meta_info["input_size"], np.int64),
        "input_center": np.array(meta_info["input_center"], np.float32),
        "input_scale": np.array(meta_info["input_scale"], np.float32),
        "map_size_hw": np.array([h, w], np.int64),
        "sample_yx": np.stack([ys, xs], axis=1).astype(np.int64),
        "heatmaps": pick(heat), "displacements": pick(disp),
        "heatmaps_flip": pick(heat_flip), "displacements_flip": pick(disp_flip),
        "heatmaps_avg": pick(heat_avg), "displacements_avg": pick(disp_avg),
        "heatmaps_max_abs": np.float32(max(heat.abs().max(), heat_flip.abs().max())),
        "displacements_max_abs": np.float32(max(disp.abs().max(), disp_flip.abs().max())),
        "codec_keypoints": keypoints.numpy().astype(np.float32),
        "codec_root_scores": roots.numpy().astype(np.float32),
        "codec_keypoint_scores": kp_scores.numpy().astype(np.float32),
        "rescore": (record["rescore"][0].numpy() if record["rescore"] else np.zeros(0)).astype(np.float32),
        "keypoints": np.asarray(result.pred_instances.keypoints, np.float32),
        "keypoint_scores": np.asarray(result.pred_instances.keypoint_scores, np.float32),
        "flip_indices": np.array(meta["flip_indices"], np.int64),
        "skeleton_links": np.array(meta["skeleton_links"], np.int64),
        "mmpose_version": np.array(mmpose.__version__),
        "torch_version": np.array(torch.__version__),
        "torchvision_version": np.array(torchvision.__version__),
        "config": np.array(CONFIG),
        **extra,
    }
    np.savez(scratch / "result.npz", **out)


# ---------------------------------------------------------------------------------------------
# Parent (posepipe's venv)
# ---------------------------------------------------------------------------------------------

def frame(seed: int) -> np.ndarray:
    # tests.* is importable once main() has put the repository root on the path (run as a script).
    from tests.golden import MEDIA

    index = FRAMES.get(seed, 10 * seed)
    video = cv2.VideoCapture(str(MEDIA / VIDEO))
    video.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, image = video.read()
    video.release()
    if not ok:
        raise SystemExit(f"{VIDEO} has no frame {index}")
    return np.ascontiguousarray(cv2.resize(image, None, fx=SHRINK, fy=SHRINK, interpolation=cv2.INTER_AREA))


def generate(seed: int, out_root: Path) -> Path:
    # tests.* is importable once main() has put the repository root on the path (run as a script).
    from tests.side_venv import clean_env

    python = ROOT / TORCH_VENV / "bin" / "python"
    if not python.exists() or not (ROOT / MMPOSE_VENV).is_dir():
        raise SystemExit(f"needs {TORCH_VENV} (torch 2.14.1 + torchvision 0.29.1) and {MMPOSE_VENV} (built by "
                         f"tests/models/mmpose_skeletons_reference.py)")
    image = frame(seed)
    with tempfile.TemporaryDirectory(prefix="dekr-ref-") as tmp:
        scratch = Path(tmp)
        overlay(scratch)
        np.savez(scratch / "inputs.npz", image_bgr=image)
        done = subprocess.run([str(python), str(Path(__file__).resolve()), "--child", str(scratch), str(seed)],
                              cwd=ROOT, capture_output=True, text=True,
                              env={**clean_env(), "OMP_NUM_THREADS": "2",
                                   "PYTHONPATH": f"{scratch / 'mmpose-site'}:{ROOT}"})
        if done.returncode != 0:
            raise SystemExit(f"mmpose failed:\n{done.stderr[-6000:]}")
        result = dict(np.load(scratch / "result.npz"))
        manifest = (scratch / "manifest.json").read_text()
    out_dir = out_root / f"golden_{NAME}"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").write_text(manifest)
    out = out_dir / f"case_seed{seed}.npz"
    np.savez_compressed(out, seed=np.int64(seed), frame_index=np.int64(FRAMES.get(seed, 10 * seed)), **result)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-root", type=Path, default=HERE,
                        help="where the golden_<name>/ folder goes (default: tests/models)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    print(generate(args.seed, args.out_root))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
