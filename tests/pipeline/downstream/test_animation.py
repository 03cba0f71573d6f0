"""`posepipe export smpl`: AMASS-style SMPL .npz per track, read back by smplx; BVH read back by bvhio.

smplx needs an SMPL model file, which is licensed and not shipped: the test writes a stand-in with
SMPL's layout (6890 vertices, 24 joints, SMPL's kinematic tree) whose rest pelvis is the neutral
model's, enough to check that the files drive SMPL as intended (axes, translation, frame clock).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from scipy.spatial.transform import Rotation

from posepipe.pipeline.downstream.animation import (
    CAMERA_TO_WORLD, SMPL_NEUTRAL_PELVIS, AnimationError, export_animation, skeleton_motion, smpl_motion,
)
from posepipe.pipeline.downstream.camera import full_frame_translation
from posepipe.pipeline.io.store import video_key
from posepipe.pipeline.io.readback import read_poses
from posepipe.pipeline.io.schema import poses_table, provenance_metadata, videos_table
from tests.pipeline.downstream.test_mmaction import skeleton

FPS, WIDTH, HEIGHT = 10.0, 640, 480
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


def smpl_row(track: int, t: int) -> dict:
    """Camera-frame SMPL of a person standing upright (180 degrees about x), turning, limbs moving."""
    upright = Rotation.from_euler("x", np.pi) * Rotation.from_euler("y", 0.1 * t + track)
    body = 0.3 * np.sin(0.2 * t + np.arange(69).reshape(23, 3))
    return {"orient": upright.as_rotvec(), "body": body, "betas": np.linspace(-1, 1, 10) * (track + 1) + 0.01 * t,
            "camera": np.array([0.8 + 0.01 * np.sin(t), 0.05, 0.2]), "k3": skeleton(t, 1.0 + 0.1 * track, track),
            "box": np.array([100 + 150 * track + 3 * t, 120, 220 + 150 * track + 3 * t, 400], float)}


def write_output(root: Path, frames: dict[int, list[int]]) -> None:
    """One video (`walk/clip.mp4`, 40 frames at 10 fps) with the given track -> frames, and a -1 row."""
    rows = [(t, track) for track, ts in frames.items() for t in ts] + [(5, -1)]
    rows.sort(key=lambda r: (r[0], r[1] < 0, r[1]))
    made = [smpl_row(max(tr, 0), t) for t, tr in rows]
    n = len(rows)
    frame = np.array([t for t, _ in rows], np.int32)
    table = poses_table({
        "video_id": np.array(["walk/clip.mp4"] * n, dtype=object), "frame_index": frame, "timestamp_s": frame / FPS,
        "track_id": np.array([tr for _, tr in rows], np.int32),
        "bbox_xyxy": np.stack([m["box"] for m in made]), "bbox_score": np.full(n, 0.9, np.float32),
        "keypoints_2d": np.zeros((n, 17, 2), np.float32), "keypoint_scores": np.full((n, 17), 0.9, np.float32),
        "keypoints_3d": np.stack([m["k3"] for m in made]),
        "keypoints_3d__valid": np.array([tr >= 0 for _, tr in rows]),
        "smpl_global_orient": np.stack([m["orient"] for m in made]), "smpl_body_pose": np.stack([m["body"] for m in made]),
        "smpl_betas": np.stack([m["betas"] for m in made]), "smpl_camera": np.stack([m["camera"] for m in made]),
    }, provenance_metadata({"test": "animation"}))
    (root / "poses" / "k").mkdir(parents=True)
    pq.write_table(table, root / "poses" / "k" / "part-000000000-000000040.parquet")
    (root / "videos").mkdir()
    record = {"video_id": "walk/clip.mp4", "uri": "/in/walk/clip.mp4", "status": "ok", "error": None, "num_frames": 40,
              "fps": FPS, "width": WIDTH, "height": HEIGHT, "duration_s": 4.0, "num_rows": n, "num_tracks": len(frames),
              "job_fingerprint": "t"}
    pq.write_table(videos_table([record], provenance_metadata({})), root / "videos" / "k.parquet")


@pytest.fixture()
def out(tmp_path) -> Path:
    # track 0: every frame; track 1: frames 0-19 and 30-39 (a gap); track 2: three frames only
    write_output(tmp_path / "out", {0: list(range(40)), 1: list(range(20)) + list(range(30, 40)), 2: [10, 11, 12]})
    return tmp_path / "out"


def smpl_model(folder: Path):
    """smplx's SMPL on a stand-in model file with SMPL's layout; its rest pelvis is the neutral model's."""
    smplx = pytest.importorskip("smplx")
    torch = pytest.importorskip("torch")
    v = 6890
    rng = np.random.default_rng(0)
    template = rng.normal(0, 0.3, (v, 3))
    template[:24] = rng.normal(0, 0.3, (24, 3))
    template[0] = SMPL_NEUTRAL_PELVIS
    weights = np.zeros((v, 24))
    weights[np.arange(v), np.arange(v) % 24] = 1.0
    model = {"J_regressor": np.eye(24, v), "weights": weights, "posedirs": np.zeros((v, 3, 207)), "v_template": template,
             "shapedirs": np.zeros((v, 3, 10)), "f": np.array([[0, 1, 2]]),
             "kintree_table": np.array([[2**32 - 1] + SMPL_PARENTS[1:], list(range(24))])}
    path = folder / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps(model))
    body = smplx.SMPL(model_path=str(path), gender="neutral")

    def joints(poses: np.ndarray, betas: np.ndarray, trans: np.ndarray) -> np.ndarray:
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
        result = body(global_orient=t(poses[:, :3]), body_pose=t(poses[:, 3:]), betas=t(np.tile(betas, (len(poses), 1))),
                      transl=t(trans))
        return result.joints[:, :24].detach().numpy().astype(np.float64)

    return joints


def test_smpl_npz_has_amass_layout_and_drives_smpl_upright_in_the_camera_placement(out, tmp_path):
    report = export_animation(str(out), tmp_path / "anim")
    key = video_key("walk/clip.mp4")  # OUTPUT's own folder name for the video: a readable stem and a hash
    assert key.startswith("walk_clip.mp4-")
    assert [p.relative_to(tmp_path / "anim").as_posix() for p in report.written] == [f"{key}/track_0000.npz",
                                                                                     f"{key}/track_0001.npz"]
    listed = (tmp_path / "anim" / "tracks_smpl.csv").read_text().splitlines()
    assert listed == ["video_id,track_id,file,frames,fps", f"walk/clip.mp4,0,{key}/track_0000.npz,40,10",
                      f"walk/clip.mp4,1,{key}/track_0001.npz,40,10"]
    assert report.skipped == [("walk/clip.mp4", 2, "3 row(s) < --min-frames 10")]
    data = np.load(report.written[0])  # plain arrays: no pickle needed
    assert set(data.files) == {"poses", "betas", "trans", "mocap_framerate", "gender"}
    assert data["poses"].shape == (40, 72) and data["betas"].shape == (10,) and data["trans"].shape == (40, 3)
    assert float(data["mocap_framerate"]) == FPS and str(data["gender"]) == "neutral"
    rows = [smpl_row(0, t) for t in range(40)]
    np.testing.assert_allclose(data["poses"][:, 3:], np.stack([r["body"].reshape(69) for r in rows]), atol=1e-6)
    np.testing.assert_allclose(data["betas"], np.mean([r["betas"] for r in rows], axis=0), atol=1e-6)

    joints = smpl_model(tmp_path)
    world = joints(data["poses"], data["betas"], data["trans"])
    # The same bodies posed in the camera frame with HMR's own numbers, then turned to z-up, are the file's.
    cam_poses = np.concatenate([np.stack([r["orient"] for r in rows]), data["poses"][:, 3:]], axis=1)
    cam_trans = full_frame_translation(np.stack([r["box"] for r in rows]), np.stack([r["camera"] for r in rows]), WIDTH, HEIGHT)
    camera = joints(cam_poses, data["betas"], cam_trans)
    np.testing.assert_allclose(world, camera @ CAMERA_TO_WORLD.T, atol=1e-4)
    # Upright: SMPL's up (+y at rest) points up (+z); the camera looks along +y.
    up = Rotation.from_rotvec(data["poses"][:, :3]).apply([0, 1, 0])
    assert (up[:, 2] > 0.99).all()
    assert (data["trans"][:, 1] > 1).all()  # in front of the camera


def test_a_gap_is_filled_on_the_clock_by_slerp(out, tmp_path):
    report = export_animation(str(out), tmp_path / "anim", video_ids=["walk/clip.mp4"])
    data = np.load(report.written[1])
    assert data["poses"].shape == (40, 72)  # frames 0-39 on the 10 fps clock, 20-29 interpolated
    a, b = smpl_row(1, 19), smpl_row(1, 30)
    turn = Rotation.from_rotvec(data["poses"][24, 3:6]) * Rotation.from_rotvec(a["body"][0]).inv()
    whole = Rotation.from_rotvec(b["body"][0]) * Rotation.from_rotvec(a["body"][0]).inv()
    assert turn.magnitude() == pytest.approx(whole.magnitude() * 5 / 11, rel=1e-4)
    np.testing.assert_allclose(data["poses"][30, 3:], b["body"].reshape(69), atol=1e-6)


def test_smpl_motion_resamples_variable_frame_rate_onto_a_regular_clock(out):
    rows = read_poses(str(out))
    track0 = rows.filter(np.asarray(rows.column("track_id").to_numpy()) == 0)
    # the same rows stamped on an irregular clock: 0, 0.1, 0.3, 0.35 ... as a VFR stream would be
    stamps = np.cumsum(np.where(np.arange(40) % 2, 0.15, 0.05)) - 0.05
    vfr = track0.set_column(track0.schema.get_field_index("timestamp_s"), "timestamp_s", [stamps])
    motion = smpl_motion(vfr, FPS, WIDTH, HEIGHT)
    assert len(motion["poses"]) == int(np.floor(stamps[-1] * FPS + 1e-6)) + 1
    np.testing.assert_allclose(motion["poses"][0], smpl_motion(track0, FPS, WIDTH, HEIGHT)["poses"][0])


def test_bvh_reads_back_with_bvhio_and_reproduces_the_skeleton(out, tmp_path):
    bvhio = pytest.importorskip("bvhio")
    report = export_animation(str(out), tmp_path / "bvh", fmt="bvh", min_frames=5)
    assert [p.name for p in report.written] == ["track_0000.bvh", "track_0001.bvh"]
    rows = read_poses(str(out))
    track0 = rows.filter(np.asarray(rows.column("track_id").to_numpy()) == 0)
    expected = skeleton_motion(track0, FPS, WIDTH, HEIGHT) * 100  # centimetres
    root = bvhio.readAsHierarchy(str(report.written[0]))
    names = [joint.Name for joint, _, _ in root.layout()]
    from posepipe.models.skeletons import H36M17_NAMES

    assert sorted(names) == sorted(H36M17_NAMES)
    worst = 0.0
    for t in range(0, 40, 3):
        root.loadPose(t)
        got = {joint.Name: np.array(list(joint.PositionWorld)) for joint, _, _ in root.layout()}
        for j, name in enumerate(H36M17_NAMES):
            worst = max(worst, float(np.abs(got[name] - expected[t, j]).max()))
    assert worst < 0.01, worst  # centimetres: the rigid test skeleton comes back exactly


def test_cli_writes_smpl_and_bvh_and_refuses_bad_options(out, tmp_path):
    from posepipe.jobs.export import export_group

    runner = CliRunner()
    result = runner.invoke(export_group, ["smpl", str(out), "--output", str(tmp_path / "a"), "--min-frames", "20"])
    assert result.exit_code == 0, result.output
    key = video_key("walk/clip.mp4")
    assert "2 track file(s) (smpl) from 1 video(s), listed in" in result.output
    assert (tmp_path / "a" / key / "track_0001.npz").exists()
    result = runner.invoke(export_group, ["smpl", str(out), "--output", str(tmp_path / "b"), "--format", "bvh",
                                          "--video", "walk/clip.mp4", "--focal", "800"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b" / key / "track_0000.bvh").exists() and (tmp_path / "b" / "tracks_bvh.csv").exists()
    result = runner.invoke(export_group, ["smpl", str(out), "--output", str(tmp_path / "c"), "--video", "nope.mp4"])
    assert result.exit_code == 2 and "nope.mp4" in result.output
    result = runner.invoke(export_group, ["smpl", str(out), "--output", str(tmp_path / "d"), "--min-frames", "100"])
    assert result.exit_code == 1 and "no track" in result.output
    with pytest.raises(AnimationError, match="min_frames"):
        export_animation(str(out), tmp_path / "e", min_frames=0)
