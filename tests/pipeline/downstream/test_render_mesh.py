"""`render --mesh hmr|smplify`: each person's SMPL joints, posed by the row's parameters, drawn where its camera
projects them, and in the 3D panel.

The expected pixels are computed here with smplx (the SMPL implementation SPIN runs) and SPIN's projection
written out by hand, from an OUTPUT whose rows carry known HMR and SMPLify parameters. The SMPL model is the
synthetic file of the published layout the SMPLify parity tests use (tests/models/smplify_reference.py).
"""
from __future__ import annotations

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from posepipe.pipeline.downstream.render import RenderError, render_frame, track_color
from posepipe.pipeline.io.schema import poses_table
from tests.fake_output import FakeVideo, fake_output, write_video
from tests.models.smplify_reference import write_model_files

WIDTH, HEIGHT, FRAMES, FPS = 320, 240, 6, 10.0
TRACK = 3
PARTS = ("global_orient", "body_pose", "betas", "camera")


def _params(prefix: str, frames: np.ndarray) -> dict[str, np.ndarray]:
    """Known SMPL parameters per row: upright (SPIN's 180 degrees about x), an elbow bent more by SMPLify."""
    n = len(frames)
    body = np.zeros((n, 23, 3), np.float32)
    body[:, 17, 2] = 0.4 if prefix == "smpl" else 1.2   # right elbow
    camera = np.stack([np.full(n, 1.1), 0.02 * frames, np.full(n, 0.05 if prefix == "smpl" else 0.1)], 1)
    return {f"{prefix}_global_orient": np.tile(np.float32([np.pi, 0, 0]), (n, 1)), f"{prefix}_body_pose": body,
            f"{prefix}_betas": np.full((n, 10), 0.3, np.float32), f"{prefix}_camera": camera.astype(np.float32)}


def _with_smpl(root, prefixes: tuple[str, ...]) -> None:
    """Put known SMPL parameters into every poses part of OUTPUT (as a run with those stages writes them)."""
    for path in sorted((root / "poses").rglob("part-*.parquet")):
        table = pq.read_table(path)
        frames = table.column("frame_index").to_numpy()
        columns = {k: v for prefix in prefixes for k, v in _params(prefix, frames).items()}
        filled = poses_table({"frame_index": frames, **columns})
        for name in columns:
            table = table.set_column(table.schema.get_field_index(name), table.schema.field(name), filled.column(name))
        pq.write_table(table, path)


@pytest.fixture(scope="module")
def smpl_files(tmp_path_factory):
    return write_model_files(tmp_path_factory.mktemp("licensed"), 0)


@pytest.fixture()
def output(tmp_path):
    source = write_video(tmp_path / "in" / "a.mp4", width=WIDTH, height=HEIGHT, frames=FRAMES, fps=FPS, background=40)
    made = fake_output(tmp_path / "out", [FakeVideo("a.mp4", FRAMES, width=WIDTH, height=HEIGHT, fps=FPS, uri=str(source),
                                                     tracks={TRACK: list(range(FRAMES))}, bbox_scores={TRACK: 0.9})],
                       junk=False)
    return made.root


def _expected_pixels(smpl_files, root, prefix: str, frame: int) -> np.ndarray:
    """SMPL's 24 joints of the row at `frame`, projected as SPIN projects them, in frame pixels (smplx)."""
    smplx = pytest.importorskip("smplx")
    import torch

    table = pq.read_table(next((root / "poses").rglob("part-000000004-*.parquet")) if frame >= 4 else
                          next((root / "poses").rglob("part-000000000-*.parquet")))
    row = table.filter(np.asarray(table.column("frame_index").to_numpy() == frame)).to_pylist()[0]
    body = smplx.SMPL(model_path=str(smpl_files["smpl"]), gender="neutral")
    t = lambda a: torch.as_tensor(np.asarray(a, np.float32)).reshape(1, -1)  # noqa: E731
    with torch.no_grad():
        joints = body(global_orient=t(row[f"{prefix}_global_orient"]), body_pose=t(row[f"{prefix}_body_pose"]),
                      betas=t(row[f"{prefix}_betas"])).joints[0, :24].numpy().astype(np.float64)
    s, tx, ty = row[f"{prefix}_camera"]
    p = joints + [tx, ty, 2 * 5000 / (224 * s)]
    crop = 5000 * p[:, :2] / p[:, 2:] + 112
    x1, y1, x2, y2 = row["bbox_xyxy"]
    return (crop - 112) * max(x2 - x1, y2 - y1) / 224 + [(x1 + x2) / 2, (y1 + y2) / 2]


def _lighter(color: tuple[int, int, int]) -> np.ndarray:
    return np.array([int(c + (255 - c) * 0.6) for c in color], np.int64)


@pytest.mark.parametrize("source", ["hmr", "smplify"])
def test_the_mesh_joints_are_drawn_where_the_rows_camera_projects_them(output, smpl_files, tmp_path, source):
    from posepipe.pipeline.downstream.render import MeshRequest

    _with_smpl(output, ("smpl", "smplify"))
    plain = cv2.imread(str(render_frame(str(output), "a.mp4", 2, tmp_path / "plain.png")))
    drawn = cv2.imread(str(render_frame(str(output), "a.mp4", 2, tmp_path / f"{source}.png",
                                        mesh=MeshRequest(source, str(smpl_files["smpl"])))))
    pixels = _expected_pixels(smpl_files, output, "smpl" if source == "hmr" else "smplify", 2)
    inside = [(int(round(x)), int(round(y))) for x, y in pixels if 2 <= x < WIDTH - 2 and 2 <= y < HEIGHT - 2]
    assert len(inside) >= 12, pixels  # the body is in the frame
    light = _lighter(track_color(TRACK))
    near = [np.abs(drawn[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).astype(np.int64) - light).sum(1).min() <= 30
            for x, y in inside]
    # the 2D skeleton is drawn over the mesh's joints, so a few may be covered
    assert np.mean(near) >= 0.75, (np.mean(near), inside)
    assert (np.abs(drawn.astype(int) - plain.astype(int)).sum(2) > 0).sum() > 100


def test_hmr_and_smplify_draw_different_bodies_and_the_panel_shows_smpl(output, smpl_files, tmp_path):
    from posepipe.pipeline.downstream.render import MeshRequest

    _with_smpl(output, ("smpl", "smplify"))
    images = {s: cv2.imread(str(render_frame(str(output), "a.mp4", 4, tmp_path / f"{s}.png", with_3d=True,
                                              mesh=MeshRequest(s, str(smpl_files["smpl"])))))
              for s in ("hmr", "smplify")}
    assert images["hmr"].shape == (HEIGHT, WIDTH + HEIGHT, 3)
    assert (np.abs(images["hmr"][:, :WIDTH].astype(int) - images["smplify"][:, :WIDTH].astype(int)).sum(2) > 0).sum() > 20
    panel = images["smplify"][:, WIDTH:]
    assert (panel == np.array(track_color(TRACK), np.uint8)).all(axis=2).sum() > 20


def test_a_mesh_needs_its_columns_and_the_model_file(output, smpl_files, tmp_path, monkeypatch):
    from posepipe.jobs.cli import main
    from posepipe.pipeline.downstream.render import MeshRequest

    _with_smpl(output, ("smpl",))   # a run without --refine smplify
    with pytest.raises(RenderError, match="without --refine smplify"):
        render_frame(str(output), "a.mp4", 1, tmp_path / "x.png", mesh=MeshRequest("smplify", str(smpl_files["smpl"])))
    with pytest.raises(RenderError, match="POSEPIPE_SMPL_MODEL"):
        render_frame(str(output), "a.mp4", 1, tmp_path / "x.png", mesh=MeshRequest("hmr", None))
    monkeypatch.delenv("POSEPIPE_SMPL_MODEL", raising=False)
    cli = CliRunner()
    result = cli.invoke(main, ["render", str(output), "--video", "a.mp4", "--frame", "1", "-o", str(tmp_path / "y.png"),
                               "--mesh", "smplify", "--smpl-model", str(smpl_files["smpl"])])
    assert result.exit_code == 2 and "--refine smplify" in result.output, result.output
    result = cli.invoke(main, ["render", str(output), "--video", "a.mp4", "--frame", "1", "-o", str(tmp_path / "y.png"),
                               "--mesh", "hmr", "--smpl-model", str(smpl_files["gmm"])])   # the prior, not the model
    assert result.exit_code == 2 and "gmm_08.pkl" in result.output, result.output
    result = cli.invoke(main, ["render", str(output), "--video", "a.mp4", "--frame", "1", "-o", str(tmp_path / "y.png"),
                               "--mesh", "hmr"], env={"POSEPIPE_SMPL_MODEL": str(smpl_files["smpl"])})
    assert result.exit_code == 0 and (tmp_path / "y.png").is_file(), result.output
    assert not list(tmp_path.glob(".*.png"))


# --------------------------------------------------------------------------- render --densepose


def _with_charts(root) -> dict[int, tuple[tuple[int, int, int, int], np.ndarray]]:
    """A densepose/ part beside each poses part (same name: the same commit), each row's chart a known
    pattern over its box: part I = 1 + (column // 4) % 24 in the left half, background on the right."""
    from posepipe.models.densepose import encode_iuv_png
    from posepipe.pipeline.io.schema import densepose_table
    from posepipe.pipeline.io.store import DENSEPOSE_DIR, Store

    store = Store(str(root))
    drawn = {}
    for path in sorted((root / "poses").rglob("part-*.parquet")):
        table = pq.read_table(path)
        rows = table.to_pylist()
        boxes, pngs = [], []
        for row in rows:
            x1, y1, x2, y2 = row["bbox_xyxy"]
            box = (int(x1), int(y1), int(x2 - x1), int(y2 - y1))
            iuv = np.zeros((3, box[3], box[2]), np.uint8)
            iuv[0, :, :box[2] // 2] = 1 + (np.arange(box[2] // 2) // 4) % 24
            iuv[1:] = 128
            boxes.append(box)
            pngs.append(encode_iuv_png(iuv))
            drawn[row["frame_index"]] = (box, iuv[0])
        charts = densepose_table({
            "video_id": "a.mp4", "frame_index": [r["frame_index"] for r in rows], "timestamp_s": [r["timestamp_s"] for r in rows],
            "track_id": [r["track_id"] for r in rows], "person_index": [r["person_index"] for r in rows],
            "bbox_xyxy": [r["bbox_xyxy"] for r in rows], "chart_box_xywh": boxes, "iuv_png": pngs})
        store.write_table(f"{DENSEPOSE_DIR}/{path.parent.name}/{path.name}", charts)
    return drawn


def test_densepose_parts_are_laid_over_the_frame_in_their_colours(output, tmp_path):
    from posepipe.pipeline.downstream.render import DENSEPOSE_ALPHA, DENSEPOSE_COLORS

    drawn = _with_charts(output)
    plain = cv2.imread(str(render_frame(str(output), "a.mp4", 3, tmp_path / "plain.png")))
    over = cv2.imread(str(render_frame(str(output), "a.mp4", 3, tmp_path / "dp.png", densepose=True)))
    (x, y, w, h), parts = drawn[3]
    # a chart pixel away from the skeleton's lines: the frame's pixel blended with its part's colour
    hits = 0
    for row in range(2, h - 2, 7):
        for col in range(0, w // 2, 5):
            want = plain[y + row, x + col] * (1 - DENSEPOSE_ALPHA) + DENSEPOSE_COLORS[parts[row, col]] * DENSEPOSE_ALPHA
            hits += np.abs(over[y + row, x + col].astype(float) - want).max() <= 2
    assert hits >= 10
    # the right half of the box is background: untouched where nothing else is drawn
    same = np.all(over[y + 2:y + h - 2, x + w // 2 + 2:x + w - 2] == plain[y + 2:y + h - 2, x + w // 2 + 2:x + w - 2], axis=2)
    assert same.mean() > 0.5
    assert len({tuple(c) for c in DENSEPOSE_COLORS[1:]}) == 24   # every part its own colour


def test_densepose_render_of_a_run_without_it_says_so(output, tmp_path):
    from posepipe.jobs.cli import main

    with pytest.raises(RenderError, match="without --densepose"):
        render_frame(str(output), "a.mp4", 1, tmp_path / "x.png", densepose=True)
    result = CliRunner().invoke(main, ["render", str(output), "--video", "a.mp4", "--frame", "1", "-o",
                                       str(tmp_path / "y.png"), "--densepose"])
    assert result.exit_code == 2 and "--densepose" in result.output, result.output
    _with_charts(output)
    result = CliRunner().invoke(main, ["render", str(output), "--video", "a.mp4", "--start", "1", "--stop", "4", "-o",
                                       str(tmp_path / "v.mp4"), "--densepose"])
    assert result.exit_code == 0 and "3 frames" in result.output, result.output
