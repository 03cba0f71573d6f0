"""The job's scheduler: shards on model workers, finishes on finishers, retries, and the commit.

The driver holds no frames and no models. Model workers (Ray actors wrapping `PoseWorker`, on the
GPU when there is one) decode their own shards and do only per-frame work, so frames never cross
the object store; only small per-person rows do, and those go from the worker that computed a
shard to a finisher (a CPU actor wrapping `VideoFinisher`: tracking, lifting, writing) without
passing through the driver. A video is committed by its `videos/` row, written after its poses
parts, which makes reruns skip finished videos and never duplicate rows.

Failures. Ray restarts a dead worker actor (`max_restarts`) but never retries its tasks
(`max_task_retries=0`): the driver decides what to redo.
* A shard task whose model worker died, or a finish whose finisher died (`RayActorError`:
  `ActorDiedError`, `ActorUnavailableError`; or the node went), is queued again, up to `retries`
  more times, for whichever worker or finisher is ready. Shards are pure, and each finish writes its
  parts under names of its own attempt, which its commit row names, so a redo never duplicates rows.
* A worker whose task failed gets no work until a ping answers from its restarted process. One
  that can never come back (restarts spent, killed) is replaced by a fresh actor, within a budget;
  one whose restart cannot be placed (its node gone, no room elsewhere) just stays out of the
  rotation while the others carry on. If no worker is ready for `WORKER_WAIT_S`, or none is left,
  the remaining videos fail with the reason instead of the job waiting forever.
* A shard's rows live in the object store of the node that computed them until the video is
  written. If that node is lost first, `finish_video` fails with a `RayTaskError` whose cause is
  an `ObjectLostError`; the video's shards are then computed again (up to `retries` times).
* No attempt deletes another's parts: readers follow the commit row's attempt, and the driver's
  end of job (pipeline.io.store.finish_job, once no worker can still write) removes the parts no
  row names. A driver killed mid-write leaves an earlier commit valid with all its parts.
* A killed driver takes its actors with it; a rerun skips the committed videos and redoes the rest.
* A local Ray that dies under the job (its raylet or GCS exits: e.g. its dashboard agent was
  killed) can never give workers back: the driver checks those processes every RAY_CHECK_S and
  stops the job (`RayDiedError`, exit 6) instead of waiting WORKER_WAIT_S; tasks that the dying
  raylet fails first are not recorded as the videos' failures.
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from posepipe.pipeline.io.store import Store, StorageError, video_key
from posepipe.pipeline.io.redaction import redact, scrub
from posepipe.pipeline.io.sources import VideoRef
from posepipe.pipeline.perframe.shards import ShardResult, ShardTask
from posepipe.pipeline.perframe.worker import PoseWorker
from posepipe.pipeline.run.cluster import (
    RAY_CHECK_S,
    RAYLET_EXIT_S,
    RayDiedError,
    cluster_plan,
    finish_plan,
    local_ray_death,
)
from posepipe.pipeline.options import JobOptions
from posepipe.pipeline.run.summary import JobSummary
from posepipe.pipeline.temporal.finish import VideoFinisher

log = logging.getLogger(__name__)


def _probe(uri: str) -> tuple[dict[str, Any], dict[int, bytes]]:
    """A video's geometry and keyframes, or the reason it cannot be read; and the header bytes its
    shards open with (a second return, so it goes from here to the workers, not via the driver)."""
    from posepipe.pipeline.io.video import VideoError, probe_video

    try:
        probe = probe_video(uri)
    except VideoError as exc:
        return {"error": str(exc), "transient": bool(getattr(exc, "transient", False))}, {}
    except Exception as exc:  # anything else the decoder throws is still this file's problem
        return {"error": scrub(f"{type(exc).__name__}: {exc}")}, {}
    return {"info": probe.info.as_dict()}, probe.header


# How long the driver waits, with work queued, for any worker to be ready (model loading, actor
# restarts, an autoscaler adding nodes) before failing the remaining videos.
WORKER_WAIT_S = 1800.0


# Failures that pass (a CUDA out-of-memory, a throttled or briefly unreachable store, a timeout) are
# not the video's fault: the task is tried again, on whichever worker is free, after a backoff that
# doubles from TRANSIENT_BACKOFF_S, up to TRANSIENT_RETRIES times; only then does the video fail.
TRANSIENT_RETRIES = 4


TRANSIENT_BACKOFF_S = 2.0


class _RayFinisher(VideoFinisher):
    """`VideoFinisher` as the runner drives it (CPU): tracks, lifts and writes one video at a time."""

    def where(self) -> dict[str, Any]:
        import ray

        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}


class _RayWorker(PoseWorker):
    """`PoseWorker` as the runner drives it: says where it runs, and hands a shard back as a small
    summary plus its rows (two objects), so the driver learns a shard is done without fetching
    the rows; they stay where they were computed until `finish_video` reads them."""

    def where(self) -> dict[str, Any]:
        import ray

        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}

    def shard(self, task: ShardTask, header: dict[int, bytes] | None = None) -> tuple[dict[str, int], ShardResult]:
        result = self.process_shard(task, header=header)
        return {"rows": len(result.frame_index), "frames_decoded": result.frames_decoded,
                "bytes_read": result.bytes_read, "device_windows": result.device_windows,
                **{f"fallback:{why}": n for why, n in result.fallback_windows.items()}}, result


@dataclass(eq=False)
class _Worker:
    """One worker slot as the driver sees it: an actor, and whether it may be given work."""
    index: int
    actor: Any
    pool: str = "model"      # "model": per-frame models (GPU when there is one); "finish": temporal work (CPU)
    ready: bool = False      # answered a ping since it was created or last failed
    dead: bool = False       # gone for good and not replaced
    ping: Any = None         # the ping in flight, if any
    queue: list[Any] = field(default_factory=list)  # its tasks in flight, oldest (the running one) first
    casualties: list[Any] = field(default_factory=list)  # what was in flight when it last died
    where: dict[str, Any] = field(default_factory=dict)

    def died_running(self, task: Any) -> bool:
        """Whether `task`, failed because this worker died, was the one running then. An actor runs
        its tasks one at a time, in order: the others in flight were only queued behind it."""
        if task not in self.casualties:  # the first failure seen of a new death
            self.casualties = list(self.queue)
        return task == self.casualties[0]


@dataclass(eq=False)
class _Video:
    ref: VideoRef
    info: dict[str, Any]
    shards: list[ShardTask]
    header: Any = None                                      # ObjectRef of the container header bytes
    results: dict[int, Any] = field(default_factory=dict)   # shard start -> rows ObjectRef
    finish_attempts: int = 0
    transient_failures: int = 0      # failures that pass (OOM, throttling, timeouts) met so far
    recomputes: int = 0
    finish_started: bool = False     # a finish was sent: parts of this job's attempt may exist

    @property
    def complete(self) -> bool:
        return len(self.results) == len(self.shards)


def schedule(ray: Any, options: JobOptions, output: Store, todo: list[VideoRef], fingerprint: str,
              metadata: dict[bytes, bytes], summary: JobSummary, report: Callable[[str, dict[str, Any]], None],
              committed: Mapping[str, dict[str, Any]]) -> None:
    n_workers, resources, threads = cluster_plan(options, ray)
    n_finishers, finish_resources = finish_plan(n_workers, resources, ray)
    summary.workers, summary.finishers = n_workers, n_finishers
    actor_cls = ray.remote(_RayWorker).options(max_restarts=options.retries + 1, max_task_retries=0, **resources)
    finisher_cls = ray.remote(_RayFinisher).options(max_restarts=options.retries + 1, max_task_retries=0,
                                                    **finish_resources)
    report("workers", {"workers": n_workers, "resources": resources, "finishers": n_finishers})
    scheduler = _Scheduler(ray, options, output, todo, fingerprint, metadata, summary, report,
                           make_actor=lambda: actor_cls.remote(options, threads=threads), n_workers=n_workers,
                           make_finisher=lambda: finisher_cls.remote(options, threads=1), n_finishers=n_finishers,
                           committed=committed)
    video_ids = [ref.video_id for ref in todo]
    output.begin_job(video_ids)  # if this job is killed, the next one cleans these folders
    try:
        scheduler.run()
    except BaseException as exc:  # a stop (Ctrl-C, SIGTERM), a storage failure, a dead Ray, a bug
        if scheduler.stop() and _settles_after(exc):
            _settle_stopped_job(output, video_ids, exc)
        raise
    scheduler.stop()
    # No worker is left: delete what no row names, write OUTPUT/_committed.parquet and the videos index.
    removed = output.finish_job(video_ids)
    if removed:
        log.info("removed %d poses parts of superseded or unfinished attempts", removed)


def _settles_after(exc: BaseException) -> bool:
    """Whether a job stopped by `exc` should settle its output before it exits: not after an outage
    of the store (each call would wait out the layer's retries; the next job settles) nor after its
    local Ray died (its workers' end cannot be confirmed)."""
    if isinstance(exc, RayDiedError):
        return False
    return not (isinstance(exc, StorageError) and exc.transient)


def _settle_stopped_job(output: Store, video_ids: list[str], exc: BaseException) -> None:
    """A stopped job whose workers are confirmed gone does what a job's end does (`finish_job`):
    the parts of its unfinished attempts are deleted now, not left to a plain glob until a later job
    ends (and, since this job's intent then looks like a running job's, for INTENT_STALE_S). Best
    effort: a store that fails here (a disk still full) leaves them to the next job, as a kill does."""
    try:
        removed = output.finish_job(video_ids)
    except Exception as failure:  # the stop's own cause is what the user hears about
        log.warning("could not clean up after the stop (%s); the next job does", scrub(str(failure))[:300])
        return
    log.info("stopped (%s): removed %d poses parts of unfinished attempts", type(exc).__name__, removed)


class _Scheduler:
    """The driver loop: probes, shards and finishes in flight, workers' health, and what to redo."""

    PER_WORKER = 2  # tasks queued on a worker at once: one running, one ready to start

    def __init__(self, ray: Any, options: JobOptions, output: Store, todo: list[VideoRef], fingerprint: str,
                 metadata: dict[bytes, bytes], summary: JobSummary, report: Callable[[str, dict[str, Any]], None],
                 *, make_actor: Callable[[], Any], n_workers: int, make_finisher: Callable[[], Any] | None = None,
                 n_finishers: int = 1, committed: Mapping[str, dict[str, Any]] | None = None) -> None:
        self.ray, self.options, self.output = ray, options, output
        self.committed = dict(committed or {})   # video_id -> its ok row from an earlier run
        self.fingerprint, self.metadata, self.summary, self.report = fingerprint, metadata, summary, report
        self.make_actor = make_actor
        self.make_finisher = make_finisher or make_actor  # tests may give one actor class that does both
        self.probe_task = ray.remote(num_cpus=0, max_retries=2)(_probe)
        self.max_probes = max(4, 2 * n_workers)
        self.replacements_left = n_workers * (options.retries + 1)
        self.videos: dict[str, _Video] = {}
        self.pending_probe: deque[VideoRef] = deque(todo)
        self.shard_queue: deque[tuple[_Video, ShardTask]] = deque()
        self.finish_queue: deque[_Video] = deque()
        self.inflight: dict[Any, tuple[str, Any, _Worker | None]] = {}   # ObjectRef -> (kind, payload, worker)
        self.waiting_since: float | None = None
        self.delayed: list[tuple[float, Callable[[], None]]] = []   # (when, requeue) after a transient failure
        self.probe_retries: dict[str, _Video] = {}   # transient probe failures, per video id
        self.last_worker_error = ""
        self.workers: list[_Worker] = []
        for i in range(n_workers):
            self.workers.append(_Worker(i, make_actor()))
            self._ping(self.workers[i])
        self.finishers: list[_Worker] = []
        for i in range(n_finishers):
            self.finishers.append(_Worker(i, self.make_finisher(), pool="finish"))
            self._ping(self.finishers[i])

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        ray = self.ray
        while self.pending_probe or self.shard_queue or self.finish_queue or self.delayed or self._work_in_flight():
            self._release_delayed()
            self._submit()
            self._check_workers()
            if not self.inflight:
                time.sleep(0.05)
                continue
            ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=1.0)
            if ready:  # results that a dying Ray fails ("local raylet died") must not fail videos
                self._check_ray(ready)
            for obj in ready:
                kind, payload, worker = self.inflight.pop(obj)
                try:
                    getattr(self, f"_on_{kind}")(obj, payload, worker)
                finally:
                    if worker is not None and kind != "ping":
                        worker.queue.remove(obj)

    def stop(self) -> bool:
        """Kill every actor; True once each is confirmed dead (no finish of this job can still write)."""
        everyone = self.workers + self.finishers
        for worker in everyone:
            try:
                self.ray.kill(worker.actor)
            except Exception:  # already gone
                pass
        # ray.kill returns before the processes are gone; a call on a killed actor fails once it is
        # dead. Wait (bounded) for that, so no finish can still be writing after the job.
        try:
            pings = [worker.actor.where.remote() for worker in everyone]
            ready, _ = self.ray.wait(pings, num_returns=len(pings), timeout=10.0)
        except Exception:
            return False
        dead = len(ready) == len(pings)
        for ping in pings:
            try:
                self.ray.get(ping, timeout=0)
                dead = False  # it answered: alive after all
            except self.ray.exceptions.ActorUnavailableError:
                dead = False  # unreachable for now, not known dead
            except self.ray.exceptions.RayActorError:
                pass
            except Exception:
                dead = False
        return dead

    def _release_delayed(self) -> None:
        now = time.monotonic()
        due = [requeue for when, requeue in self.delayed if when <= now]
        self.delayed = [(when, requeue) for when, requeue in self.delayed if when > now]
        for requeue in due:
            requeue()

    def _retry_later(self, video: _Video, reason: str, requeue: Callable[[], None]) -> bool:
        """Queue `requeue` after a backoff if `video` has transient retries left; False if it has none."""
        if video.transient_failures >= TRANSIENT_RETRIES:
            return False
        delay = TRANSIENT_BACKOFF_S * 2 ** video.transient_failures
        video.transient_failures += 1
        log.warning("%s: %s; trying again in %.0f s (%d of %d)", video.ref.video_id, reason, delay,
                    video.transient_failures, TRANSIENT_RETRIES)
        self.report("retry", {"video_id": video.ref.video_id, "start": None, "attempt": video.transient_failures,
                              "reason": reason})
        self.delayed.append((time.monotonic() + delay, requeue))
        return True

    def _work_in_flight(self) -> bool:
        return any(kind != "ping" for kind, _, _ in self.inflight.values())

    def _submit(self) -> None:
        while self.pending_probe and sum(1 for k, _, _ in self.inflight.values() if k == "probe") < self.max_probes:
            ref = self.pending_probe.popleft()
            summary_ref, header_ref = self.probe_task.options(num_returns=2).remote(ref.uri)
            self.inflight[summary_ref] = ("probe", (ref, header_ref), None)
        while self.finish_queue and (worker := self._idle_worker(self.finishers)) is not None:
            video = self.finish_queue.popleft()
            if self.videos.get(video.ref.video_id) is not video:
                continue  # failed meanwhile
            # Each finish writes its parts under a name of its own (the attempt) and commits by
            # replacing the video's row with one naming that attempt: an earlier commit stays valid
            # until then, and no attempt can delete another's parts (`clean_superseded`).
            video.finish_started = True
            job = {"video_id": video.ref.video_id, "uri": redact(video.ref.uri), "info": video.info,
                   "fingerprint": self.fingerprint, "input_identity": video.ref.identity,
                   "attempt": uuid.uuid4().hex[:12]}
            # The shards' rows travel as refs inside a list: the worker fetches them from where they are.
            rows = [video.results[s.start] for s in video.shards]
            # Kept boxes that no shard computed 2D/SMPL for go to a model worker (rare; a small call).
            model = next((w.actor for w in sorted(self.workers, key=lambda w: len(w.queue)) if w.ready), None)
            task = worker.actor.finish_video.remote(job, rows, self.options.output, self.metadata, model)
            self._start(task, "finish", video, worker)
        while self.shard_queue and (worker := self._idle_worker()) is not None:
            video, shard = self.shard_queue.popleft()
            if self.videos.get(video.ref.video_id) is not video:
                continue
            summary_ref, rows_ref = worker.actor.shard.options(num_returns=2).remote(shard, video.header)
            self._start(summary_ref, "shard", (video, shard, rows_ref), worker)

    def _start(self, obj: Any, kind: str, payload: Any, worker: _Worker) -> None:
        self.inflight[obj] = (kind, payload, worker)
        worker.queue.append(obj)

    def _idle_worker(self, pool: list[_Worker] | None = None) -> _Worker | None:
        ready = [w for w in (self.workers if pool is None else pool) if w.ready and len(w.queue) < self.PER_WORKER]
        return min(ready, key=lambda w: len(w.queue)) if ready else None

    # -- results ------------------------------------------------------------------------------
    def _on_probe(self, obj: Any, payload: tuple[VideoRef, Any], _: None) -> None:
        from posepipe.pipeline.io.video import VideoInfo, shard_bounds

        ref, header = payload
        try:
            result = self.ray.get(obj)
        except self.ray.exceptions.RayError as exc:  # the probe's worker or node died, after Ray's retries
            _consume(self.ray, header)
            self._fail_ref(ref, f"could not probe the video: {_short(exc)}")
            return
        if "error" in result:
            _consume(self.ray, header)
            if result.get("transient"):
                stand_in = self.probe_retries.setdefault(ref.video_id, _Video(ref, {}, []))
                if self._retry_later(stand_in, result["error"], lambda: self.pending_probe.append(ref)):
                    return
                result["error"] += f" (a transient failure, {TRANSIENT_RETRIES + 1} tries; rerun to try again)"
            self._fail_ref(ref, result["error"])
            return
        info = result["info"]
        # Shards start on keyframes (pipeline.io.video.shard_bounds): no two shards read the same bytes.
        shards = [ShardTask(ref.video_id, ref.uri, start, stop, info=info)
                  for start, stop in shard_bounds(VideoInfo.from_dict(info), self.options.shard_frames)]
        video = _Video(ref, info, shards, header=header)
        self.videos[ref.video_id] = video
        self.shard_queue.extend((video, s) for s in shards)
        self.report("video_started", {"video_id": ref.video_id, "frames": info["num_frames"], "shards": len(shards)})
        if not shards:
            self.finish_queue.append(video)

    def _on_shard(self, obj: Any, payload: tuple[_Video, ShardTask, Any], worker: _Worker) -> None:
        video, shard, rows_ref = payload
        current = self.videos.get(video.ref.video_id) is video
        try:
            counts = self.ray.get(obj)
        except Exception as exc:
            _consume(self.ray, rows_ref)  # its twin failed too: fetched, Ray does not print it as "unhandled"
            if failure_kind(self.ray, exc) == "task":
                if not current:
                    return
                reason = _task_reason(exc)
                if is_transient(getattr(exc, "cause", None)):
                    if self._retry_later(video, reason, lambda: self.shard_queue.append((video, shard))):
                        return
                    reason += f" (a transient failure, {TRANSIENT_RETRIES + 1} tries; rerun to try again)"
                self._fail(video, reason)
                return
            self._worker_failed(worker, exc)
            if not current:
                return
            if not worker.died_running(obj):  # queued behind the task that died with the worker: not its fault
                self.shard_queue.appendleft((video, shard))
            elif shard.attempt < self.options.retries:
                shard.attempt += 1
                self.report("retry", {"video_id": video.ref.video_id, "start": shard.start, "attempt": shard.attempt})
                self.shard_queue.appendleft((video, shard))
            else:
                self._fail(video, f"a worker died {shard.attempt + 1} times on frames {shard.start}-{shard.stop}: {_short(exc)}")
            return
        if not current or shard.start in video.results:
            return
        video.results[shard.start] = rows_ref
        self.summary.frames += shard.stop - shard.start
        self.summary.bytes_read += counts.get("bytes_read", 0)
        self.summary.device_windows += counts.get("device_windows", 0)
        for key, n in counts.items():
            if key.startswith("fallback:"):
                why = key.partition(":")[2]
                self.summary.fallback_windows[why] = self.summary.fallback_windows.get(why, 0) + n
        self.report("frames", {"video_id": video.ref.video_id, "frames": shard.stop - shard.start})
        if video.complete:
            self.finish_queue.append(video)

    def _on_finish(self, obj: Any, video: _Video, worker: _Worker) -> None:
        vid = video.ref.video_id
        try:
            result = self.ray.get(obj)
        except Exception as exc:
            kind = failure_kind(self.ray, exc)
            if kind == "task" and isinstance(getattr(exc, "cause", None), StorageError):
                raise exc.cause from None  # the output store is failing: no video's own fault; stop the job
            if kind == "task" and is_transient(getattr(exc, "cause", None)):
                if self._retry_later(video, _task_reason(exc), lambda: self.finish_queue.append(video)):
                    return
            if kind == "task":
                self._fail(video, _task_reason(exc))
            elif kind == "lost":
                # Some shard's rows were lost with the node that held them: compute the video again.
                video.recomputes += 1
                if video.recomputes > self.options.retries:
                    self._fail(video, f"shard results were lost {video.recomputes} times: {_short(exc)}")
                    return
                log.warning("%s: shard results lost with their node; computing the video's %d shards again",
                            vid, len(video.shards))
                self.report("recompute", {"video_id": vid, "shards": len(video.shards)})
                self.summary.frames -= sum(s.stop - s.start for s in video.shards)
                video.results.clear()
                self.shard_queue.extend((video, s) for s in video.shards)
            else:
                self._worker_failed(worker, exc)
                running = worker.died_running(obj)
                video.finish_attempts += running
                if not running:  # queued behind the task that died with the worker
                    self.finish_queue.appendleft(video)
                elif video.finish_attempts <= self.options.retries:
                    log.warning("%s: its worker died while writing it; writing it again", vid)
                    self.finish_queue.appendleft(video)
                else:
                    self._fail(video, f"a worker died while writing results: {_short(exc)}")
            return
        self.videos.pop(vid, None)
        self.summary.ok += 1
        self.summary.rows += result.rows
        self.report("video_done", {"video_id": vid, "rows": result.rows})

    def _on_ping(self, obj: Any, _: None, worker: _Worker) -> None:
        worker.ping = None
        if self._pool(worker)[worker.index] is not worker:
            return  # replaced meanwhile
        try:
            worker.where = self.ray.get(obj)
        except self.ray.exceptions.ActorUnavailableError:
            self._ping(worker)  # not reachable yet; ask again
            return
        except self.ray.exceptions.RayError as exc:
            self._replace(worker, exc)
            return
        worker.ready = True
        log.info("%s %d ready on node %s (pid %s)", _NAMES[worker.pool], worker.index, worker.where.get("node_id"),
                 worker.where.get("pid"))
        if worker.pool == "model":
            self.report("worker_ready", {"worker": worker.index, **worker.where})

    # -- workers ------------------------------------------------------------------------------
    def _pool(self, worker: _Worker) -> list[_Worker]:
        return self.workers if worker.pool == "model" else self.finishers

    def _ping(self, worker: _Worker) -> None:
        # Retried by Ray until the actor is alive again (it queues while the actor restarts) or dead.
        worker.ping = worker.actor.where.options(max_task_retries=-1).remote()
        self.inflight[worker.ping] = ("ping", None, worker)

    def _worker_failed(self, worker: _Worker, exc: BaseException) -> None:
        """A task died with its worker: no more work for it until it answers a ping."""
        self.last_worker_error = _short(exc)
        if self._pool(worker)[worker.index] is not worker or worker.dead:
            return
        if worker.ready:
            log.warning("%s %d (node %s) failed: %s", _NAMES[worker.pool], worker.index, worker.where.get("node_id"),
                        _short(exc))
            self.report("worker_lost", {"worker": worker.index, "error": _short(exc)})
        worker.ready = False
        if worker.ping is None:
            self._ping(worker)

    def _replace(self, worker: _Worker, exc: BaseException) -> None:
        """The actor is dead for good: start a fresh one in its slot, or leave the slot empty."""
        self.last_worker_error = _short(exc)
        worker.ready = False
        try:
            self.ray.kill(worker.actor)
        except Exception:
            pass
        init_failed = bool(getattr(exc, "actor_init_failed", False))
        if init_failed or self.replacements_left <= 0:
            worker.dead = True
            why = "its models failed to load" if init_failed else "no replacements left"
            log.warning("%s %d is gone (%s): %s", _NAMES[worker.pool], worker.index, why, _short(exc))
            return
        self.replacements_left -= 1
        log.warning("%s %d is gone (%s); starting a new one", _NAMES[worker.pool], worker.index, _short(exc))
        make = self.make_actor if worker.pool == "model" else self.make_finisher
        fresh = _Worker(worker.index, make(), pool=worker.pool)
        self._pool(worker)[worker.index] = fresh
        self._ping(fresh)
        self.report("worker_replaced", {"worker": worker.index})

    def _check_ray(self, ready: list[Any] | None = None) -> None:
        """Stop the job (RayDiedError) if the local Ray it started died (checked every RAY_CHECK_S),
        or if a `ready` result failed because this machine's raylet died: the raylet drops its
        connections before its process exits, so such failures arrive first, and would otherwise
        be recorded as the videos' own (a probe is not retried)."""
        system_failure = False
        for obj in ready or ():
            try:
                self.ray.get(obj, timeout=0)
            except self.ray.exceptions.LocalRayletDiedError as exc:
                raise RayDiedError(f"the local Ray died (this machine's raylet: {_short(exc)})") from None
            except (self.ray.exceptions.ActorDiedError, self.ray.exceptions.WorkerCrashedError):
                system_failure = True  # a worker died: by itself, or with the whole local Ray?
            except Exception:
                pass  # the handlers deal with every other outcome
        deadline = time.monotonic() + (RAYLET_EXIT_S if system_failure else 0.0)
        while system_failure and time.monotonic() < deadline:
            if local_ray_death():
                break
            time.sleep(0.1)
        if system_failure or time.monotonic() >= getattr(self, "next_ray_check", 0.0):
            self.next_ray_check = time.monotonic() + RAY_CHECK_S
            died = local_ray_death()
            if died:
                raise RayDiedError(f"the local Ray died ({died})")
            self.output.renew_job()  # this job still runs: other jobs ending leave its folders alone

    def _check_workers(self) -> None:
        """Fail what is queued, rather than wait forever, when no worker is or will be ready."""
        self._check_ray()
        stuck = [pool for pool, queue in ((self.workers, self.shard_queue), (self.finishers, self.finish_queue))
                 if queue and not any(w.ready for w in pool)]
        if not stuck:
            self.waiting_since = None
            return
        for pool in stuck:
            if all(w.dead for w in pool):
                self._fail_all(f"no {_NAMES[pool[0].pool]}s left: {self.last_worker_error}")
                return
        now = time.monotonic()
        if self.waiting_since is None:
            self.waiting_since = now
        elif now - self.waiting_since > WORKER_WAIT_S:
            last = f"; last worker error: {self.last_worker_error}" if self.last_worker_error else ""
            self._fail_all(f"no model worker was ready for {WORKER_WAIT_S:.0f} s{last}")
            self.waiting_since = None

    # -- failing videos -----------------------------------------------------------------------
    def _fail_all(self, reason: str) -> None:
        for video in list(self.videos.values()):
            self._fail(video, reason)
        while self.pending_probe:
            self._fail_ref(self.pending_probe.popleft(), reason)
        self.shard_queue.clear()
        self.finish_queue.clear()

    def _fail(self, video: _Video, reason: str) -> None:
        self.videos.pop(video.ref.video_id, None)
        self._fail_ref(video.ref, reason, video.info, touched=video.finish_started)

    def _fail_ref(self, ref: VideoRef, reason: str, info: dict[str, Any] | None = None, *,
                  touched: bool = False) -> None:
        """Record a video's failure. A failure never deletes committed results: a video committed
        by an earlier run whose parts this job has not begun to rewrite keeps its row and parts,
        and the failure is only reported (a rerun tries again)."""
        from posepipe.pipeline.io.schema import videos_table

        reason = scrub(reason)
        key = video_key(ref.video_id)
        if ref.video_id in self.committed and not touched:
            reason += " (its earlier committed results are kept)"
            self.summary.failed += 1
            self.summary.failures.append((ref.video_id, reason))
            self.report("video_failed", {"video_id": ref.video_id, "error": reason})
            return
        info = info or {}  # its parts, if a finish began, are removed at the end of the job (clean_superseded)
        record = {"video_id": ref.video_id, "uri": redact(ref.uri), "status": "failed", "error": reason,
                  "num_frames": info.get("num_frames"), "fps": info.get("fps"), "width": info.get("width"),
                  "height": info.get("height"), "duration_s": info.get("duration_s"), "num_rows": 0,
                  "num_tracks": 0, "job_fingerprint": self.fingerprint, "input_identity": ref.identity}
        self.output.write_table(f"videos/{key}.parquet", videos_table([record], self.metadata))
        self.summary.failed += 1
        self.summary.failures.append((ref.video_id, reason))
        self.report("video_failed", {"video_id": ref.video_id, "error": reason})


_NAMES = {"model": "worker", "finish": "finisher"}


def clean_superseded(output: Store, video_ids: list[str]) -> int:
    """Delete the poses parts of `video_ids` that their committed row does not name: superseded or
    unfinished attempts, and a failed video's. Run only when no worker is left that could still be
    writing (the job's actors are dead), so it cannot race a commit. Returns the files deleted."""
    output.committed_parts(clean=True, video_ids=video_ids)
    return output.removed


def _consume(ray: Any, ref: Any) -> None:
    """Fetch a failed task's other return, so Ray does not log it as an unhandled error."""
    try:
        ray.get(ref, timeout=0)
    except Exception:
        pass


def failure_kind(ray: Any, exc: BaseException) -> str:
    """Why a task failed: "lost" (an input object went with its node), "task" (our code raised:
    the video's own problem), or "worker" (the worker process or its node failed; redo elsewhere)."""
    seen: BaseException | None = exc
    for _ in range(8):  # a RayTaskError's cause, and causes of causes
        if seen is None:
            break
        if isinstance(seen, ray.exceptions.ObjectLostError):
            return "lost"
        seen = getattr(seen, "cause", None) or seen.__cause__
    if isinstance(exc, ray.exceptions.RayTaskError):
        return "task"
    return "worker"


def is_transient(cause: BaseException | None) -> bool:
    """Whether a task's error is one that passes rather than the video's own fault."""
    if cause is None:
        return False
    if getattr(cause, "transient", False):  # VideoReadError / ObjectReadError say so themselves
        return True
    name = type(cause).__name__
    return name in ("OutOfMemoryError", "MemoryError", "TimeoutError", "ConnectionError", "ConnectionResetError") \
        or "CUDA out of memory" in str(cause)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _task_reason(exc: Any) -> str:
    """The user-facing reason inside a RayTaskError (our VideoError texts are already readable)."""
    from posepipe.pipeline.io.video import VideoError

    cause = getattr(exc, "cause", None)
    if isinstance(cause, VideoError):
        return str(cause)
    if cause is not None:
        return f"{type(cause).__name__}: {str(cause).strip().splitlines()[0][:300] if str(cause).strip() else ''}"
    return _short(exc)
