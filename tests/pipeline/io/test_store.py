"""The store: one filesystem layer for local folders and S3, checked errors and retries, the
completed-videos scan with its index, and committed-only reading (`posepipe files`, the manifest)."""
from __future__ import annotations

import json
import os
import time
import uuid

import duckdb
import pyarrow as pa
import pytest
from click.testing import CliRunner

from posepipe.jobs.cli import main
from posepipe.pipeline.io.readback import read_poses
from posepipe.pipeline.io.schema import videos_table
from posepipe.pipeline.io.store import INDEX_DIR, INTENT_STALE_S, MANIFEST, StorageError, Store, video_key
from tests.fake_output import attempt_of, fake_output
from tests.servers import fault_proxy, make_bucket


def _row(video_id: str, status: str = "ok", attempt: str | None = "a" * 12) -> pa.Table:
    return videos_table([{"video_id": video_id, "uri": f"/in/{video_id}", "status": status,
                          "error": None if status == "ok" else "boom", "job_fingerprint": "f",
                          "commit_attempt": attempt if status == "ok" else None}])


@pytest.fixture(params=["local", "s3"])
def uri(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "out")
    server = request.getfixturevalue("s3_server")
    bucket = f"store-{uuid.uuid4().hex[:12]}"
    make_bucket(server.endpoint_url, bucket)
    return f"s3://{bucket}/run"


def test_write_read_list_delete(uri):
    store = Store(uri)
    store.write_table("poses/k/part-a.parquet", pa.table({"x": [1, 2]}))
    store.write_table("poses/k/sub/part-b.parquet", pa.table({"x": [3]}))
    store.write_bytes("poses/k/.hidden.parquet", b"temp")
    assert store.list_parquet("poses") == ["k/part-a.parquet", "k/sub/part-b.parquet"]
    assert store.read_table("poses/k/part-a.parquet").column("x").to_pylist() == [1, 2]
    store.remove("poses/k/part-a.parquet")
    store.remove("poses/k/part-a.parquet")  # already gone: not an error
    with pytest.raises(StorageError, match="does not exist") as missing:
        store.read_table("poses/k/part-a.parquet")
    assert missing.value.missing
    store.remove_prefix("poses/k")
    assert store.list_parquet("poses") == []
    assert store.list("videos") == []  # a folder that was never written lists as empty


def test_completed_videos_stay_right_when_the_index_is_stale(uri):
    store = Store(uri)
    for i in range(5):
        store.write_table(f"videos/{video_key(f'v{i}')}.parquet", _row(f"v{i}"))
    store.finish_job([])
    [index] = [e for e in store._list_hidden(INDEX_DIR) if e.name.startswith("videos-")]
    if store.local:  # rows much older than their index: the scan takes them from it
        for i in range(5):
            path = store.path(f"videos/{video_key(f'v{i}')}.parquet")
            os.utime(path, ns=(index.mtime_ns - 10**10, index.mtime_ns - 10**10))
        store.finish_job([])
    # After the index: one row replaced (the video failed on a rerun), one deleted, one added.
    store.write_table(f"videos/{video_key('v1')}.parquet", _row("v1", status="failed"))
    store.remove(f"videos/{video_key('v2')}.parquet")
    store.write_table(f"videos/{video_key('v5')}.parquet", _row("v5"))
    fresh = Store(uri)
    done = fresh.completed_videos()
    assert sorted(done) == ["v0", "v1", "v3", "v4", "v5"]
    assert done["v1"]["status"] == "failed" and done["v0"]["status"] == "ok"
    assert fresh.stats.index is not None
    if store.local:
        assert (fresh.stats.from_index, fresh.stats.read) == (3, 2)


def test_an_unreadable_index_or_row_costs_time_not_correctness(tmp_path, caplog):
    store = Store(str(tmp_path))
    store.write_table(f"videos/{video_key('v0')}.parquet", _row("v0"))
    store.write_bytes(f"videos/{video_key('v1')}.parquet", b"not parquet")  # a corrupt row: not done
    store.write_bytes(f"{INDEX_DIR}/videos-99991231T000000000000Z-00000000.parquet", b"garbage")
    assert sorted(Store(str(tmp_path)).completed_videos()) == ["v0"]
    assert "unreadable videos index" in caplog.text and "not a readable videos row" in caplog.text


@pytest.fixture
def proxied(s3_server, monkeypatch):
    """A bucket reached through a proxy that can answer with S3 errors; 3 attempts per request."""
    bucket = f"faults-{uuid.uuid4().hex[:12]}"
    make_bucket(s3_server.endpoint_url, bucket)
    with fault_proxy(s3_server.endpoint_url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
        yield proxy, Store(f"s3://{bucket}/run")


def test_throttling_and_5xx_are_retried(proxied):
    proxy, store = proxied
    proxy.fail_next(2, 503, "SlowDown")
    store.write_table("videos/a.parquet", _row("a"))
    proxy.fail_next(2, 500, "InternalError")
    assert store.completed_videos()["a"]["status"] == "ok"
    proxy.fail_next(2, 503, "SlowDown", method="DELETE")
    store.remove("videos/a.parquet")
    assert proxy.failed == 6 and store.list("videos") == []


def test_errors_that_persist_stop_with_the_reason(proxied):
    proxy, store = proxied
    store.write_table(f"videos/{video_key('a')}.parquet", _row("a"))
    proxy.fail_next(1, 403, "AccessDenied", method="PUT")
    with pytest.raises(StorageError, match=r"could not write s3://faults-\w+/run/videos/b.parquet: .*ACCESS_DENIED") as denied:
        store.write_table("videos/b.parquet", _row("b"))
    assert not denied.value.transient
    proxy.fail_next(1, 403, "AccessDenied", method="DELETE")
    with pytest.raises(StorageError, match="could not delete"):  # a delete that fails is an error, not a warning
        store.remove(f"videos/{video_key('a')}.parquet")
    # a throttled row read during the scan stops it: never "nothing is done, redo everything"
    proxy.fail_next(3, 503, "SlowDown", method="HEAD")
    with pytest.raises(StorageError, match="could not read") as outage:
        Store(store.uri).completed_videos()
    assert outage.value.transient


def _count(sql: str) -> int:
    return duckdb.sql(sql).fetchall()[0][0]


def test_committed_only_recipes_while_superseded_and_crashed_parts_lie_beside(tmp_path):
    """`posepipe files` and the join recipe read exactly the committed rows while a rerun's
    superseded attempt and a crashed finish's parts are there; `_committed.parquet` is the
    snapshot of the last job that ended; after the next job ends a plain glob is exact too."""
    out = tmp_path / "out"
    fake = fake_output(out, junk=False)
    store = Store(str(out))
    store.finish_job([])  # the first job ends: manifest and index written
    before = read_poses(str(out)).num_rows
    assert _count(f"SELECT count(*) FROM read_parquet('{out}/poses/**/*.parquet')") == before

    # A rerun redoes one video under a new attempt (parts, then row) and is killed before it ends;
    # another finish wrote its parts and died before its row.
    redone = next(v for v in fake.videos.values() if v.status == "ok" and v.tracks)
    crashed = next(v for v in fake.videos.values() if v.status == "ok" and v.tracks and v is not redone)
    Store(str(out)).begin_job([redone.video_id, crashed.video_id])  # the killed job's intent, never renewed
    for intent in (out / INDEX_DIR).glob("intent-*"):
        os.utime(intent, (time.time() - INTENT_STALE_S - 60,) * 2)
    key = video_key(redone.video_id)
    old_parts = store.list_parquet(f"poses/{key}")
    new_attempt = "feedfacecafe"
    for name in old_parts[:1]:  # the new commit has fewer rows: one part of the old
        table = store.read_table(f"poses/{key}/{name}")
        store.write_table(f"poses/{key}/{name.replace(attempt_of(redone.video_id), new_attempt)}", table)
    row = store.read_table(f"videos/{key}.parquet").to_pylist()[0]
    store.write_table(f"videos/{key}.parquet", videos_table([{**row, "commit_attempt": new_attempt}]))
    ckey = video_key(crashed.video_id)
    crashed_parts = store.list_parquet(f"poses/{ckey}")
    for name in crashed_parts:
        store.write_table(f"poses/{ckey}/{name.replace(attempt_of(crashed.video_id), 'dead00000000')}",
                          store.read_table(f"poses/{ckey}/{name}"))

    now = read_poses(str(out)).num_rows
    assert now < before
    glob = _count(f"SELECT count(*) FROM read_parquet('{out}/poses/**/*.parquet')")
    assert glob > before  # what a plain glob sees now: both attempts and the crashed parts

    listed = CliRunner().invoke(main, ["files", str(out), "--json"])
    assert listed.exit_code == 0, listed.output
    paths = json.loads(listed.output)
    assert not any(new_attempt not in p and key in p for p in paths) and not any("dead0" in p for p in paths)
    assert _count(f"SELECT count(*) FROM read_parquet({paths!r})") == now
    query = CliRunner().invoke(main, ["files", str(out), "--format", "duckdb"]).output
    assert _count(query.replace("SELECT *", "SELECT count(*)")) == now
    joined = _count(f"""
        SELECT count(*) FROM read_parquet('{out}/poses/**/*.parquet', filename = true) p
        JOIN read_parquet('{out}/videos/*.parquet') v USING (video_id)
        WHERE v.status = 'ok' AND p.filename LIKE '%-' || v.commit_attempt || '.parquet'""")
    assert joined == now
    manifest = duckdb.connect()
    manifest.execute(f"SET VARIABLE parts = (SELECT list('{out}/' || path) FROM '{out}/{MANIFEST}')")
    assert manifest.sql("SELECT count(*) FROM read_parquet(getvariable('parts'))").fetchall()[0][0] == before

    # The next job that ends settles it: superseded and crashed parts deleted (the killed job's
    # row is newer than the index), the manifest names the new commit, a plain glob is exact.
    assert Store(str(out)).finish_job([]) == len(old_parts) + len(crashed_parts)
    assert _count(f"SELECT count(*) FROM read_parquet('{out}/poses/**/*.parquet')") == now
    manifest.execute(f"SET VARIABLE parts = (SELECT list('{out}/' || path) FROM '{out}/{MANIFEST}')")
    assert manifest.sql("SELECT count(*) FROM read_parquet(getvariable('parts'))").fetchall()[0][0] == now


def test_files_command_says_what_is_wrong(tmp_path, proxied):
    missing = CliRunner().invoke(main, ["files", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    proxy, store = proxied
    store.write_table(f"videos/{video_key('a')}.parquet", _row("a"))
    store.write_table(f"poses/{video_key('a')}/part-000000000-000000004-{'a' * 12}.parquet", pa.table({"x": [1]}))
    listed = CliRunner().invoke(main, ["files", store.uri])
    assert listed.exit_code == 0 and listed.output.splitlines() == [
        f"{store.uri}/poses/{video_key('a')}/part-000000000-000000004-{'a' * 12}.parquet"]
    proxy.fail_next(1, 403, "AccessDenied", method="GET")  # the listing is refused
    denied = CliRunner().invoke(main, ["files", store.uri])
    assert denied.exit_code == 5 and "ACCESS_DENIED" in denied.output and "Traceback" not in denied.output


def test_a_dead_drivers_intent_is_settled_at_once_a_live_ones_never(tmp_path):
    """A job killed on this machine (its driver's pid gone since) no longer waits INTENT_STALE_S: the
    next job's end deletes the parts it left; a running job's fresh intent still protects its folders."""
    import subprocess
    import sys

    out = tmp_path / "out"
    fake = fake_output(out, junk=False)
    Store(str(out)).finish_job([])
    victim = next(v for v in fake.videos.values() if v.status == "ok" and v.tracks)
    key, store = video_key(victim.video_id), Store(str(out))

    def orphan() -> str:  # parts of an attempt no row names, as a killed finish leaves them
        name = store.list_parquet(f"poses/{key}")[0]
        dead = name.replace(attempt_of(victim.video_id), "dead00000000")
        store.write_table(f"poses/{key}/{dead}", store.read_table(f"poses/{key}/{name}"))
        return dead

    begin = "import sys; from posepipe.pipeline.io.store import Store; Store(sys.argv[1]).begin_job([sys.argv[2]])"
    subprocess.run([sys.executable, "-c", begin, str(out), victim.video_id], check=True, timeout=120)
    dead = orphan()
    assert Store(str(out)).finish_job([]) == 1  # the intent is fresh, but its driver is gone
    assert not store.exists(f"poses/{key}/{dead}") and not list((out / INDEX_DIR).glob("intent-*"))

    running = Store(str(out))
    running.begin_job([victim.video_id])  # this process: alive
    dead = orphan()
    assert Store(str(out)).finish_job([]) == 0 and store.exists(f"poses/{key}/{dead}")
    assert running.finish_job([victim.video_id]) == 1 and not store.exists(f"poses/{key}/{dead}")
