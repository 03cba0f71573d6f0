"""Failures mid-job give the uninterrupted answer: a worker killed mid-shard or mid-write, a driver
killed mid-job and run again, any shard size and worker count.

Faulty jobs run `posepipe run` in a subprocess with its own local Ray, so the fault hook's
environment (POSEPIPE_TEST_KILL_AT, see `pipeline/perframe/worker.py`) reaches its workers, and a killed
driver takes nothing of this process with it. Every subprocess is started in its own session and
whatever is left of it is killed on teardown. The reference answer is one uninterrupted run on the
session's local Ray (`ray_local`, through `run_job`), computed once and shared with
tests/pipeline/run/test_cluster.py.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import duckdb
import numpy as np
import pytest

from posepipe.pipeline.options import DEFAULT_MODELS, JobOptions
from posepipe.pipeline.run.runner import JobSummary, run_job
from tests import media
from tests.processes import Spawner, posepipe_argv, posepipe_env, processes, session_members

FAST = ["--random-weights", "--max-persons", "1", "--no-flip-test", "--detector", "yolox_nano"]  # see run_here
CLIPS = {"a.mp4": 4, "b.mp4": 4, "c.mp4": 5}   # name -> frames: small, CPU inference is slow
SHARD = "2"                                      # several shards per video
JOB_TIMEOUT_S = 240.0                            # a whole faulty job on a loaded 2-core machine
FLOAT_COLUMNS = ("bbox_xyxy", "bbox_score", "keypoints_2d", "keypoint_scores", "keypoints_3d", "smpl_body_pose",
                 "smpl_betas", "smpl_camera")


# -- reference answer ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Reference:
    clips: Path    # folder of CLIPS
    output: Path   # an uninterrupted run's output over it (shards of SHARD frames, one worker)


def run_here(source: Path, output: Path, *, shard_frames: int, workers: int) -> JobSummary:
    """`run_job` in this process, on the session's Ray, with the options FAST stands for. One CPU
    (one torch thread) per worker: a worker with more threads than free cores slows down tenfold
    when other processes compete for them (OpenMP threads spin-waiting for each other)."""
    options = JobOptions(input=str(source), output=str(output), shard_frames=shard_frames, num_workers=workers,
                         cpus_per_worker=1, random_weights=True, max_persons=1, flip_test=False,
                         models=dict(DEFAULT_MODELS, detector="yolox_nano"))
    return run_job(options)


def reference_job(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """The clips and their uninterrupted output, made once per session (both modules use them)."""
    base = tmp_path_factory.getbasetemp() / "posepipe-fault-reference"
    ref = Reference(base / "clips", base / "out")
    if (base / "done").exists():
        return ref
    for name, n in CLIPS.items():
        media.street_clip(ref.clips / name, n=n)
    summary = run_here(ref.clips, ref.output, shard_frames=int(SHARD), workers=1)
    assert summary.ok == len(CLIPS) and summary.exit_code == 0, summary.failures
    (base / "done").touch()
    return ref


@pytest.fixture(scope="module")
def reference(ray_local, tmp_path_factory) -> Reference:
    return reference_job(tmp_path_factory)


# -- reading outputs back ------------------------------------------------------------------------
def read_rows(out: Path) -> list[dict]:
    """Every poses row, sorted by (video_id, frame_index, track_id, box)."""
    rel = duckdb.sql(f"SELECT * FROM read_parquet('{out}/poses/**/*.parquet')")
    rows = [dict(zip(rel.columns, row)) for row in rel.fetchall()]
    return sorted(rows, key=lambda r: (r["video_id"], r["frame_index"], r["track_id"], r["bbox_xyxy"]))


def assert_rows_match(got: list[dict], want: list[dict]) -> None:
    """Same (video, frame, track) keys in the same order; floats within 1e-5 (runs differ in torch
    thread counts, so in summation order)."""
    key = lambda r: (r["video_id"], r["frame_index"], r["track_id"])  # noqa: E731
    assert [key(r) for r in got] == [key(r) for r in want]
    for g, w in zip(got, want):
        for column in FLOAT_COLUMNS:
            a = np.asarray(g[column] if g[column] is not None else np.nan, np.float64)
            b = np.asarray(w[column] if w[column] is not None else np.nan, np.float64)
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5, equal_nan=True, err_msg=f"{column} of {key(g)}")


def assert_same_rows(got_dir: Path, want_dir: Path) -> None:
    """Same rows, one `ok` commit per video, and the same part files (both ran SHARD-frame shards):
    nothing lost, duplicated or left over from an interrupted attempt."""
    assert_rows_match(read_rows(got_dir), read_rows(want_dir))
    videos = duckdb.sql(f"SELECT video_id, status, num_rows FROM read_parquet('{got_dir}/videos/*.parquet') "
                        "ORDER BY video_id").fetchall()
    want_videos = duckdb.sql(f"SELECT video_id, status, num_rows FROM read_parquet('{want_dir}/videos/*.parquet') "
                             "ORDER BY video_id").fetchall()
    assert videos == want_videos and all(status == "ok" for _, status, _ in videos)
    # Part files carry the name of the finish attempt that wrote them: compare without it.
    # (Only poses/ and videos/: _index/ and _committed.parquet hold the driver's state, named per job.)
    parts = lambda d: sorted(re.sub(r"-[0-9a-f]{12}\.parquet$", ".parquet", p.relative_to(d).as_posix())  # noqa: E731
                             for folder in ("poses", "videos") for p in (d / folder).rglob("*.parquet"))
    assert parts(got_dir) == parts(want_dir)
    assert not [p for p in got_dir.rglob(".*.tmp")], "a temp file was left visible"


# -- subprocesses (tests.processes; posepipe_env is imported from here by test_cluster) -------------
@pytest.fixture
def spawner() -> Iterator[Spawner]:
    spawn = Spawner()
    try:
        yield spawn
    finally:
        spawn.cleanup()


def posepipe_command(*args: str) -> list[str]:
    return posepipe_argv("run", *args, "--json")


def wait_job(proc: subprocess.Popen, log: Path, timeout_s: float = JOB_TIMEOUT_S) -> dict:
    """Wait for a `posepipe run` subprocess; its JSON summary (fails the test on timeout)."""
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"posepipe run did not finish in {timeout_s:.0f}s:\n{log.read_text()[-4000:]}")
    text = log.read_text()
    assert proc.returncode == 0, text[-4000:]
    return json.loads(text[text.rindex("\n{") + 1:])


def wait_for(condition, timeout_s: float, what: str, interval_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")


# -- tests ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_killed_workers_are_restarted_or_replaced_and_give_the_same_rows(reference, spawner, tmp_path):
    """The one model worker's process dies four times as it starts a shard: Ray restarts it three
    times (`max_restarts`); after the fourth death the runner replaces the dead actor. The finisher
    dies once after writing a video's parts but before its commit row, and is restarted. What died is
    redone and the output is exactly the uninterrupted run's."""
    markers = tmp_path / "markers"
    markers.mkdir()
    out, log = tmp_path / "out", tmp_path / "run.log"
    points = "shard:a.mp4:0,shard:b.mp4:2,finish:b.mp4,shard:c.mp4:2,shard:c.mp4:4"
    env = posepipe_env(POSEPIPE_TEST_KILL_AT=points, POSEPIPE_TEST_KILL_DIR=str(markers))
    proc = spawner.start(posepipe_command(str(reference.clips), "--output", str(out), "--shard-frames", SHARD,
                                          "--num-workers", "1", *FAST), log, env)
    summary = wait_job(proc, log)
    text = log.read_text()
    assert len(list(markers.iterdir())) == 5, f"a fault did not fire:\n{text[-3000:]}"
    assert summary["ok"] == len(CLIPS) and summary["failed"] == 0, text[-3000:]
    assert summary["frames"] == sum(CLIPS.values())  # a redone shard is counted once
    # Which task is blamed for a death can vary (a task's reply may die with the worker just after
    # it ran), so only that work was redone is checked, and that the fourth death replaced the actor.
    assert "retrying " in text and "worker 0 is gone" in text and "starting a new one" in text, text[-3000:]
    assert_same_rows(out, reference.output)


@pytest.mark.slow
def test_failures_that_pass_are_retried_not_recorded(reference, spawner, tmp_path):
    """A CUDA out-of-memory error in a shard and in a finish is not the video's fault: the task runs
    again after a backoff, and the output is exactly the uninterrupted run's, with no failed row."""
    markers = tmp_path / "markers"
    markers.mkdir()
    out, log = tmp_path / "out", tmp_path / "run.log"
    env = posepipe_env(POSEPIPE_TEST_KILL_AT="oom@shard:a.mp4:2,oom@finish:b.mp4", POSEPIPE_TEST_KILL_DIR=str(markers))
    proc = spawner.start(posepipe_command(str(reference.clips), "--output", str(out), "--shard-frames", SHARD,
                                          "--num-workers", "1", *FAST), log, env)
    summary = wait_job(proc, log)
    text = log.read_text()
    assert len(list(markers.iterdir())) == 2, f"a fault did not fire:\n{text[-3000:]}"
    assert summary["ok"] == len(CLIPS) and summary["failed"] == 0, text[-3000:]
    assert "out of memory" in text and "trying again" in text, text[-3000:]
    assert_same_rows(out, reference.output)


@pytest.mark.slow
def test_killed_driver_rerun_resumes_to_the_same_rows(reference, spawner, tmp_path):
    """SIGKILL the driver once a video is committed: its local Ray goes with it, and the same
    command run again skips what was committed and completes the rest exactly."""
    out, log = tmp_path / "out", tmp_path / "first.log"
    args = posepipe_command(str(reference.clips), "--output", str(out), "--shard-frames", SHARD, *FAST)
    proc = spawner.start(args, log, posepipe_env())
    wait_for(lambda: list((out / "videos").glob("*.parquet")) or proc.poll() is not None, JOB_TIMEOUT_S,
             "the first committed video")
    assert proc.poll() is None, f"the job ended before it could be killed:\n{log.read_text()[-3000:]}"
    ray_processes = set(session_members(proc.pid)) - {proc.pid}
    assert ray_processes, "the driver started no local Ray"
    proc.kill()
    proc.wait(timeout=30)
    committed = len(list((out / "videos").glob("*.parquet")))
    assert 1 <= committed < len(CLIPS), "kill the driver mid-job: more or longer clips needed"
    # Ray ties the local Ray that ray.init() started to the driver: GCS, raylet and workers die with
    # it. (Ray's dashboard and runtime-env agents linger for about a minute, trying to report to the
    # dead GCS, then exit; they do not disturb a rerun. The spawner's teardown ends them here.)
    agents = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")

    def core() -> list[int]:
        procs = processes()
        return [p for p in ray_processes & set(session_members(proc.pid))
                if p not in procs or not procs[p].cmdline.startswith(agents)]

    wait_for(lambda: not core(), 60, "the killed driver's Ray to exit", interval_s=0.5)

    log2 = tmp_path / "second.log"
    summary = wait_job(spawner.start(args, log2, posepipe_env()), log2)
    assert summary["skipped_complete"] == committed and summary["ok"] == len(CLIPS) - committed
    assert summary["failed"] == 0
    assert_same_rows(out, reference.output)


@pytest.mark.slow
def test_a_dead_local_ray_ends_the_job_with_one_line_and_a_rerun_completes(spawner, tmp_path):
    """Killing Ray's dashboard agent takes the raylet down (as seen on a user's machine): the driver
    stops within seconds, not after the 30-minute worker wait, with exit code 6 and one line that
    says so and how to rerun, none of Ray's own output; the same command then completes the job."""
    clips = tmp_path / "clips"
    for name in ("a.mp4", "b.mp4"):
        media.street_clip(clips / name, n=4)
    out, log = tmp_path / "out", tmp_path / "first.log"
    args = posepipe_command(str(clips), "--output", str(out), "--shard-frames", SHARD, *FAST)
    proc = spawner.start(args, log, posepipe_env())
    wait_for(lambda: "model workers" in log.read_text() or proc.poll() is not None, JOB_TIMEOUT_S,
             "the job to start its workers")
    agents = [pid for pid in session_members(proc.pid) if processes()[pid].cmdline.startswith("ray::DashboardAgent")]
    assert proc.poll() is None and agents, f"no running job or agent to kill:\n{log.read_text()[-3000:]}"
    os.kill(agents[0], signal.SIGKILL)
    try:
        proc.wait(timeout=90)  # the check runs every RAY_CHECK_S; the rest is Ray's shutdown
    except subprocess.TimeoutExpired:
        pytest.fail(f"the driver did not notice its Ray died:\n{log.read_text()[-3000:]}")
    text = log.read_text()
    if proc.returncode == 0:
        pytest.skip("the job finished before its Ray went down: longer clips needed on this machine")
    assert proc.returncode == 6, text[-3000:]
    said = [line for line in text.splitlines() if "local Ray died" in line]
    assert len(said) == 1 and "Rerun the same command" in said[0] and "posepipe run" in said[0], text[-3000:]
    # Not "failed" videos or "lost" workers either: the workers died with the Ray, not by themselves.
    for noise in ("(raylet)", "Traceback", "Fatal Python error", "Raylet is terminated", "failed ", " is gone"):
        assert noise not in text, f"{noise!r} reached the terminal:\n{text[-3000:]}"

    log2 = tmp_path / "second.log"
    summary = wait_job(spawner.start(args, log2, posepipe_env()), log2)
    assert summary["ok"] + summary["skipped_complete"] == 2 and summary["failed"] == 0, summary
    assert [len(r["keypoints_2d"]) for r in read_rows(out)] == [17] * 8  # one row a frame (--max-persons 1)


# Every line a plain `posepipe run` may print without -v (no terminal: no live progress bar).
OWN_LINES = [re.compile(p) for p in (
    r"WARNING: --random-weights: models use RANDOM weights\.", r"\d+ videos found, \d+ to process, \d+ already complete$",
    r"\d+ model workers \(\{.*\}\), \d+ finishers$", r"done \S+ \(\d+ rows\)$", r"failed \S+: ", r"posepipe: \d+ ok, \d+ failed, ",
    r"  failed: \S+: ", r"  query: duckdb -c ",
)]


@pytest.mark.slow
def test_a_plain_run_shows_only_posepipes_own_lines(spawner, tmp_path):
    """What a user sees of a local job, a failing file included: posepipe's messages and summary.
    Ray's banners and cluster errors, a worker's C++ aborts ("Mutex corrupt", "Fatal Python error"),
    FFmpeg's complaints about the bad file: all in the logs, not on the terminal (-v shows them)."""
    clips = tmp_path / "clips"
    media.street_clip(clips / "a.mp4", n=4)
    (clips / "bad.mp4").write_bytes(b"not a video at all")
    log = tmp_path / "run.log"
    proc = spawner.start(posepipe_argv("run", str(clips), "--output", str(tmp_path / "out"), "--shard-frames", SHARD,
                                       *FAST), log, posepipe_env())
    try:
        proc.wait(timeout=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"posepipe run did not finish:\n{log.read_text()[-3000:]}")
    text = log.read_text()
    assert proc.returncode == 3 and "failed bad.mp4" in text, text[-3000:]  # one video failed, as it should
    foreign = [line for line in text.splitlines() if line.strip() and not any(p.match(line) for p in OWN_LINES)]
    assert not foreign, "not posepipe's own lines on the terminal:\n" + "\n".join(foreign[:20])


@pytest.mark.slow
@pytest.mark.parametrize("shard_frames, workers", [(100, 1), (3, 2), (4, 2)])
def test_rows_do_not_depend_on_shard_size_or_worker_count(reference, tmp_path, shard_frames, workers):
    """Tracking and lifting see whole videos: one shard per video, uneven shards, one or two
    workers all give the reference rows, track ids included."""
    out = tmp_path / "out"
    summary = run_here(reference.clips / "c.mp4", out, shard_frames=shard_frames, workers=workers)
    assert summary.ok == 1 and summary.exit_code == 0 and summary.workers == workers, summary.failures
    got = read_rows(out)
    assert any(r["track_id"] >= 0 for r in got), "nothing was tracked: the comparison would be vacuous"
    assert_rows_match(got, [r for r in read_rows(reference.output) if r["video_id"] == "c.mp4"])


def test_a_lost_shard_result_is_recognised_inside_a_task_error():
    """finish_video reading a shard whose node died raises, on the driver, a RayTaskError whose cause
    is an ObjectLostError; the runner must see "lost" (recompute), not "the video's own error"."""
    import ray

    from posepipe.pipeline.run.scheduler import failure_kind

    lost = ray.exceptions.ObjectLostError("ab" * 14, None, "")
    wrapped = ray.exceptions.RayTaskError("finish_video", "Traceback ...", lost)
    assert failure_kind(ray, wrapped) == "lost"
    assert failure_kind(ray, wrapped.as_instanceof_cause()) == "lost"
    assert failure_kind(ray, ray.exceptions.OwnerDiedError("ab" * 14, None, "")) == "lost"
    assert failure_kind(ray, ray.exceptions.ActorUnavailableError("restarting", None)) == "worker"
    assert failure_kind(ray, ray.exceptions.ActorDiedError()) == "worker"
    assert failure_kind(ray, ray.exceptions.RayTaskError("finish_video", "tb", ValueError("bad"))) == "task"


def test_forwarded_env_never_collides_with_a_ray_jobs_runtime_env():
    """Under `ray job submit` a variable the Job's runtime_env sets is not forwarded again (Ray
    refuses to merge the two); joining a plain cluster or starting a local Ray forwards all."""
    from posepipe.pipeline.run.runner import forwarded_env, kept_local_notice

    environ = {"AWS_ENDPOINT_URL": "http://s3.local", "POSEPIPE_CACHE": "/cache", "HOME": "/root",
               "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps({"runtime_env": {"env_vars": {"POSEPIPE_CACHE": "/cache"}}})}
    assert forwarded_env(local=True, environ=environ) == {"AWS_ENDPOINT_URL": "http://s3.local", "POSEPIPE_CACHE": "/cache",
                                                          "OMP_WAIT_POLICY": "PASSIVE"}
    assert forwarded_env(local=True, environ={"OMP_WAIT_POLICY": "ACTIVE"}) == {"OMP_WAIT_POLICY": "ACTIVE"}
    assert forwarded_env(local=False, environ=environ) == {"AWS_ENDPOINT_URL": "http://s3.local"}
    plain = {k: v for k, v in environ.items() if not k.startswith("RAY_")}
    assert forwarded_env(local=False, environ=plain) == {"AWS_ENDPOINT_URL": "http://s3.local"}
    # Paths and profiles of the driver's machine stay there when joining a cluster.
    laptop = {**plain, "AWS_PROFILE": "me", "XDG_CACHE_HOME": "/Users/me/.cache", "AWS_REGION": "eu-west-1"}
    assert forwarded_env(local=False, environ=laptop) == {"AWS_ENDPOINT_URL": "http://s3.local", "AWS_REGION": "eu-west-1"}
    assert forwarded_env(local=True, environ=laptop)["AWS_PROFILE"] == "me"
    notice = kept_local_notice("ray://head:10001", laptop)
    assert notice and "AWS_PROFILE, POSEPIPE_CACHE, XDG_CACHE_HOME" in notice and "--env" in notice
    assert kept_local_notice("auto", laptop) is None and kept_local_notice("local", laptop) is None
    assert kept_local_notice("ray://head:10001", {"AWS_REGION": "eu-west-1"}) is None
