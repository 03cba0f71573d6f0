"""Checkpoint files written the way each official release's own code wrote them (a test helper).

Our modern re-saves are not enough: the real files are older. Each writer here reproduces its
release's serialisation in structure:

- VideoPose3D ``pretrained_h36m_detectron_coco.bin`` (2019, ``run.py``): torch's legacy (non-zip)
  format, pickle protocol 2, storages tagged ``cuda:0``; ``random_state`` is the generator's
  ``np.random.RandomState`` *object*, which numpy 1.16 pickled as
  ``GLOBAL numpy.random __RandomState_ctor``, ``EMPTY_TUPLE``, ``REDUCE``,
  ``BUILD ('MT19937', key, pos, has_gauss, gauss)``, its arrays as
  ``numpy.core.multiarray._reconstruct``.
- SPIN ``model_checkpoint.pt`` (2019, ``utils/saver.py``): legacy format, protocol 2,
  ``{'model', 'optimizer', 'epoch', 'batch_idx', 'batch_size', 'dataset_perm', 'total_step_count'}``.
- YOLOX ``yolox_s.pth`` (2021, ``yolox/core/trainer.py``): zip format, protocol 2,
  ``{'start_epoch', 'model', 'optimizer', 'amp'}``.
- mmpose 0.x ``hrnet_w32_coco_256x192-c78dce93_20200708.pth`` (mmcv 1.0 ``save_checkpoint`` then
  ``publish_model``): legacy format, ``{'meta': {... numpy scalars ...}, 'state_dict'}`` with mmpose
  0.x keys and the state dict's ``_metadata``; mmpose 1.x (mmengine): zip format, ``meta`` with numpy
  arrays in ``dataset_meta``, and ``data_preprocessor.mean/std`` in the state dict.

`pickle_globals(path)` lists the GLOBALs a file's pickle names, to check a fixture is what it claims.
"""
from __future__ import annotations

import io
import pickle
import pickletools
import types
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch


def _np116_reconstruct() -> None:
    """Marker: written as GLOBAL numpy.core.multiarray _reconstruct (numpy < 2's path)."""


def _np116_scalar() -> None:
    """Marker: written as GLOBAL numpy.core.multiarray scalar."""


def _np116_randomstate_ctor() -> None:
    """Marker: written as GLOBAL numpy.random __RandomState_ctor (numpy <= 1.16)."""


_OLD_NAMES = {
    _np116_reconstruct: ("numpy.core.multiarray", "_reconstruct"),
    _np116_scalar: ("numpy.core.multiarray", "scalar"),
    _np116_randomstate_ctor: ("numpy.random", "__RandomState_ctor"),
}


class _OldNumpyPickler(pickle._Pickler):  # the pure-Python pickler: save_global can be overridden
    """Pickles numpy objects as numpy 1.16 did; optionally tags storages with a CUDA location."""

    storage_location: str | None = None

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is np.random.RandomState:
            return _np116_randomstate_ctor, (), obj.get_state(legacy=True)
        if type(obj) is np.ndarray:
            return _np116_reconstruct, (np.ndarray, (0,), b"b"), obj.__reduce__()[2]
        if isinstance(obj, np.generic):
            return _np116_scalar, (obj.dtype, obj.tobytes())
        if isinstance(obj, np.dtype):
            # numpy 1.16: dtype('u4', 0, 1), then BUILD with the byte order and flags.
            return np.dtype, (obj.str[1:], 0, 1), obj.__reduce__()[2]
        return NotImplemented

    def save_global(self, obj: Any, name: str | None = None) -> None:
        old = _OLD_NAMES.get(obj) if callable(obj) else None
        if old is None:
            return super().save_global(obj, name)
        self.write(pickle.GLOBAL + f"{old[0]}\n{old[1]}\n".encode("ascii"))
        self.memoize(obj)

    # The pure-Python pickler dispatches functions to the base class's save_global: point it here.
    dispatch = {**pickle._Pickler.dispatch, types.FunctionType: save_global}

    def save_pers(self, pid: Any) -> None:
        if self.storage_location and isinstance(pid, tuple) and pid[:1] == ("storage",):
            pid = (*pid[:3], self.storage_location, *pid[4:])
        super().save_pers(pid)


def _pickle_module(location: str | None) -> types.SimpleNamespace:
    pickler = type("ReleasePickler", (_OldNumpyPickler,), {"storage_location": location})
    return types.SimpleNamespace(Pickler=pickler, dump=pickle.dump, __name__="release_pickle")


def save_as_released(obj: Any, path: Path, *, legacy: bool, location: str | None = "cuda:0") -> Path:
    """torch.save with protocol 2, the legacy or zip container, numpy 1.16's GLOBALs, CUDA storage tags."""
    path = Path(path)
    torch.save(obj, path, pickle_module=_pickle_module(location), pickle_protocol=2,
               _use_new_zipfile_serialization=not legacy)
    return path


def pickle_globals(path: Path) -> list[str]:
    """Every GLOBAL (``module name``) the file's object pickle names, in order."""
    data = Path(path).read_bytes()
    if data[:2] == b"PK":
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
            stream = io.BytesIO(archive.read(name))
    else:
        stream = io.BytesIO(data)
        for _ in range(3):  # magic number, protocol version, sys_info
            pickle.load(stream)
    out = io.StringIO()
    pickletools.dis(stream, out)  # stops at the object pickle's STOP
    found = []
    for line in out.getvalue().splitlines():
        if " GLOBAL " in line:
            found.append(line.split("GLOBAL", 1)[1].strip().strip("'"))
    return found


def pickle_opcodes(path: Path) -> list[tuple[str, Any]]:
    """(opcode name, argument) for the legacy file's object pickle (the fixture checks use it)."""
    stream = io.BytesIO(Path(path).read_bytes())
    for _ in range(3):
        pickle.load(stream)
    return [(op.name, arg) for op, arg, _ in pickletools.genops(stream)]


# --------------------------------------------------------------------------------------------
# The four releases
# --------------------------------------------------------------------------------------------

def _with_metadata(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """A state dict as nn.Module.state_dict() returns it: an OrderedDict with `_metadata`."""
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict(state)
    prefixes = {""} | {k.rsplit(".", 1)[0] for k in state if "." in k}
    out._metadata = OrderedDict((p, {"version": 1}) for p in sorted(prefixes))  # type: ignore[attr-defined]
    return out


def _adam_state(n_params: int, *, amsgrad: bool) -> dict:
    """An Adam state_dict as torch 1.0 wrote it: integer 'step', a few tensors, param_groups."""
    state = {i: {"step": 1234, "exp_avg": torch.zeros(4), "exp_avg_sq": torch.zeros(4),
                 **({"max_exp_avg_sq": torch.zeros(4)} if amsgrad else {})} for i in range(3)}
    group = {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": amsgrad,
             "params": list(range(n_params))}
    return {"state": state, "param_groups": [group]}


def videopose3d_2019(state: Mapping[str, torch.Tensor], path: Path) -> Path:
    """``run.py``'s checkpoint, as written in 2019 (legacy format, numpy 1.16 RandomState)."""
    generator = np.random.RandomState(1234)
    generator.randint(0, 100, size=10)  # a generator that has been used
    return save_as_released({
        "epoch": 80,
        "lr": 0.001 * 0.95 ** 79,
        "random_state": generator,
        "optimizer": _adam_state(len(state), amsgrad=True),
        "model_pos": _with_metadata(state),
        "model_traj": None,
        "random_state_semi": None,
    }, path, legacy=True)


def spin_2019(state: Mapping[str, torch.Tensor], path: Path) -> Path:
    """SPIN's ``CheckpointSaver.save_checkpoint`` output (legacy format)."""
    perm = torch.randperm(5000, generator=torch.Generator().manual_seed(0)).tolist()
    return save_as_released({
        "model": _with_metadata(state),
        "optimizer": _adam_state(len(state), amsgrad=False),
        "epoch": 0,
        "batch_idx": 20000,
        "batch_size": 64,
        "dataset_perm": perm,
        "total_step_count": 20000,
    }, path, legacy=True)


def yolox_2021(state: Mapping[str, torch.Tensor], path: Path) -> Path:
    """YOLOX ``Trainer.save_ckpt`` (0.1.x, apex amp): zip format, protocol 2."""
    sgd_state = {i: {"momentum_buffer": torch.zeros(4)} for i in range(3)}
    groups = [{"lr": 0.01, "momentum": 0.9, "dampening": 0, "weight_decay": wd, "nesterov": True,
               "params": list(range(i, len(state), 3))} for i, wd in enumerate((0.0, 5e-4, 0.0))]
    return save_as_released({
        "start_epoch": 300,
        "model": _with_metadata(state),
        "optimizer": {"state": sgd_state, "param_groups": groups},
        "amp": {"loss_scaler0": {"loss_scale": 8192.0, "unskipped": 417}},
    }, path, legacy=False)


def _mmpose_keys(state: Mapping[str, torch.Tensor], head: str) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((f"{head}.{k}" if k.startswith("final_layer.") else f"backbone.{k}", v) for k, v in state.items())


def mmpose_0x_2020(state: Mapping[str, torch.Tensor], path: Path) -> Path:
    """mmcv 1.0 ``save_checkpoint`` + mmpose's ``publish_model`` (optimizer removed): legacy format."""
    meta = {
        "mmcv_version": "1.0.0",
        "time": "Wed Jul  8 03:15:52 2020",
        "epoch": 210,
        "iter": 245_000,
        "config": "model = dict(type='TopDown', pretrained='https://download.openmmlab.com/...')\n",
        "seed": None,
        "exp_name": "hrnet_w32_coco_256x192.py",
        "hook_msgs": {"best_score": np.float64(0.7463), "last_ckpt": "work_dirs/epoch_210.pth",
                      "best_epoch": np.int64(210)},
    }
    return save_as_released({"meta": meta, "state_dict": _with_metadata(_mmpose_keys(state, "keypoint_head"))},
                            path, legacy=True, location="cpu")  # mmcv moves weights to CPU before saving


def mmpose_1x(state: Mapping[str, torch.Tensor], path: Path) -> Path:
    """mmengine's checkpoint of an mmpose 1.x TopdownPoseEstimator: zip format, data_preprocessor buffers."""
    sd = _mmpose_keys(state, "head")
    sd["data_preprocessor.mean"] = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    sd["data_preprocessor.std"] = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    meta = {
        "mmengine_version": "0.7.4", "mmcv_version": "2.0.0", "epoch": 210, "iter": 245_000, "seed": 21,
        "experiment_name": "td-hm_hrnet-w32_8xb64-210e_coco-256x192",
        "dataset_meta": {"dataset_name": "coco", "num_keypoints": 17,
                         "sigmas": np.array([.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062,
                                             .107, .107, .087, .087, .089, .089], dtype=np.float32),
                         "flip_indices": [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]},
    }
    return save_as_released({"meta": meta, "state_dict": _with_metadata(sd)}, path, legacy=False, location="cpu")


WRITERS = {
    "yolox_s": yolox_2021,
    "hrnet_w32_coco_256x192": mmpose_0x_2020,
    "videopose3d_243_coco": videopose3d_2019,
    "hmr_spin_resnet50": spin_2019,
}
