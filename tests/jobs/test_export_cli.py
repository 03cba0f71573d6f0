from __future__ import annotations

import pickle

import numpy as np
import pytest
from click.testing import CliRunner

from jobs.export import export_group
from tests.fake_output import fake_output


@pytest.fixture()
def out(tmp_path):
    return fake_output(tmp_path / "out")


def run(*args: str):
    return CliRunner().invoke(export_group, ["posec3d", *args], catch_exceptions=False)


def test_posec3d_writes_pickle_and_label_map_and_lists_skipped_videos(out, tmp_path):
    dest = tmp_path / "dataset.pkl"
    result = run(str(out.root), "--out", str(dest), "--max-persons", "2", "--split-ratio", "train=0.5,val=0.5", "--seed", "3")
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
    result = run(str(out.root), "--out", str(dest), "--kind", "3d",
                 "--labels", str(tmp_path / "labels.csv"), "--splits", str(tmp_path / "splits.csv"))
    assert result.exit_code == 0, result.output
    data = pickle.loads(dest.read_bytes())
    assert data["split"] == {"train": ["jump/a", "jump/b"], "test": ["run/c"]}
    first = data["annotations"][0]
    assert first["keypoint"].shape[-2:] == (17, 3) and first["keypoint"].dtype == np.float32
    assert "keypoint_score" not in first


@pytest.mark.parametrize(("extra", "message"), [
    (["--split-ratio", "train=0.9,val=0.2"], "sum to 1.1"),
    (["--split-ratio", "train=1", "--splits", "__CSV__"], "not both"),
])
def test_posec3d_option_errors_are_clear(out, tmp_path, extra, message):
    csv = tmp_path / "s.csv"
    csv.write_text("jump/a.mp4,train\n")
    extra = [str(csv) if e == "__CSV__" else e for e in extra]
    result = run(str(out.root), "--out", str(tmp_path / "d.pkl"), *extra)
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "d.pkl").exists()


def test_posec3d_on_a_folder_that_is_not_an_output(tmp_path):
    (tmp_path / "nothing").mkdir()
    result = run(str(tmp_path / "nothing"), "--out", str(tmp_path / "d.pkl"))
    assert result.exit_code == 1 and "no posepipe tables" in result.output
