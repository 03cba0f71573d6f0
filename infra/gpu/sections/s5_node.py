"""Section 5: the node. 2, 3 and 4 model workers sharing the GPU, with the finishers the runner plans
beside them, on the runner's own CPU plan: `run_job` on a local Ray over copies of the 720p clip
(steady frames/s once every worker has loaded its models, and frames/s from the workers' start to the
last commit, finishing included). Where Ray cannot run (not carried, or it fails to start), the same
PoseWorker code runs in plain worker processes on the runner's plan, and one VideoFinisher is timed
apart: the node's end-to-end rate is then the smaller of the workers' and the finishers' capacity.

The frames per worker count follow section 3's one-worker rate (about `node_seconds` of work)."""
from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import os
import queue as queue_mod
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from clips import clip_720p, clip_facts
from plan import load_plan
from record import Record, error_text, log, section_args
from runner_plan import runner_plan

RAY_SHARE = 0.8   # of the section's time, for the Ray runs (a Ray that hangs); processes get the rest


def job_options(plan: Any, folder: Path, output: Path, workers: int) -> Any:
    from posepipe.pipeline.options import JobOptions

    return JobOptions(input=str(folder), output=str(output), device=plan.device, random_weights=True,
                      max_persons=plan.max_persons, flip_test=plan.flip_test, frames_per_batch=plan.node_window,
                      shard_frames=plan.node_shard_frames, num_workers=workers, models=plan.models(), force=True)


def one_worker_fps(out: Path, plan: Any) -> float | None:
    """Section 3's device-path frames/s on the 720p clip at the node's window size, if it ran."""
    sibling = out.parent / "3_worker.json"
    if not sibling.is_file():
        return None
    runs = json.loads(sibling.read_text()).get("runs", [])
    for r in runs:
        if r.get("clip") == "h264_720p" and r.get("path") == "device" and r.get("fps") and r.get("window") == plan.node_window:
            return float(r["fps"])
    return next((float(r["fps"]) for r in runs if r.get("clip") == "h264_720p" and r.get("fps")), None)


def frames_for(plan: Any, workers: int, fps: float | None) -> int:
    want = workers * fps * plan.node_seconds if fps else plan.node_min_frames
    return int(min(plan.node_max_frames, max(plan.node_min_frames, want)))


def input_folder(work: Path, clip: Path, clip_frames: int, frames: int) -> tuple[Path, int]:
    """A folder of `frames` worth of copies (hard links) of `clip`, each a video of its own."""
    copies = max(1, math.ceil(frames / clip_frames))
    folder = Path(tempfile.mkdtemp(prefix="node-in-", dir=work))
    for i in range(copies):
        target = folder / f"clip{i:03d}{clip.suffix}"
        try:
            os.link(clip, target)
        except OSError:
            target.write_bytes(clip.read_bytes())
    return folder, copies * clip_frames


# -- through Ray (a child process, so a Ray that hangs cannot take the section's time) ----------------

def ray_child(args: argparse.Namespace) -> None:
    """Entry point of the Ray child: one local Ray, then run_job per worker count."""
    import ray

    from posepipe.pipeline.measure.benchmark import bench_run_job
    from posepipe.pipeline.run.runner import forwarded_env

    plan = load_plan(args.plan)
    record = Record(args.out, "5_node_ray")
    clip = Path(args.clip)
    clip_frames = int(args.clip_frames)
    t = time.perf_counter()
    env = forwarded_env(local=True)
    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             runtime_env={"env_vars": env} if env else None)
    record.put("ray", {"version": ray.__version__, "init_seconds": round(time.perf_counter() - t, 2),
                       "resources": ray.cluster_resources()})
    fps = float(args.one_worker_fps) if args.one_worker_fps else None
    for workers in plan.node_workers:
        log(f"run_job with {workers} workers")
        folder, frames = input_folder(args.work, clip, clip_frames, frames_for(plan, workers, fps))
        options = job_options(plan, folder, args.work / f"node-out-{workers}", workers)
        try:
            run = bench_run_job(options)
            row = {"workers": workers, "videos": len(os.listdir(folder)), "frames": frames,
                   "plan": runner_plan(options), **run}
        except Exception as exc:  # one worker count failing leaves the others
            row = {"workers": workers, "error": error_text(exc)}
        record.add("runs", row)
    ray.shutdown()
    record.done("ray")


def through_ray(args: argparse.Namespace, plan: Any, clip: Path, clip_frames: int, fps: float | None,
                seconds: float) -> dict[str, Any]:
    out = args.work / "5_node_ray.json"
    cmd = [sys.executable, __file__, "--ray-child", "--out", str(out), "--plan", args.plan, "--work", str(args.work),
           "--clip", str(clip), "--clip-frames", str(clip_frames), "--one-worker-fps", str(fps or "")]
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        rc = proc.wait(timeout=seconds)
        cut = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        rc, cut = proc.wait(), True
    data = json.loads(out.read_text()) if out.is_file() else {}
    return {"exit_code": rc, "cut_by_timeout": cut, "timeout_s": round(seconds), **{k: v for k, v in data.items() if k not in ("section", "headline")}}


# -- without Ray: worker processes on the runner's plan --------------------------------------------

def _model_worker(options: Any, threads: int, tasks: Any, results: Any, barrier: Any, seconds: float) -> None:
    import torch

    from posepipe.pipeline.perframe.shards import ShardTask
    from posepipe.pipeline.perframe.worker import PoseWorker

    worker = PoseWorker(options, threads=threads)
    try:
        first = tasks.get(timeout=5)
    except queue_mod.Empty:
        first = None
    if first is not None:  # warm-up on its first shard's first window, then that shard counts like the rest
        uri, start, stop, info = first
        worker.process_shard(ShardTask("warm", uri, start, min(stop, start + options.frames_per_batch), info=info))
    barrier.wait(timeout=seconds)
    frames, thread0, t0 = 0, time.thread_time(), time.perf_counter()
    task = first
    while task is not None:
        uri, start, stop, info = task
        frames += worker.process_shard(ShardTask(Path(uri).name, uri, start, stop, info=info)).frames_decoded
        try:
            task = tasks.get_nowait()
        except queue_mod.Empty:
            task = None
    end = time.perf_counter()
    results.put({"frames": frames, "start": t0, "end": end,
                 "host_cpu_ms_per_frame": round(1000 * (time.thread_time() - thread0) / max(frames, 1), 3),
                 "gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None})


def processes_node(plan: Any, work: Path, clip: Path, clip_frames: int, workers: int, fps: float | None,
                   seconds: float) -> dict[str, Any]:
    from posepipe.pipeline.io.video import probe_video, shard_bounds

    folder, frames = input_folder(work, clip, clip_frames, frames_for(plan, workers, fps))
    options = job_options(plan, folder, work / f"node-out-{workers}", workers)
    node = runner_plan(options)
    probe = probe_video(str(clip))
    info = probe.info.as_dict()
    ctx = mp.get_context("spawn")
    tasks, results, barrier = ctx.Queue(), ctx.Queue(), ctx.Barrier(workers + 1)
    for name in sorted(os.listdir(folder)):
        for a, b in shard_bounds(probe.info, plan.node_shard_frames):
            tasks.put((str(folder / name), a, b, info))
    procs = [ctx.Process(target=_model_worker, args=(options, node["threads"], tasks, results, barrier, seconds),
                         daemon=True) for _ in range(node["workers"])]
    for p in procs:
        p.start()
    got = []
    try:
        barrier.wait(timeout=seconds)  # every worker has loaded its models and warmed up
        for _ in procs:
            got.append(results.get(timeout=seconds))
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    start, end = min(r["start"] for r in got), max(r["end"] for r in got)
    total = sum(r["frames"] for r in got)
    return {"workers": node["workers"], "plan": node, "videos": len(os.listdir(folder)), "frames": total,
            "per_frame_fps_node": round(total / (end - start), 2) if end > start else None,
            "per_worker_frames": [r["frames"] for r in got],
            "host_cpu_ms_per_frame": [r["host_cpu_ms_per_frame"] for r in got],
            "gpu_mem_gib_per_worker": got[0]["gpu_mem_gib"] if got else None}


def finisher_fps(plan: Any, work: Path, clip: Path) -> dict[str, Any]:
    """One VideoFinisher (one thread, as the runner starts them) on one video's shards."""
    import torch

    from posepipe.pipeline.io.schema import provenance_metadata
    from posepipe.pipeline.io.video import probe_video, shard_bounds
    from posepipe.pipeline.perframe.shards import ShardTask
    from posepipe.pipeline.perframe.worker import PoseWorker
    from posepipe.pipeline.temporal.finish import VideoFinisher

    options = job_options(plan, clip.parent, work / "finisher-out", 1)
    worker = PoseWorker(options, threads=4)
    probe = probe_video(str(clip))
    shards = [worker.process_shard(ShardTask(clip.name, str(clip), a, b, info=probe.info.as_dict()), header=probe.header)
              for a, b in shard_bounds(probe.info, plan.node_shard_frames)]
    threads = torch.get_num_threads()
    finisher = VideoFinisher(options, threads=1)
    video = {"video_id": clip.name, "uri": str(clip), "info": probe.info.as_dict(), "fingerprint": "bench", "attempt": "0" * 12}
    out = work / "finisher-out"
    finisher.finish_video(video, shards, str(out), provenance_metadata({}), pose_boxes=worker)  # warm-up
    t = time.perf_counter()
    result = finisher.finish_video(video, shards, str(out), provenance_metadata({}), pose_boxes=worker)
    seconds = time.perf_counter() - t
    torch.set_num_threads(threads)
    frames = probe.info.num_frames
    return {"frames": frames, "rows": result.rows, "seconds": round(seconds, 3), "fps": round(frames / seconds, 1)}


def main() -> None:
    args, plan, record = section_args(__doc__)
    deadline = time.perf_counter() + plan.timeouts.get("5_node", 150.0) - 10
    clip = clip_720p(args.work, plan.clip_size, plan.clip_frames)
    facts = clip_facts(clip)
    record.put("clip", facts)
    fps = one_worker_fps(args.out, plan)
    record.put("one_worker_fps", fps)
    try:
        import ray  # noqa: F401  (imported only to learn whether it can be)
        ray_error = None
    except Exception as exc:
        ray_error = error_text(exc)
    if ray_error is None:
        seconds = RAY_SHARE * (deadline - time.perf_counter())
        log(f"through Ray (run_job), at most {seconds:.0f} s")
        record.put("ray", through_ray(args, plan, clip, facts["frames"], fps, seconds))
        runs = [r for r in record.data["ray"].get("runs", []) if "error" not in r]
        if not runs:
            ray_error = (record.data["ray"].get("runs") or [{}])[0].get("error") or \
                f"the Ray child gave no run (exit {record.data['ray']['exit_code']}, cut by timeout: {record.data['ray']['cut_by_timeout']})"
    else:
        record.put("ray", {"error": ray_error})
    if ray_error is not None:
        record.put("mode", f"processes: Ray unavailable ({ray_error[:200]})")
        for workers in plan.node_workers:
            if time.perf_counter() > deadline:
                record.add("processes", {"workers": workers, "error": "the section's time ran out"})
                continue
            log(f"{workers} worker processes")
            try:
                record.add("processes", processes_node(plan, args.work, clip, facts["frames"], workers, fps,
                                                       deadline - time.perf_counter()))
            except Exception as exc:
                record.add("processes", {"workers": workers, "error": error_text(exc)})
        try:
            record.put("finisher", finisher_fps(plan, args.work, clip))
        except Exception as exc:
            record.put("finisher", {"error": error_text(exc)})
        fin = record.data["finisher"].get("fps")
        for row in record.data["processes"]:
            if row.get("per_frame_fps_node") and fin:
                capacity = round(row["plan"]["finishers"] * fin, 1)
                row["finish_capacity_fps"] = capacity
                row["end_to_end_fps"] = min(row["per_frame_fps_node"], capacity)
        record.put("processes", record.data["processes"])
        parts = [f"{r['workers']}w: {r.get('end_to_end_fps', r.get('per_frame_fps_node', r.get('error', '?')))}"
                 for r in record.data["processes"]]
        record.done(f"processes (no Ray): " + "; ".join(str(p) for p in parts))
    else:
        record.put("mode", "ray: run_job")
        parts = [f"{r['workers']}w: " + (f"steady {(r.get('steady') or {}).get('fps')} fps, end to end "
                                         f"{(r.get('after_ray_init') or {}).get('fps')} fps, {r.get('finishers')} finishers"
                                         if "error" not in r else r["error"][:80])
                 for r in record.data["ray"].get("runs", [])]
        record.done("Ray: " + "; ".join(parts))


if __name__ == "__main__":
    if "--ray-child" in sys.argv:
        parser = argparse.ArgumentParser()
        for flag in ("--out", "--plan", "--work", "--clip", "--clip-frames", "--one-worker-fps"):
            parser.add_argument(flag, type=Path if flag in ("--out", "--work") else str)
        parser.add_argument("--ray-child", action="store_true")
        ray_child(parser.parse_args())
    else:
        main()
