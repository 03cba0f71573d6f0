from __future__ import annotations

import cv2
import pytest
from click.testing import CliRunner

from jobs.render import render_command
from tests.fake_output import FakeVideo, fake_output, write_video

WIDTH, HEIGHT, FRAMES, FPS = 160, 120, 8, 10.0


@pytest.fixture()
def out(tmp_path):
    source = write_video(tmp_path / "in" / "a.mp4", width=WIDTH, height=HEIGHT, frames=FRAMES, fps=FPS)
    videos = [FakeVideo(f"cls/v{i}.mp4", FRAMES, width=WIDTH, height=HEIGHT, fps=FPS, uri=str(source),
                        tracks={1: list(range(FRAMES))}) for i in range(12)]
    return fake_output(tmp_path / "out", videos, junk=False)


def run(*args: str):
    return CliRunner().invoke(render_command, list(args), catch_exceptions=False)


def test_render_one_frame(out, tmp_path):
    result = run(str(out.root), "--video", "cls/v3.mp4", "--frame", "5", "--out", str(tmp_path / "f.png"))
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(tmp_path / "f.png")).shape == (HEIGHT, WIDTH, 3)


def test_render_a_range_to_mp4(out, tmp_path):
    result = run(str(out.root), "--video", "cls/v0.mp4", "--out", str(tmp_path / "o.mp4"), "--start", "1", "--stop", "4")
    assert result.exit_code == 0, result.output
    assert "3 frames" in result.output


def test_unknown_video_is_a_usage_error_listing_some_known_ids(out, tmp_path):
    result = run(str(out.root), "--video", "cls/v33.mp4", "--out", str(tmp_path / "o.mp4"))
    assert result.exit_code == 2
    assert "Invalid value for" in result.output and "--video" in result.output and "cls/v3.mp4" in result.output
    assert "12 video(s)" in result.output and "more)" in result.output  # a few, not all twelve


def test_frame_and_range_together_are_refused(out, tmp_path):
    result = run(str(out.root), "--video", "cls/v0.mp4", "--frame", "1", "--start", "0", "--out", str(tmp_path / "f.png"))
    assert result.exit_code == 2 and "--frame" in result.output
