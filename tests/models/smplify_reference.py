"""Reference vectors from SPIN's own SMPLify, run unmodified, for tests/models/test_smplify.py.

    .venv/bin/python tests/models/smplify_reference.py --spin SPIN --smplify-x SMPLIFYX [--seed 0] [--out FILE]

SPIN is nkolot/SPIN and SMPLIFYX is vchoutas/smplify-x (SPIN's fetch_data.sh downloads its GMM prior
code, ``smplifyx/prior.py``, into ``smplify/prior.py``): each a clone or a bare mirror holding the
commit named below, or a plain folder of its files. Every file used is checked against its git blob id
at that commit, so the reference is the code as published, byte for byte. $POSEPIPE_SPIN_SOURCE and
$POSEPIPE_SMPLIFYX_SOURCE stand for the two options.

What runs: ``smplify.SMPLify`` and ``SMPLify.get_fitting_loss``, with SPIN's ``models/smpl.py`` (smplx's
SMPL plus its 54 -> 49 joint map and J_regressor_extra), ``smplify/losses.py``, ``utils/geometry.py``,
``config.py``, ``constants.py`` and SMPLify-X's ``prior.py``, copied unchanged into a scratch folder laid
out as SPIN's checkout (``data/smpl/SMPL_NEUTRAL.pkl``, ``data/J_regressor_extra.npy``, ``data/gmm_08.pkl``),
in a venv of its own (.venv-spin: torch 2.13 CPU, smplx 0.1.15, numpy, scipy). Two things are needed to
run it on a current stack, and neither touches SPIN's code:

- smplx 0.1.15, the last release whose ``ModelOutput`` is the namedtuple SPIN's ``models/smpl.py``
  builds with ``body_pose=`` and ``betas=`` (0.1.16 made it a dataclass without them). It declares
  torchgeometry, which pip installs and nothing here imports;
- SPIN's ``models/__init__.py`` imports its HMR (and so torchvision) and ``utils/__init__.py`` its trainer
  (tensorboard, datasets); SMPLify uses neither. ``models`` and ``utils`` are registered as bare packages
  (a module with a ``__path__``), so ``models.smpl`` and ``utils.geometry`` load without their
  ``__init__.py``. Nothing else is stubbed.

Inputs are synthetic, from the seed: an SMPL model file of SMPL's layout (6890 vertices, 24 joints,
SMPL's kinematic tree; J_regressor a scipy csc_matrix, as in the published files), SPIN's
J_regressor_extra (9, 6890) and a GMM prior of gmm_08.pkl's layout (8 components over 69 numbers); never
the licensed files. Persons are generated around a target body: its projected joints plus pixel noise
are the 2D keypoints (SPIN's 49-joint layout, random confidences, some zero, one person whose OpenPose
hips have no confidence so the camera step takes the dataset hips), the start is the target disturbed.
The fit runs SPIN's default 100 iterations per stage, on the CPU, one thread, float32.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SPIN_REPO, SPIN_COMMIT = "nkolot/SPIN", "2476c436013055be5cb3905e4e4ecfa86966fac3"
SMPLIFYX_REPO, SMPLIFYX_COMMIT = "vchoutas/smplify-x", "68f8536707f43f4736cdd75a19b18ede886a4d53"
# path in the repository -> git blob id at the commit above (`git rev-parse COMMIT:path`)
SPIN_FILES = {
    "smplify/__init__.py": "59d01b3f1197d202822e6e239419701f56b70769",
    "smplify/smplify.py": "4c063d392fa3a4ab330add079877e8a60c2e8a4a",
    "smplify/losses.py": "dc9eb5387356c55e6c74fdb068b68b7c9a18aad2",
    "models/smpl.py": "bcf49f287b8dc6281c9150e811e1df168aba0e1f",
    "utils/geometry.py": "2479895e21a9944729fcc45d6bccf51d1b44cbda",
    "config.py": "6f748acfca650af3b2c3e1ec5cb3dc5111064883",
    "constants.py": "36a3dea3265055837af7c0b288ad8167d06350e3",
}
SMPLIFYX_FILES = {"smplifyx/prior.py": "9ad291cf40597aa184987ddde9a28f6f23695c35"}
REQUIREMENTS = ["torch==2.13.0", "smplx==0.1.15", "numpy==2.4.6", "scipy==1.17.1"]
VENV = ".venv-spin"

ITERATIONS = 100   # SPIN's num_smplify_iters
PERSONS = 8
CROP = 224
FOCAL = 5000.0
VERTEX_SAMPLE = 256  # vertices kept in the npz (all 6890 of 8 persons would be 660 kB of noise)

NUM_VERTICES = 6890
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
# A rough SMPL rest skeleton (metres, y up, +x the body's left), so the synthetic body is a body.
REST_JOINTS = np.array([
    [0.0, 0.0, 0.0], [0.06, -0.09, 0.0], [-0.06, -0.09, 0.0], [0.0, 0.11, -0.02], [0.10, -0.47, 0.0],
    [-0.10, -0.47, 0.0], [0.0, 0.25, 0.0], [0.09, -0.87, -0.04], [-0.09, -0.87, -0.04], [0.0, 0.30, 0.02],
    [0.11, -0.93, 0.08], [-0.11, -0.93, 0.08], [0.0, 0.52, -0.01], [0.08, 0.44, 0.0], [-0.08, 0.44, 0.0],
    [0.0, 0.60, 0.04], [0.18, 0.46, -0.01], [-0.18, 0.46, -0.01], [0.43, 0.45, -0.03], [-0.43, 0.45, -0.03],
    [0.68, 0.46, -0.03], [-0.68, 0.46, -0.03], [0.76, 0.45, -0.04], [-0.76, 0.45, -0.04]])
# SMPL's vertex ids smplx turns into joints, and the part of the body each belongs to
VERTEX_JOINT_PARTS = {332: 15, 6260: 15, 2800: 15, 4071: 15, 583: 15, 3216: 10, 3226: 10, 3387: 7, 6617: 11,
                      6624: 11, 6787: 8, 2746: 22, 2319: 22, 2445: 22, 2556: 22, 2673: 22, 6191: 23, 5782: 23,
                      5905: 23, 6016: 23, 6133: 23}
EXTRA_PARTS = (2, 1, 12, 15, 0, 12, 6, 15, 15)  # the body part J_regressor_extra's 9 rows read


# ---------------------------------------------------------------------------------------------
# Synthetic inputs (also imported by the test, which rebuilds them from the seed)
# ---------------------------------------------------------------------------------------------


def synthetic_model(seed: int) -> tuple[dict, np.ndarray, dict]:
    """(SMPL model dict of the published pickle's layout, J_regressor_extra (9, V), gmm_08 dict)."""
    import scipy.sparse

    rng = np.random.default_rng([seed, 2019])
    v = NUM_VERTICES
    part = rng.integers(0, 24, v)
    for vid, j in VERTEX_JOINT_PARTS.items():
        part[vid] = j
    template = REST_JOINTS[part] + rng.normal(0, 0.04, (v, 3))
    weights = np.zeros((v, 24))
    own = rng.uniform(0.6, 1.0, v)
    weights[np.arange(v), part] = own
    parent = np.array([max(PARENTS[j], 0) for j in part])
    weights[np.arange(v), parent] += 1.0 - own
    regressor = np.zeros((24, v))
    for j in range(24):
        members = rng.choice(np.flatnonzero(part == j), 10, replace=False)
        regressor[j, members] = rng.dirichlet(np.ones(10))
    model = {
        "v_template": template,
        "shapedirs": rng.normal(0, 0.01, (v, 3, 10)),
        "posedirs": rng.normal(0, 0.002, (v, 3, 207)),
        "J_regressor": scipy.sparse.csc_matrix(regressor),
        "weights": weights,
        "kintree_table": np.array([[2**32 - 1] + list(PARENTS[1:]), list(range(24))], dtype=np.int64),
        "f": rng.integers(0, v, (13776, 3)).astype(np.uint32),
        "J": regressor @ template,
        "bs_style": "lbs", "bs_type": "lrotmin",
    }
    extra = np.zeros((9, v))
    for row, j in enumerate(EXTRA_PARTS):
        members = rng.choice(np.flatnonzero(part == j), 6, replace=False)
        extra[row, members] = rng.dirichlet(np.ones(6))
    a = rng.normal(0, 1, (8, 69, 69))
    gmm = {"means": rng.normal(0, 0.15, (8, 69)),
           "covars": 0.02 * np.einsum("kij,klj->kil", a, a) / 69 + 0.005 * np.eye(69),
           "weights": rng.dirichlet(np.full(8, 4.0))}
    return model, extra, gmm


def model_digest(model: dict, extra: np.ndarray, gmm: dict) -> str:
    """sha256 over the synthetic arrays: the test checks it rebuilt what SPIN's code was given."""
    h = hashlib.sha256()
    for key in ("v_template", "shapedirs", "posedirs", "weights", "kintree_table", "f"):
        h.update(np.ascontiguousarray(model[key]).tobytes())
    h.update(model["J_regressor"].toarray().tobytes())
    h.update(extra.tobytes())
    for key in ("means", "covars", "weights"):
        h.update(np.ascontiguousarray(gmm[key]).tobytes())
    return h.hexdigest()


def write_model_files(folder: Path, seed: int) -> dict[str, Path]:
    """SPIN's data/ layout: smpl/SMPL_NEUTRAL.pkl, J_regressor_extra.npy, gmm_08.pkl (pickle protocol 2,
    as the published files)."""
    model, extra, gmm = synthetic_model(seed)
    (folder / "smpl").mkdir(parents=True, exist_ok=True)
    paths = {"smpl": folder / "smpl" / "SMPL_NEUTRAL.pkl", "extra": folder / "J_regressor_extra.npy",
             "gmm": folder / "gmm_08.pkl"}
    paths["smpl"].write_bytes(pickle.dumps(model, protocol=2))
    np.save(paths["extra"], extra)
    paths["gmm"].write_bytes(pickle.dumps(gmm, protocol=2))
    return paths


def synthetic_case(seed: int) -> dict[str, np.ndarray]:
    """Target and start parameters, confidences and pixel noise of PERSONS persons (float32, as SPIN's trainer)."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng([seed, 25])
    n = PERSONS
    upright = Rotation.from_euler("x", np.pi) * Rotation.from_euler("y", rng.uniform(-1.2, 1.2, (n, 1)))
    target_orient = upright.as_rotvec()
    target_body = rng.normal(0, 0.25, (n, 69))
    target_betas = rng.normal(0, 0.8, (n, 10))
    target_t = np.stack([rng.uniform(-0.3, 0.3, n), rng.uniform(-0.3, 0.3, n), rng.uniform(40, 60, n)], axis=1)
    orient = (Rotation.from_rotvec(rng.normal(0, 0.12, (n, 3))) * upright).as_rotvec()
    confidence = rng.uniform(0.3, 1.0, (n, 49))
    confidence[rng.uniform(size=(n, 49)) < 0.2] = 0.0
    confidence[0, [9, 12, 2, 5]] = 0.9   # person 0: the camera step uses OpenPose's hips and shoulders
    confidence[1, 9] = 0.0               # person 1: OpenPose's right hip is missing -> the dataset ones
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return {
        "target_pose": f32(np.concatenate([target_orient, target_body], axis=1)), "target_betas": f32(target_betas),
        "target_camera_translation": f32(target_t),
        "init_pose": f32(np.concatenate([orient, target_body + rng.normal(0, 0.15, (n, 69))], axis=1)),
        "init_betas": f32(target_betas + rng.normal(0, 0.3, (n, 10))),
        "init_camera_translation": f32(target_t + rng.normal(0, 1, (n, 3)) * [0.05, 0.05, 3.0]),
        "camera_center": np.full((n, 2), CROP / 2, np.float32),
        "confidence": f32(confidence), "noise": f32(rng.normal(0, 2.0, (n, 49, 2))),
        "vertex_sample": np.sort(rng.choice(NUM_VERTICES, VERTEX_SAMPLE, replace=False)),
    }


# ---------------------------------------------------------------------------------------------
# SPIN's code, as published
# ---------------------------------------------------------------------------------------------


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def read_published(source: Path, commit: str, files: dict[str, str], repo: str) -> dict[str, bytes]:
    """The files at `commit` from a clone / bare mirror (git show), else from a folder of files; each checked."""
    out = {}
    is_git = (source / "HEAD").exists() or (source / ".git").exists()
    for path, blob in files.items():
        if is_git:
            done = subprocess.run(["git", "-C", str(source), "show", f"{commit}:{path}"], capture_output=True)
            if done.returncode != 0:
                raise SystemExit(f"{source}: cannot read {repo}@{commit[:12]}:{path} "
                                 f"({done.stderr.decode().strip()}); fetch that commit first")
            data = done.stdout
        else:
            file = source / path
            if not file.exists():
                raise SystemExit(f"{source} has no {path}: pass a clone of {repo} (or a folder of its files)")
            data = file.read_bytes()
        if git_blob_id(data) != blob:
            raise SystemExit(f"{source}/{path} is not {repo}@{commit[:12]}'s (git blob {git_blob_id(data)[:12]}, "
                             f"published {blob[:12]}): the reference must run the published code unchanged")
        out[path] = data
    return out


def lay_out(scratch: Path, spin: Path, smplifyx: Path, seed: int) -> None:
    for path, data in read_published(spin, SPIN_COMMIT, SPIN_FILES, SPIN_REPO).items():
        (scratch / path).parent.mkdir(parents=True, exist_ok=True)
        (scratch / path).write_bytes(data)
    prior = read_published(smplifyx, SMPLIFYX_COMMIT, SMPLIFYX_FILES, SMPLIFYX_REPO)["smplifyx/prior.py"]
    (scratch / "smplify" / "prior.py").write_bytes(prior)   # where SPIN's fetch_data.sh puts it
    write_model_files(scratch / "data", seed)
    np.savez(scratch / "case.npz", seed=seed, **synthetic_case(seed))


def child(scratch: Path, out: Path) -> None:
    """Inside .venv-spin, cwd = the scratch checkout: run SPIN's SMPLify and save what it returns."""
    import types

    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(scratch))
    for package in ("models", "utils"):  # without their __init__.py (HMR, the trainer): see the module docstring
        module = types.ModuleType(package)
        module.__path__ = [str(scratch / package)]
        sys.modules[package] = module
    import smplx
    from smplify import SMPLify
    from utils.geometry import perspective_projection

    case = dict(np.load(scratch / "case.npz"))
    t = lambda k: torch.from_numpy(case[k])  # noqa: E731
    n = case["init_pose"].shape[0]
    smplify = SMPLify(step_size=1e-2, batch_size=n, num_iters=ITERATIONS, focal_length=FOCAL, device=torch.device("cpu"))
    eye = torch.eye(3).unsqueeze(0).expand(n, -1, -1)
    with torch.no_grad():
        target = smplify.smpl(global_orient=t("target_pose")[:, :3], body_pose=t("target_pose")[:, 3:],
                              betas=t("target_betas"))
        projected = perspective_projection(target.joints, eye, t("target_camera_translation"), FOCAL, t("camera_center"))
        keypoints = torch.cat([projected + t("noise"), t("confidence").unsqueeze(-1)], dim=-1)
        start = smplify.smpl(global_orient=t("init_pose")[:, :3], body_pose=t("init_pose")[:, 3:], betas=t("init_betas"))
    before = smplify.get_fitting_loss(t("init_pose"), t("init_betas"), t("init_camera_translation"), t("camera_center"),
                                      keypoints.clone())
    vertices, joints, pose, betas, translation, after = smplify(
        t("init_pose"), t("init_betas"), t("init_camera_translation"), t("camera_center"), keypoints.clone())
    sample = torch.from_numpy(case["vertex_sample"])
    np.savez(out, keypoints=keypoints.numpy(), start_joints=start.joints.numpy(),
             start_vertices=start.vertices[:, sample].numpy(), reprojection_before=before.numpy(),
             pose=pose.numpy(), betas=betas.numpy(), camera_translation=translation.numpy(), joints=joints.numpy(),
             vertices=vertices[:, sample].numpy(), reprojection_after=after.numpy(),
             torch_version=np.array(torch.__version__), smplx_version=np.array(getattr(smplx, "__version__", "0.1.15")))


def generate(spin: Path, smplifyx: Path, seed: int, out: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.side_venv import clean_env, side_python

    python = side_python(VENV, REQUIREMENTS, what="smplx 0.1.15 for SPIN's SMPLify")
    with tempfile.TemporaryDirectory(prefix="spin-smplify-") as tmp:
        scratch = Path(tmp) / "SPIN"
        scratch.mkdir()
        lay_out(scratch, spin, smplifyx, seed)
        shutil.copy(__file__, scratch / "_reference_child.py")
        result = Path(tmp) / "result.npz"
        done = subprocess.run([str(python), "_reference_child.py", "--child", str(scratch), str(result)],
                              cwd=scratch, env={**clean_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"SPIN's SMPLify failed:\n{done.stderr[-4000:]}")
        got = dict(np.load(result))
        case = dict(np.load(scratch / "case.npz"))
        case.pop("seed")
    model, extra, gmm = synthetic_model(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out, seed=np.int64(seed), iterations=np.int64(ITERATIONS), focal_length=np.float64(FOCAL),
        model_digest=np.array(model_digest(model, extra, gmm)), spin_commit=np.array(SPIN_COMMIT),
        smplifyx_commit=np.array(SMPLIFYX_COMMIT), **case, **got)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spin", type=Path, default=os.environ.get("POSEPIPE_SPIN_SOURCE"),
                        help=f"{SPIN_REPO} at {SPIN_COMMIT[:12]}: a clone, a bare mirror or a folder of its files")
    parser.add_argument("--smplify-x", type=Path, default=os.environ.get("POSEPIPE_SMPLIFYX_SOURCE"),
                        help=f"{SMPLIFYX_REPO} at {SMPLIFYX_COMMIT[:12]} (for smplifyx/prior.py)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None,
                        help="the npz to write (default: tests/models/smplify_spin_seed<SEED>.npz)")
    args = parser.parse_args()
    if args.spin is None or args.smplify_x is None:
        parser.error("--spin and --smplify-x (or $POSEPIPE_SPIN_SOURCE and $POSEPIPE_SMPLIFYX_SOURCE) are needed")
    out = args.out or Path(__file__).with_name(f"smplify_spin_seed{args.seed}.npz")
    print(generate(args.spin, args.smplify_x, args.seed, out))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
