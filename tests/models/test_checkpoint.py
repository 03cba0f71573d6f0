"""Checkpoints are data: harmless extras load, code in a pickle is refused, strict loads name keys,
and a file that is not a checkpoint at all is described in one sentence."""
from __future__ import annotations

import collections
import os
import pickle
import types
import zipfile
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

from posepipe.models.checkpoint import CheckpointError, _randomstate_ctor, load_strict, read_checkpoint, sniff_container
from tests.models import release_files


def _save_with(reduce_random_state, obj, path, *, legacy=False):
    """torch.save with a pickler that reduces every RandomState as `reduce_random_state(rs)` says."""
    class Pickler(pickle.Pickler):
        def reducer_override(self, value):
            return reduce_random_state(value) if type(value) is np.random.RandomState else NotImplemented

    torch.save(obj, path, pickle_module=types.SimpleNamespace(Pickler=Pickler, dump=pickle.dump, __name__="p"),
               _use_new_zipfile_serialization=not legacy)
    return path


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
    """get_state() tuples (what some forks save); optimizers and metadata hold numpy scalars."""
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


# --- VideoPose3D's RandomState, in every numpy's spelling -----------------------------------------


def _used_generator() -> np.random.RandomState:
    rs = np.random.RandomState(7)
    rs.rand(5)
    return rs


def _same_stream(loaded) -> None:
    assert isinstance(loaded, np.random.RandomState)
    assert loaded.rand(3).tolist() == _used_generator().rand(3).tolist()


def test_random_state_numpy_1_16_spelling(tmp_path):
    """GLOBAL numpy.random __RandomState_ctor, REDUCE (), BUILD <legacy state tuple>; legacy torch file."""
    path = release_files.save_as_released({"random_state": _used_generator()}, tmp_path / "a.bin", legacy=True)
    assert "numpy.random __RandomState_ctor" in release_files.pickle_globals(path)
    _same_stream(read_checkpoint(path)["random_state"])


def test_random_state_numpy_1_17_spelling(tmp_path):
    """numpy.random._pickle.__randomstate_ctor('MT19937'), BUILD <state dict>."""
    reduce = lambda rs: (np.random._pickle.__randomstate_ctor, ("MT19937",), rs.get_state(legacy=False))  # noqa: E731
    path = _save_with(reduce, {"random_state": _used_generator()}, tmp_path / "b.bin", legacy=True)
    assert "numpy.random._pickle __randomstate_ctor" in release_files.pickle_globals(path)
    _same_stream(read_checkpoint(path)["random_state"])


def test_random_state_numpy_2_spelling(tmp_path):
    """What today's numpy writes: __randomstate_ctor(__bit_generator_ctor(MT19937) BUILD ...) BUILD ..."""
    torch.save({"random_state": _used_generator()}, tmp_path / "c.pth")
    names = release_files.pickle_globals(tmp_path / "c.pth")
    assert "numpy.random._pickle __bit_generator_ctor" in names and "numpy.random._mt19937 MT19937" in names
    _same_stream(read_checkpoint(tmp_path / "c.pth")["random_state"])


@pytest.mark.parametrize("reduce,named", [
    # another bit generator than RandomState's MT19937
    (lambda rs: (np.random._pickle.__randomstate_ctor, ("PCG64",), {}), "PCG64"),
    # a class from the allow-list where the bit generator class belongs
    (lambda rs: (np.random._pickle.__bit_generator_ctor, (collections.OrderedDict,)), "OrderedDict"),
    # numpy's other pickling helper: not needed for a RandomState, so not allowed
    (lambda rs: (np.random._pickle.__generator_ctor, ("MT19937",)), "numpy.random._pickle.__generator_ctor"),
    # code where numpy's constructor takes a callable
    (lambda rs: (np.random._pickle.__randomstate_ctor, ("MT19937", os.system)), "system"),
])
def test_random_state_helpers_refuse_anything_else(tmp_path, reduce, named):
    path = _save_with(reduce, {"random_state": np.random.RandomState(0)}, tmp_path / "evil.bin")
    with pytest.raises(CheckpointError, match="refused to load") as info:
        read_checkpoint(path)
    assert named in str(info.value)


def test_random_state_ctor_never_calls_the_callable_it_is_given():
    ctor = mock.Mock()
    rs = _randomstate_ctor("MT19937", ctor)
    assert isinstance(rs, np.random.RandomState) and not ctor.called


# --- files that are not checkpoints, described in one sentence ------------------------------------


def _torch_file(tmp_path, legacy=False):
    path = tmp_path / ("legacy.pth" if legacy else "zip.pth")
    torch.save({"model": {"w": torch.randn(256, 256)}}, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.parametrize("make,says", [
    (lambda d: d.joinpath("x.pth").write_bytes(b"") and None, "is empty"),
    (lambda d: d.joinpath("x.pth").write_bytes(_torch_file(d).read_bytes()[:30_000]), "cut short"),
    (lambda d: d.joinpath("x.pth").write_bytes(_torch_file(d, legacy=True).read_bytes()[:30_000]), "ends early"),
    (lambda d: d.joinpath("x.pth").write_bytes(_torch_file(d, legacy=True).read_bytes()[:300]), "ends early"),
    (lambda d: d.joinpath("x.pth").write_text(
        "<!DOCTYPE html>\n<html><head><title>Google Drive - Virus scan warning</title></head><body>...</body></html>"),
     "HTML page (title: 'Google Drive - Virus scan warning')"),
    (lambda d: d.joinpath("x.pth").write_text(
        "<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"),
     "XML document (AccessDenied)"),
    (lambda d: d.joinpath("x.pth").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 1\n"),
     "Git LFS pointer"),
    (lambda d: zipfile.ZipFile(d / "x.pth", "w").close(), "zip archive that is not a torch checkpoint"),
    (lambda d: np.savez(d / "x.pth", a=np.zeros(2)) or os.replace(d / "x.pth.npz", d / "x.pth"), "numpy .npz archive"),
    (lambda d: d.joinpath("x.pth").write_bytes(pickle.dumps({"w": [1, 2]}, protocol=4)), "plain Python pickle"),
    (lambda d: d.joinpath("x.pth").write_bytes(b"\x1f\x8b\x08\x00" + bytes(100)), "gzip-compressed"),
    (lambda d: d.joinpath("x.pth").write_bytes(bytes(range(256)) * 4), "not a torch checkpoint"),
])
def test_not_a_checkpoint_is_one_sentence(tmp_path, make, says):
    make(tmp_path)
    path = tmp_path / "x.pth"
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    text = str(info.value)
    assert says in text and str(path) in text and "\n" not in text, text


def test_sniff_names_both_torch_containers(tmp_path):
    assert sniff_container(_torch_file(tmp_path)) == "torch zip archive (torch >= 1.6), pickle protocol 2"
    assert sniff_container(_torch_file(tmp_path, legacy=True)) == "torch legacy format (torch < 1.6), pickle protocol 2"
