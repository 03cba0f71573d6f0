"""How long a rerun takes to learn what is committed: N videos rows, local and on a moto S3 server.

    .venv/bin/python -m tests.pipeline.io.bench_scan --videos 10000 [--backends local,s3]

Times, for each backend: writing N rows (parallel), the old serial scan (one read after another,
as the driver did), the scan with no index (one listing + parallel reads), `finish_job` (cleaning,
`_committed.parquet`, the index), and the scan a rerun does after it (one listing + the index).
Not a test: figures depend on the machine; README and the store's docstring quote them.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid

import pyarrow as pa

from posepipe.pipeline.io.schema import videos_table
from posepipe.pipeline.io.store import INDEX_MARGIN_NS, Store, part_name, video_key


def _timed(fn):  # noqa: ANN001, ANN202
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def bench(uri: str, n: int) -> dict[str, float]:
    store = Store(uri)
    ids = [f"clips/{i:06d}.mp4" for i in range(n)]
    part = pa.table({"video_id": pa.array([], pa.string())})

    def write(video_id: str) -> None:
        key, attempt = video_key(video_id), uuid.uuid4().hex[:12]
        store.write_table(f"poses/{key}/{part_name(0, 100, attempt)}", part)
        store.write_table(f"videos/{key}.parquet", videos_table([{
            "video_id": video_id, "uri": f"/in/{video_id}", "status": "ok", "job_fingerprint": "f",
            "commit_attempt": attempt}]))

    figures: dict[str, float] = {}
    _, figures["write rows + parts (parallel)"] = _timed(lambda: store.map(write, ids))

    def serial() -> int:  # what the driver did before: list, then read each row in turn
        names = store.list_parquet("videos")
        return sum(store.read_table(f"videos/{name}").num_rows for name in names)

    count, figures["old serial scan"] = _timed(serial)
    assert count == n
    job = Store(uri)  # a first job on this OUTPUT: no index yet
    done, figures["scan, no index (list + parallel reads)"] = _timed(job.completed_videos)
    assert len(done) == n
    time.sleep(INDEX_MARGIN_NS / 1e9 + 1)  # rows older than the index by the margin, as after a real job
    _, figures["finish_job (list poses/, manifest, index)"] = _timed(lambda: job.finish_job([]))
    rerun = Store(uri)
    done, figures["scan with the index (a rerun)"] = _timed(rerun.completed_videos)
    assert len(done) == n and rerun.stats.from_index == n, rerun.stats
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10_000)
    parser.add_argument("--backends", default="local,s3")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        if backend == "local":
            with tempfile.TemporaryDirectory() as root:
                figures = bench(os.path.join(root, "out"), args.videos)
        else:
            from tests.servers import S3_ENV_UNSET, make_bucket, moto_s3_server, s3_env

            with moto_s3_server() as server:
                for name in S3_ENV_UNSET:
                    os.environ.pop(name, None)
                os.environ.update(s3_env(server.endpoint_url))
                make_bucket(server.endpoint_url, "bench")
                figures = bench("s3://bench/run", args.videos)
        print(f"{backend}, {args.videos} videos:")
        for what, seconds in figures.items():
            print(f"  {what:42s} {seconds:8.2f} s")


if __name__ == "__main__":
    main()
