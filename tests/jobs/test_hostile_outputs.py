"""A hostile pass on what the downstream commands write and which OUTPUT they accept (issue 19).

Each test runs the real CLI (click's CliRunner on `posepipe`'s own group, or a subprocess) on real
files: OUTPUTs written by the real writer (`Store.write_table`, `video_key`, attempt-named parts),
real videos decoded by PyAV, S3 on a real moto server, and reads back what the command wrote.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from posepipe.jobs.cli import main
from posepipe.pipeline.downstream.animation import export_animation
from posepipe.pipeline.io.destinations import count_on_disk, fold
from posepipe.pipeline.downstream.render import fit_frame as FIT_FRAME
from posepipe.pipeline.io.store import Store, part_name, video_key
from posepipe.pipeline.io.readback import read_videos
from posepipe.pipeline.io.schema import poses_table, provenance_metadata, videos_table
from tests import media
from tests.fake_output import FakeVideo, fake_output, upload_tree, write_video
from tests.pipeline.downstream.test_mmaction import skeleton
from tests.servers import make_bucket, put_object

FPS, WIDTH, HEIGHT, FRAMES = 10.0, 320, 240, 12

# Ids that an id -> path mapping that drops case, extension, empty or dot segments, or non-ASCII
# spelling merges: the S3 keys 'a//b.mp4' and 'a/b.mp4' are two objects, so two videos.
HOSTILE_IDS = [
    "walk/Clip.mp4", "walk/clip.mp4", "walk/clip.mov", "walk/clip", "walk/CLIP.MP4",
    "a//b.mp4", "a/b.mp4", "a/./b.mp4", "x/../a/b.mp4", "/a/b.mp4",
    unicodedata.normalize("NFC", "café.mp4"), unicodedata.normalize("NFD", "café.mp4"),
    "a b.mp4", "a_b.mp4", "a?b.mp4", "a#b.mp4",
    "L" * 100 + "1.mp4", "L" * 100 + "2.mp4",
    ".hidden.mp4", "_index.mp4", "videos", "poses", "tracks_smpl.csv",
    'he said "hi", then\nleft.mp4', "tab\there\x1b[2J.mp4",   # what a CSV and a terminal must keep inert
]


def cli(*args: str | Path):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def smpl_output(root: Path, video_ids: list[str], uri: str | None = None) -> Path:
    """An OUTPUT holding `video_ids`, two confirmed tracks each (FRAMES frames), with 2D, 3D and SMPL
    columns that differ by video and track, written as a run's finish writes them."""
    out = Store(str(root))
    for v, video_id in enumerate(video_ids):
        rows = [(t, track) for t in range(FRAMES) for track in (0, 1)]
        n = len(rows)
        frame = np.array([t for t, _ in rows], np.int32)
        track = np.array([k for _, k in rows], np.int32)
        box = np.stack([[20 + 3 * v + 120 * k + t, 30, 100 + 3 * v + 120 * k + t, 220] for t, k in rows]).astype(float)
        table = poses_table({
            "video_id": np.array([video_id] * n, dtype=object), "frame_index": frame, "timestamp_s": frame / FPS,
            "track_id": track, "bbox_xyxy": box, "bbox_score": np.full(n, 0.9, np.float32),
            "keypoints_2d": np.zeros((n, 17, 2), np.float32), "keypoint_scores": np.full((n, 17), 0.9, np.float32),
            "keypoints_3d": np.stack([skeleton(t, 1.0 + 0.01 * v, k) for t, k in rows]),
            "smpl_global_orient": np.tile([np.pi, 0.0, 0.0], (n, 1)) + 0.01 * frame[:, None],
            "smpl_body_pose": np.full((n, 23, 3), 0.01 * v) + 0.001 * track[:, None, None],
            "smpl_betas": np.full((n, 10), float(v)) + 0.1 * track[:, None],
            "smpl_camera": np.tile([0.9, 0.0, 0.1], (n, 1)),
        }, provenance_metadata({"test": "hostile_outputs"}))
        key, attempt = video_key(video_id), f"{v:012x}"
        out.write_table(f"poses/{key}/{part_name(0, FRAMES, attempt)}", table)
        out.write_table(f"videos/{key}.parquet", videos_table([{
            "video_id": video_id, "uri": uri or f"/in/{video_id}", "status": "ok", "num_frames": FRAMES, "fps": FPS,
            "width": WIDTH, "height": HEIGHT, "duration_s": FRAMES / FPS, "num_rows": n, "num_tracks": 2,
            "job_fingerprint": "hostile", "commit_attempt": attempt}], provenance_metadata({})))
    out.finish_job(video_ids)  # as a job's end: _committed.parquet and _index/
    return root


def reserved_snapshot(root: Path) -> dict[str, bytes]:
    """OUTPUT's own files: what the store and its readers use."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] in ("videos", "poses", "_index", "_committed.parquet")}


# ----------------------------------------------------------------------------------------------
# 1. Every file a command writes has a name of its own; the count is what is on disk


@pytest.mark.parametrize("fmt", ["smpl", "bvh"])
def test_export_smpl_gives_every_video_its_own_files(tmp_path, fmt):
    out = smpl_output(tmp_path / "out", HOSTILE_IDS)
    anim = tmp_path / "anim"
    result = cli("export", "smpl", out, "--output", anim, "--format", fmt, "--min-frames", "5")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and all(line.isprintable() for line in result.output.splitlines())
    suffix = ".npz" if fmt == "smpl" else ".bvh"
    on_disk = sorted(p for p in anim.rglob(f"*{suffix}"))
    assert len(on_disk) == 2 * len(HOSTILE_IDS)  # the issue: 98 reported, 90 on disk
    assert f"{len(on_disk)} track file(s) ({fmt}) from {len(HOSTILE_IDS)} video(s)" in result.output
    # distinct on a case-insensitive, normalisation-insensitive disk too (APFS, NTFS)
    assert len({fold(p) for p in on_disk}) == len(on_disk)
    assert not any(p.name.startswith(".") for p in anim.rglob("*"))  # no temp file left behind

    with (anim / f"tracks_{fmt}.csv").open(newline="", encoding="utf-8") as f:
        listed = list(csv.DictReader(f))
    assert sorted((r["video_id"], r["track_id"]) for r in listed) == sorted((v, t) for v in HOSTILE_IDS for t in "01")
    assert sorted(anim / r["file"] for r in listed) == on_disk
    # Each file holds its own video's track: the same bytes/arrays as that video exported alone.
    for video_id in HOSTILE_IDS[:6] + HOSTILE_IDS[10:12] + HOSTILE_IDS[-7:-5]:
        alone = export_animation(str(out), tmp_path / "alone" / str(HOSTILE_IDS.index(video_id)), fmt=fmt,
                                 video_ids=[video_id], min_frames=5)
        for mine in alone.written:
            row = next(r for r in listed if r["video_id"] == video_id and mine.name.endswith(f"{int(r['track_id']):04d}{suffix}"))
            theirs = anim / row["file"]
            if fmt == "bvh":
                assert theirs.read_text() == mine.read_text(), video_id
            else:
                a, b = np.load(theirs), np.load(mine)
                assert all(np.array_equal(a[k], b[k]) for k in a.files), video_id


def test_two_videos_that_would_share_a_folder_stop_the_export_before_anything_is_written(tmp_path):
    """A link in --output makes two videos' folders one, as a case-insensitive disk would: refused, not overwritten."""
    out = smpl_output(tmp_path / "out", ["walk/Clip.mp4", "walk/clip.mp4"])
    anim = tmp_path / "anim"
    (anim / video_key("walk/Clip.mp4")).mkdir(parents=True)
    (anim / video_key("walk/clip.mp4")).symlink_to(anim / video_key("walk/Clip.mp4"), target_is_directory=True)
    result = cli("export", "smpl", out, "--output", anim)
    assert result.exit_code == 1, result.output
    assert "would overwrite the other" in result.output and "Traceback" not in result.output
    assert not list(anim.rglob("*.npz")) and not (anim / "tracks_smpl.csv").exists()


def test_a_file_two_names_lead_to_is_counted_once(tmp_path):
    """What a case-insensitive disk does to 'A.npz' and 'a.npz', made with a hard link."""
    first = tmp_path / "A.npz"
    first.write_bytes(b"first")
    second = tmp_path / "a.npz"
    os.link(first, second)
    present, lost = count_on_disk([first, second, tmp_path / "gone.npz"])
    assert present == [second] and lost == [first, tmp_path / "gone.npz"]


@pytest.mark.parametrize("name", ["posepipe_h36m.py", "POSEPIPE_H36M.py", "Posepipe_H36m.PY"])
def test_posec3d_files_that_would_be_one_file_are_refused(tmp_path, name):
    """--output named like the bone transform module written beside a 3D pickle (in any case)."""
    out = smpl_output(tmp_path / "out", ["jump/a.mp4", "jump/b.mp4"])
    result = cli("export", "posec3d", out, "--output", tmp_path / "ds" / name, "--kind", "3d")
    assert result.exit_code == 2, result.output
    assert "would overwrite the other" in result.output and "'--output'" in result.output
    assert not (tmp_path / "ds").exists()


def test_posec3d_reports_the_files_on_disk_and_frame_dirs_stay_distinct(tmp_path):
    ids = ["jump/a.b", "jump/a.c", "jump/a.b.d", "jump/A.b.d", "jump/x.mp4", "jump/x.mov"]
    out = smpl_output(tmp_path / "out", ids)
    dest = tmp_path / "ds" / "set.pkl"
    result = cli("export", "posec3d", out, "--output", dest, "--kind", "3d")
    assert result.exit_code == 0, result.output
    written = [line[len("wrote "):] for line in result.output.splitlines() if line.startswith("wrote ")]
    assert sorted(written) == sorted(str(p) for p in (dest, dest.with_suffix(".labels.txt"),
                                                      dest.with_suffix(".mmaction2.py"), dest.parent / "posepipe_h36m.py"))
    import pickle

    data = pickle.loads(dest.read_bytes())
    dirs = [a["frame_dir"] for a in data["annotations"]]
    assert len(set(dirs)) == len(ids)  # 'a.b' (full id of one) and 'a.b' (stem of 'a.b.d') used to clash
    assert sorted(data["split"]["all"]) == sorted(dirs)


@pytest.mark.parametrize("name", ["it's.pkl", "two\nlines; import os.pkl", "caf\u00e9 \u202egnp.pkl", ".pkl"])
def test_the_mmaction2_config_names_the_pickle_whatever_its_name(tmp_path, name):
    """The 3D config is Python: a quote or a newline in --out's name must not break it or add code to it."""
    import ast

    out = smpl_output(tmp_path / "out", ["jump/a.mp4", "jump/b.mp4"])
    dest = tmp_path / "ds" / name
    result = cli("export", "posec3d", out, "--output", dest, "--kind", "3d")
    assert result.exit_code == 0, result.output
    config = dest.with_suffix(".mmaction2.py")
    tree = ast.parse(config.read_text())  # a SyntaxError here is the break
    assigned = {n.targets[0].id: n.value for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)}
    assert ast.literal_eval(assigned["ann_file"]) == name
    assert not any(isinstance(n, (ast.Import, ast.ImportFrom, ast.Expr)) for n in tree.body)
    assert f"python tools/train.py {ascii(config.name)[1:-1]}" in config.read_text()


# ----------------------------------------------------------------------------------------------
# 2. render: a stream whose frame size changes; the count is the written file's


def size_changing_clip(folder: Path, second: tuple[int, int]) -> Path:
    """Two H.264 segments, 160x120 then `second`, concatenated as one MPEG-TS (timestamps continue)."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, (w, h) in enumerate([(160, 120), second]):
        mp4 = media.write_clip(folder / f"seg{i}.mp4", [np.full((h, w, 3), 60 + 60 * i + 5 * f, np.uint8) for f in range(3)],
                               codec="libx264")
        ts = folder / f"seg{i}.ts"
        subprocess.run([media.ffmpeg(), "-y", "-loglevel", "error", "-i", str(mp4), "-c", "copy", "-bsf:v", "h264_mp4toannexb",
                        "-output_ts_offset", str(0.5 * i), "-f", "mpegts", str(ts)], check=True)
        parts.append(ts.read_bytes())
    clip = folder / "spliced.ts"
    clip.write_bytes(b"".join(parts))
    return clip


def frames_in(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


@pytest.mark.parametrize(("second", "extra", "size"), [
    ((200, 150), [], (160, 120)),                      # same aspect
    ((240, 120), [], (160, 120)),                      # wider
    ((120, 160), ["--3d"], (280, 120)),                # taller, with the 3D panel
    ((240, 120), ["--start", "4"], (160, 120)),        # starting in the second segment: still the first size
])
def test_render_keeps_every_frame_of_a_stream_whose_size_changes(tmp_path, second, extra, size):
    clip = size_changing_clip(tmp_path / "in", second)
    out = fake_output(tmp_path / "out", [FakeVideo("spliced.ts", 6, width=160, height=120, fps=10.0, uri=str(clip),
                                                   tracks={1: [0]})], junk=False)
    dest = tmp_path / "o.mp4"
    result = cli("render", out.root, "--video", "spliced.ts", "--output", dest, *extra)
    assert result.exit_code == 0, result.output
    frames = frames_in(dest)
    expected = 6 - (4 if "--start" in extra else 0)
    assert len(frames) == expected and all(f.shape[:2] == (size[1], size[0]) for f in frames)  # the issue: 2 of 4
    assert f"wrote {dest}: {expected} frames, {size[0]}x{size[1]}" in result.output
    last = frames[-1][:, :160]
    assert abs(float(np.median(last[50:70, 70:90])) - 130) < 12  # the second segment's picture, in the middle
    if "scaled to fit" in result.output:  # the render fitted frames of their own size: aspect kept, black bars
        assert f"{expected - 3 if '--start' not in extra else expected} frame(s) of {second[0]}x{second[1]}" in result.output
        if second == (240, 120):   # 160x80 picture: 20 px bars above and below
            assert last[:15].max() < 40 and last[-15:].max() < 40
        if second == (120, 160):   # 90x120 picture: bars left and right
            assert last[:, :30].max() < 40 and last[:, 130:160].max() < 40
    else:  # the decoder scaled every frame to the first frame's size: the picture fills the frame
        assert abs(float(np.median(last[:10])) - 130) < 12 and abs(float(np.median(last[:, :10])) - 130) < 12


def test_render_says_so_when_the_writer_is_given_another_size(tmp_path, monkeypatch):
    """A video stream has one size (OpenCV's writer dropped frames of another without a word): were
    the fitting ever skipped, the writer refuses the frame, the render stops and nothing is written."""
    from posepipe.pipeline.downstream import render

    clip = size_changing_clip(tmp_path / "in", (240, 120))
    out = fake_output(tmp_path / "out", [FakeVideo("spliced.ts", 6, width=160, height=120, fps=10.0, uri=str(clip))],
                      junk=False)
    decode = render._decode

    def own_sizes(loaded, start, stop):  # noqa: ANN001, ANN202 - frames as PyAV hands them out, each at its own size
        for index, frame in decode(loaded, start, stop):
            yield index, (cv2.resize(frame, (240, 120)) if index >= 3 else frame)

    monkeypatch.setattr(render, "_decode", own_sizes)
    monkeypatch.setattr(render, "fit_frame", lambda image, size: image)
    result = cli("render", out.root, "--video", "spliced.ts", "--output", tmp_path / "o.mp4")
    assert result.exit_code == 1 and "a 240x120 frame reached the writer of a 160x120 video" in result.output, result.output
    assert not (tmp_path / "o.mp4").exists() and not list(tmp_path.glob(".o.*"))
    monkeypatch.setattr(render, "fit_frame", FIT_FRAME)  # the real fitting back: all six kept
    result = cli("render", out.root, "--video", "spliced.ts", "--output", tmp_path / "o.mp4")
    assert result.exit_code == 0 and len(frames_in(tmp_path / "o.mp4")) == 6, result.output
    assert "3 frame(s) of 240x120 were scaled to fit 160x120" in result.output


# ----------------------------------------------------------------------------------------------
# 3. What is not an OUTPUT is refused with exit 2, by every command that takes OUTPUT


def commands(tmp_path: Path, gt: Path) -> dict[str, list[str]]:
    return {
        "files": ["files"],
        "posec3d": ["export", "posec3d", "{OUTPUT}", "--output", str(tmp_path / "w" / "d.pkl")],
        "smpl": ["export", "smpl", "{OUTPUT}", "--output", str(tmp_path / "w" / "anim")],
        "render": ["render", "{OUTPUT}", "--video", "walk/clip.mp4", "--output", str(tmp_path / "w" / "o.mp4")],
        "frame": ["render", "{OUTPUT}", "--video", "walk/clip.mp4", "--frame", "0", "--output", str(tmp_path / "w" / "f.png")],
        "eval": ["eval", "{OUTPUT}", "--gt", str(gt)],
    }


def argv(template: list[str], output: str) -> list[str]:
    if "{OUTPUT}" not in template:
        return [*template, output]
    return [output if a == "{OUTPUT}" else a for a in template]


def coco_gt(path: Path) -> Path:
    path.write_text(json.dumps({
        "images": [{"id": 1, "video_id": "walk/clip.mp4", "frame_index": 0}],
        "annotations": [{"id": 1, "image_id": 1, "bbox": [10, 10, 50, 100], "keypoints": [20, 20, 2] * 17}],
        "categories": [{"id": 1, "name": "person"}]}))
    return path


@pytest.fixture()
def not_outputs(tmp_path) -> dict[str, tuple[str, str]]:
    """name -> (what is passed as OUTPUT, what the message must say)."""
    clip = media.blank_clip(tmp_path / "input" / "walk" / "clip.mp4", n=3)
    (tmp_path / "empty").mkdir()
    (tmp_path / "lake" / "videos").mkdir(parents=True)  # someone else's Parquet in a folder named videos/
    pq.write_table(pa.table({"id": [1, 2], "value": [0.5, 0.7]}), tmp_path / "lake" / "videos" / "data.parquet")
    (tmp_path / "only_poses" / "poses" / "k").mkdir(parents=True)  # parts without a row are no commit
    pq.write_table(pa.table({"x": [1]}), tmp_path / "only_poses" / "poses" / "k" / "part-000000000-000000001.parquet")
    real = smpl_output(tmp_path / "real", ["walk/clip.mp4"])
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "videos").write_text("a file where the rows' folder belongs")
    (tmp_path / "damaged" / "_committed.parquet").write_bytes(b"")
    return {
        "an empty argument": ("", "OUTPUT is empty"),
        "videos/ a file": (str(tmp_path / "damaged"), "videos is a file where a posepipe OUTPUT holds a folder"),
        "a video file": (str(clip), "is a file, not a posepipe OUTPUT folder"),
        "an empty folder": (str(tmp_path / "empty"), "not a posepipe OUTPUT"),
        "an INPUT folder": (str(tmp_path / "input"), "not a posepipe OUTPUT"),
        "a missing path": (str(tmp_path / "nowhere"), "does not exist"),
        "foreign parquet": (str(tmp_path / "lake"), "not a posepipe OUTPUT"),
        "parts without rows": (str(tmp_path / "only_poses"), "not a posepipe OUTPUT"),
        "OUTPUT/videos": (str(real / "videos"), f"is the videos/ folder of the posepipe OUTPUT {real}"),
        "OUTPUT/poses/": (str(real / "poses") + "/", f"is the poses/ folder of the posepipe OUTPUT {real}"),
        "a file:// folder": ((tmp_path / "empty").as_uri(), "not a posepipe OUTPUT"),
    }


@pytest.mark.parametrize("command", ["files", "posec3d", "smpl", "render", "frame", "eval"])
def test_every_command_refuses_what_is_not_an_output(tmp_path, not_outputs, command):
    template = commands(tmp_path, coco_gt(tmp_path / "gt.json"))[command]
    for name, (given, says) in not_outputs.items():
        result = cli(*argv(template, given))
        assert result.exit_code == 2, (name, result.output)
        assert says in result.output and "OUTPUT" in result.output, (name, result.output)
        assert "Traceback" not in result.output, name
    assert not (tmp_path / "w").exists()  # nothing written by any of them


@pytest.mark.parametrize("uri", ["s3://bucket/runs/r1?X-Amz-Signature=hunter2", "s3://AKIAEXAMPLE:hunter2@bucket/r1",
                                 "file:///data/out?token=hunter2", "https://u:hunter2@host/out"])
def test_an_output_uri_with_a_secret_is_refused_unprinted_by_every_command(tmp_path, uri):
    template = commands(tmp_path, coco_gt(tmp_path / "gt.json"))
    for command, args in template.items():
        result = cli(*argv(args, uri))
        assert result.exit_code == 2 and "credentials or a query string" in result.output, (command, result.output)
        assert "hunter2" not in result.output and "AKIAEXAMPLE" not in result.output, (command, result.output)


def test_a_job_that_committed_nothing_is_an_output_with_nothing_in_it(tmp_path):
    """A job that found no video still ends with _committed.parquet: `files` prints nothing, exit 0."""
    Store(str(tmp_path / "ended")).finish_job([])
    result = cli("files", tmp_path / "ended")
    assert result.exit_code == 0 and result.output == ""
    result = cli("export", "posec3d", tmp_path / "ended", "--output", tmp_path / "d.pkl")
    assert result.exit_code == 1 and "holds no committed video yet" in result.output


def test_s3_prefixes_that_are_not_outputs_are_refused(s3_server, tmp_path):
    bucket = "hostile-outputs"
    make_bucket(s3_server.endpoint_url, bucket)
    upload_tree(smpl_output(tmp_path / "real", ["walk/clip.mp4"]), s3_server.endpoint_url, bucket, "runs/r1")
    put_object(s3_server.endpoint_url, bucket, "notes.txt", b"not an output")
    put_object(s3_server.endpoint_url, bucket, "lake/videos/data.parquet", b"PAR1 not posepipe")
    assert cli("files", f"s3://{bucket}/runs/r1").exit_code == 0
    cases = {
        f"s3://{bucket}/nothing-here": "does not exist",
        "s3://no-such-bucket-h19/runs/r1": "does not exist",
        f"s3://{bucket}/notes.txt": "is an object (a file), not a posepipe OUTPUT prefix",
        f"s3://{bucket}/runs/r1/videos": f"is the videos/ folder of the posepipe OUTPUT s3://{bucket}/runs/r1",
        f"s3://{bucket}/lake": "not a posepipe OUTPUT",
        f"s3://{bucket}": "not a posepipe OUTPUT",
    }
    template = commands(tmp_path, coco_gt(tmp_path / "gt.json"))
    for uri, says in cases.items():
        for command in ("files", "posec3d", "smpl", "eval"):
            result = cli(*argv(template[command], uri))
            assert result.exit_code == 2 and says in result.output, (uri, command, result.output)
    assert not (tmp_path / "w").exists()


# ----------------------------------------------------------------------------------------------
# 4. eval without pycocotools


# One interpreter runs several `posepipe` command lines (an import of posepipe costs seconds here):
# each through the real click group, its stdout/stderr captured, its exit code kept. An exception
# that is not click's exit (the traceback of the issue) ends the process and fails the test.
DRIVER = """
import contextlib, io, json, sys
if sys.argv[2] == "block":
    sys.modules["pycocotools"] = None   # what an install without posepipe[eval] looks like to an import
from posepipe.jobs.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv, prog_name="posepipe")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
sys.__stdout__.write(json.dumps(results))
"""


def posepipe_runs(*argvs: list[str | Path], block: bool = True, env: dict[str, str] | None = None) -> list[dict]:
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps([[str(a) for a in argv] for argv in argvs]),
                           "block" if block else "-"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def eval_case(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(OUTPUT, 2D COCO GT, 3D GT) of tests/jobs/test_evaluate.py's scene."""
    from tests.jobs import test_evaluate as te

    root = tmp_path_factory.mktemp("eval")
    rows = _evaluate_rows(te)
    output = root / "out"
    out = Store(str(output))
    table_rows = dict(rows)
    table_rows["keypoints_3d__valid"] = np.ones(len(rows["frame_index"]), bool)
    out.write_table(f"poses/{video_key(te.VIDEO)}/{part_name(0, te.FRAMES, 'a' * 12)}", poses_table(table_rows))
    out.write_table(f"videos/{video_key(te.VIDEO)}.parquet", videos_table([{
        "video_id": te.VIDEO, "uri": f"/in/{te.VIDEO}", "status": "ok", "num_frames": te.FRAMES, "fps": 30.0,
        "width": 640, "height": 480, "num_rows": 2 * te.FRAMES, "commit_attempt": "a" * 12}]))
    gt2 = root / "gt.json"
    gt2.write_text(json.dumps(te.coco_gt(rows)))
    gt3 = te.write_gt_3d(root, te.gt_3d(rows), "parquet")
    return output, gt2, gt3


def _evaluate_rows(te) -> dict:  # noqa: ANN001 - the test_evaluate module
    """test_evaluate's `poses` rows (its fixture cannot be called directly)."""
    n = 2 * te.FRAMES
    rng = np.random.default_rng(0)
    kp3d = rng.normal(0, 0.3, (n, te.K, 3))
    kp3d -= kp3d[:, :1]
    return {
        "video_id": te.VIDEO,
        "frame_index": np.repeat(np.arange(te.FRAMES, dtype=np.int32), 2),
        "timestamp_s": np.repeat(np.arange(te.FRAMES) / 30.0, 2),
        "track_id": np.tile(np.array([1, 2], np.int32), te.FRAMES),
        "bbox_xyxy": np.tile(np.stack([te.BOX_A, te.BOX_B]), (te.FRAMES, 1)),
        "bbox_score": np.tile(np.array([0.9, 0.8], np.float32), te.FRAMES),
        "keypoints_2d": np.stack([te._skeleton(te.BOX_A if i % 2 == 0 else te.BOX_B, i) for i in range(n)]),
        "keypoint_scores": np.full((n, te.K), 0.9),
        "keypoints_3d": kp3d,
    }


def test_eval_without_pycocotools(eval_case):
    output, gt2, gt3 = eval_case
    asked, table, everything, pck, three_d = posepipe_runs(
        ["eval", output, "--gt", gt2, "--metric", "coco-ap"],
        ["eval", output, "--gt", gt2],                       # --metric all: the rest, and why not AP
        ["eval", output, "--gt", gt2, "--json"],
        ["eval", output, "--gt", gt2, "--metric", "pck", "--json"],
        ["eval", output, "--gt", gt3, "--json"])
    assert asked["code"] == 2, asked
    assert "pycocotools, which is not installed" in asked["stderr"] and "pip install 'posepipe[eval]'" in asked["stderr"]
    assert "'--metric'" in asked["stderr"] and asked["stdout"] == ""

    assert table["code"] == 0, table
    assert "pck" in table["stdout"] and "50.0 %" in table["stdout"] and "not computed" in table["stdout"]
    assert "note: COCO AP" in table["stderr"]
    assert everything["code"] == 0, everything
    report = json.loads(everything["stdout"])
    assert report["metrics"]["pck"] == pytest.approx(0.5) and report["metrics"]["coco-ap"] is None
    assert "pip install 'posepipe[eval]'" in report["not_computed"]["coco-ap"]

    # metrics that need no pycocotools do not mention it
    assert pck["code"] == 0 and "pycocotools" not in pck["stdout"] + pck["stderr"], pck
    assert json.loads(pck["stdout"])["metrics"] == {"pck": pytest.approx(0.5)}
    assert three_d["code"] == 0 and json.loads(three_d["stdout"])["metrics"]["mpjpe"] > 0, three_d


def test_eval_with_a_broken_pycocotools(eval_case, tmp_path):
    """Installed but unimportable (built against another NumPy): said as such, not as 'not installed'."""
    output, gt2, _ = eval_case
    broken = tmp_path / "site" / "pycocotools"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ValueError('numpy.dtype size changed, may indicate binary incompatibility')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    (result,) = posepipe_runs(["eval", output, "--gt", gt2, "--metric", "coco-ap"], block=False, env=env)
    assert result["code"] == 2, result
    assert "installed but does not import" in result["stderr"] and "binary incompatibility" in result["stderr"]


# ----------------------------------------------------------------------------------------------
# 5. No output lands inside OUTPUT's own folders


@pytest.fixture()
def rendered_output(tmp_path) -> Path:
    clip = write_video(tmp_path / "in" / "clip.mp4", width=WIDTH, height=HEIGHT, frames=FRAMES, fps=FPS)
    return smpl_output(tmp_path / "out", ["walk/clip.mp4"], uri=str(clip))


def inside_cases(root: Path, tmp_path: Path) -> list[tuple[str, list[str], str]]:
    """(name, argv, the reserved entry named) of writes into OUTPUT's own folders."""
    (tmp_path / "elsewhere").mkdir(exist_ok=True)
    (tmp_path / "elsewhere" / "link").symlink_to(root / "videos", target_is_directory=True)
    (root / "anim").mkdir(exist_ok=True)
    (root / "sneaky").symlink_to(root / "poses", target_is_directory=True)
    (tmp_path / "elsewhere" / "row.pkl").symlink_to(root / "videos" / f"{video_key('walk/clip.mp4')}.parquet")
    (tmp_path / "alias").symlink_to(root, target_is_directory=True)
    o = str(root)
    return [
        ("posec3d to a link that is a row", ["export", "posec3d", o, "--output", str(tmp_path / "elsewhere" / "row.pkl")],
         "videos"),
        ("posec3d through OUTPUT's alias", ["export", "posec3d", str(tmp_path / "alias"), "--output", f"{o}/videos/x.pkl"],
         "videos"),
        ("posec3d into the alias", ["export", "posec3d", o, "--output", str(tmp_path / "alias" / "poses" / "x.pkl")], "poses"),
        ("posec3d in videos/", ["export", "posec3d", o, "--output", f"{o}/videos/x.parquet"], "videos"),
        ("posec3d in poses/", ["export", "posec3d", o, "--output", f"{o}/poses/new/x.pkl"], "poses"),
        ("posec3d as the manifest", ["export", "posec3d", o, "--output", f"{o}/_committed.parquet"], "_committed.parquet"),
        ("posec3d in _index/", ["export", "posec3d", o, "--output", f"{o}/_index/x.pkl"], "_index"),
        ("posec3d in a new _folder", ["export", "posec3d", o, "--output", f"{o}/_tmp/x.pkl"], "_tmp"),
        ("posec3d in Videos/ (case)", ["export", "posec3d", o, "--output", f"{o}/Videos/x.pkl"], "Videos"),
        ("posec3d through ..", ["export", "posec3d", o, "--output", f"{o}/anim/../videos/x.pkl"], "videos"),
        ("posec3d through a link elsewhere", ["export", "posec3d", o, "--output", str(tmp_path / "elsewhere" / "link" / "x.pkl")],
         "videos"),
        ("posec3d through a link inside", ["export", "posec3d", o, "--output", f"{o}/sneaky/x.pkl"], "poses"),
        ("posec3d to a file:// OUTPUT", ["export", "posec3d", root.as_uri(), "--output", f"{o}/videos/x.pkl"], "videos"),
        ("smpl into videos/", ["export", "smpl", o, "--output", f"{o}/videos"], "videos"),
        ("smpl into poses/anim", ["export", "smpl", o, "--output", f"{o}/poses/anim"], "poses"),
        ("smpl into _index/", ["export", "smpl", o, "--output", f"{o}/_index/anim"], "_index"),
        ("render into videos/", ["render", o, "--video", "walk/clip.mp4", "--output", f"{o}/videos/o.mp4"], "videos"),
        ("render a frame into poses/", ["render", o, "--video", "walk/clip.mp4", "--frame", "1", "--output",
                                        f"{o}/poses/f.png"], "poses"),
    ]


def test_no_output_lands_inside_outputs_own_folders(tmp_path, rendered_output):
    root = rendered_output
    before = reserved_snapshot(root)
    for name, args, entry in inside_cases(root, tmp_path):
        result = cli(*args)
        assert result.exit_code == 2, (name, result.output)
        assert f"inside OUTPUT's own '{entry}'" in result.output and "'--output'" in result.output, (name, result.output)
        assert reserved_snapshot(root) == before, name
    assert not (root / "_tmp").exists() and not (root / "Videos").exists()
    assert read_videos(str(root)).num_rows == 1 and cli("files", root).exit_code == 0


def test_no_output_lands_inside_another_outputs_folders(tmp_path, rendered_output):
    other = smpl_output(tmp_path / "other", ["run/x.mp4"])
    before = reserved_snapshot(other)
    for args in (["export", "posec3d", rendered_output, "--output", other / "videos" / "x.pkl"],
                 ["export", "smpl", rendered_output, "--output", other / "poses" / "anim"],
                 ["render", rendered_output, "--video", "walk/clip.mp4", "--output", other / "_index" / "o.mp4"]):
        result = cli(*args)
        assert result.exit_code == 2 and f"inside the posepipe OUTPUT {other}'s own" in result.output, result.output
    assert reserved_snapshot(other) == before
    # a folder that merely has a videos/ subfolder is no OUTPUT: writing there is the user's business
    (tmp_path / "footage" / "videos").mkdir(parents=True)
    result = cli("export", "posec3d", rendered_output, "--output", tmp_path / "footage" / "videos" / "x.pkl")
    assert result.exit_code == 0, result.output


def test_a_relative_out_inside_videos_is_refused_too(tmp_path, rendered_output, monkeypatch):
    monkeypatch.chdir(rendered_output)
    result = cli("export", "posec3d", ".", "--output", "videos/x.pkl")
    assert result.exit_code == 2 and "inside OUTPUT's own 'videos'" in result.output
    assert not (rendered_output / "videos" / "x.pkl").exists()


def test_side_files_at_outputs_top_level_are_allowed_and_harmless(tmp_path, rendered_output):
    """The decided rule: OUTPUT's top level takes side files under any name that is not the store's."""
    root = rendered_output
    before = reserved_snapshot(root)
    files_before = cli("files", root, "--json").output
    for args in (["export", "posec3d", root, "--output", root / "dataset.pkl", "--kind", "3d"],
                 ["export", "smpl", root, "--output", root],                       # the top level itself
                 ["export", "smpl", root, "--output", root / "anim", "--format", "bvh"],
                 ["render", root, "--video", "walk/clip.mp4", "--output", root / "videos.mp4"],
                 ["render", root, "--video", "walk/clip.mp4", "--frame", "2", "--output", root / "poses.png"]):
        result = cli(*args)
        assert result.exit_code == 0, (args, result.output)
    assert reserved_snapshot(root) == before
    assert cli("files", root, "--json").output == files_before
    assert read_videos(str(root)).num_rows == 1
    assert (root / video_key("walk/clip.mp4") / "track_0000.npz").exists() and (root / "tracks_smpl.csv").exists()
    assert cv2.imread(str(root / "poses.png")).shape == (HEIGHT, WIDTH, 3)
    # and a later job on this OUTPUT reads and settles it as before
    Store(str(root)).finish_job([])
    assert reserved_snapshot(root).keys() >= {k for k in before if not k.startswith("_index/")}


# --------------------------------------------------------------------------------------------
# run's OUTPUT: absolute at the edge, never inside another OUTPUT's folders
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_relative_output_is_the_folder_meant_and_never_inside_another_output(ray_local, tmp_path, monkeypatch):
    """Ray's workers run elsewhere (here: where the session's Ray was started): a relative OUTPUT once
    sent their rows there while the driver wrote its index here, and the job said 0."""
    media.street_clip(tmp_path / "in" / "walk.mp4", n=4)
    monkeypatch.chdir(tmp_path)
    fast = ["--random-weights", "--max-persons", "1", "--no-flip-test"]
    result = cli("run", "in", "--output", "out", *fast)
    assert result.exit_code == 0, result.output
    rows = read_videos(str(tmp_path / "out"))
    assert rows.num_rows == 1 and rows.column("status").to_pylist() == ["ok"]
    assert rows.column("uri").to_pylist() == [str(tmp_path / "in" / "walk.mp4")]  # absolute: render finds it anywhere
    assert any((tmp_path / "out" / "poses").rglob("*.parquet"))
    monkeypatch.chdir(tmp_path / "in")  # render from elsewhere finds the input
    assert cli("render", tmp_path / "out", "--video", "walk.mp4", "--frame", "0", "--output", tmp_path / "f.png").exit_code == 0
    for inside in ("out/poses/more", "out/videos", "out/_index/x", "out/Poses/x"):
        result = cli("run", tmp_path / "in", "--output", tmp_path / inside, *fast)
        assert result.exit_code == 2 and "--output" in result.output, (inside, result.output)
