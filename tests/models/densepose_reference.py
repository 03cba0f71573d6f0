"""Reference vectors from detectron2's own DensePose code, run unmodified, for tests/models/test_densepose.py.

    .venv/bin/python tests/models/densepose_reference.py --detectron2 DETECTRON2 [--seed 0] [--out-dir DIR]

DETECTRON2 is facebookresearch/detectron2, a clone or a bare mirror holding the commit named below
($POSEPIPE_DETECTRON2_SOURCE stands for the option). Its tree at that commit is taken with ``git archive``
(so the code is the code as published, byte for byte), built from source into a venv of its own
(.venv-detectron2: detectron2 has no wheel; ``pip install --no-build-isolation --no-deps`` of the tree
beside torch 2.14.1 + torchvision 0.29.1, the pair that loads together on this machine's disk, CPU
only), and ``projects/DensePose`` is put on the path as its README says. Nothing of it is stubbed.

What runs, in that venv (``child``), with config ``projects/DensePose/configs/densepose_rcnn_R_50_FPN_s1x.yaml``
(``add_densepose_config`` + ``merge_from_file``, MODEL.DEVICE cpu, float32, one thread):

1. ``build_model(cfg)``; its ``state_dict()`` names, shapes and dtypes in order are the manifest (the RPN
   and box head included: the official file has them);
2. weights from the manifest and the seed by ../shared/golden/README.md's rule (tests/golden.py's
   ``generate_state_dict``, the same code the test uses), written as the official container, a pickle
   of ``{'model': {name: float32 ndarray}, '__author__': 'Detectron2 Model Zoo'}``, and loaded by
   ``DensePoseCheckpointer`` (detectron2's own loader for it). Random weights leave U and V far outside
   [0, 1] (quantised they would be all 0 or 255) and the coarse segmentation all one class, so four
   head leaves are designed, and recorded in the npz as the rule allows: ``weight_multiplier/`` of
   ``u_lowres.weight`` and ``v_lowres.weight`` (0.25 / the spread detectron2's model gives them on these
   frames with the rule's weights), ``buffer/`` ``u_lowres.bias`` = ``v_lowres.bias`` = 0.5, and
   ``buffer/ann_index_lowres.bias`` = [0, b] with b putting 65 % of the pixels in the foreground;
3. per frame, what ``DefaultPredictor`` does (``ResizeShortestEdge(800, 1333)``, float32 BGR CHW, height and
   width) with the given boxes moved to the network input by the same transform's ``apply_box`` and
   handed to ``GeneralizedRCNN.inference([inputs], detected_instances=[Instances(pred_boxes, pred_classes)])``;
   intermediate tensors are caught with forward hooks (backbone p2..p5, decoder, ``densepose_pooler``,
   ``densepose_head``, ``densepose_predictor``) and kept at fixed random positions;
4. the results as detectron2 stores them: ``DensePoseResultExtractor`` (``apply_net.py dump``'s) gives each
   kept box's ``DensePoseChartResultWithConfidences``; ``quantize_densepose_chart_result`` then
   ``compress_quantized_densepose_chart_result`` give the base64 PNG, kept as its PNG bytes;
5. alone: ``detectron2.layers.ROIAlign`` (torchvision's roi_align) on a small map with awkward boxes, both
   ``aligned`` and sampling ratios 2 and 0; a ``DensePoseChartPredictor(cfg, 8)`` (ConvTranspose2d +
   interpolate) on a small input with its own seeded weights; and ``densepose_chart_predictor_output_to_result``
   on that output with given boxes.

Frames: vtest.avi's first frame and messi5.jpg, each shrunk to half (384x288, 274x171; cv2.INTER_AREA in
posepipe's venv, to keep the npz small: the network input is 800 pixels high whatever the frame); both are
stored in the npz, so the test needs neither the media nor this venv.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# Only the standard library and numpy at the top: this one file runs in two venvs, posepipe's (the
# parent: cv2, tests/) and .venv-detectron2 (the child: detectron2, DensePose), so each side imports
# what it needs inside the functions that run there, after putting the repository on sys.path (the
# file is run as a script, not as a module of the tests package).
DETECTRON2_REPO = "facebookresearch/detectron2"
DETECTRON2_COMMIT = "02b5c4e295e990042a714712c21dc79b731e8833"
CONFIG = "projects/DensePose/configs/densepose_rcnn_R_50_FPN_s1x.yaml"
VENV = ".venv-detectron2"
REQUIREMENTS = ["torch==2.14.1", "torchvision==0.29.1", "numpy==2.4.6", "pillow==13.0.0", "setuptools<80", "wheel",
                "ninja", "matplotlib", "pycocotools", "termcolor", "yacs", "tabulate", "cloudpickle", "tqdm",
                "tensorboard", "fvcore>=0.1.5,<0.1.6", "iopath>=0.1.7,<0.1.10", "omegaconf>=2.1,<2.4",
                "hydra-core>=1.1", "black", "packaging", "scipy", "opencv-python-headless", "av", "pytest"]
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT_DIR = HERE / "golden_densepose"

# Boxes (x1, y1, x2, y2, frame pixels) per frame: people, and the cases a box can be: part outside the
# frame (clipped), below one feature cell (ROIAlign's 1-cell minimum, a 1x1 chart), wholly outside
# (detectron2 drops it), corners on integers (the float round trip through the network input).
BOXES = {
    "vtest": [[122.3, 105.0, 146.0, 157.6], [246.0, 74.25, 269.5, 119.0], [316.7, 116.0, 346.2, 164.9],
              [370.0, 200.0, 400.5, 300.0], [10.0, 10.0, 10.6, 10.4], [400.0, 10.0, 420.0, 40.0],
              [100.0, 20.0, 130.0, 80.0]],
    "messi5": [[30.0, 27.5, 232.5, 169.0], [192.25, 73.1, 220.4, 131.45]],
}
SAMPLES = {"p2": 2048, "p3": 2048, "p4": 2048, "p5": 2048, "decoded": 4096, "pooled": 1024, "head": 1024,
           "coarse_segm": 1024, "fine_segm": 2048, "u": 2048, "v": 2048}
FOREGROUND = 0.65
UV_SPREAD = 0.25


# ---------------------------------------------------------------------------------------------
# Inputs (parent, posepipe's venv)
# ---------------------------------------------------------------------------------------------


def frames() -> dict[str, np.ndarray]:
    import cv2

    sys.path.insert(0, str(ROOT))
    from tests.golden import MEDIA

    cap = cv2.VideoCapture(str(MEDIA / "vtest.avi"))
    ok, first = cap.read()
    cap.release()
    messi = cv2.imread(str(MEDIA / "messi5.jpg"))
    if not ok or messi is None:
        raise SystemExit(f"{MEDIA}: vtest.avi and messi5.jpg are needed")
    return {"vtest": cv2.resize(first, (384, 288), interpolation=cv2.INTER_AREA),
            "messi5": cv2.resize(messi, (274, 171), interpolation=cv2.INTER_AREA)}


# ---------------------------------------------------------------------------------------------
# The venv with detectron2 built from source
# ---------------------------------------------------------------------------------------------


def detectron2_venv(source: Path) -> tuple[Path, Path]:
    """(python of .venv-detectron2 with detectron2 at DETECTRON2_COMMIT installed, its source tree)."""
    sys.path.insert(0, str(ROOT))
    from tests.side_venv import clean_env, side_python

    python = side_python(VENV, REQUIREMENTS, what="detectron2's dependencies")
    tree = ROOT / VENV / "src" / f"detectron2-{DETECTRON2_COMMIT[:12]}"
    stamp = ROOT / VENV / "detectron2-commit.txt"
    if stamp.exists() and stamp.read_text().strip() == DETECTRON2_COMMIT and tree.is_dir():
        return python, tree
    if tree.exists():
        shutil.rmtree(tree)
    tree.parent.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(source), "archive", f"--prefix={tree.name}/", DETECTRON2_COMMIT],
                             capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"{source} does not hold {DETECTRON2_REPO}@{DETECTRON2_COMMIT[:12]}: "
                         f"{archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(tree.parent)], input=archive.stdout, check=True)
    # CPU build (no CUDA visible); one compile job: the machine is shared.
    env = {**clean_env(), "MAX_JOBS": "1", "FORCE_CUDA": "0"}
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", str(tree)],
                   env=env, check=True, timeout=3600)
    stamp.write_text(DETECTRON2_COMMIT + "\n")
    return python, tree


# ---------------------------------------------------------------------------------------------
# The child: detectron2's code, in its venv
# ---------------------------------------------------------------------------------------------


def child(tree: Path, scratch: Path, seed: int) -> None:  # pragma: no cover - runs in .venv-detectron2
    import pickle

    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(tree / "projects" / "DensePose"))
    import detectron2
    import detectron2.data.transforms as T
    from detectron2.config import get_cfg
    from detectron2.layers import ROIAlign
    from detectron2.modeling import build_model
    from detectron2.structures import Boxes, Instances

    from densepose import add_densepose_config
    from densepose.converters import densepose_chart_predictor_output_to_result
    from densepose.modeling.densepose_checkpoint import DensePoseCheckpointer
    from densepose.modeling.predictors import DensePoseChartPredictor
    from densepose.structures import compress_quantized_densepose_chart_result, quantize_densepose_chart_result
    from densepose.vis.extractor import DensePoseResultExtractor
    from tests.golden import generate_state_dict

    assert Path(detectron2.__file__).resolve().is_relative_to(ROOT / VENV), detectron2.__file__
    inputs = dict(np.load(scratch / "inputs.npz"))
    out: dict[str, np.ndarray] = {}
    rng = np.random.default_rng([seed, 99])

    cfg = get_cfg()
    add_densepose_config(cfg)
    cfg.merge_from_file(str(tree / CONFIG))
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    model = build_model(cfg).eval()

    manifest = [{"name": k, "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                for k, v in model.state_dict().items()]
    (scratch / "manifest.json").write_text("[\n" + ",\n".join(json.dumps(e) for e in manifest) + "\n]\n")

    def write_container(case: dict, path: Path) -> None:
        state = generate_state_dict(scratch / "manifest.json", case)
        container = {"model": {k: v.numpy() for k, v in state.items()}, "__author__": "Detectron2 Model Zoo"}
        with open(path, "wb") as f:
            pickle.dump(container, f)

    def load(path: Path, case: dict) -> None:
        """detectron2's loader, then a check that it took every tensor (fvcore only logs what it skips)."""
        DensePoseCheckpointer(model).load(str(path))
        expected = generate_state_dict(scratch / "manifest.json", case)
        for k, v in model.state_dict().items():
            assert torch.equal(v, expected[k]), f"DensePoseCheckpointer did not load {k}"

    caught: dict[str, object] = {}

    def hook(name: str):
        def store(module, args, output):
            caught[name] = output
            if name == "backbone":
                caught["images"] = args[0]
        return store

    heads = model.roi_heads
    for name, module in (("backbone", model.backbone), ("decoder", heads.decoder), ("pooled", heads.densepose_pooler),
                         ("head", heads.densepose_head), ("predictor", heads.densepose_predictor),
                         ("u_low", heads.densepose_predictor.u_lowres), ("v_low", heads.densepose_predictor.v_lowres),
                         ("coarse_low", heads.densepose_predictor.ann_index_lowres)):
        module.register_forward_hook(hook(name))
    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)

    def run(frame: np.ndarray, boxes: np.ndarray):
        """DefaultPredictor.__call__ with detected_instances: the boxes through the same transform."""
        height, width = frame.shape[:2]
        transform = aug.get_transform(frame)
        image = transform.apply_image(frame)
        tensor = torch.as_tensor(image.astype("float32").transpose(2, 0, 1))
        given = Instances((image.shape[0], image.shape[1]))
        given.pred_boxes = Boxes(torch.as_tensor(transform.apply_box(boxes.astype(np.float64)), dtype=torch.float32))
        given.pred_classes = torch.zeros(len(boxes), dtype=torch.int64)
        given.box_index = torch.arange(len(boxes))
        input_boxes = given.pred_boxes.tensor.clone()  # detector_postprocess scales these Boxes in place
        with torch.no_grad():
            result = model.inference([{"image": tensor, "height": height, "width": width}],
                                     detected_instances=[given])[0]["instances"]
        return image, input_boxes, result

    # Design the four head leaves on the rule's weights (see the module docstring).
    case = {"seed": np.int64(seed)}
    write_container(case, scratch / "rule.pkl")
    load(scratch / "rule.pkl", case)
    lows = {"u": [], "v": [], "coarse": []}
    for key in BOXES:
        run(inputs[f"frame/{key}"], inputs[f"boxes/{key}"])
        for name in ("u", "v"):
            bias = getattr(heads.densepose_predictor, f"{name}_lowres").bias
            lows[name].append((caught[f"{name}_low"] - bias[None, :, None, None]).flatten())
        c = caught["coarse_low"] - heads.densepose_predictor.ann_index_lowres.bias[None, :, None, None]
        lows["coarse"].append((c[:, 1] - c[:, 0]).flatten())
    prefix = "roi_heads.densepose_predictor."
    for name in ("u", "v"):
        spread = float(torch.cat(lows[name]).std())
        case[f"weight_multiplier/{prefix}{name}_lowres.weight"] = np.float32(float(f"{UV_SPREAD / spread:.4g}"))
        case[f"buffer/{prefix}{name}_lowres.bias"] = np.full(25, 0.5, np.float32)
    shift = -float(torch.quantile(torch.cat(lows["coarse"])[:1_000_000], 1.0 - FOREGROUND))
    case[f"buffer/{prefix}ann_index_lowres.bias"] = np.array([0.0, float(f"{shift:.4g}")], np.float32)
    out.update({k: v for k, v in case.items() if k != "seed"})

    write_container(case, scratch / "model_final.pkl")
    load(scratch / "model_final.pkl", case)
    for key in BOXES:
        frame, boxes = inputs[f"frame/{key}"], inputs[f"boxes/{key}"]
        image, input_boxes, result = run(frame, boxes)
        p = f"{key}/"
        out[p + "resized_sha256"] = np.array(hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest())
        out[p + "input_hw"] = np.array(image.shape[:2], np.int64)
        out[p + "images_sha256"] = np.array(hashlib.sha256(caught["images"].numpy().tobytes()).hexdigest())
        out[p + "images_shape"] = np.array(caught["images"].shape, np.int64)
        out[p + "input_boxes"] = input_boxes.numpy()
        tensors = {**{f"p{i}": caught["backbone"][f"p{i}"] for i in range(2, 6)}, "decoded": caught["decoder"],
                   "pooled": caught["pooled"], "head": caught["head"]}
        predictor = caught["predictor"]
        tensors.update({k: getattr(predictor, k) for k in ("coarse_segm", "fine_segm", "u", "v")})
        for name, t in tensors.items():
            t = t.detach().numpy()
            index = rng.integers(0, t.size, SAMPLES[name])
            out[p + f"{name}/shape"] = np.array(t.shape, np.int64)
            out[p + f"{name}/index"] = index
            out[p + f"{name}/values"] = t.reshape(-1)[index]
            out[p + f"{name}/max_abs"] = np.float32(np.abs(t).max())
        results, boxes_xywh = DensePoseResultExtractor()(result)
        out[p + "kept"] = result.box_index.numpy()
        out[p + "boxes_xyxy"] = result.pred_boxes.tensor.numpy()
        out[p + "boxes_xywh"] = boxes_xywh.numpy()
        for i, chart in enumerate(results):
            quantized = quantize_densepose_chart_result(chart)
            compressed = compress_quantized_densepose_chart_result(quantized)
            png = base64.decodebytes(compressed.labels_uv_str.encode())
            out[p + f"chart{i}/png"] = np.frombuffer(png, np.uint8)
            out[p + f"chart{i}/shape_chw"] = np.array(compressed.shape_chw, np.int64)
            out[p + f"chart{i}/iuv_sha256"] = np.array(hashlib.sha256(quantized.labels_uv_uint8.numpy().tobytes()).hexdigest())

    # ROIAlign alone
    feats = rng.normal(0, 1, (2, 3, 9, 11)).astype(np.float32)
    rois = np.array([[0, 1.3, 2.2, 14.7, 12.9], [1, -3.0, -2.0, 5.0, 4.0], [0, 17.0, 10.0, 30.0, 25.0],
                     [1, 4.4, 4.4, 4.6, 4.5], [0, 0.0, 0.0, 22.0, 18.0], [1, 20.5, 1.0, 21.9, 17.5],
                     [0, -9.0, 5.0, -2.5, 9.0], [1, 6.25, 3.75, 18.0, 8.0]], np.float32)
    out["roialign/features"], out["roialign/rois"] = feats, rois
    for aligned in (False, True):
        for ratio in (2, 0):
            layer = ROIAlign((5, 4), spatial_scale=0.5, sampling_ratio=ratio, aligned=aligned)
            out[f"roialign/aligned{int(aligned)}_ratio{ratio}"] = layer(torch.from_numpy(feats), torch.from_numpy(rois)).numpy()

    # The predictor alone (ConvTranspose2d + interpolate), then the chart result of its output
    small = DensePoseChartPredictor(cfg, 8).eval()
    small_manifest = [{"name": k, "shape": list(v.shape), "dtype": "float32"} for k, v in small.state_dict().items()]
    (scratch / "predictor_manifest.json").write_text(json.dumps(small_manifest))
    small.load_state_dict(generate_state_dict(scratch / "predictor_manifest.json", {"seed": np.int64(seed)}))
    x = rng.normal(0, 1, (1, 8, 5, 6)).astype(np.float32)
    with torch.no_grad():
        y = small(torch.from_numpy(x))
    out["predictor/input"] = x
    out["predictor/manifest"] = np.array(json.dumps(small_manifest))
    for k in ("coarse_segm", "fine_segm", "u", "v"):
        out[f"predictor/{k}"] = getattr(y, k).numpy()
    chart_boxes = np.array([[3.0, 4.0, 40.9, 71.2], [0.5, 0.5, 1.2, 300.0]], np.float32)
    out["predictor/boxes"] = chart_boxes
    for i in range(2):
        r = densepose_chart_predictor_output_to_result(y[0], Boxes(torch.from_numpy(chart_boxes[i:i + 1])))
        out[f"predictor/labels{i}"] = r.labels.numpy().astype(np.uint8)
        out[f"predictor/uv{i}"] = r.uv.numpy()
    import PIL

    out["torch_version"] = np.array(torch.__version__)
    out["pillow_version"] = np.array(PIL.__version__)
    np.savez(scratch / "result.npz", **out)


# ---------------------------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------------------------


def generate(source: Path, seed: int, out_dir: Path) -> Path:
    python, tree = detectron2_venv(source)
    from tests.side_venv import clean_env

    pictures = frames()
    with tempfile.TemporaryDirectory(prefix="densepose-ref-") as tmp:
        scratch = Path(tmp)
        np.savez(scratch / "inputs.npz", **{f"frame/{k}": v for k, v in pictures.items()},
                 **{f"boxes/{k}": np.array(b, np.float64) for k, b in BOXES.items()})
        done = subprocess.run([str(python), str(Path(__file__).resolve()), "--child", str(tree), str(scratch), str(seed)],
                              cwd=ROOT, env={**clean_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"detectron2's DensePose failed:\n{done.stderr[-6000:]}")
        result = dict(np.load(scratch / "result.npz"))
        manifest = (scratch / "manifest.json").read_text()
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "manifest.json"
    if manifest_path.exists() and manifest_path.read_text() != manifest:
        print(f"note: {manifest_path} changed (another commit?); rewritten", file=sys.stderr)
    manifest_path.write_text(manifest)
    out = out_dir / f"case_seed{seed}.npz"
    np.savez_compressed(
        out, seed=np.int64(seed), detectron2_commit=np.array(DETECTRON2_COMMIT), config=np.array(CONFIG),
        **{f"frame/{k}": v for k, v in pictures.items()},
        **{f"boxes/{k}": np.array(b, np.float64) for k, b in BOXES.items()}, **result)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detectron2", type=Path, default=os.environ.get("POSEPIPE_DETECTRON2_SOURCE"),
                        help=f"{DETECTRON2_REPO} holding {DETECTRON2_COMMIT[:12]}: a clone or a bare mirror")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR,
                        help="where manifest.json and case_seed<SEED>.npz go (default: tests/models/golden_densepose)")
    args = parser.parse_args()
    if args.detectron2 is None:
        parser.error("--detectron2 (or $POSEPIPE_DETECTRON2_SOURCE) is needed")
    print(generate(args.detectron2, args.seed, args.out_dir))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
