from __future__ import annotations

import cv2
import pytest
from click.testing import CliRunner

from posepipe.jobs.render import render_command
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
    result = run(str(out.root), "--video", "cls/v3.mp4", "--frame", "5", "--output", str(tmp_path / "f.png"))
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(tmp_path / "f.png")).shape == (HEIGHT, WIDTH, 3)


def test_render_a_range_to_mp4(out, tmp_path):
    result = run(str(out.root), "--video", "cls/v0.mp4", "--output", str(tmp_path / "o.mp4"), "--start", "1", "--stop", "4")
    assert result.exit_code == 0, result.output
    assert "3 frames" in result.output


def test_unknown_video_is_a_usage_error_listing_some_known_ids(out, tmp_path):
    result = run(str(out.root), "--video", "cls/v33.mp4", "--output", str(tmp_path / "o.mp4"))
    assert result.exit_code == 2
    assert "Invalid value for" in result.output and "--video" in result.output and "cls/v3.mp4" in result.output
    assert "12 video(s)" in result.output and "more)" in result.output  # a few, not all twelve


def test_frame_and_range_together_are_refused(out, tmp_path):
    result = run(str(out.root), "--video", "cls/v0.mp4", "--frame", "1", "--start", "0", "--output", str(tmp_path / "f.png"))
    assert result.exit_code == 2 and "--frame" in result.output


# ---------------------------------------------------------------- the source must be the video the rows came from


@pytest.fixture()
def one(tmp_path):
    source = write_video(tmp_path / "in" / "cls [/x]" / "clip ü.mp4", width=WIDTH, height=HEIGHT, frames=FRAMES, fps=FPS)
    return fake_output(tmp_path / "out", [FakeVideo("cls [/x]/clip ü.mp4", FRAMES, width=WIDTH, height=HEIGHT, fps=FPS,
                                                    uri=str(source), tracks={1: list(range(FRAMES))})], junk=False)


def frame(one, tmp_path, *extra: str):
    return run(str(one.root), "--video", "cls [/x]/clip ü.mp4", "--frame", "2", "--output", str(tmp_path / "f.png"), *extra)


@pytest.mark.parametrize(("name", "frames", "size", "fps", "message"), [
    ("clip ü.mp4", FRAMES + 4, (WIDTH, HEIGHT), FPS, f"frame count {FRAMES + 4} (the run read {FRAMES})"),
    ("clip ü.mp4", FRAMES, (2 * WIDTH, HEIGHT), 25.0, f"size {2 * WIDTH}x{HEIGHT} (the run read {WIDTH}x{HEIGHT}); frame rate 25 fps"),
    ("other.mp4", FRAMES, (WIDTH, HEIGHT), FPS, "file name 'other' (the video_id's is 'clip ü')"),
])
def test_a_source_that_is_another_video_is_refused_unless_forced(one, tmp_path, name, frames, size, fps, message):
    wrong = write_video(tmp_path / "moved" / name, width=size[0], height=size[1], frames=frames, fps=fps)
    result = frame(one, tmp_path, "--source", str(wrong))
    assert result.exit_code == 2, result.output
    assert f"--source {wrong} is not the video 'cls [/x]/clip ü.mp4'" in result.output and message in result.output
    assert "--force-source" in result.output and not (tmp_path / "f.png").exists()
    forced = frame(one, tmp_path, "--source", str(wrong), "--force-source")
    assert forced.exit_code == 0, forced.output
    assert cv2.imread(str(tmp_path / "f.png")).shape == (size[1], size[0], 3)


def test_the_same_video_moved_and_remuxed_is_accepted(one, tmp_path):
    moved = write_video(tmp_path / "elsewhere" / "clip ü.mov", width=WIDTH, height=HEIGHT, frames=FRAMES, fps=FPS)
    result = frame(one, tmp_path, "--source", str(moved))
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "frame 2 of cls [/x]/clip ü.mp4" in result.output


def test_a_recorded_file_that_was_replaced_is_refused(one, tmp_path):
    write_video(tmp_path / "in" / "cls [/x]" / "clip ü.mp4", width=WIDTH, height=HEIGHT, frames=FRAMES + 2, fps=FPS)
    result = run(str(one.root), "--video", "cls [/x]/clip ü.mp4", "--output", str(tmp_path / "o.mp4"))
    assert result.exit_code == 2, result.output
    assert "the file at" in result.output and f"frame count {FRAMES + 2}" in result.output
    assert not (tmp_path / "o.mp4").exists()


def test_a_source_uri_is_printed_without_credentials_or_query(one, tmp_path):
    result = frame(one, tmp_path, "--source", "http://viewer:hunter2@127.0.0.1:9/clip%20%C3%BC.mp4?X-Amz-Signature=s3cr3t")
    assert result.exit_code == 1, result.output
    assert "http://127.0.0.1:9/clip%20%C3%BC.mp4" in result.output
    assert "hunter2" not in result.output and "s3cr3t" not in result.output and "viewer" not in result.output


@pytest.mark.parametrize(("extra", "option", "message"), [
    (["--start", "50"], "'--start/--stop'", f"frame 50 is outside cls/v0.mp4's frames 0..{FRAMES - 1}"),
    (["--start", "5", "--stop", "3"], "'--start/--stop'", "must be greater than --start"),
])
def test_a_frame_range_outside_the_video_is_a_usage_error(out, tmp_path, extra, option, message):
    result = run(str(out.root), "--video", "cls/v0.mp4", "--output", str(tmp_path / "o.mp4"), *extra)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for {option}" in result.output and message in result.output


def test_an_unwritable_out_is_a_message(out, tmp_path):
    (tmp_path / "file").write_text("")
    result = run(str(out.root), "--video", "cls/v0.mp4", "--frame", "1", "--output", str(tmp_path / "file" / "f.png"))
    assert result.exit_code == 1, result.output
    assert "cannot write" in result.output and str(tmp_path / "file") in result.output


def test_out_that_is_the_source_video_is_refused(one, tmp_path):
    source = tmp_path / "in" / "cls [/x]" / "clip ü.mp4"
    before = source.read_bytes()
    result = run(str(one.root), "--video", "cls [/x]/clip ü.mp4", "--output", str(source))
    assert result.exit_code == 2 and "is the source video itself" in result.output
    assert source.read_bytes() == before


def test_names_and_errors_from_the_output_are_printed_inert(tmp_path):
    evil = "cls/a\x1b[2J\nfake.mp4"
    source = write_video(tmp_path / "in" / "a.mp4", width=WIDTH, height=HEIGHT, frames=FRAMES, fps=FPS)
    spec = fake_output(tmp_path / "out", [
        FakeVideo(evil, FRAMES, width=WIDTH, height=HEIGHT, fps=FPS, uri=str(source), tracks={1: [0]}),
        FakeVideo("cls/gone.mp4", 0, status="failed", error="HTTP 403 for https://h/x.mp4?X-Amz-Signature=s3cr3t \x1b[2J"),
    ], junk=False)
    ok = run(str(spec.root), "--video", evil, "--source", str(source), "--force-source", "--frame", "0",
             "--output", str(tmp_path / "f.png"))
    assert ok.exit_code == 0, ok.output
    assert "\x1b" not in ok.output and "of cls/a\\x1b[2J\\" in ok.output and "fake.mp4)" in ok.output
    assert not any(line.startswith("fake") for line in ok.output.splitlines())  # the newline is shown escaped
    failed = run(str(spec.root), "--video", "cls/gone.mp4", "--frame", "0", "--output", str(tmp_path / "f.png"))
    assert failed.exit_code == 1 and "https://h/x.mp4 \\x1b[2J" in failed.output
    assert "s3cr3t" not in failed.output and "\x1b" not in failed.output
