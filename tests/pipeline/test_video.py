"""Decoding real files: geometry, timestamps, rotation, streaming from HTTP, and clear failures."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.streaming import StreamServer
from pipeline.video import VideoError, open_video
from tests import media
from tests.servers import serve_directory


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    street = media.street_clip(d / "street.mp4", n=12)
    return {
        "street": street,
        "rotated": media.rotated_clip(d / "rotated.mp4", street),
        "vfr": media.vfr_clip(d / "vfr.mp4", street),
        "bad": d / "bad",
        "bad_kinds": media.broken_files(d / "bad"),
    }


def test_geometry_and_frames(clips):
    with open_video(str(clips["street"])) as video:
        assert (video.info.num_frames, video.info.width, video.info.height) == (12, 384, 288)
        assert video.info.fps == pytest.approx(10.0)
        windows = list(video.frames(3, 11, window=4))
    assert [list(i) for i, _ in windows] == [[3, 4, 5, 6], [7, 8, 9, 10]]
    assert windows[0][1][0].shape == (288, 384, 3) and windows[0][1][0].dtype == np.uint8


def test_frames_are_bgr_like_opencv(clips):
    import cv2

    cap = cv2.VideoCapture(str(clips["street"]))
    ok, expected = cap.read()
    cap.release()
    with open_video(str(clips["street"])) as video:
        _, frames = next(video.frames(0, 1))
    # Different decoders differ by rounding; a channel swap would differ by far more.
    assert np.abs(frames[0].astype(int) - expected.astype(int)).mean() < 3


def test_rotation_metadata_gives_displayed_size(clips):
    with open_video(str(clips["rotated"])) as video:
        assert (video.info.width, video.info.height) == (288, 384)
        _, frames = next(video.frames(0, 1))
        assert frames[0].shape == (384, 288, 3)


def test_variable_frame_rate_timestamps_come_from_the_stream(clips):
    with open_video(str(clips["vfr"])) as video:
        stamps = video.timestamps
    np.testing.assert_allclose(stamps, [0, .1, .2, .3, .4, .5, .6, .9, 1.2, 1.5, 1.8, 2.1], atol=1e-3)


def test_avi_without_pts_falls_back_to_frame_rate():
    from tests.golden import MEDIA

    path = MEDIA / "Megamind.avi"
    if not path.exists():
        pytest.skip("../shared/media absent")
    with open_video(str(path)) as video:
        stamps = video.timestamps
        assert np.all(np.diff(stamps) > 0)
        assert stamps[1] == pytest.approx(1 / video.info.fps)


@pytest.mark.parametrize("name, needle", [
    ("empty.mp4", "not a readable video"), ("notes.mp4", "not a readable video"),
    ("truncated.mp4", "not a readable video"), ("audio_only.mp4", "no video stream"),
])
def test_bad_files_raise_a_readable_reason(clips, name, needle):
    with pytest.raises(VideoError, match=needle):
        with open_video(str(clips["bad"] / name)):
            pass


def test_http_stream_is_read_in_ranges_not_whole(clips):
    """An http(s) URI goes through smart-open and our loopback range server into FFmpeg."""
    with serve_directory(clips["street"].parent) as server:
        with open_video(f"{server.url}/street.mp4") as video:
            assert video.info.num_frames == 12
            frames = sum(len(f) for _, f in video.frames(0, 12))
        assert frames == 12
        assert any("range" in {k.lower() for k in headers} for _, headers in server.requests)


def test_stream_server_serves_byte_ranges(tmp_path):
    import urllib.request

    data = bytes(range(256)) * 100
    (tmp_path / "blob").write_bytes(data)
    server = StreamServer()
    try:
        url = server.publish(lambda: open(tmp_path / "blob", "rb"))
        req = urllib.request.Request(url, headers={"Range": "bytes=10-19"})
        with urllib.request.urlopen(req) as resp:
            assert resp.status == 206 and resp.read() == data[10:20]
        with urllib.request.urlopen(url) as resp:
            assert resp.read() == data
    finally:
        server.close()
