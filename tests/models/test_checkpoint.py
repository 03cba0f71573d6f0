"""Checkpoints are data: harmless extras load, code in a pickle is refused, strict loads name keys."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from models.checkpoint import CheckpointError, load_strict, read_checkpoint


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/posepipe-pwned",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = "/tmp/posepipe-pwned"
    if os.path.exists(marker):
        os.unlink(marker)
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _RunsCode()}, path)
    with pytest.raises(CheckpointError, match="posix.system|os.system|nt.system"):
        read_checkpoint(path)
    assert not os.path.exists(marker)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch notes our hand-made pickle's protocol
def test_plain_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(CheckpointError):
        read_checkpoint(path)


def test_real_world_extras_load(tmp_path):
    """VideoPose3D's run.py saves a numpy RandomState tuple; optimizers hold numpy scalars."""
    model = nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    path = tmp_path / "ckpt.bin"
    torch.save({"epoch": 3, "lr": np.float64(1e-3), "random_state": np.random.RandomState(0).get_state(),
                "optimizer": opt.state_dict(), "model_pos": model.state_dict(), "meta": {"note": "x"}}, path)
    loaded = read_checkpoint(path)
    assert set(loaded) == {"epoch", "lr", "random_state", "optimizer", "model_pos", "meta"}
    assert loaded["random_state"][0] == "MT19937"


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.pth")


def test_strict_load_names_missing_unexpected_and_shapes():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    del state["0.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["1.weight"] = torch.zeros(4)
    with pytest.raises(CheckpointError) as info:
        load_strict(model, state)
    text = str(info.value)
    assert "0.bias" in text and "extra.weight" in text and "1.weight" in text


def test_old_checkpoints_without_num_batches_tracked_load():
    model = nn.BatchNorm1d(3)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    load_strict(model, state)
