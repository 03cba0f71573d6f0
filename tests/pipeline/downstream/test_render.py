from __future__ import annotations

import cv2
import numpy as np
import pytest

from posepipe.pipeline.io.readback import UnknownVideoError
from posepipe.pipeline.downstream.render import RenderError, render_frame, render_video, track_color
from tests.fake_output import FakeVideo, expected_keypoints, fake_output, write_video

WIDTH, HEIGHT, FRAMES, FPS = 240, 200, 12, 10.0
BACKGROUND = 40


@pytest.fixture()
def rendered_output(tmp_path):
    source = write_video(tmp_path / "in" / "jump" / "a.mp4", width=WIDTH, height=HEIGHT, frames=FRAMES, fps=FPS, background=BACKGROUND)
    videos = [
        FakeVideo("jump/a.mp4", FRAMES, width=WIDTH, height=HEIGHT, fps=FPS, uri=str(source),
                  tracks={3: list(range(FRAMES)), 8: list(range(6))}, bbox_scores={3: 0.9, 8: 0.6}, no_3d={(8, 0)}),
        FakeVideo("run/gone.mp4", 4, status="failed", error="decoder error: boom"),
    ]
    return fake_output(tmp_path / "out", videos, junk=False)


def test_track_colours_are_stable_distinct_and_grey_for_unconfirmed():
    assert track_color(3) == track_color(3)
    assert len({track_color(i) for i in range(20)}) == 20
    assert track_color(-1) == (160, 160, 160)


def test_frame_png_has_track_colours_at_keypoints(rendered_output, tmp_path):
    out = render_frame(str(rendered_output.root), "jump/a.mp4", 4, tmp_path / "f.png")
    image = cv2.imread(str(out))
    assert image.shape == (HEIGHT, WIDTH, 3)
    for track in (3, 8):
        points = np.round(expected_keypoints(0, track, 4)).astype(int)
        for x, y in points[[0, 5, 11, 16]]:
            assert tuple(int(c) for c in image[y, x]) == track_color(track), (track, x, y, image[y, x])
    assert abs(int(image[HEIGHT - 3, WIDTH - 3].mean()) - (BACKGROUND + 4)) <= 6  # untouched, decoded frame 4


def test_frame_with_3d_panel_is_wider_and_shows_the_tracks(rendered_output, tmp_path):
    out = render_frame(str(rendered_output.root), "jump/a.mp4", 2, tmp_path / "f3d.png", with_3d=True)
    image = cv2.imread(str(out))
    assert image.shape == (HEIGHT, WIDTH + HEIGHT, 3)
    panel = image[:, WIDTH:]
    for track in (3, 8):
        assert (panel == np.array(track_color(track), np.uint8)).all(axis=2).sum() > 20, track


def test_video_render_decodes_back_with_the_right_frames(rendered_output, tmp_path):
    import decord

    result = render_video(str(rendered_output.root), "jump/a.mp4", tmp_path / "o.mp4", start=2, stop=9, with_3d=True)
    assert result.frames == 7 and result.size == (WIDTH + HEIGHT, HEIGHT) and result.fps == FPS
    reader = decord.VideoReader(str(result.path))
    assert len(reader) == 7
    assert reader[0].shape == (HEIGHT, WIDTH + HEIGHT, 3)
    assert reader.get_avg_fps() == pytest.approx(FPS)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_errors_name_the_problem(rendered_output, tmp_path):
    root = str(rendered_output.root)
    with pytest.raises(UnknownVideoError, match="jump/a.mp4"):
        render_frame(root, "jump/zzz.mp4", 0, tmp_path / "x.png")
    with pytest.raises(RenderError, match="failed in the job"):
        render_frame(root, "run/gone.mp4", 0, tmp_path / "x.png")
    with pytest.raises(RenderError, match="outside"):
        render_frame(root, "jump/a.mp4", FRAMES, tmp_path / "x.png")
    with pytest.raises(RenderError, match=r"\.png"):
        render_frame(root, "jump/a.mp4", 0, tmp_path / "x.gif")
    (tmp_path / "in" / "jump" / "a.mp4").unlink()
    with pytest.raises(RenderError, match="--source"):
        render_frame(root, "jump/a.mp4", 0, tmp_path / "x.png")
