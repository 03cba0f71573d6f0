"""`posepipe run --refine smplify`: SMPLify after HMR in a real job, its columns, its files, its export.

Real parts: `posepipe run` through click on a real local Ray, a clip of real street footage, Parquet read
back with DuckDB, `posepipe export smpl --params smplify` read back by smplx. The SMPL model and the GMM
prior are licensed, so the job is given synthetic files of their published layouts
(tests/models/smplify_reference.py, the files SPIN's own SMPLify was checked on). With --random-weights the
keypoints and HMR's start are meaningless, so what is checked is what the columns mean: each row's
reprojection errors are recomputed here from its own columns with smplx, and the fit lowers them.
"""
from __future__ import annotations

import hashlib
import json

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner

from posepipe.models.smplify import COCO17_TO_OPENPOSE, SPIN_JOINTS
from tests import media
from tests.models.smplify_reference import write_model_files

FAST = ["--random-weights", "--max-persons", "2", "--no-flip-test", "--lifter", "simplebaseline3d_h36m"]
SMPL_COLUMNS = ("global_orient", "body_pose", "betas", "camera")
# COCO keypoint k -> index into smplx's SMPL joints (24 joints, then its 21 vertex joints), where SMPLify fits it
JOINT_OF = {name: j for name, j in SPIN_JOINTS}
COCO_JOINTS = [JOINT_OF[name] for name in COCO17_TO_OPENPOSE]
FIT = [k for k in range(17) if k not in (11, 12)]  # the hips are left out of the fit and of the error


@pytest.fixture(scope="module")
def smpl_files(tmp_path_factory):
    return write_model_files(tmp_path_factory.mktemp("licensed"), 0)


def run(*args: str, env: dict[str, str] | None = None):
    from posepipe.jobs.cli import main

    return CliRunner().invoke(main, ["run", *args], env=env, catch_exceptions=False)


def test_missing_or_wrong_files_stop_the_job_before_any_work(tmp_path, smpl_files, monkeypatch):
    monkeypatch.delenv("POSEPIPE_SMPL_MODEL", raising=False)
    monkeypatch.delenv("POSEPIPE_SMPL_PRIOR", raising=False)
    clip = media.street_clip(tmp_path / "in" / "walk.mp4", n=2)
    out = tmp_path / "out"
    result = run(str(clip.parent), "--output", str(out), *FAST, "--refine", "smplify", "--smpl-prior", str(smpl_files["gmm"]))
    assert result.exit_code == 2, result.output
    assert "--smpl-model" in result.output and "POSEPIPE_SMPL_MODEL" in result.output and "licensed" in result.output
    result = run(str(clip.parent), "--output", str(out), *FAST, "--refine", "smplify", "--smpl-model", str(smpl_files["smpl"]))
    assert result.exit_code == 2 and "--smpl-prior" in result.output and "gmm_08.pkl" in result.output
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x04K\x01.")  # a pickle of the number 1
    result = run(str(clip.parent), "--output", str(out), *FAST, "--refine", "smplify", "--smpl-model",
                 str(tmp_path / "junk.pkl"), "--smpl-prior", str(smpl_files["gmm"]))
    assert result.exit_code == 2 and "junk.pkl holds a int" in result.output
    result = run(str(clip.parent), "--output", str(out), *FAST, "--refine", "smplify", "--smpl-model", str(smpl_files["smpl"]),
                 "--smpl-prior", str(smpl_files["smpl"]))  # the model where the prior should be
    assert result.exit_code == 2 and "lacks ['means', 'covars']" in result.output
    result = run(str(clip.parent), "--output", str(out), *FAST, "--refine", "smplify", "--smpl-model", str(smpl_files["smpl"]),
                 "--smpl-prior", str(smpl_files["gmm"]), "--smplify-option", "iterations=-3")
    assert result.exit_code == 2 and "iterations must be a whole number" in result.output
    assert not out.exists()  # refused before any work: not even the output folder


def _frame_errors(rows: list[dict], prefix: str, joints_of) -> np.ndarray:
    """Each row's score-weighted mean keypoint distance (frame pixels) of `prefix`'s SMPL and camera, with smplx."""
    errors = []
    for row in rows:
        joints = joints_of(row[f"{prefix}_global_orient"], row[f"{prefix}_body_pose"], row[f"{prefix}_betas"])
        s, tx, ty = row[f"{prefix}_camera"]
        p = joints[COCO_JOINTS] + [tx, ty, 2 * 5000 / (224 * s)]
        crop = 5000 * p[:, :2] / p[:, 2:] + 112
        x1, y1, x2, y2 = row["bbox_xyxy"]
        side = max(x2 - x1, y2 - y1)
        frame = (crop - 112) * side / 224 + [(x1 + x2) / 2, (y1 + y2) / 2]
        w = np.clip(np.asarray(row["keypoint_scores"]), 0, None)[FIT]
        d = np.linalg.norm(frame - np.asarray(row["keypoints_2d"]), axis=1)[FIT]
        errors.append((w * d).sum() / w.sum())
    return np.array(errors)


def test_a_refined_job(ray_local, tmp_path, smpl_files):
    smplx = pytest.importorskip("smplx")
    import torch

    clip = media.street_clip(tmp_path / "in" / "walk.mp4", n=4)
    out, plain_out = tmp_path / "out", tmp_path / "plain"
    result = run(str(clip.parent), "--output", str(out), *FAST, "--refine", "smplify", "--smpl-prior", str(smpl_files["gmm"]),
                 "--json", env={"POSEPIPE_SMPL_MODEL": str(smpl_files["smpl"])})
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["ok"] == 1 and summary["rows"] > 0
    assert run(str(clip.parent), "--output", str(plain_out), *FAST).exit_code == 0

    con = duckdb.connect()
    names = ["frame_index", "person_index", "track_id", "bbox_xyxy", "keypoints_2d", "keypoint_scores",
             *[f"{p}_{c}" for p in ("smpl", "smplify") for c in SMPL_COLUMNS],
             "smplify_reprojection_before", "smplify_reprojection_after"]
    query = f"SELECT {', '.join(names)} FROM read_parquet('{{}}/poses/**/*.parquet') ORDER BY frame_index, person_index"
    rows = [dict(zip(names, r)) for r in con.sql(query.format(out)).fetchall()]
    plain = [dict(zip(names, r)) for r in con.sql(query.format(plain_out)).fetchall()]
    # HMR's columns stay as HMR gave them; a job without --refine has null SMPLify columns
    assert len(rows) == len(plain) == summary["rows"]
    for a, b in zip(rows, plain):
        for c in SMPL_COLUMNS:
            np.testing.assert_array_equal(np.asarray(a[f"smpl_{c}"]), np.asarray(b[f"smpl_{c}"]))
        assert all(b[f"smplify_{c}"] is None for c in SMPL_COLUMNS) and b["smplify_reprojection_after"] is None
    # every row whose HMR camera is in front of the lens is refined (random weights can put one behind it)
    refined = [r for r in rows if r["smpl_camera"][0] > 0]
    assert refined and all(r["smplify_betas"] is not None for r in refined)
    assert all(r["smplify_betas"] is None and r["smplify_reprojection_after"] is None for r in rows if r["smpl_camera"][0] <= 0)

    body = smplx.SMPL(model_path=str(smpl_files["smpl"]), gender="neutral")

    def joints_of(orient, body_pose, betas):
        t = lambda a: torch.as_tensor(np.asarray(a, np.float32)).reshape(1, -1)  # noqa: E731
        with torch.no_grad():
            return body(global_orient=t(orient), body_pose=t(body_pose), betas=t(betas)).joints[0].numpy().astype(np.float64)

    before = _frame_errors(refined, "smpl", joints_of)
    after = _frame_errors(refined, "smplify", joints_of)
    np.testing.assert_allclose(before, [r["smplify_reprojection_before"] for r in refined], rtol=2e-3, atol=0.05)
    np.testing.assert_allclose(after, [r["smplify_reprojection_after"] for r in refined], rtol=2e-3, atol=0.05)
    # random keypoints cluster near the box centre, so HMR's start is only a few pixels off; the priors may
    # keep a row from coming closer, but the fit brings most rows nearer
    assert np.median(after) < 0.95 * np.median(before) and (after < before).mean() > 0.5, (before, after)
    # the fit moved the body, not only the camera
    assert max(np.abs(np.asarray(r["smplify_body_pose"]) - np.asarray(r["smpl_body_pose"])).max() for r in refined) > 0.05

    # provenance: the licensed files' sha256, never where they are
    part = next((out / "poses").rglob("*.parquet"))
    text = con.sql(f"SELECT value FROM parquet_kv_metadata('{part}') WHERE key = 'posepipe.provenance'").fetchall()[0][0]
    options = json.loads(text)["options"]
    assert options["refine"] == "smplify"
    assert options["smpl_model_sha256"] == hashlib.sha256(smpl_files["smpl"].read_bytes()).hexdigest()
    assert options["smpl_prior_sha256"] == hashlib.sha256(smpl_files["gmm"].read_bytes()).hexdigest()
    assert str(smpl_files["smpl"].parent.parent) not in (text if isinstance(text, str) else text.decode())

    # the same command again skips the video: the fingerprint holds the files' hashes and the options
    again = run(str(clip.parent), "--output", str(out), *FAST, "--refine", "smplify", "--smpl-prior", str(smpl_files["gmm"]),
                "--json", env={"POSEPIPE_SMPL_MODEL": str(smpl_files["smpl"])})
    assert json.loads(again.stdout[again.stdout.index("{"):])["skipped_complete"] == 1

    # export smpl --params smplify: SMPLify's parameters, read back by smplx
    from posepipe.jobs.cli import main

    tracks = {r["track_id"] for r in refined if r["track_id"] >= 0}
    assert tracks, "tracking confirmed no refined track (random weights' thresholds are the detector's)"
    if tracks:
        dest = tmp_path / "anim"
        exported = CliRunner().invoke(main, ["export", "smpl", str(out), "--output", str(dest), "--params", "smplify",
                                             "--min-frames", "1"], catch_exceptions=False)
        assert exported.exit_code == 0, exported.output
        track = min(tracks)
        data = np.load(next(dest.rglob(f"track_{track:04d}.npz")))
        assert str(data["params"]) == "smplify"
        mine = [r for r in refined if r["track_id"] == track]
        np.testing.assert_allclose(data["poses"][:, 3:], np.stack([np.ravel(r["smplify_body_pose"]) for r in mine]), atol=1e-5)
        np.testing.assert_allclose(data["betas"], np.mean([r["smplify_betas"] for r in mine], axis=0), atol=1e-5)
        t = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
        with torch.no_grad():
            posed = body(global_orient=t(data["poses"][:, :3]), body_pose=t(data["poses"][:, 3:]),
                         betas=t(np.tile(data["betas"], (len(data["poses"]), 1))), transl=t(data["trans"]))
        assert np.isfinite(posed.joints.numpy()).all()
    # an output made without --refine has nothing to export with --params smplify, and says why
    none = CliRunner().invoke(main, ["export", "smpl", str(plain_out), "--output", str(tmp_path / "none"), "--params",
                                     "smplify", "--min-frames", "1"], catch_exceptions=False)
    assert none.exit_code == 1 and "without --refine smplify" in none.output
