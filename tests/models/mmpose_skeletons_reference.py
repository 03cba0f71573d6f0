"""Reference vectors from mmpose 1.3.2's own code, run as installed, for the whole-body and AP-10K models
(tests/models/test_wholebody.py, tests/models/test_ap10k.py).

    .venv/bin/python tests/models/mmpose_skeletons_reference.py [--seed 0] [--model NAME ...] [--out-root DIR]

For each model (``MODELS``: posepipe's catalogue name -> mmpose's config) it writes
``tests/models/golden_<name>/manifest.json`` and ``case_seed<SEED>.npz`` as ../shared/golden/README.md
asks: the weights are not stored but generated from the manifest and the seed by that rule (tests/golden.py's
``generate_state_dict``, the same code the tests use), written in the container of the official file, loaded
by mmpose's own ``init_model`` (every tensor is then checked equal to the generated one) and run through
``inference_topdown(model, image_bgr, bboxes_xywh, bbox_format='xywh')`` with and without the flip test.
Another seed gives another case beside it; the manifest is the same.

mmpose runs in a venv of its own (.venv-mmpose, built here: torch 2.13.0+cpu, numpy 1.26.4, mmengine 0.10.7,
mmcv-lite 2.1.0, mmdet 3.2.0 (CSPNeXt), opencv-python 4.10.0.84, xtcocotools 1.14.3, and mmpose 1.3.2 with
``--no-deps``, because its requirement ``chumpy`` does not build and is used only by SMPL code). As for
../shared/golden's mmpose vectors, two import stubs stand in for what cannot load here, each raising if
anything on it is used (nothing is, on this path): ``mmcv.ops`` (mmcv-lite has no compiled ops; mmpose's
EDPoseHead and mmdet's detection modules import it at module level) and ``torchvision`` (its PyPI wheel
does not load against torch 2.13.0+cpu; mmpose imports it only in ops used by other models and the
visualiser). The child (``--child``) is the only code that runs in that venv.

What is recorded, besides the final keypoints and scores: ``center`` / ``scale`` (``TopdownAffine``'s
``input_center`` / ``input_scale``), ``keypoints_input`` (``head.decode``'s crop-pixel output), the head's raw
outputs of both passes and the flip-averaged ones that are decoded, for a few joints only (``SAMPLE_JOINTS``:
the npz stays small) and mmpose's parsed dataset meta (names, flip indices, links, sigmas).
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
VENV = ".venv-mmpose"
REQUIREMENTS = ["torch==2.13.0", "numpy==1.26.4", "mmengine==0.10.7", "mmcv-lite==2.1.0", "mmdet==3.2.0",
                "opencv-python==4.10.0.84", "xtcocotools==1.14.3", "setuptools<80", "json_tricks", "munkres",
                "matplotlib", "scipy", "pillow", "pytest"]
MMPOSE = "mmpose==1.3.2"  # installed with --no-deps (see above)

# posepipe's name -> (mmpose config under configs/, container of the official file, sample joints)
MODELS = {
    "rtmpose_m_coco_wholebody_256x192": (
        "wholebody_2d_keypoint/rtmpose/coco-wholebody/rtmpose-m_8xb64-270e_coco-wholebody-256x192.py",
        "mmpose 1.x", (0, 9, 17, 20, 23, 39, 60, 91, 99, 112, 120, 132)),
    "rtmpose_m_ap10k_256x256": (
        "animal_2d_keypoint/rtmpose/ap10k/rtmpose-m_8xb64-210e_ap10k-256x256.py",
        "mmpose 1.x", tuple(range(17))),
    "hrnet_w32_ap10k_256x256": (
        "animal_2d_keypoint/topdown_heatmap/ap10k/td-hm_hrnet-w32_8xb64-210e_ap10k-256x256.py",
        "mmpose 0.x", (0, 1, 4, 7, 10, 16)),
}

# Images (the stored array is the input; both are shrunk here in posepipe's venv, cv2.INTER_AREA, to keep
# the npz small) and boxes [x, y, w, h] per seed: a wide box (height extended), a narrow one (width
# extended), one cut by the image border (mmpose does not clip boxes).
IMAGES = {"rtmpose_m_coco_wholebody_256x192": ("messi5.jpg", 0.5), "rtmpose_m_ap10k_256x256": ("basketball1.png", 0.4),
          "hrnet_w32_ap10k_256x256": ("basketball1.png", 0.4)}
BOXES = {
    "messi5.jpg": {0: [[33.25, 29.5, 196.5, 140.25], [185.0, 66.25, 32.0, 66.0], [-7.0, 44.0, 33.0, 32.0]],
                   1: [[40.5, 20.0, 180.0, 150.5], [150.0, 60.0, 50.5, 40.0], [230.0, 100.0, 60.0, 90.0]]},
    "basketball1.png": {0: [[20.5, 30.0, 150.0, 100.25], [120.0, 50.5, 60.0, 120.0], [-10.0, 100.0, 50.0, 60.0]],
                        1: [[60.0, 10.5, 120.5, 160.0], [200.0, 80.0, 70.0, 40.0], [5.0, 5.0, 240.0, 180.0]]},
}


# ---------------------------------------------------------------------------------------------
# Weight amendments (recorded in the npz, so ../shared/golden/README.md's rule reproduces the weights)
# ---------------------------------------------------------------------------------------------

def rtmpose_amendments(manifest: list[dict], seed: int) -> dict[str, np.ndarray]:
    """As for ../shared/golden/rtmpose_m_coco_256x192: the three 1-D leaves the rule names no case for
    (ScaleNorm gains ``g``, ``res_scale.scale``) drawn like a BN weight with their own index, as ``buffer/``;
    x1.375 on every CSPNeXt ConvModule convolution (not ``attention.fc``) and x16 on the GAU's gamma and
    beta, as ``weight_multiplier/``: with the plain rule CSPNeXt forgets the image and the attention
    branch is 1e-6 of its shortcut."""
    out: dict[str, np.ndarray] = {}
    for i, entry in enumerate(manifest):
        name, shape = entry["name"], tuple(entry["shape"])
        if name.endswith((".g", "res_scale.scale")):
            out[f"buffer/{name}"] = np.random.default_rng([seed, i]).uniform(0.5, 1.5, shape).astype(np.float32)
        elif name.startswith("backbone.") and name.endswith(".conv.weight"):
            out[f"weight_multiplier/{name}"] = np.float32(1.375)
        elif name in ("head.gau.gamma", "head.gau.beta"):
            out[f"weight_multiplier/{name}"] = np.float32(16.0)
    return out


# ---------------------------------------------------------------------------------------------
# The venv
# ---------------------------------------------------------------------------------------------

def mmpose_python() -> Path:
    """The python of .venv-mmpose, (re)built when its requirements changed."""
    venv = ROOT / VENV
    python = venv / "bin" / "python"
    stamp = venv / "posepipe-requirements.txt"
    wanted = "\n".join(REQUIREMENTS + [MMPOSE + " --no-deps"]) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *REQUIREMENTS], check=True, timeout=1800)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", MMPOSE], check=True, timeout=600)
    stamp.write_text(wanted)
    return python


# ---------------------------------------------------------------------------------------------
# The child: mmpose's code, in its venv
# ---------------------------------------------------------------------------------------------

def install_stubs() -> None:  # pragma: no cover - runs in .venv-mmpose
    """``mmcv.ops`` and ``torchvision`` as modules whose every name is a class that raises when built."""
    import importlib.abc
    import importlib.machinery
    import types

    class Unavailable:
        def __init__(self, *args, **kwargs):
            raise RuntimeError(f"{type(self).__name__}: an import stub was used (see the module docstring)")

    class StubModule(types.ModuleType):
        def __getattr__(self, attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return type(attr, (Unavailable,), {})

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        roots = ("mmcv.ops", "torchvision")

        def find_spec(self, name, path, target=None):
            if any(name == r or name.startswith(r + ".") for r in self.roots):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            module = StubModule(spec.name)
            module.__path__ = []
            return module

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, Finder())


def child(scratch: Path, name: str, seed: int) -> None:  # pragma: no cover - runs in .venv-mmpose
    # Imports here: this function runs in mmpose's venv, where posepipe's dependencies are not installed
    # and the stubs must be in place before mmpose is imported.
    install_stubs()
    sys.path.insert(0, str(ROOT))
    import mmpose
    import torch
    from mmpose.apis import init_model, inference_topdown
    from mmpose.datasets.transforms import TopdownAffine

    from tests.golden import generate_state_dict

    torch.set_num_threads(1)
    config_rel, container, sample = MODELS[name]
    config = Path(mmpose.__file__).parent / ".mim" / "configs" / config_rel
    model = init_model(str(config), None, device="cpu")
    manifest = [{"name": k, "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                for k, v in model.state_dict().items()]
    (scratch / "manifest.json").write_text(json.dumps(manifest, indent=0))
    extra = rtmpose_amendments(manifest, seed) if name.startswith("rtmpose") else {}
    case = {"seed": np.int64(seed), **extra}
    state = generate_state_dict(scratch / "manifest.json", case)
    if container == "mmpose 0.x":  # a 2021 mmpose 0.x file: the head under keypoint_head.*
        saved = {k.replace("head.", "keypoint_head.", 1) if k.startswith("head.") else k: v for k, v in state.items()}
        meta = {"mmcv_version": "1.3.9", "mmpose_version": "0.19.0", "epoch": 210, "iter": 0}
    else:
        saved = dict(state)
        meta = {"mmengine_version": "0.4.0", "mmcv_version": "2.0.0rc3", "epoch": 270, "seed": 21}
    torch.save({"meta": meta, "state_dict": saved}, scratch / "checkpoint.pth")
    model = init_model(str(config), str(scratch / "checkpoint.pth"), device="cpu")
    loaded = model.state_dict()
    assert list(loaded) == list(state), "init_model's state_dict keys differ from the manifest's"
    for k, v in state.items():
        assert torch.equal(loaded[k], v), f"{k} was not loaded as generated"

    inputs = np.load(scratch / "inputs.npz")
    image, boxes = inputs["image_bgr"], inputs["bboxes_xywh"]
    record: dict[str, list] = {"forward": [], "decode_in": [], "decode_out": [], "affine": []}
    head = model.head
    forward, decode = head.forward, head.decode

    def head_forward(feats):
        out = forward(feats)
        record["forward"].append(out)
        return out

    def head_decode(batch_outputs):
        record["decode_in"].append(batch_outputs)
        preds = decode(batch_outputs)
        # copied now: add_pred_to_datasample later maps these instances' keypoints to the image
        record["decode_out"].append([np.array(p.keypoints, copy=True) for p in preds])
        return preds

    head.forward, head.decode = head_forward, head_decode
    affine = TopdownAffine.transform

    def affine_transform(self, results):
        out = affine(self, results)
        record["affine"].append((np.array(out["input_center"], np.float32), np.array(out["input_scale"], np.float32)))
        return out

    TopdownAffine.transform = affine_transform
    out: dict[str, np.ndarray] = {}
    sample_idx = np.array(sample)

    def pick(t) -> np.ndarray:
        return (t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t))[:, sample_idx].astype(np.float32)

    heatmap = name.startswith("hrnet")
    for flip, suffix in ((True, ""), (False, "_noflip")):
        for v in record.values():
            v.clear()
        model.test_cfg["flip_test"] = flip
        with torch.no_grad():
            results = inference_topdown(model, image, boxes, bbox_format="xywh")
        out["keypoints" + suffix] = np.stack([r.pred_instances.keypoints[0] for r in results]).astype(np.float32)
        out["scores" + suffix] = np.stack([r.pred_instances.keypoint_scores[0] for r in results]).astype(np.float32)
        out["keypoints_input" + suffix] = np.concatenate(record["decode_out"][0]).astype(np.float32)
        if flip:
            out["center"] = np.concatenate([c for c, _ in record["affine"]]).reshape(-1, 2)
            out["scale"] = np.concatenate([s for _, s in record["affine"]]).reshape(-1, 2)
            if heatmap:
                out["heatmaps"] = pick(record["forward"][0])
                out["heatmaps_flipped"] = pick(record["forward"][1])
                out["heatmaps_flip_avg"] = pick(record["decode_in"][0])
            else:
                for i, key in ((0, "simcc_x"), (1, "simcc_y")):
                    out[key] = pick(record["forward"][0][i])
                    out[key + "_flipped"] = pick(record["forward"][1][i])
                    out[key + "_flip_avg"] = pick(record["decode_in"][0][i])
    meta = model.dataset_meta
    out["keypoint_names"] = np.array([meta["keypoint_id2name"][i] for i in range(meta["num_keypoints"])])
    out["flip_indices"] = np.array(meta["flip_indices"], np.int64)
    out["skeleton_links"] = np.array(meta["skeleton_links"], np.int64)
    out["sigmas"] = np.array(meta["sigmas"], np.float32)
    out["sample_joints"] = sample_idx.astype(np.int64)
    out["mmpose_version"] = np.array(mmpose.__version__)
    out["torch_version"] = np.array(torch.__version__)
    out["config"] = np.array(config_rel)
    out.update(extra)
    np.savez(scratch / "result.npz", **out)


# ---------------------------------------------------------------------------------------------
# Parent (posepipe's venv)
# ---------------------------------------------------------------------------------------------

def case_inputs(name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(image_bgr, bboxes_xywh) of a model's case for `seed` (seeds without listed boxes reuse seed 0's, shifted)."""
    # tests.* is importable once main() has put the repository root on the path (run as a script).
    from tests.golden import MEDIA

    filename, factor = IMAGES[name]
    image = cv2.imread(str(MEDIA / filename), cv2.IMREAD_COLOR)
    image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    boxes = BOXES[filename].get(seed)
    if boxes is None:
        shift = np.random.default_rng(seed).uniform(-8, 8, (3, 2))
        boxes = np.array(BOXES[filename][0]) + np.hstack([shift, shift * 0.5])
    return np.ascontiguousarray(image), np.asarray(boxes, np.float32)


def generate(name: str, seed: int, out_root: Path) -> Path:
    python = mmpose_python()
    # tests.* is importable once main() has put the repository root on the path (run as a script).
    from tests.side_venv import clean_env

    image, boxes = case_inputs(name, seed)
    with tempfile.TemporaryDirectory(prefix="mmpose-ref-") as tmp:
        scratch = Path(tmp)
        np.savez(scratch / "inputs.npz", image_bgr=image, bboxes_xywh=boxes)
        done = subprocess.run([str(python), str(Path(__file__).resolve()), "--child", str(scratch), name, str(seed)],
                              cwd=ROOT, env={**clean_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"mmpose failed on {name}:\n{done.stderr[-6000:]}")
        result = dict(np.load(scratch / "result.npz"))
        manifest = (scratch / "manifest.json").read_text()
    out_dir = out_root / f"golden_{name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "manifest.json"
    if manifest_path.exists() and manifest_path.read_text() != manifest:
        print(f"note: {manifest_path} changed; rewritten", file=sys.stderr)
    manifest_path.write_text(manifest)
    out = out_dir / f"case_seed{seed}.npz"
    np.savez_compressed(out, seed=np.int64(seed), image_bgr=image, bboxes_xywh=boxes, **result)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", action="append", choices=sorted(MODELS), help="default: all")
    parser.add_argument("--out-root", type=Path, default=HERE,
                        help="where golden_<name>/ folders go (default: tests/models)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    for name in args.model or sorted(MODELS):
        print(generate(name, args.seed, args.out_root))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    else:
        main()
