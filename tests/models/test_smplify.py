"""SMPLify (models/smplify.py on models/smpl.py) against SPIN's own SMPLify, and the checks on the user's files.

The reference is ``smplify_spin_seed0.npz`` beside this file, written by ``smplify_reference.py``: SPIN's
``smplify/`` at 2476c43 with SMPLify-X's ``prior.py`` at 68f8536, run unmodified (smplx 0.1.15, torch 2.13
CPU, float32, one thread) on a synthetic SMPL model, J_regressor_extra and GMM prior of the published
layouts, 8 persons, SPIN's default 100 iterations per stage. The synthetic files are rebuilt here from the
npz's seed (their digest must match), and the fit runs through posepipe's public API. Another seed's npz
(``smplify_reference.py --seed 7 --out X.npz``) is checked the same way when named in
$POSEPIPE_SMPLIFY_REFERENCE (several joined with ``os.pathsep``).

Tolerances, and why they are not 0: posepipe's SMPL gives SPIN's SMPL's joints and vertices bit for bit
through the whole mesh, but the fit reads its joints from the 21 vertices they need, with the rest
joints' shape dependence folded in advance (1.2e-7 m apart before any step). 200 Adam steps carry such
float32 rounding to about 1e-6 in pose and betas (1.2e-5 rad at worst over seeds 0-2); the bounds below
leave a margin of 10 to 100 and stay 1000 times below how far the fit moves the parameters (asserted too):
pose and betas 1e-4, camera translation 1e-4 (of ~50), SPIN's 49 joints 2e-5 m, the per-joint reprojection
terms 1e-3 relative + 1e-2 px^2.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from posepipe.models.smpl import SMPL, SMPLModelError, load_smpl, read_smpl_model, smpl_model_from_dict
from posepipe.models.smplify import (
    NUM_SPIN_JOINTS, SPIN_JOINT_NAMES, SPIN_JOINTS, GMMPrior, SMPLifyOptions, coco17_to_spin49, load_smplify,
    read_gmm_prior, translation_from_weak_perspective, weak_perspective_from_translation,
)
from tests.models import smplify_reference as reference

HERE = Path(__file__).resolve().parent
REFERENCES = [HERE / "smplify_spin_seed0.npz"] + [Path(p) for p in os.environ.get("POSEPIPE_SMPLIFY_REFERENCE", "").split(
    os.pathsep) if p]
SELECT = [j for _, j in SPIN_JOINTS]


@pytest.fixture(autouse=True)
def one_thread():
    """As the reference ran; small ops on 2 shared cores are also far faster on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=REFERENCES, ids=lambda p: p.stem)
def case(request, tmp_path_factory):
    ref = dict(np.load(request.param))
    seed = int(ref["seed"])
    model, extra, gmm = reference.synthetic_model(seed)
    assert reference.model_digest(model, extra, gmm) == str(ref["model_digest"]), \
        "the synthetic SMPL/GMM rebuilt from the seed differ from those SPIN's code was given (numpy's streams changed?)"
    files = reference.write_model_files(tmp_path_factory.mktemp(f"spin{seed}"), seed)
    smplify = load_smplify(files["smpl"], files["gmm"], extra_regressor=files["extra"],
                           options=SMPLifyOptions(iterations=int(ref["iterations"]), focal_length=float(ref["focal_length"])))
    return ref, smplify, files


def t(ref: dict, key: str) -> torch.Tensor:
    return torch.from_numpy(ref[key])


def test_smpl_gives_spins_joints_and_vertices(case):
    ref, smplify, _ = case
    pose, betas = t(ref, "init_pose"), t(ref, "init_betas")
    with torch.no_grad():
        out = smplify.smpl(pose[:, :3], pose[:, 3:], betas)
        fast = smplify.spin_joints(pose[:, :3], pose[:, 3:], betas)
    np.testing.assert_allclose(out.joints[:, SELECT].numpy(), ref["start_joints"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(out.vertices[:, ref["vertex_sample"]].numpy(), ref["start_vertices"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(fast.numpy(), ref["start_joints"], rtol=0, atol=1e-6)


def test_reprojection_before_the_fit_is_spins_get_fitting_loss(case):
    ref, smplify, _ = case
    before = smplify.reprojection_loss(t(ref, "init_pose"), t(ref, "init_betas"), t(ref, "init_camera_translation"),
                                       t(ref, "camera_center"), t(ref, "keypoints"))
    np.testing.assert_allclose(before.numpy(), ref["reprojection_before"], rtol=1e-5, atol=1e-3)


def test_fit_is_spins(case):
    ref, smplify, _ = case
    fit = smplify(t(ref, "init_pose"), t(ref, "init_betas"), t(ref, "init_camera_translation"), t(ref, "camera_center"),
                  t(ref, "keypoints"))
    np.testing.assert_allclose(fit.pose.numpy(), ref["pose"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(fit.betas.numpy(), ref["betas"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(fit.camera_translation.numpy(), ref["camera_translation"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(fit.joints.numpy(), ref["joints"], rtol=0, atol=2e-5)
    np.testing.assert_allclose(fit.reprojection_loss.numpy(), ref["reprojection_after"], rtol=1e-3, atol=1e-2)
    # The comparison has teeth: the fit moves far more than the tolerances, and lowers every person's error.
    assert np.abs(ref["pose"] - ref["init_pose"]).max() > 0.1 and np.abs(ref["betas"] - ref["init_betas"]).max() > 0.1
    assert np.abs(ref["camera_translation"] - ref["init_camera_translation"])[:, :2].max() > 0.01
    after, before = fit.reprojection_loss.sum(1).numpy(), ref["reprojection_before"].sum(1)
    assert (after < 0.5 * before).all(), (before, after)


def test_a_persons_fit_does_not_depend_on_its_batch(case):
    ref, _, files = case
    smplify = load_smplify(files["smpl"], files["gmm"], extra_regressor=files["extra"], options=SMPLifyOptions(iterations=15))
    args = [t(ref, k) for k in ("init_pose", "init_betas", "init_camera_translation", "camera_center", "keypoints")]
    whole = smplify(*args)
    for rows in ([1], [0, 5, 6]):
        part = smplify(*[a[rows] for a in args])
        np.testing.assert_allclose(part.pose.numpy(), whole.pose[rows].numpy(), rtol=0, atol=1e-5)
        np.testing.assert_allclose(part.camera_translation.numpy(), whole.camera_translation[rows].numpy(), atol=1e-5)


def test_smpl_mesh_is_smplx_0_1_28s(case):
    """A second, current smplx (the test extra's) on the whole mesh, without SPIN's joint map."""
    smplx = pytest.importorskip("smplx")
    ref, smplify, files = case
    body = smplx.SMPL(model_path=str(files["smpl"]), gender="neutral")
    pose, betas = t(ref, "init_pose"), t(ref, "init_betas")
    with torch.no_grad():
        want = body(global_orient=pose[:, :3], body_pose=pose[:, 3:], betas=betas)
        got = smplify.smpl(pose[:, :3], pose[:, 3:], betas)
    np.testing.assert_allclose(got.vertices.numpy(), want.vertices.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(got.joints[:, :45].numpy(), want.joints.numpy(), rtol=0, atol=1e-5)


@pytest.mark.skipif(not (os.environ.get("POSEPIPE_SPIN_SOURCE") and os.environ.get("POSEPIPE_SMPLIFYX_SOURCE")),
                    reason="SPIN's and SMPLify-X's sources are not on this machine ($POSEPIPE_SPIN_SOURCE, "
                           "$POSEPIPE_SMPLIFYX_SOURCE)")
def test_the_generator_reruns_with_another_seed(tmp_path):
    out = reference.generate(Path(os.environ["POSEPIPE_SPIN_SOURCE"]), Path(os.environ["POSEPIPE_SMPLIFYX_SOURCE"]), 5,
                             tmp_path / "seed5.npz")
    ref = dict(np.load(out))
    assert int(ref["seed"]) == 5 and str(ref["spin_commit"]) == reference.SPIN_COMMIT
    files = reference.write_model_files(tmp_path / "files", 5)
    smplify = load_smplify(files["smpl"], files["gmm"], extra_regressor=files["extra"])
    fit = smplify(t(ref, "init_pose"), t(ref, "init_betas"), t(ref, "init_camera_translation"), t(ref, "camera_center"),
                  t(ref, "keypoints"))
    np.testing.assert_allclose(fit.pose.numpy(), ref["pose"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(fit.camera_translation.numpy(), ref["camera_translation"], rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# The user's files: clear errors, never code run from a pickle
# ---------------------------------------------------------------------------------------------


def _write(path: Path, obj, protocol: int = 4) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/posepipe-smpl-pickle-ran",))


def test_a_model_file_cannot_run_code(tmp_path):
    marker = Path("/tmp/posepipe-smpl-pickle-ran")
    marker.unlink(missing_ok=True)
    path = _write(tmp_path / "evil.pkl", {"v_template": _Boom()})
    with pytest.raises(SMPLModelError, match="refusing to load it"):
        read_smpl_model(path)
    assert not marker.exists()


def test_a_chumpy_model_file_says_how_to_convert_it(tmp_path):
    # a pickle naming chumpy's class, as SMPL's Python 2 release does (chumpy itself is not installed)
    data = b"\x80\x02}q\x00X\n\x00\x00\x00v_templateq\x01cchumpy.ch\nCh\nq\x02)\x81q\x03}q\x04bs."
    (tmp_path / "basicModel_neutral.pkl").write_bytes(data)
    with pytest.raises(SMPLModelError, match="chumpy.*clean_ch.py"):
        read_smpl_model(tmp_path / "basicModel_neutral.pkl")


def test_model_file_checks(tmp_path):
    model, extra, gmm = reference.synthetic_model(0)
    with pytest.raises(SMPLModelError, match="cannot read the SMPL model"):
        read_smpl_model(tmp_path / "absent.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(SMPLModelError, match="not a readable pickle"):
        read_smpl_model(tmp_path / "junk.pkl")
    with pytest.raises(SMPLModelError, match="lacks \\['posedirs'\\]"):
        smpl_model_from_dict({k: v for k, v in model.items() if k != "posedirs"})
    with pytest.raises(SMPLModelError, match="posedirs has shape .*not \\(6890, 3, 207\\)"):
        smpl_model_from_dict({**model, "posedirs": np.zeros((6890, 3, 459))})  # SMPL-H's
    with pytest.raises(SMPLModelError, match="holds a list"):
        read_smpl_model(_write(tmp_path / "list.pkl", [1, 2]))
    # 300 shape components (SMPL 1.1): the first 10 are used
    data = smpl_model_from_dict({**model, "shapedirs": np.concatenate([model["shapedirs"]] * 30, axis=2)})
    assert data.shapedirs.shape == (6890, 3, 10)
    # a Python 3 pickle of the same arrays reads as the protocol-2 file does, sha256 of the bytes kept
    path = _write(tmp_path / "SMPL_NEUTRAL.pkl", model, protocol=5)
    read = read_smpl_model(path)
    assert len(read.sha256) == 64 and read.parents[15] == 12
    np.testing.assert_array_equal(read.j_regressor, model["J_regressor"].toarray())
    with pytest.raises(SMPLModelError, match="J_regressor_extra.npy is \\(9, 6890\\)"):
        np.save(tmp_path / "extra.npy", extra[:5])
        load_smpl(path, extra_regressor=tmp_path / "extra.npy")
    with pytest.raises(SMPLModelError, match="lacks \\['covars'\\]"):
        read_gmm_prior(_write(tmp_path / "gmm.pkl", {"means": gmm["means"], "weights": gmm["weights"]}))
    with pytest.raises(SMPLModelError, match="means \\(K, 69\\)"):
        GMMPrior(gmm["means"][:, :63], gmm["covars"], gmm["weights"])
    with pytest.raises(SMPLModelError, match="not positive definite"):
        GMMPrior(gmm["means"], -gmm["covars"], gmm["weights"])


def test_without_the_extra_regressor_the_dataset_hips_are_smpls():
    model, _, _ = reference.synthetic_model(0)
    smpl = SMPL(smpl_model_from_dict(model))
    with torch.no_grad():
        joints = smpl.joints(torch.zeros(1, 3), torch.zeros(1, 69), torch.zeros(1, 10))
    names = dict(zip(SPIN_JOINT_NAMES, joints[0, SELECT]))
    assert torch.equal(names["Right Hip"], names["OP RHip"]) and torch.equal(names["Left Hip"], names["OP LHip"])


def test_options_and_inputs_are_checked(case):
    ref, smplify, _ = case
    for bad in ({"iterations": -1}, {"iterations": 2.5}, {"step_size": 0}, {"sigma": float("nan")},
                {"pose_prior_weight": -1}):
        with pytest.raises(ValueError, match="SMPLify"):
            SMPLifyOptions(**bad)
    args = [t(ref, k) for k in ("init_pose", "init_betas", "init_camera_translation", "camera_center", "keypoints")]
    with pytest.raises(ValueError, match="keypoints must have shape \\(B, 49, 3\\)"):
        smplify(*args[:4], args[4][:, :17])
    behind = args[2].clone()
    behind[0, 2] = -1
    with pytest.raises(ValueError, match="in front of the camera"):
        smplify(args[0], args[1], behind, *args[3:])
    with pytest.raises(ValueError, match="as many"):
        smplify(args[0], args[1][:3], *args[2:])


def test_coco17_goes_where_spins_demo_puts_openpose():
    kp = np.arange(2 * 17 * 2, dtype=np.float32).reshape(2, 17, 2)
    scores = np.full((2, 17), 0.8, np.float32)
    scores[1, 3] = np.nan
    out = coco17_to_spin49(kp, scores)
    assert out.shape == (2, NUM_SPIN_JOINTS, 3)
    index = {n: i for i, n in enumerate(SPIN_JOINT_NAMES)}
    np.testing.assert_array_equal(out[0, index["OP Nose"]], np.float32([0, 1, 0.8]))
    np.testing.assert_array_equal(out[0, index["OP RAnkle"]], np.float32([*kp[0, 16], 0.8]))
    np.testing.assert_array_equal(out[0, index["Right Hip"]], [*kp[0, 12], 0.0])  # the camera step's fallback only
    assert out[1, index["OP LEar"], 2] == 0.0
    assert (out[:, index["OP Neck"]] == 0).all() and (out[:, 25:, 2] == 0).all()


def test_weak_perspective_and_translation_are_inverse():
    camera = np.array([[0.9, 0.05, -0.1], [1.3, 0.0, 0.2]])
    translation = translation_from_weak_perspective(camera)
    np.testing.assert_allclose(translation[:, 2], 2 * 5000 / (224 * camera[:, 0]), rtol=1e-8)
    np.testing.assert_allclose(weak_perspective_from_translation(translation), camera, rtol=1e-8)
    assert torch.allclose(translation_from_weak_perspective(torch.tensor(camera)), torch.tensor(translation))
