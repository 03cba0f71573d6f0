from __future__ import annotations

import pickle

import numpy as np
import pytest
from click.testing import CliRunner

from posepipe.jobs.export import export_group
from tests.fake_output import fake_output


@pytest.fixture()
def out(tmp_path):
    return fake_output(tmp_path / "out")


def run(*args: str):
    return CliRunner().invoke(export_group, ["posec3d", *args], catch_exceptions=False)


def test_posec3d_writes_pickle_and_label_map_and_lists_skipped_videos(out, tmp_path):
    dest = tmp_path / "dataset.pkl"
    result = run(str(out.root), "--output", str(dest), "--max-persons", "2", "--split-ratio", "train=0.5,val=0.5", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "3 of 5 videos exported (2d), 2 classes, splits: train=" in result.output
    assert "run/broken.mp4: failed in the job" in result.output
    assert "run/empty.mov: no person detected in any frame" in result.output
    data = pickle.loads(dest.read_bytes())
    assert sorted(data["split"]["train"] + data["split"]["val"]) == ["jump/a", "jump/b", "run/c"]
    assert max(a["keypoint"].shape[0] for a in data["annotations"]) == 2
    assert (tmp_path / "dataset.labels.txt").read_text() == "jump\nrun\n"


def test_posec3d_3d_with_label_and_split_csvs(out, tmp_path):
    (tmp_path / "labels.csv").write_text("video_id,label\njump/a.mp4,1\njump/b.mp4,0\nrun/c.mp4,1\n")
    (tmp_path / "splits.csv").write_text("video_id,split\njump/a.mp4,train\njump/b.mp4,train\nrun/c.mp4,test\n")
    dest = tmp_path / "ds3d.pkl"
    result = run(str(out.root), "--output", str(dest), "--kind", "3d",
                 "--labels", str(tmp_path / "labels.csv"), "--splits", str(tmp_path / "splits.csv"))
    assert result.exit_code == 0, result.output
    data = pickle.loads(dest.read_bytes())
    assert data["split"] == {"train": ["jump/a", "jump/b"], "test": ["run/c"]}
    first = data["annotations"][0]
    assert first["keypoint"].shape[-2:] == (17, 3) and first["keypoint"].dtype == np.float32
    assert "keypoint_score" not in first
    assert max(a["keypoint"].shape[0] for a in data["annotations"]) == 2  # M = 2 by default
    assert "1 tracks beyond --max-persons left out" in result.output
    for name in ("ds3d.mmaction2.py", "posepipe_h36m.py"):
        assert (tmp_path / name).exists() and f"wrote {tmp_path / name}" in result.output


def test_posec3d_max_persons_zero_keeps_every_confirmed_track(out, tmp_path):
    dest = tmp_path / "all.pkl"
    result = run(str(out.root), "--output", str(dest), "--max-persons", "0")
    assert result.exit_code == 0, result.output
    assert max(a["keypoint"].shape[0] for a in pickle.loads(dest.read_bytes())["annotations"]) == 3
    assert not (tmp_path / "all.mmaction2.py").exists()  # 2D: mmaction2's shipped configs fit as they are


@pytest.mark.parametrize(("extra", "message"), [
    (["--split-ratio", "train=0.9,val=0.2"], "sum to 1.1"),
    (["--split-ratio", "train=0.5,val=0.5", "--seed", "-1"], "'--seed'"),
    (["--split-ratio", "train=1", "--splits", "__CSV__"], "not both"),
])
def test_posec3d_option_errors_are_clear(out, tmp_path, extra, message):
    csv = tmp_path / "s.csv"
    csv.write_text("jump/a.mp4,train\n")
    extra = [str(csv) if e == "__CSV__" else e for e in extra]
    result = run(str(out.root), "--output", str(tmp_path / "d.pkl"), *extra)
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "d.pkl").exists()


def test_posec3d_on_a_folder_that_is_not_an_output(tmp_path):
    (tmp_path / "nothing").mkdir()
    result = run(str(tmp_path / "nothing"), "--output", str(tmp_path / "d.pkl"))
    assert result.exit_code == 2 and "not a posepipe OUTPUT" in result.output and "OUTPUT" in result.output
    assert not (tmp_path / "d.pkl").exists()


# ---------------------------------------------------------------- hostile label and split files: exit 2, the file and line named


@pytest.mark.parametrize(("option", "data", "message"), [
    ("--labels", "video_id,label\njump/a.mp4,caf\xe9\n".encode("latin-1"), ":2: byte 29 (0xe9, column 15 of that line) is not UTF-8"),
    ("--labels", bytes(range(256)), ":1: byte 0 is NUL: this is a binary file"),
    ("--labels", "video_id,label\njump/a.mp4,jump\n".encode("utf-16"), "is UTF-16 text; save it as UTF-8"),
    ("--labels", b"", "is empty"),
    ("--labels", b"video_id,label\n\n# nothing yet\n", "has no 'video_id,label' rows"),
    ("--labels", b"jump/a.mp4,jump\njump/b.mp4\n", ":2: expected 'video_id,label'"),
    ("--labels", b"video_id,class,extra\njump/a.mp4,jump,x\n", ":1: the header ['video_id', 'class', 'extra'] names video_id but no 'label'"),
    ("--labels", b"jump/a.mp4,jump\njump/b.mp4,run\njump/a.mp4,run\n", ":3: 'jump/a.mp4' is listed again with label 'run'; line 1 gave it 'jump'"),
    ("--labels", b"jump/a.mp4,jump\njump/a,run\n", "'jump/a.mp4' is given two different values in the labels: 'jump' (as 'jump/a.mp4') and 'run' (as 'jump/a')"),
    ("--labels", b'jump/a.mp4,"' + b"x" * 200_000 + b'"\n', ":1: not a readable CSV line (field larger than field limit"),
    ("--labels", b"jump/a.mp4,1000001\njump/b.mp4,0\n", "label '1000001': integer labels are used as the class index itself"),
    ("--labels", b'jump/a.mp4,"walk\nrun"\njump/b.mp4,jump\n', "label 'walk\\nrun' has a line break in it"),
    ("--splits", "jump/a.mp4,tr\xe9in\n".encode("latin-1"), ":1: byte 13 (0xe9, column 14 of that line) is not UTF-8"),
    ("--splits", b"jump/a.mp4,train\njump/a.mp4,val\n", ":2: 'jump/a.mp4' is listed again with split 'val'"),
])
def test_malformed_label_and_split_files_are_usage_errors(out, tmp_path, option, data, message):
    csv = tmp_path / "mapping.csv"
    csv.write_bytes(data)
    result = run(str(out.root), "--output", str(tmp_path / "d.pkl"), option, str(csv))
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output and str(csv) in result.output and message in result.output
    assert not (tmp_path / "d.pkl").exists()


def test_a_header_names_the_columns_in_any_order(out, tmp_path):
    (tmp_path / "labels.csv").write_text("label,video_id\nup,jump/a.mp4\ndown,jump/b.mp4\n")
    result = run(str(out.root), "--output", str(tmp_path / "d.pkl"), "--labels", str(tmp_path / "labels.csv"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d.labels.txt").read_text() == "down\nup\n"


def test_when_nothing_is_exported_the_csv_ids_that_matched_nothing_are_listed(out, tmp_path):
    (tmp_path / "labels.csv").write_text("a.mp4,jump\nb.mp4,jump\n")   # file names, not paths relative to INPUT
    result = run(str(out.root), "--output", str(tmp_path / "d.pkl"), "--labels", str(tmp_path / "labels.csv"))
    assert result.exit_code == 1
    assert "2 id(s) in the labels CSV are not videos of this OUTPUT: a.mp4, b.mp4" in result.output
    assert "no video could be exported" in result.output


def test_an_unwritable_out_is_a_message(out, tmp_path):
    (tmp_path / "file").write_text("")
    result = run(str(out.root), "--output", str(tmp_path / "file" / "d.pkl"))
    assert result.exit_code == 1 and "cannot write" in result.output and str(tmp_path / "file") in result.output


def test_video_ids_with_markup_spaces_and_unicode_are_printed_as_they_are(tmp_path):
    from tests.fake_output import FakeVideo

    ids = ["cls [/x]/clip [bold]1.mp4", "vidéos ünï/clip 2.mp4", "cls [/x]/nobody.mp4"]
    spec = fake_output(tmp_path / "out", [FakeVideo(ids[0], 3, tracks={0: [0, 1, 2]}), FakeVideo(ids[1], 3, tracks={0: [0, 1]}),
                                          FakeVideo(ids[2], 3)], junk=False)
    result = run(str(spec.root), "--output", str(tmp_path / "d.pkl"))
    assert result.exit_code == 0, result.output
    assert "cls [/x]/nobody.mp4: no person detected" in result.output
    data = pickle.loads((tmp_path / "d.pkl").read_bytes())
    assert sorted(a["frame_dir"] for a in data["annotations"]) == ["cls [/x]/clip [bold]1", "vidéos ünï/clip 2"]


def test_names_and_errors_from_the_output_are_printed_inert(tmp_path):
    """A file name in INPUT can hold terminal escapes and newlines; a stored error can quote a URI with a secret."""
    from tests.fake_output import FakeVideo

    evil = "cls/a\x1b]0;owned\x07\nfake: exported.mp4"
    spec = fake_output(tmp_path / "out", [
        FakeVideo("cls/good.mp4", 3, tracks={0: [0, 1, 2]}),
        FakeVideo(evil, 0, status="failed", error="could not read https://u:hunter2@host/x.mp4?sig=s3cr3t \x1b[2J"),
    ], junk=False)
    result = run(str(spec.root), "--output", str(tmp_path / "d.pkl"))
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert not any(line.startswith("fake") for line in result.stderr.splitlines())  # the newline is shown escaped
    assert "  cls/a\\x1b]0;owned\\x07\\" in result.stderr
    assert "fake: exported.mp4: failed in the job: could not read https://host/x.mp4 \\x1b[2J" in result.stderr
    assert "hunter2" not in result.stderr and "s3cr3t" not in result.stderr


def test_out_that_would_overwrite_the_labels_file_is_refused(out, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("jump/a.mp4,jump\n")
    result = run(str(out.root), "--output", str(labels), "--labels", str(labels))
    assert result.exit_code == 2 and "is the --labels file" in result.output
    assert labels.read_text() == "jump/a.mp4,jump\n"
