"""Hostile inputs, second pass (issue 19, part A): object keys that look like URLs, relative inputs,
files whose timestamps restart or wrap, and pictures of extreme sizes.

Each break is reproduced the way it was found: the real CLI with a real local Ray, a real moto S3
server and a real HTTP server on loopback, and real files FFmpeg wrote. Then variants of each class.
"""
from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner

from posepipe.jobs.cli import main
from posepipe.pipeline.io.sources import scan_inputs
from posepipe.pipeline.io.store import OutputError, Store
from posepipe.pipeline.io.video import VideoError, open_video, probe_video, shard_bounds
from tests import media
from tests.servers import make_bucket, put_object, s3_client, serve_directory

FAST = ["--random-weights", "--max-persons", "1", "--no-flip-test"]
NFC, NFD = unicodedata.normalize("NFC", "café.mp4"), unicodedata.normalize("NFD", "café.mp4")


def run_cli(*args: str):
    result = CliRunner().invoke(main, ["run", *args, "--json"], catch_exceptions=False)
    summary = json.loads(result.stdout[result.stdout.index("{"):]) if "{" in result.stdout else None
    return result, summary


def videos_table(out: Path) -> dict[str, dict]:
    rows = duckdb.sql(f"SELECT * FROM read_parquet('{out}/videos/*.parquet')").fetchall()
    columns = duckdb.sql(f"SELECT * FROM read_parquet('{out}/videos/*.parquet') LIMIT 0").columns
    return {row[columns.index("video_id")]: dict(zip(columns, row)) for row in rows}


def small_clip(path: Path, n: int, width: int = 160) -> bytes:
    """A real clip of `n` frames, `width` x 96 pixels (each clip of a test unlike the others: a read of
    the wrong object shows in the row)."""
    return media.write_clip(path, media.source_frames(n, (width, 96))).read_bytes()


# -- 1. an object key is a key ------------------------------------------------------------------

# key under in/ -> the width of its clip. `clip` and `q` are the keys a URL parser cut `clip#1.mp4` and
# `q?x.mp4` to: other videos (they have no video extension, so they are not listed themselves).
URLISH_KEYS = {"clip#1.mp4": 64, "q?x.mp4": 80, "a%20b.mp4": 96, "p%.mp4": 112, "a+b.mp4": 128, "a b.mp4": 144,
               NFC: 160, NFD: 176, "a//b.mp4": 192, "dot./c.mp4": 208}
DECOYS = {"clip": 224, "q": 240}


@pytest.mark.slow
def test_object_keys_that_look_like_urls_are_read_from_themselves(ray_local, s3_server, tmp_path):
    make_bucket(s3_server.endpoint_url, "urlish")
    for key, width in {**URLISH_KEYS, **DECOYS}.items():
        put_object(s3_server.endpoint_url, "urlish", f"in/{key}", small_clip(tmp_path / "clips" / f"{width}.mp4", 2, width))
    out = tmp_path / "out"
    result, summary = run_cli("s3://urlish/in/", "--output", str(out), *FAST)
    assert result.exit_code == 0, result.output
    assert summary["ok"] == len(URLISH_KEYS) and summary["failed"] == 0
    rows = videos_table(out)
    assert set(rows) == set(URLISH_KEYS)  # NFC and NFD spellings are two objects, two videos
    for key, width in URLISH_KEYS.items():
        row = rows[key]
        assert (row["status"], row["width"], row["num_frames"]) == ("ok", width, 2), (key, row)  # the object itself
        assert row["uri"] == f"s3://urlish/in/{key}"   # stored verbatim: what `aws s3 cp` takes

    # A rerun finds every video complete: the listing's identity matches the rows' (nothing redone).
    result, summary = run_cli("s3://urlish/in/", "--output", str(out), *FAST)
    assert result.exit_code == 0 and summary["skipped_complete"] == len(URLISH_KEYS), result.output

    # render reads the source from the row's uri: the object with '#', not `clip` (224 px wide, which
    # render's source check would refuse as another video).
    frame = tmp_path / "frame.png"
    rendered = CliRunner().invoke(main, ["render", str(out), "--video", "clip#1.mp4", "--frame", "1", "--output", str(frame)])
    assert rendered.exit_code == 0 and frame.stat().st_size > 0, rendered.output


def test_a_typed_object_uri_is_parsed_once(s3_server, tmp_path):
    make_bucket(s3_server.endpoint_url, "typed")
    for key, n in {"in/clip#1.mp4": 2, "in/clip": 5, "in/a%20b.mp4": 3, "in/a b.mp4": 4}.items():
        put_object(s3_server.endpoint_url, "typed", key, small_clip(tmp_path / f"{n}.mp4", n))
    for typed, video_id, n in [("s3://typed/in/clip#1.mp4", "clip#1.mp4", 2), ("s3://typed/in/a%20b.mp4", "a%20b.mp4", 3),
                               ("s3://typed/in/a b.mp4", "a b.mp4", 4)]:
        [ref] = scan_inputs(typed).videos  # one object: the key as typed, '#' and '%20' included
        assert (ref.video_id, ref.uri) == (video_id, typed)
        assert probe_video(ref.uri).info.num_frames == n
        with open_video(ref.uri) as video:
            assert sum(len(batch) for _, batch, _ in video.frames(0, n)) == n

    # A '?' in a typed object-store URI cannot be told from a pasted query string (a signed URL's
    # parameters): refused before any work, with what to do. A listed key with '?' is read (above).
    result = CliRunner().invoke(main, ["run", "s3://typed/in/q?x.mp4", "--output", str(tmp_path / "o"), *FAST])
    assert result.exit_code == 2 and "query string" in result.output, result.output
    assert not (tmp_path / "o").exists()


def test_output_prefixes_with_url_characters_hold_their_rows(s3_server):
    from posepipe.pipeline.io.schema import videos_table as build_videos_table
    from posepipe.pipeline.io.store import video_key

    make_bucket(s3_server.endpoint_url, "outs")
    client = s3_client(s3_server.endpoint_url)
    for prefix in ["out#1", "q?x", "a%20b", "p%", "a+b", "a b", NFC, NFD, "dot."]:
        store = Store(f"s3://outs/{prefix}/")
        store.check_writable()
        store.write_table(f"videos/{video_key('v.mp4')}.parquet",
                          build_videos_table([{"video_id": "v.mp4", "uri": "s3://b/v.mp4", "status": "ok"}]))
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="outs", Prefix=f"{prefix}/").get("Contents", [])]
        assert f"{prefix}/videos/{video_key('v.mp4')}.parquet" in keys, (prefix, keys)  # under the prefix as typed
        assert list(Store(f"s3://outs/{prefix}").completed_videos()) == ["v.mp4"], prefix  # and read back from it
    assert all(key.split("/")[0] in {"out#1", "q?x", "a%20b", "p%", "a+b", "a b", NFC, NFD, "dot.", "_index"}
               for key in (o["Key"] for o in client.list_objects_v2(Bucket="outs")["Contents"]))


@pytest.mark.parametrize("prefix", ["a//b", "a/./b", "a/../b", "./a"])
def test_output_prefixes_the_storage_layer_would_rewrite_are_refused(prefix, tmp_path):
    with pytest.raises(OutputError, match="segment"):
        Store(f"s3://bucket/{prefix}")
    media.street_clip(tmp_path / "in" / "a.mp4", n=2)
    result = CliRunner().invoke(main, ["run", str(tmp_path / "in"), "--output", f"s3://bucket/{prefix}", *FAST])
    assert result.exit_code == 2 and "segment" in result.output and "Traceback" not in result.output, result.output


def test_an_http_url_keeps_its_query_and_drops_its_fragment(tmp_path):
    site = tmp_path / "site"
    small_clip(site / "clip#1.mp4", 2)
    (site / "clip").write_bytes(small_clip(tmp_path / "other.mp4", 5))
    with serve_directory(site) as http:
        # A URL the user typed: '#' in a file name is written %23; the query is sent (a signed URL
        # needs it) and never stored; the fragment is never sent.
        [ref] = scan_inputs(f"{http.url}/clip%231.mp4?token=abc#t=1").videos
        assert ref.video_id == "clip#1.mp4" and ref.uri == f"{http.url}/clip%231.mp4?token=abc"
        assert probe_video(ref.uri).info.num_frames == 2
        assert http.requests and all(path == "/clip%231.mp4?token=abc" for path, _ in http.requests)
        # A bare '#' starts the fragment, as in any browser: this URL names the file `clip`.
        [bare] = scan_inputs(f"{http.url}/clip#1.mp4").videos
        assert bare.video_id == "clip" and probe_video(bare.uri).info.num_frames == 5


# -- 2. stored paths are absolute -----------------------------------------------------------------

@pytest.mark.slow
def test_a_relative_input_is_stored_absolute_and_renders_from_elsewhere(ray_local, tmp_path, monkeypatch):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    clip = media.street_clip(work / "my clips" / "walk.mp4", n=3)
    (work / "link").symlink_to(work / "my clips")  # a relative INPUT through a link and '..'
    elsewhere.mkdir()
    monkeypatch.chdir(work)
    result, summary = run_cli("link/../my clips", "--output", "out", *FAST)  # OUTPUT relative too
    assert result.exit_code == 0 and summary["ok"] == 1, result.output
    row = videos_table(work / "out")["walk.mp4"]
    assert row["uri"] == str(clip) and os.path.isabs(row["uri"])

    monkeypatch.chdir(elsewhere)  # render from another directory finds the source by its stored path
    rendered = CliRunner().invoke(main, ["render", str(work / "out"), "--video", "walk.mp4", "--frame", "0",
                                         "--output", "frame.png"])
    assert rendered.exit_code == 0 and (elsewhere / "frame.png").stat().st_size > 0, rendered.output


@pytest.mark.slow
def test_a_file_name_that_is_not_utf8_is_skipped_with_its_reason(ray_local, tmp_path):
    """Bytes that are not UTF-8 in a name (a latin-1 camera folder) once ended the job at its first
    table write with a traceback; now that file is skipped, said why, and the others are processed."""
    src = tmp_path / "in"
    media.street_clip(src / "good.mp4", n=3)
    bad = os.fsdecode(b"caf\xe9.mp4")
    os.link(src / "good.mp4", src / bad)
    result, summary = run_cli(str(src), "--output", str(tmp_path / "out"), *FAST)
    assert result.exit_code == 0 and summary["ok"] == 1, result.output
    skipped = {s["name"]: s["reason"] for s in summary["skipped_inputs"]}
    assert "not valid UTF-8" in skipped[bad] and "Traceback" not in result.output
    single, _ = run_cli(str(src / bad), "--output", str(tmp_path / "out2"), *FAST)
    assert single.exit_code == 2 and "not valid UTF-8" in single.output


def test_local_inputs_are_absolute_at_the_edge(tmp_path, monkeypatch):
    clip = media.street_clip(tmp_path / "my clips" / "walk.mp4", n=2)
    (tmp_path / "alias.mp4").symlink_to(clip)
    monkeypatch.chdir(tmp_path)
    for typed in ["my clips", "./my clips/", "my clips/../my clips/walk.mp4", f"file://{tmp_path}/my%20clips"]:
        [ref] = scan_inputs(typed).videos
        assert (ref.video_id, ref.uri) == ("walk.mp4", str(clip)), typed
    [link] = scan_inputs("alias.mp4").videos  # a link keeps its own name, its folder made absolute
    assert (link.video_id, link.uri) == ("alias.mp4", str(tmp_path / "alias.mp4"))
    # In a file:// URL, '#' and '?' end the path: refused with what to write instead, not cut.
    result = CliRunner().invoke(main, ["run", f"file://{tmp_path}/my clips/a#b.mp4", "--output", "o", *FAST])
    assert result.exit_code == 2 and "%23" in result.output, result.output


# -- 3. frame counts that cannot restart unnoticed --------------------------------------------

def _timestamp_cases(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    walk = media.write_clip(folder / ".walk.mp4", media.source_frames(8, (160, 120)), codec="libx264", gop=4)
    wall = media.write_clip(folder / ".wall.mp4", [np.full((120, 160, 3), 9 * i, np.uint8) for i in range(4)],
                            codec="libx264", gop=4)
    return {
        "joined.ts": media.joined_ts(folder / "joined.ts", walk, wall),          # timestamps restart
        "joined.mpg": media.joined_mpeg_ps(folder / "joined.mpg", walk, wall),   # in a program stream too
        "wrapped.ts": media.wrapped_ts(folder / "wrapped.ts", walk),             # the 33-bit clock wraps
        "elementary.mp4": media.elementary_h264(folder / "elementary.mp4", walk),  # no timestamps at all
        "edit_list.mp4": media.edit_list_mp4(folder / "edit_list.mp4", walk),   # samples the video never shows
        "size_change.ts": media.resolution_change_ts(folder / "size_change.ts", 4),  # 160x120, then 320x240
    }


def test_every_shard_plan_decodes_the_frames_a_plain_pass_decodes(tmp_path):
    """Whatever the timestamps, the frames a video's shards decode are the plain pass's frames, in order."""
    import av

    for name, path in _timestamp_cases(tmp_path).items():
        with av.open(str(path)) as container:
            truth = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
        info = probe_video(str(path)).info
        assert info.num_frames == len(truth), (name, info.num_frames, len(truth))
        got = []
        with open_video(str(path), info=info) as video:
            for start, stop in shard_bounds(info, 2):
                for indices, batch, _ in video.frames(start, stop):
                    got += list(zip(indices.tolist(), batch))
            assert [i for i, _ in got] == list(range(len(truth))), name
            # frames out of order (the pose stage's stretches) come from the same places
            for start, stop in [(4, 7), (1, 3), (len(truth) - 2, len(truth))]:
                again = [f for _, batch, _ in video.frames(start, stop) for f in batch]
                assert all(np.array_equal(a, b) for a, b in zip(again, [f for _, f in got[start:stop]])), name
        first = truth[0].shape
        for index, frame in got:
            assert frame.shape == first, (name, index)  # a size change is scaled to the first frame's size
            if truth[index].shape == first:
                assert np.array_equal(frame, truth[index]), (name, index)


@pytest.mark.slow
def test_files_whose_timestamps_restart_are_committed_with_every_frame(ray_local, tmp_path):
    cases = _timestamp_cases(tmp_path / "in")
    truth = {name: media.decoded_count(path) for name, path in cases.items()}
    assert truth["joined.ts"] == 12  # both parts: the recount after a seek used to stop in the second
    out = tmp_path / "out"
    result, summary = run_cli(str(tmp_path / "in"), "--output", str(out), "--shard-frames", "4", *FAST)
    assert result.exit_code == 0, result.output
    rows = videos_table(out)
    for name, count in truth.items():
        assert (rows[name]["status"], rows[name]["num_frames"]) == ("ok", count), (name, rows[name])
    assert rows["size_change.ts"]["width"] == 160 and rows["size_change.ts"]["height"] == 120
    assert summary["frames"] == sum(truth.values())


def test_a_decoder_that_finds_more_frames_than_counted_fails_the_video(tmp_path):
    """Never a wrong count committed as ok: a frame past the count is an error that says so."""
    from dataclasses import replace

    clip = media.write_clip(tmp_path / "walk.mp4", media.source_frames(6, (160, 120)))
    info = probe_video(str(clip)).info
    short = replace(info, num_frames=4, keyframes=(0,), keyframe_dts=(0,), keyframe_offsets=(0,))
    with open_video(str(clip), info=short) as video, pytest.raises(VideoError, match="more frames than the 4"):
        for _ in video.frames(0, 4):
            pass


# -- 4. sizes: a reason in words, or the video processed -----------------------------------------

@pytest.mark.slow
def test_extreme_sizes_are_processed_or_refused_in_words(ray_local, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    processed = {f"{w}x{h}.mkv": (w, h) for w, h in [(4096, 2), (2, 2048), (1, 1), (3, 5), (4096, 1)]}
    for name, (w, h) in processed.items():
        media.sized_clip(src / name, w, h)
    media.write_clip(src / "mpeg4_4096x2.mp4", [np.full((2, 4096, 3), 99, np.uint8)] * 3)
    processed["mpeg4_4096x2.mp4"] = (4096, 2)
    media.flat_clip(src / "8200x4400.mkv", 8200, 4400)
    out = tmp_path / "out"
    result, summary = run_cli(str(src), "--output", str(out), *FAST)
    assert result.exit_code == 3 and summary["failed"] == 1, result.output
    rows = videos_table(out)
    for name, (w, h) in processed.items():
        assert (rows[name]["status"], rows[name]["width"], rows[name]["height"]) == ("ok", w, h), (name, rows[name])
    reason = rows["8200x4400.mkv"]["error"]
    assert "8200x4400 pixels" in reason and "35,651,584" in reason and "scale" in reason
    for row in rows.values():
        assert "shape" not in (row["error"] or "") and "ssertion" not in (row["error"] or "")


def test_a_huge_picture_is_refused_at_probe_time_before_it_is_decoded(tmp_path):
    clip = media.flat_clip(tmp_path / "huge.mkv", 8200, 4400)
    with pytest.raises(VideoError, match=r"8200x4400 pixels \(36,080,000 a frame\)"):
        probe_video(str(clip))
