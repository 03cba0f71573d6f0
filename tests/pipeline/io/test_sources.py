from __future__ import annotations

import pytest

from posepipe.pipeline.io.sources import InputError, list_videos, redact
from tests.servers import make_bucket, put_object


def test_local_listing_is_recursive_sorted_and_skips_hidden(tmp_path):
    for name in ["b/clip.MP4", "a.avi", "notes.txt", ".hidden/x.mp4", "c/d/e.mkv"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [r.video_id for r in list_videos(str(tmp_path))] == ["a.avi", "b/clip.MP4", "c/d/e.mkv"]
    assert [r.video_id for r in list_videos(f"file://{tmp_path}/a.avi")] == ["a.avi"]


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        list_videos(str(tmp_path / "nope"))


def test_s3_listing(s3_server):
    make_bucket(s3_server.endpoint_url, "videos")
    for key in ["in/x/1.mp4", "in/2.mov", "in/readme.md", "other/3.mp4"]:
        put_object(s3_server.endpoint_url, "videos", key, b"data")
    refs = list_videos("s3://videos/in")
    assert [(r.video_id, r.uri) for r in refs] == [("2.mov", "s3://videos/in/2.mov"), ("x/1.mp4", "s3://videos/in/x/1.mp4")]


def test_redact_drops_secrets():
    assert redact("https://user:pw@host:9000/a/b.mp4?X-Amz-Signature=abc") == "https://host:9000/a/b.mp4"
    assert redact("/local/path.mp4") == "/local/path.mp4"


def test_hidden_names_are_skipped_alike_locally_and_on_s3(s3_server, tmp_path):
    from posepipe.pipeline.io.sources import scan_inputs

    names = ["a.mp4", ".b.mp4", ".cache/c.mp4", "d/.e.mp4"]
    make_bucket(s3_server.endpoint_url, "hidden")
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
        put_object(s3_server.endpoint_url, "hidden", f"in/{name}", b"x")
    local, remote = scan_inputs(str(tmp_path)), scan_inputs("s3://hidden/in/")
    assert [r.video_id for r in local.videos] == [r.video_id for r in remote.videos] == ["a.mp4"]
    assert {n for n, _ in local.skipped} == {n for n, _ in remote.skipped} == {".b.mp4", ".cache/c.mp4", "d/.e.mp4"}


def test_links_are_followed_once_and_loops_reported(tmp_path):
    from posepipe.pipeline.io.sources import scan_inputs

    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.mp4").write_bytes(b"x")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "up").symlink_to(tmp_path)  # a loop back to the root
    listing = scan_inputs(str(tmp_path))
    assert [r.video_id for r in listing.videos] == ["real/a.mp4"]  # the folder itself, not its alias
    assert {n for n, why in listing.skipped if "already searched" in why} == {"alias/", "real/up/"}


def test_object_uris_are_split_once_and_keys_kept_verbatim():
    from posepipe.pipeline.io.redaction import has_secrets
    from posepipe.pipeline.io.uris import URIError, object_uri, split_object_uri

    for key in ["clip#1.mp4", "q?x.mp4", "a%20b.mp4", "p%.mp4", "a+b.mp4", "a b.mp4", "a//b.mp4", "/lead.mp4", "x.", ""]:
        uri = object_uri("s3", "bkt", key)
        assert split_object_uri(uri) == ("bkt", key) and redact(uri) == uri, key
    assert split_object_uri("s3://AK:sk@bkt/k#1") == ("bkt", "k#1") and redact("s3://AK:sk@bkt/k#1") == "s3://bkt/k#1"
    assert has_secrets("s3://bkt/q?x.mp4") and not has_secrets("s3://bkt/clip#1.mp4")  # a typed '?' is refused
    with pytest.raises(URIError):
        split_object_uri("s3:/bkt/key")


def test_file_uris_are_decoded_once_and_refused_with_a_fragment(tmp_path):
    from posepipe.pipeline.io.sources import scan_inputs

    (tmp_path / "a b").mkdir()
    (tmp_path / "a b" / "c%d.mp4").write_bytes(b"x")
    [ref] = scan_inputs(f"file://{tmp_path}/a%20b/c%25d.mp4").videos
    assert ref.uri == str(tmp_path / "a b" / "c%d.mp4")
    for bad in (f"file://{tmp_path}/a b/c#d.mp4", f"file://{tmp_path}/a b/c?d.mp4"):
        with pytest.raises(InputError, match="%23"):
            scan_inputs(bad)
