"""Run inside a venv with mmaction2 1.2.0 (tests/pipeline/downstream/test_mmaction.py builds it); prints JSON.

    python mmaction_check.py DATA_DIR

DATA_DIR holds ``ds2d.pkl`` and ``ds3d.pkl`` (+ ``ds3d.mmaction2.py``, ``posepipe_h36m.py``) written by
posepipe's exporter. For each of mmaction2's shipped PoseC3D (2D heatmaps) and ST-GCN (2D COCO)
configs and the written H36M-17 ST-GCN config (3D joints, and bones through posepipe_h36m), this
loads the pickle with mmaction2's real PoseDataset and pipelines, then runs one training step
(forward, loss, backward). For 3D it also measures bone lengths before and after PreNormalize3D.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np


def _patch_missing_drn() -> None:
    """mmaction2 1.2.0's wheel lacks mmaction/models/localizers/drn (open-mmlab/mmaction2#2714), which
    `mmaction.models` imports: give it an empty stand-in (DRN is a localizer, unused here)."""
    import importlib.util
    import types

    spec = importlib.util.find_spec("mmaction")
    drn = Path(spec.submodule_search_locations[0]) / "models" / "localizers" / "drn"
    if not drn.exists():
        for name in ("mmaction.models.localizers.drn", "mmaction.models.localizers.drn.drn"):
            module = types.ModuleType(name)
            module.DRN = None
            module.__path__ = []
            sys.modules[name] = module


def train_step(cfg, dataset_cfg, pipeline=None) -> dict:
    import torch
    from mmaction.registry import DATASETS, MODELS
    from mmengine.dataset import pseudo_collate

    dataset_cfg = dict(dataset_cfg)
    if pipeline is not None:
        dataset_cfg["pipeline"] = pipeline
    dataset = DATASETS.build(dataset_cfg)
    model = MODELS.build(cfg.model)
    model.train()
    batch = pseudo_collate([dataset[i] for i in range(min(2, len(dataset)))])
    data = model.data_preprocessor(batch, training=True)
    losses = model(**data, mode="loss")
    loss = sum(v for k, v in losses.items() if "loss" in k)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return {"samples": len(dataset), "input_shape": list(data["inputs"].shape), "loss": float(loss),
            "finite_grads": bool(grads) and all(bool(torch.isfinite(g).all()) for g in grads)}


def bone_lengths(keypoint: np.ndarray, pairs) -> np.ndarray:
    """(M, T, V, 3) -> (M, T, bones) lengths over the non-root pairs."""
    pairs = [(a, b) for a, b in pairs if a != b]
    return np.stack([np.linalg.norm(keypoint[..., a, :] - keypoint[..., b, :], axis=-1) for a, b in pairs], -1)


def main(data: Path) -> dict:
    _patch_missing_drn()
    import mmaction
    from mmaction.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules(init_default_scope=True)
    os.chdir(data)
    out: dict = {"mmaction": mmaction.__version__}
    splits = {"split": "all"}

    # 2D: the shipped PoseC3D (SlowOnly-R50 on keypoint heatmaps) and ST-GCN (COCO layout) configs as they are,
    # only the pickle, split and class count changed.
    shipped = Path(mmaction.__file__).parent / ".mim" / "configs" / "skeleton"
    for name, config in (("posec3d_2d", "posec3d/slowonly_r50_8xb16-u48-240e_ntu60-xsub-keypoint.py"),
                         ("stgcn_2d", "stgcn/stgcn_8xb16-joint-u100-80e_ntu60-xsub-keypoint-2d.py")):
        cfg = Config.fromfile(str(shipped / config))
        cfg.model.cls_head.num_classes = 2
        inner = cfg.train_dataloader.dataset
        inner = inner.dataset if inner.type == "RepeatDataset" else inner
        inner.update(ann_file=str(data / "ds2d.pkl"), data_prefix={}, **splits)
        out[name] = train_step(cfg, inner)

    # 3D: the config written beside the pickle (mmaction2's 3D ST-GCN config as base, H36M-17 layout and axes).
    cfg = Config.fromfile(str(data / "ds3d.mmaction2.py"))
    inner = cfg.train_dataloader.dataset.dataset
    out["stgcn_3d_joint"] = train_step(cfg, inner)

    # Bones through posepipe_h36m (custom_imports), as the config's header says.
    sys.path.insert(0, str(data))
    import posepipe_h36m

    bone_pipeline = [step for step in cfg.train_pipeline if step["type"] != "GenSkeFeat"]
    bone_pipeline[1:1] = [dict(type="H36MJointToBone", target="b"), dict(type="MergeSkeFeat", feat_list=["b"])]
    out["stgcn_3d_bone"] = train_step(cfg, inner, bone_pipeline)

    # Bone lengths before and after PreNormalize3D (with the written axes), over every annotation. Each
    # person of the test data is rigid (constant bone lengths): every frame PreNormalize3D returns must
    # keep one of the original persons' bone vectors.
    import pickle

    from mmaction.datasets.transforms import PreNormalize3D
    annotations = pickle.load(open(data / "ds3d.pkl", "rb"))["annotations"]
    pairs = posepipe_h36m.H36M17_BONE_PAIRS
    pre = PreNormalize3D(**{k: v for k, v in cfg.pre_normalize_3d.items() if k != "type"})

    def error(keypoint: np.ndarray, truth: list[np.ndarray]) -> float:
        result = pre.transform({"keypoint": keypoint, "total_frames": keypoint.shape[1]})["keypoint"]
        worst = 0.0
        for person in result:
            present = np.abs(person).sum(axis=(1, 2)) > 0
            lengths = bone_lengths(person[present], pairs)
            if len(lengths):
                worst = max(worst, float(min(np.abs(lengths - t).max() for t in truth)))
        return worst

    worst, worst_zero_pelvis = 0.0, 0.0
    for ann in annotations:
        kp = ann["keypoint"].astype(np.float64)
        truth = [bone_lengths(p[np.abs(p).sum(axis=(1, 2)) > 0][:1], pairs)[0] for p in kp]
        worst = max(worst, error(kp.copy(), truth))
        # what happened before: the same skeletons written pelvis-relative (pelvis exactly at 0, 0, 0)
        relative = np.where(np.abs(kp).sum(-1, keepdims=True) > 0, kp - kp[..., :1, :], 0.0)
        worst_zero_pelvis = max(worst_zero_pelvis, error(relative, truth))
    out["bone_length_max_error_m"] = worst
    out["bone_length_max_error_zero_pelvis_m"] = worst_zero_pelvis
    out["persons"] = sorted({int(a["keypoint"].shape[0]) for a in annotations})
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
