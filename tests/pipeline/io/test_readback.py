from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from posepipe.pipeline.io.readback import (
    NotAnOutputError, OutputReader, ReadbackError, UnknownVideoError, open_store, read_poses, read_videos,
)
from posepipe.pipeline.io.store import Store
from posepipe.pipeline.io.schema import POSES_SCHEMA, VIDEOS_SCHEMA
from tests.fake_output import expected_keypoints, fake_output


@pytest.fixture()
def out(tmp_path):
    return fake_output(tmp_path / "out")


def test_videos_table_is_every_committed_video_sorted_and_ignores_junk(out):
    table = read_videos(str(out.root))
    assert table.schema.equals(VIDEOS_SCHEMA, check_metadata=False)
    assert table.column("video_id").to_pylist() == sorted(out.videos)
    assert dict(zip(table.column("video_id").to_pylist(), table.column("status").to_pylist()))["run/broken.mp4"] == "failed"


def test_poses_are_committed_rows_only_sorted(out):
    table = read_poses(str(out.root))
    assert table.schema.equals(POSES_SCHEMA, check_metadata=False)
    ids = table.column("video_id").to_pylist()
    assert "jump/in_progress.mp4" not in ids  # parts without a videos/ row are not results yet
    expected_rows = sum(len(f) for v in out.videos.values() for f in v.tracks.values())
    assert table.num_rows == expected_rows, table.num_rows
    keys = list(zip(ids, table.column("frame_index").to_pylist(), table.column("person_index").to_pylist()))
    assert keys == sorted(keys) and len(set(keys)) == len(keys)  # sorted by the row key, which is unique


def test_poses_of_chosen_videos_and_columns(out):
    table = read_poses(str(out.root), video_ids=["run/c.mp4"], columns=["frame_index", "track_id", "keypoints_2d"])
    assert table.column_names == ["frame_index", "track_id", "keypoints_2d"]
    assert table.num_rows == 7
    first = np.array(table.column("keypoints_2d")[0].as_py(), np.float32)
    np.testing.assert_array_equal(first, expected_keypoints(out.index["run/c.mp4"], 1, 0))


def test_video_without_rows_gives_an_empty_table_with_the_schema(out):
    table = read_poses(str(out.root), video_ids=["run/empty.mov"], columns=["frame_index"])
    assert table.num_rows == 0 and table.column_names == ["frame_index"]


def test_unknown_video_id_names_the_known_ones(out):
    with pytest.raises(UnknownVideoError) as info:
        read_poses(str(out.root), video_ids=["jump/aa.mp4"])
    message = str(info.value)
    assert "'jump/aa.mp4'" in message and "jump/a.mp4" in message and "5 video(s)" in message


def test_unknown_column_is_refused(out):
    with pytest.raises(ValueError, match="keypoints_4d"):
        read_poses(str(out.root), columns=["keypoints_4d"])


def test_a_folder_without_tables_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotAnOutputError, match="not a posepipe OUTPUT: .* holds no videos/\\*.parquet, _committed.parquet"):
        read_videos(str(tmp_path / "empty"))
    with pytest.raises(NotAnOutputError, match="does not exist"):
        OutputReader(str(tmp_path / "missing"))
    (tmp_path / "file.parquet").write_bytes(b"PAR1")
    with pytest.raises(NotAnOutputError, match="is a file, not a posepipe OUTPUT folder"):
        OutputReader(str(tmp_path / "file.parquet"))


def test_what_an_output_is(tmp_path):
    """One definition (`open_store`): a run's marks, not any folder that holds Parquet files."""
    (tmp_path / "lake" / "videos").mkdir(parents=True)
    pq.write_table(pa.table({"a": [1]}), tmp_path / "lake" / "videos" / "data.parquet")  # someone else's table
    with pytest.raises(NotAnOutputError, match="not a posepipe OUTPUT"):
        open_store(str(tmp_path / "lake"))
    fake_output(tmp_path / "out")
    with pytest.raises(NotAnOutputError, match=r"is the videos/ folder of the posepipe OUTPUT .*out, not an OUTPUT; pass"):
        open_store(str(tmp_path / "out" / "videos"))
    assert open_store(str(tmp_path / "out")).uri == str(tmp_path / "out")
    # A job that ended with no video leaves only _committed.parquet; one that began only its intent.
    Store(str(tmp_path / "ended")).finish_job([])
    assert open_store(str(tmp_path / "ended")).uri.endswith("ended")
    with pytest.raises(ReadbackError, match="holds no committed video yet"):
        read_videos(str(tmp_path / "ended"))
    Store(str(tmp_path / "began")).begin_job(["a.mp4"])
    assert open_store(str(tmp_path / "began")).uri.endswith("began")


@pytest.mark.parametrize("uri", [
    "s3://AKIAEXAMPLE:hunter2@bucket/runs/r1",
    "s3://bucket/runs/r1?X-Amz-Signature=hunter2",
    "file:///data/out?token=hunter2",
])
def test_credentials_or_a_query_in_the_output_uri_are_refused_unprinted(uri):
    """botocore would quote a 'user:secret@bucket' bucket name in its error; the message must never echo it."""
    with pytest.raises(ReadbackError, match="credentials or a query string") as info:
        OutputReader(uri)
    assert "hunter2" not in str(info.value) and "AKIAEXAMPLE" not in str(info.value)



def test_a_table_with_a_column_of_the_wrong_type_is_a_clear_error(out):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = next((out.root / "videos").glob("jump_a*"))
    table = pq.read_table(path)
    pq.write_table(table.set_column(table.schema.get_field_index("num_frames"), "num_frames", pa.array(["ten"])), path)
    with pytest.raises(ReadbackError, match=f"videos/{path.name}: a column has the wrong type"):
        read_videos(str(out.root))
