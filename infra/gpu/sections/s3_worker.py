"""Section 3: one model worker on the device path, as the runner would start it here (its torch
threads), on a 720p H.264 clip encoded on the machine and on the street clip, at two window sizes
(--frames-per-batch). Per run: frames/s; the driving thread's CPU ms per frame (what limits a GPU
worker) and the whole process's; per stage, the host's CPU ms and the device's time between the
stage's CUDA events (the worker's own clock), and, from a separate profiled pass, the kernels each
stage launches per window and their GPU time per frame (on a CPU: the operators dispatched instead);
the share of the wall time the GPU spends in kernels; windows that fell back to the reference path.
Last, the reference path on the 720p clip at the first window size, for comparison."""
from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from clips import clip_720p, clip_facts, street_clip
from counting import OpCounter, kernel_tally, stage_labels
from record import error_text, log, section_args
from runner_plan import runner_plan


def shards(worker: Any, clip: Path, frames: int, shard_frames: int) -> list[Any]:
    from posepipe.pipeline.io.video import probe_video, shard_bounds
    from posepipe.pipeline.perframe.shards import ShardTask

    probe = probe_video(str(clip))
    info = probe.info
    bounds = [(a, min(b, frames)) for a, b in shard_bounds(info, shard_frames) if a < frames]
    return [worker.process_shard(ShardTask(clip.name, str(clip), a, b, info=info.as_dict()), header=probe.header)
            for a, b in bounds]


def per_frame_ms(seconds: float, frames: int) -> float:
    return round(1000.0 * seconds / max(frames, 1), 3)


def timed_run(worker: Any, clip: Path, frames: int, plan: Any) -> dict[str, Any]:
    warm = min(frames, 2 * worker.options.frames_per_batch)
    shards(worker, clip, warm, warm)  # warm-up: cuDNN plans, the allocator, pinned buffers
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    cpu0, thread0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
    done = shards(worker, clip, frames, plan.shard_frames)
    wall, thread, cpu = time.perf_counter() - wall0, time.thread_time() - thread0, time.process_time() - cpu0
    decoded = int(sum(s.frames_decoded for s in done))
    stages: dict[str, float] = {}
    for s in done:
        for k, v in s.timings.items():
            stages[k] = stages.get(k, 0.0) + v
    fallbacks: dict[str, int] = {}
    for s in done:
        for reason, n in (getattr(s, "fallback_windows", None) or {}).items():
            fallbacks[reason] = fallbacks.get(reason, 0) + n
    return {"frames": decoded, "seconds": round(wall, 4), "fps": round(decoded / wall, 2) if wall > 0 else None,
            "rows": int(sum(len(s.frame_index) for s in done)), "shards": len(done),
            "host_cpu_ms_per_frame": per_frame_ms(thread, decoded), "process_cpu_ms_per_frame": per_frame_ms(cpu, decoded),
            "stage_ms_per_frame": {k: per_frame_ms(v, decoded) for k, v in sorted(stages.items())},
            "windows": int(sum(getattr(s, "device_windows", 0) for s in done)) or math.ceil(decoded / worker.options.frames_per_batch),
            "fallback_windows": fallbacks}


def counted_run(worker: Any, clip: Path, frames: int) -> dict[str, Any]:
    """The first `frames` frames again, profiled (CUDA: kernels and their time per stage) or counted
    (CPU: operators per stage). Separate from the timed run: both slow the host down."""
    window = worker.options.frames_per_batch
    windows = math.ceil(frames / window)
    if torch.cuda.is_available() and str(worker.detector.device).startswith("cuda"):
        activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with stage_labels(worker, profile=True), torch.profiler.profile(activities=activities) as prof:
            shards(worker, clip, frames, frames)
            torch.cuda.synchronize()
        tally = kernel_tally(prof)
        total = tally["total"]
        return {"frames": frames, "windows": windows, "kernels_per_window": round(total["kernels"] / windows, 1),
                "kernels_per_frame": round(total["kernels"] / frames, 1),
                "copies_per_window": round(total["copies"] / windows, 1),
                "kernel_ms_per_frame": round(total["kernel_ms"] / frames, 3),
                "stages": {k: {"kernels_per_window": round(v["kernels"] / windows, 1),
                               "kernel_ms_per_frame": round(v["kernel_ms"] / frames, 3),
                               "copy_ms_per_frame": round(v["copy_ms"] / frames, 3), "calls": v["calls"]}
                           for k, v in tally["stages"].items()}}
    counter = OpCounter()
    with stage_labels(worker, profile=False), counter:
        shards(worker, clip, frames, frames)
    return {"frames": frames, "windows": windows, "launches_per_window": round(sum(counter.launches.values()) / windows, 1),
            "launches_per_frame": round(sum(counter.launches.values()) / frames, 1),
            "operators_per_window": round(sum(counter.ops.values()) / windows, 1),
            "stages": {k: {"launches_per_window": round(v / windows, 1)} for k, v in sorted(counter.launches.items())},
            "note": "CPU: operators dispatched (views excluded), each a kernel launch on a GPU"}


def main() -> None:
    args, plan, record = section_args(__doc__)
    from posepipe.pipeline.perframe.worker import PoseWorker
    from posepipe.pipeline.options import JobOptions

    log("encoding the 720p H.264 clip")
    t = time.perf_counter()
    clips = {"h264_720p": clip_720p(args.work, plan.clip_size, plan.clip_frames), "street": street_clip()}
    record.put("clips", {k: {**clip_facts(v), **({"encode_seconds": round(time.perf_counter() - t, 1)} if k == "h264_720p" else {})}
                         for k, v in clips.items()})
    options = JobOptions(input="unused", output="unused", device=plan.device, random_weights=True,
                         max_persons=plan.max_persons, flip_test=plan.flip_test, frames_per_batch=plan.windows[0],
                         shard_frames=plan.shard_frames, device_path=True, models=plan.models(), num_workers=1)
    node = runner_plan(options)
    record.put("worker_plan", node)
    torch.manual_seed(0)
    worker = PoseWorker(options, threads=node["threads"])
    record.put("settings", {"max_persons": plan.max_persons, "flip_test": plan.flip_test, "half": plan.half,
                            "threads": node["threads"], "decode_threads": worker.decode_threads, "models": plan.models()})
    runs = [(label, clip, window, True) for label, clip in clips.items() for window in plan.windows]
    runs.append(("h264_720p", clips["h264_720p"], plan.windows[0], False))
    for label, clip, window, on_device in runs:
        path = "device" if on_device else "reference"
        frames = min(plan.clip_frames if label == "h264_720p" else plan.street_frames, record.data["clips"][label]["frames"])
        log(f"{path} path, {label}, window {window}, {frames} frames")
        worker.options = replace(options, frames_per_batch=window, device_path=on_device)
        row: dict[str, Any] = {"clip": label, "window": window, "path": path}
        try:
            row.update(timed_run(worker, clip, frames, plan))
        except Exception as exc:  # one run failing leaves the others
            row["error"] = error_text(exc)
        if on_device and "error" not in row:
            try:
                row["counted"] = counted_run(worker, clip, min(frames, max(plan.profile_frames, window)))
            except Exception as exc:  # the profiler's failure costs the counts, not the timed figures
                row["counted"] = {"error": error_text(exc)}
            kernel_ms = row["counted"].get("kernel_ms_per_frame")
            if kernel_ms is not None and row.get("fps"):
                row["gpu_busy_share"] = round(min(1.0, kernel_ms * row["fps"] / 1000.0), 3)
        record.add("runs", row)
    parts = []
    for r in record.data["runs"]:
        head = f"{r['path'][:3]} {r['clip']} w{r['window']}"
        if "error" in r:
            parts.append(f"{head}: {r['error'][:60]}")
            continue
        launches = (r.get("counted") or {}).get("kernels_per_window", (r.get("counted") or {}).get("launches_per_window"))
        parts.append(f"{head}: {r['fps']} fps, host {r['host_cpu_ms_per_frame']} ms/f"
                     + (f", {launches} launches/window" if launches is not None else "")
                     + (f", GPU busy {r['gpu_busy_share']:.0%}" if r.get("gpu_busy_share") is not None else "")
                     + (f", fallbacks {r['fallback_windows']}" if r.get("fallback_windows") else ""))
    record.done("; ".join(parts))


if __name__ == "__main__":
    main()
