"""Running a job on Ray: list videos, probe, shard, schedule on model workers, commit, summarise.

The driver holds no frames and no models. Workers (Ray actors wrapping `PoseWorker`) decode their
own shards, so frames never cross the object store; only small per-person rows do. A video is
committed by its `videos/` row, written after its poses parts, which makes reruns skip finished
videos and never duplicate rows.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from pipeline.options import JobOptions, OptionError
from pipeline.output import Output, video_key
from pipeline.sources import VideoRef, list_videos, redact
from pipeline.worker import PoseWorker, ShardTask

log = logging.getLogger(__name__)

# Environment the workers need that is not secret; credentials reach workers through their own
# environment or instance roles, never through job metadata.
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
                 "POSEPIPE_CACHE", "XDG_CACHE_HOME")
EXIT_OK, EXIT_USAGE, EXIT_SOME_FAILED, EXIT_WEIGHTS = 0, 2, 3, 4


class WeightsError(RuntimeError):
    """Official weights could not be had; the message names the model, what was tried and the fix."""


@dataclass
class JobSummary:
    videos: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    frames: int = 0
    rows: int = 0
    seconds: float = 0.0
    workers: int = 0
    random_weights: bool = False
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_SOME_FAILED if self.failed else EXIT_OK

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def resolve_weights(options: JobOptions) -> dict[str, str | None]:
    """Make sure every model's checkpoint is available before any work starts; name -> sha256."""
    from models import get_weights
    from models.download import WeightsUnavailable, fetch, sha256_file

    hashes: dict[str, str | None] = {}
    for stage, name in options.models.items():
        if options.random_weights:
            hashes[name] = None
            continue
        spec = get_weights(name)
        uri = options.weights.get(name)
        try:
            path = fetch(uri or spec.url, sha256=None if uri else spec.sha256,
                         hash_prefix=None if uri else spec.hash_prefix, filename=None if uri else spec.filename)
        except WeightsUnavailable as exc:
            tried = f"--weights {name}={redact(uri)}" if uri else f"the official URL {spec.url}"
            raise WeightsError(
                f"cannot get weights for the {stage} model {name!r} (tried {tried}): {exc}\n"
                f"Supply the checkpoint file as its authors publish it with --weights {name}=PATH_OR_URI "
                f"(local path, file://, http(s):// or s3://), or place it in the cache. For a plumbing check "
                f"without real weights, pass --random-weights (outputs are meaningless)."
            ) from None
        hashes[name] = sha256_file(path)
    return hashes


def provenance(options: JobOptions, hashes: dict[str, str | None]) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    from models import get_weights

    try:
        pkg_version = version("posepipe")
    except PackageNotFoundError:
        pkg_version = "unknown"
    return {
        "posepipe_version": pkg_version,
        "plumbing_run_random_weights": options.random_weights,
        "models": {stage: {"name": name, "sha256": hashes.get(name), "url": get_weights(name).url,
                           "source": redact(options.weights.get(name, "")) or "official"}
                   for stage, name in options.models.items()},
        "options": options.public(),
    }


def _probe(uri: str) -> dict[str, Any]:
    """Open a video and report its geometry, or the reason it cannot be read."""
    from pipeline.video import VideoError, open_video

    try:
        with open_video(uri) as video:
            i = video.info
            return {"info": {"num_frames": i.num_frames, "fps": i.fps, "width": i.width, "height": i.height,
                             "duration_s": i.duration_s}}
    except VideoError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # anything else the decoder throws is still this file's problem
        return {"error": f"{type(exc).__name__}: {exc}"}


def _cluster_plan(options: JobOptions, ray: Any) -> tuple[int, dict[str, Any], int]:
    """How many workers, with which resources, and how many torch threads each."""
    resources = ray.cluster_resources()
    cpus = int(resources.get("CPU", 1))
    gpus = int(resources.get("GPU", 0))
    use_gpu = options.device.startswith("cuda") or (options.device == "auto" and gpus > 0)
    if use_gpu and gpus == 0:
        raise OptionError("--device", "cuda was asked for but the Ray cluster has no GPUs; use --device cpu or auto")
    if use_gpu:
        n = options.num_workers or gpus
        per_cpu = options.cpus_per_worker or max(1, min(4, cpus // max(n, 1)))
        return n, {"num_cpus": per_cpu, "num_gpus": min(1.0, gpus / n)}, int(per_cpu)
    per_cpu = options.cpus_per_worker or (2 if cpus >= 2 else 1)
    n = options.num_workers or max(1, cpus // int(per_cpu))
    if options.num_workers and n * per_cpu > cpus:
        per_cpu = max(cpus / n, 0.5)  # share the CPUs rather than leave workers unschedulable
    return n, {"num_cpus": per_cpu, "num_gpus": 0}, max(1, int(round(per_cpu)))


def run_job(options: JobOptions, *, reporter: Callable[[str, dict[str, Any]], None] | None = None) -> JobSummary:
    """Run `options` to completion; returns counts (exit_code tells the CLI what to return)."""
    import ray

    from models import CATALOGUE

    options.validate(CATALOGUE)
    report = reporter or (lambda event, data: None)
    started = time.perf_counter()
    output = Output(options.output)
    hashes = resolve_weights(options)
    fingerprint = options.fingerprint(hashes)
    metadata_dict = provenance(options, hashes)
    from pipeline.schema import provenance_metadata, videos_table

    metadata = provenance_metadata(metadata_dict)
    videos = list_videos(options.input)
    summary = JobSummary(videos=len(videos), random_weights=options.random_weights)
    done = {} if options.force else output.completed_videos()
    todo: list[VideoRef] = []
    for ref in videos:
        row = done.get(ref.video_id)
        if row and row.get("status") == "ok" and row.get("job_fingerprint") == fingerprint:
            summary.skipped += 1
        else:
            todo.append(ref)
    report("start", {"videos": len(videos), "todo": len(todo), "skipped": summary.skipped})
    if not todo:
        summary.seconds = time.perf_counter() - started
        return summary

    started_ray = False
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, "logging_level": logging.WARNING,
                                  "runtime_env": {"env_vars": env} if env else None}
        if options.address:
            ray.init(address=options.address, **kwargs)
        else:
            ray.init(**kwargs)
        started_ray = True
    try:
        _schedule(ray, options, output, todo, fingerprint, metadata, summary, report)
    finally:
        if started_ray:
            ray.shutdown()
    summary.seconds = time.perf_counter() - started
    return summary


def _schedule(ray: Any, options: JobOptions, output: Output, todo: list[VideoRef], fingerprint: str,
              metadata: dict[bytes, bytes], summary: JobSummary, report: Callable[[str, dict[str, Any]], None]) -> None:
    from pipeline.schema import videos_table

    n_workers, resources, threads = _cluster_plan(options, ray)
    summary.workers = n_workers
    actor_cls = ray.remote(PoseWorker).options(max_restarts=options.retries + 1, max_task_retries=0, **resources)
    workers = [actor_cls.remote(options, threads=threads) for _ in range(n_workers)]
    probe_task = ray.remote(num_cpus=0, max_retries=2)(_probe)
    report("workers", {"workers": n_workers, "resources": resources})

    def fail(ref: VideoRef, reason: str, info: dict[str, Any] | None = None) -> None:
        key = video_key(ref.video_id)
        output.remove_prefix(f"poses/{key}")
        info = info or {}
        record = {"video_id": ref.video_id, "uri": redact(ref.uri), "status": "failed", "error": reason,
                  "num_frames": info.get("num_frames"), "fps": info.get("fps"), "width": info.get("width"),
                  "height": info.get("height"), "duration_s": info.get("duration_s"), "num_rows": 0,
                  "num_tracks": 0, "job_fingerprint": fingerprint}
        output.write_table(f"videos/{key}.parquet", videos_table([record], metadata))
        summary.failed += 1
        summary.failures.append((ref.video_id, reason))
        state.pop(ref.video_id, None)
        report("video_failed", {"video_id": ref.video_id, "error": reason})

    # Per-video bookkeeping: info, shard refs, shards outstanding.
    state: dict[str, dict[str, Any]] = {}
    pending_probe = deque(todo)
    shard_queue: deque[tuple[VideoRef, ShardTask]] = deque()
    finish_queue: deque[VideoRef] = deque()
    inflight: dict[Any, tuple[str, Any, int | None]] = {}   # ref -> (kind, payload, worker index)
    load = [0] * n_workers
    max_probes = max(4, 2 * n_workers)
    per_worker = 2

    def idle_worker() -> int | None:
        best = min(range(n_workers), key=lambda i: load[i])
        return best if load[best] < per_worker else None

    while pending_probe or shard_queue or finish_queue or inflight:
        while pending_probe and sum(1 for k, _, _ in inflight.values() if k == "probe") < max_probes:
            ref = pending_probe.popleft()
            inflight[probe_task.remote(ref.uri)] = ("probe", ref, None)
        while finish_queue and (w := idle_worker()) is not None:
            ref = finish_queue.popleft()
            st = state[ref.video_id]
            video = {"video_id": ref.video_id, "uri": redact(ref.uri), "info": st["info"], "fingerprint": fingerprint}
            # Shard results travel as refs inside a list: Ray hands them over without copying through us.
            task = workers[w].finish_video.remote(video, list(st["results"]), options.output, metadata)
            inflight[task] = ("finish", ref, w)
            load[w] += 1
        while shard_queue and (w := idle_worker()) is not None:
            ref, shard = shard_queue.popleft()
            if ref.video_id not in state:
                continue  # the video failed meanwhile
            inflight[workers[w].process_shard.remote(shard)] = ("shard", (ref, shard), w)
            load[w] += 1
        if not inflight:
            continue
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
        for obj in ready:
            kind, payload, w = inflight.pop(obj)
            if w is not None:
                load[w] -= 1
            if kind == "probe":
                ref = payload
                result = ray.get(obj)
                if "error" in result:
                    fail(ref, result["error"])
                    continue
                info = result["info"]
                starts = list(range(0, info["num_frames"], options.shard_frames))
                state[ref.video_id] = {"info": info, "results": {}, "remaining": len(starts)}
                for s in starts:
                    shard_queue.append((ref, ShardTask(ref.video_id, ref.uri, s, min(s + options.shard_frames, info["num_frames"]))))
                report("video_started", {"video_id": ref.video_id, "frames": info["num_frames"], "shards": len(starts)})
            elif kind == "shard":
                ref, shard = payload
                st = state.get(ref.video_id)
                try:
                    result = ray.get(obj)
                except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as exc:
                    if st is None:
                        continue
                    if shard.attempt < options.retries:
                        shard.attempt += 1
                        report("retry", {"video_id": ref.video_id, "start": shard.start, "attempt": shard.attempt})
                        shard_queue.appendleft((ref, shard))
                    else:
                        fail(ref, f"a worker died {shard.attempt + 1} times on frames {shard.start}-{shard.stop}: {_short(exc)}", st["info"])
                    continue
                except ray.exceptions.RayTaskError as exc:
                    if st is not None:
                        fail(ref, _task_reason(exc), st["info"])
                    continue
                if st is None:
                    continue
                st["results"][shard.start] = obj
                st["remaining"] -= 1
                summary.frames += shard.stop - shard.start
                report("frames", {"video_id": ref.video_id, "frames": shard.stop - shard.start})
                if st["remaining"] == 0:
                    st["results"] = [st["results"][k] for k in sorted(st["results"])]
                    finish_queue.append(ref)
            else:  # finish
                ref = payload
                st = state.get(ref.video_id)
                try:
                    result = ray.get(obj)
                except ray.exceptions.RayActorError as exc:
                    st["finish_attempts"] = st.get("finish_attempts", 0) + 1
                    if st["finish_attempts"] <= options.retries:
                        finish_queue.appendleft(ref)
                    else:
                        fail(ref, f"a worker died while writing results: {_short(exc)}", st["info"])
                    continue
                except ray.exceptions.RayTaskError as exc:
                    fail(ref, _task_reason(exc), st["info"] if st else None)
                    continue
                except ray.exceptions.ObjectLostError:
                    # A shard result was lost with its node: recompute the whole video.
                    for s in range(0, st["info"]["num_frames"], options.shard_frames):
                        shard_queue.append((ref, ShardTask(ref.video_id, ref.uri, s, min(s + options.shard_frames, st["info"]["num_frames"]))))
                    st.update(results={}, remaining=len(range(0, st["info"]["num_frames"], options.shard_frames)))
                    continue
                state.pop(ref.video_id, None)
                summary.ok += 1
                summary.rows += result.rows
                report("video_done", {"video_id": ref.video_id, "rows": result.rows})
    for actor in workers:
        ray.kill(actor)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _task_reason(exc: Any) -> str:
    """The user-facing reason inside a RayTaskError (our VideoError texts are already readable)."""
    from pipeline.video import VideoError

    cause = getattr(exc, "cause", None)
    if isinstance(cause, VideoError):
        return str(cause)
    if cause is not None:
        return f"{type(cause).__name__}: {str(cause).strip().splitlines()[0][:300] if str(cause).strip() else ''}"
    return _short(exc)
