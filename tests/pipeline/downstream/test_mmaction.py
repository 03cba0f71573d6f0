"""Our 2D and 3D PoseC3D exports through mmaction2 itself: its PoseDataset, pipelines and models.

mmaction2 1.2.0 needs NumPy < 2 and its own torch, so it runs in a venv of its own, made once and
kept at ``.venv-mmaction`` in the repository root (reused while its requirements are unchanged;
~45 s to build from PyPI with pip's cache, ~1 GB). The test exports a generated OUTPUT (rigid
H36M skeletons, so bone lengths are known), then runs ``mmaction_check.py`` in that venv: one
training step of the shipped PoseC3D and 2D ST-GCN configs, and of the H36M-17 ST-GCN config the
exporter writes (joints, and bones through ``posepipe_h36m``), and bone lengths through
PreNormalize3D. Skipped only when PyPI cannot be reached and no venv was built before.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from posepipe.models.skeletons import H36M17_PARENTS
from posepipe.pipeline.downstream.export import build_posec3d, write_mmaction_config, write_posec3d
from posepipe.pipeline.io.schema import poses_table, provenance_metadata, videos_table
from tests.side_venv import side_python

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[3]
# torch is the local CPU build the project's own venv uses (see Makefile); mmaction2's PoseCompact
# uses np.Inf, gone in NumPy 2.
REQUIREMENTS = ["torch==2.13.0", "numpy<2", "mmaction2==1.2.0", "mmengine==0.10.7", "mmcv-lite==2.1.0",
                "importlib-metadata",  # mmaction.utils.dependency imports it without declaring it
                "setuptools<80"]  # mmengine resolves `mmaction::` configs with pkg_resources

# H36M-17 bone offsets from the parent, metres, camera axes (x right, y down, z forward)
OFFSETS = np.array([
    [0, 0, 0], [-0.13, 0.02, 0], [0, 0.45, 0], [0, 0.44, 0], [0.13, 0.02, 0], [0, 0.45, 0], [0, 0.44, 0],
    [0, -0.23, 0], [0, -0.25, 0], [0, -0.11, 0], [0, -0.12, 0], [0.15, 0.02, 0], [0, 0.28, 0], [0, 0.25, 0],
    [-0.15, 0.02, 0], [0, 0.28, 0], [0, 0.25, 0]])


def _rot_y(a: float) -> np.ndarray:
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def _rot_x(a: float) -> np.ndarray:
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def skeleton(t: int, size: float, phase: float) -> np.ndarray:
    """(17, 3) pelvis-relative joints of a rigid person turning and swinging its limbs."""
    out = np.zeros((17, 3))
    turn = _rot_y(0.05 * t + phase)
    for j, parent in enumerate(H36M17_PARENTS):
        if parent < 0:
            continue
        swing = _rot_x(0.4 * np.sin(0.3 * t + j)) if j in (2, 3, 5, 6, 12, 13, 15, 16) else np.eye(3)
        out[j] = out[parent] + turn @ swing @ (OFFSETS[j] * size)
    return out


def write_output(root: Path) -> None:
    """Four videos in two classes, three people each (so M=2 drops one), 40 frames, 640x480."""
    meta = provenance_metadata({"test": "mmaction"})
    records = []
    for v, video_id in enumerate(["wave/a.mp4", "wave/b.mp4", "walk/c.mp4", "walk/d.mp4"]):
        rows = []
        for track in range(3):
            for t in range(40):
                if track == 2 and t % 3:  # a third person, seen now and then
                    continue
                k3 = skeleton(t, 1.0 + 0.05 * track + 0.02 * v, track + v)
                pelvis_px = np.array([160 + 150 * track + 2 * t, 240.0])
                k2 = pelvis_px + 200 * k3[:, :2]
                box = np.concatenate([k2.min(0) - 10, k2.max(0) + 10])
                rows.append((t, track, k2, k3, box))
        rows.sort(key=lambda r: (r[0], r[1]))
        n = len(rows)
        frame = np.array([r[0] for r in rows], np.int32)
        table = poses_table({
            "video_id": np.array([video_id] * n, dtype=object), "frame_index": frame, "timestamp_s": frame / 10.0,
            "track_id": np.array([r[1] for r in rows], np.int32),
            "person_index": np.array([sum(1 for q in rows[:i] if q[0] == r[0]) for i, r in enumerate(rows)], np.int32),
            "bbox_xyxy": np.stack([r[4] for r in rows]).astype(np.float32), "bbox_score": np.full(n, 0.9, np.float32),
            "keypoints_2d": np.stack([r[2] for r in rows]).astype(np.float32),
            "keypoint_scores": np.full((n, 17), 0.9, np.float32),
            "keypoints_3d": np.stack([r[3] for r in rows]).astype(np.float32),
            "smpl_camera": np.tile(np.array([0.9, 0.0, 0.1], np.float32), (n, 1)),
        }, metadata=meta)
        folder = root / "poses" / f"v{v}"
        folder.mkdir(parents=True)
        import pyarrow.parquet as pq

        pq.write_table(table, folder / "part-000000000-000000040.parquet")
        records.append({"video_id": video_id, "uri": f"/in/{video_id}", "status": "ok", "error": None, "num_frames": 40,
                        "fps": 10.0, "width": 640, "height": 480, "duration_s": 4.0, "num_rows": n, "num_tracks": 3,
                        "job_fingerprint": "t"})
    (root / "videos").mkdir()
    import pyarrow.parquet as pq

    for v, record in enumerate(records):
        pq.write_table(videos_table([record], meta), root / "videos" / f"v{v}.parquet")


def mmaction_python() -> Path:
    """The venv's python, built (or rebuilt, when REQUIREMENTS changed) on first use."""
    return side_python(".venv-mmaction", REQUIREMENTS, what="mmaction2 1.2.0")


def test_exports_train_in_mmaction2(tmp_path):
    out = tmp_path / "out"
    write_output(out)
    data = tmp_path / "data"
    for kind in ("2d", "3d"):
        dataset, report = build_posec3d(str(out), kind=kind)
        assert report.dropped_tracks == 4 and {a["keypoint"].shape[0] for a in dataset["annotations"]} == {2}
        pkl, _ = write_posec3d(dataset, report, data / f"ds{kind}.pkl")
        write_mmaction_config(report, pkl)
    python = mmaction_python()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    done = subprocess.run([str(python), str(ROOT / "tests" / "pipeline" / "downstream" / "mmaction_check.py"), str(data)],
                          capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["mmaction"] == "1.2.0"
    for name, shape in (("posec3d_2d", None), ("stgcn_2d", [2, 1, 2, 100, 17, 3]),
                        ("stgcn_3d_joint", [2, 1, 2, 100, 17, 3]), ("stgcn_3d_bone", [2, 1, 2, 100, 17, 3])):
        step = result[name]
        assert step["samples"] == 4 and np.isfinite(step["loss"]) and step["finite_grads"], (name, step)
        if shape:
            assert step["input_shape"] == shape, (name, step)
    assert result["posec3d_2d"]["input_shape"][2:4] == [17, 48]  # heatmap volumes: 17 joints x 48 frames
    # Bone lengths survive PreNormalize3D with the written axes; a zero pelvis did not.
    assert result["bone_length_max_error_m"] < 1e-4, result
    assert result["bone_length_max_error_zero_pelvis_m"] > 0.05, result
