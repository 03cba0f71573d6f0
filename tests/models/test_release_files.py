"""The four default checkpoints as their authors' code serialised them (2019-2021, legacy and zip torch
formats, pickle protocol 2, numpy 1.16's GLOBAL names) load through `load_model` and reproduce the
official outputs. The fixtures are written by tests/models/release_files.py; the first tests check
that they really are laid out as the releases are."""
from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch

from posepipe.models import get_weights, load_model
from tests.golden import GOLDEN, assert_official_outputs, case_and_state, golden_cases
from tests.models import release_files
from tests.models.release_files import WRITERS, pickle_globals, pickle_opcodes

TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def _tiny_state() -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict([("conv1.weight", torch.zeros(2, 3)), ("final_layer.weight", torch.ones(4))])


# --- the fixtures are what they claim ----------------------------------------------------------


def test_videopose3d_fixture_is_the_2019_serialisation(tmp_path):
    path = release_files.videopose3d_2019(_tiny_state(), tmp_path / "pretrained_h36m_detectron_coco.bin")
    assert path.read_bytes().startswith(TORCH_LEGACY_MAGIC)  # legacy format, protocol 2
    names = pickle_globals(path)
    assert "numpy.random __RandomState_ctor" in names and "numpy.core.multiarray _reconstruct" in names
    assert not any(n.startswith(("numpy._core", "numpy.random._pickle")) for n in names), names
    ops = pickle_opcodes(path)
    at = ops.index(("GLOBAL", "numpy.random __RandomState_ctor"))
    following = [name for name, _ in ops[at + 1:at + 5] if name not in ("BINPUT", "LONG_BINPUT")]
    assert following[:2] == ["EMPTY_TUPLE", "REDUCE"], ops[at:at + 6]
    # ... then the state tuple ('MT19937', key array, pos, has_gauss, gauss) and one BUILD for it.
    assert ("BINUNICODE", "MT19937") in ops[at:at + 12] and "BUILD" in [n for n, _ in ops[at:]]
    assert ("BINUNICODE", "cuda:0") in ops  # storages tagged as saved from the GPU, as the release was


@pytest.mark.parametrize("writer,legacy", [
    (release_files.spin_2019, True), (release_files.mmpose_0x_2020, True),
    (release_files.yolox_2021, False), (release_files.mmpose_1x, False),
])
def test_other_fixtures_have_their_release_container(writer, legacy, tmp_path):
    path = writer(_tiny_state(), tmp_path / "ckpt.pth")
    data = path.read_bytes()
    assert data.startswith(TORCH_LEGACY_MAGIC) if legacy else data.startswith(b"PK\x03\x04")
    names = pickle_globals(path)
    assert not any(n.startswith("numpy._core") for n in names), names  # numpy 1's names only
    if writer is release_files.mmpose_0x_2020:
        assert "numpy.core.multiarray scalar" in names  # mmcv meta with numpy scalars


# --- each release file loads and reproduces the official outputs -------------------------------


def _cases():
    params = [pytest.param(name, path, id=f"{name}-{path.stem}") for name in WRITERS for path in golden_cases(name)]
    return params or [pytest.param(None, None, marks=pytest.mark.skip("golden vectors not present"))]


@pytest.mark.parametrize("name,case_path", _cases())
def test_release_file_through_load_model(name, case_path, tmp_path):
    case, state = case_and_state(GOLDEN / name / "manifest.json", case_path)
    path = WRITERS[name](state, tmp_path / get_weights(name).filename)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loading a genuine release warns about nothing
        predictor = load_model(name, weights=path)
    assert_official_outputs(name, predictor, case)
    assert predictor.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("case_path", golden_cases("hrnet_w32_coco_256x192") or
                         [pytest.param(None, marks=pytest.mark.skip("golden vectors not present"))])
def test_mmpose_1x_file_drops_data_preprocessor_and_matches(case_path, tmp_path):
    name = "hrnet_w32_coco_256x192"
    case, state = case_and_state(GOLDEN / name / "manifest.json", case_path)
    path = release_files.mmpose_1x(state, tmp_path / "td-hm_hrnet-w32_8xb64-210e_coco-256x192.pth")
    predictor = load_model(name, weights=path)
    assert_official_outputs(name, predictor, case)


def test_random_state_survives_as_data(tmp_path):
    """The RandomState comes back as the generator that was saved (it is data, and stays data)."""
    from posepipe.models.checkpoint import read_checkpoint

    path = release_files.videopose3d_2019(_tiny_state(), tmp_path / "vp3d.bin")
    loaded = read_checkpoint(path)["random_state"]
    expected = np.random.RandomState(1234)
    expected.randint(0, 100, size=10)
    assert isinstance(loaded, np.random.RandomState)
    assert loaded.randint(0, 1 << 30, size=5).tolist() == expected.randint(0, 1 << 30, size=5).tolist()
