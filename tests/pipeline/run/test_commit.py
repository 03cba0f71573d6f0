"""The commit protocol: attempts write under their own names, the row names the one it commits,
readers read only that one, and the driver removes the others when no writer is left."""
from __future__ import annotations

import duckdb
import pytest

from posepipe.pipeline.options import JobOptions
from posepipe.pipeline.io.store import Store, part_attempt, video_key
from posepipe.pipeline.io.readback import read_poses
from posepipe.pipeline.run.scheduler import clean_superseded
from posepipe.pipeline.io.schema import provenance_metadata
from posepipe.pipeline.io.video import probe_video, shard_bounds
from posepipe.pipeline.perframe.shards import ShardTask
from posepipe.pipeline.perframe.worker import PoseWorker
from posepipe.pipeline.temporal.finish import VideoFinisher
from tests import media


@pytest.fixture(scope="module")
def worker_and_shards(tmp_path_factory):
    clip = media.street_clip(tmp_path_factory.mktemp("commit") / "walk.mp4", n=6)
    options = JobOptions(input=str(clip), output="unused", random_weights=True, max_persons=1, flip_test=False)
    worker = PoseWorker(options, threads=1)
    info = probe_video(str(clip)).info
    shards = [worker.process_shard(ShardTask("walk.mp4", str(clip), a, b, info=info.as_dict()))
              for a, b in shard_bounds(info, 2)]
    return worker, shards, info


def finish(worker, shards, info, out, attempt):
    video = {"video_id": "walk.mp4", "uri": "walk.mp4", "info": info.as_dict(), "fingerprint": "f",
             "input_identity": "size=1;version=1", "attempt": attempt}
    return VideoFinisher(worker.options).finish_video(video, shards, str(out), provenance_metadata({"test": "commit"}),
                                                                 pose_boxes=worker)


def test_a_late_superseded_attempt_never_breaks_the_commit(worker_and_shards, tmp_path):
    """Attempt B commits; attempt A, whose reply was lost, finishes later and commits over it.
    Whichever row is last, its parts are all there, readers see exactly one attempt's rows, and
    the driver's clean-up (no worker left) leaves only the committed parts for plain globs."""
    worker, shards, info = worker_and_shards
    out = tmp_path / "out"
    expected = finish(worker, shards, info, out, "bbbbbbbbbbbb").rows
    finish(worker, shards, info, out, "aaaaaaaaaaaa")   # the late one
    key = video_key("walk.mp4")
    names = sorted(p.name for p in (out / "poses" / key).glob("*.parquet"))
    assert {part_attempt(n) for n in names} == {"aaaaaaaaaaaa", "bbbbbbbbbbbb"}  # both attempts' parts exist
    rows = read_poses(str(out))
    assert rows.num_rows == expected  # one attempt's rows, not both
    assert clean_superseded(Store(str(out)), ["walk.mp4"]) == len(names) // 2
    left = {part_attempt(p.name) for p in (out / "poses" / key).glob("*.parquet")}
    assert left == {"aaaaaaaaaaaa"}
    glob = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/poses/**/*.parquet')").fetchall()[0][0]
    assert glob == expected


def test_committed_rows_recipe_ignores_unfinished_attempts(worker_and_shards, tmp_path):
    """The README's DuckDB recipe for committed rows, while an unfinished attempt's parts are there."""
    worker, shards, info = worker_and_shards
    out = tmp_path / "out"
    expected = finish(worker, shards, info, out, "cccccccccccc").rows
    # an attempt that wrote its parts and died before its row: its parts are visible to a plain glob
    finish(worker, shards, info, tmp_path / "scratch", "dddddddddddd")
    key = video_key("walk.mp4")
    for part in (tmp_path / "scratch" / "poses" / key).glob("*.parquet"):
        part.rename(out / "poses" / key / part.name)
    plain = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/poses/**/*.parquet')").fetchall()[0][0]
    assert plain == 2 * expected
    committed = duckdb.sql(f"""
        SELECT count(*) FROM read_parquet('{out}/poses/**/*.parquet', filename = true) p
        JOIN read_parquet('{out}/videos/*.parquet') v USING (video_id)
        WHERE v.status = 'ok' AND p.filename LIKE '%-' || v.commit_attempt || '.parquet'""").fetchall()[0][0]
    assert committed == expected
