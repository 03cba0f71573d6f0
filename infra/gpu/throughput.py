"""Frames/s of one GPU node, measured without Ray (infra/gpu/measure.sh runs it on the GPU machine).

1. One worker: `posepipe bench`'s in-process sections (pipeline.measure.benchmark.run_benchmark with
   use_ray=False): the per-frame work on the reference and the device path (frames/s, host CPU ms per
   frame, per-stage device ms per frame), each model alone, end to end in process, the naive loop.
2. A node: N model-worker processes (N = 1..4) share the GPU, each running `PoseWorker.process_shard`
   over the clip's shards in a loop for a fixed time, as Ray's actors would; their frames/s add up to
   the node's per-frame throughput. One `VideoFinisher` (tracking, lifting on the CPU, Parquet) per
   model worker, as the runner plans them, is timed on the same shards; the node's end-to-end rate
   is the smaller of the two.

    python3 infra/gpu/throughput.py --video vtest.avi --frames 384 --workers 1,2,3,4 --out bench.json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

SECONDS = 20.0  # steady-state time per worker count


def options_for(args: argparse.Namespace, **changes):
    from posepipe.pipeline.run.options import JobOptions

    return replace(JobOptions(input="unused", output="unused", device=args.device, random_weights=True,
                              max_persons=3, flip_test=True, frames_per_batch=args.batch,
                              shard_frames=args.shard_frames), **changes)


def _model_worker(options, clip: str, threads: int, barrier, seconds: float, queue) -> None:
    import torch

    from posepipe.pipeline.io.video import probe_video, shard_bounds
    from posepipe.pipeline.perframe.worker import PoseWorker, ShardTask

    worker = PoseWorker(options, threads=threads)
    probe = probe_video(clip)
    tasks = [ShardTask("bench.mp4", clip, a, b, info=probe.info.as_dict()) for a, b in shard_bounds(probe.info, options.shard_frames)]
    worker.process_shard(tasks[0], header=probe.header)  # warm-up: cuDNN plans, allocator
    barrier.wait()
    frames, cpu0, t0 = 0, time.thread_time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for task in tasks:
            frames += worker.process_shard(task, header=probe.header).frames_decoded
    wall = time.perf_counter() - t0
    queue.put({"frames": frames, "seconds": wall, "fps": frames / wall,
               "host_cpu_ms_per_frame": 1000 * (time.thread_time() - cpu0) / max(frames, 1),
               "device_path": worker.use_device_path, "gpu_mem_gib": torch.cuda.max_memory_allocated() / 2**30
               if torch.cuda.is_available() else None})


def node(args: argparse.Namespace, clip: str, count: int) -> dict:
    seconds = args.seconds
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(count), ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // count)
    procs = [ctx.Process(target=_model_worker, args=(options_for(args), clip, threads, barrier, seconds, queue))
             for _ in range(count)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds + 240) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    total = sum(r["fps"] for r in results)
    return {"workers": count, "threads_per_worker": threads, "per_frame_fps_node": round(total, 1),
            "per_frame_fps_per_worker": [round(r["fps"], 1) for r in results],
            "host_cpu_ms_per_frame": [round(r["host_cpu_ms_per_frame"], 3) for r in results],
            "device_path": results[0]["device_path"], "gpu_mem_gib_per_worker": results[0]["gpu_mem_gib"]}


def finisher_fps(args: argparse.Namespace, clip: str) -> dict:
    """One finisher's frames/s on the clip (its shards computed once, then tracked, lifted, written)."""
    from posepipe.pipeline.io.schema import provenance_metadata
    from posepipe.pipeline.io.video import probe_video, shard_bounds
    from posepipe.pipeline.perframe.worker import PoseWorker, ShardTask
    from posepipe.pipeline.temporal.finish import VideoFinisher

    import torch

    options = options_for(args)
    worker = PoseWorker(options)
    probe = probe_video(clip)
    shards = [worker.process_shard(ShardTask("bench.mp4", clip, a, b, info=probe.info.as_dict()), header=probe.header)
              for a, b in shard_bounds(probe.info, options.shard_frames)]
    torch.set_num_threads(1)  # a finisher is one CPU (pipeline.run.runner._finish_plan)
    finisher = VideoFinisher(options, threads=1)
    video = {"video_id": "bench.mp4", "uri": clip, "info": probe.info.as_dict(), "fingerprint": "bench", "attempt": "0" * 12}
    with tempfile.TemporaryDirectory() as out:
        finisher.finish_video(video, shards, out, provenance_metadata({}), pose_boxes=worker)  # warm-up
        t0 = time.perf_counter()
        result = finisher.finish_video(video, shards, out, provenance_metadata({}), pose_boxes=worker)
        seconds = time.perf_counter() - t0
    frames = probe.info.num_frames
    return {"frames": frames, "rows": result.rows, "seconds": round(seconds, 3), "fps": round(frames / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", required=True)
    parser.add_argument("--frames", type=int, default=384)
    parser.add_argument("--workers", default="1,2,3,4")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--shard-frames", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=SECONDS, help="steady-state time per worker count")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from posepipe.pipeline.measure.benchmark import run_benchmark, source_frames, write_clip

    report: dict = {}
    t = time.perf_counter()
    report["one_worker"] = run_benchmark(options_for(args, shard_frames=args.shard_frames), args.video, args.frames,
                                         use_ray=False, decode_sizes=False)
    print(f"one worker sections in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    Path(args.out).write_text(json.dumps(report, indent=2))
    with tempfile.TemporaryDirectory() as tmp:
        frames, fps = source_frames(args.video, args.frames)
        clip = str(write_clip(Path(tmp) / "bench.mp4", frames, fps))  # the clip run_benchmark timed
        report["finisher"] = finisher_fps(args, clip)
        report["node"] = []
        for count in [int(c) for c in args.workers.split(",")]:
            t = time.perf_counter()
            report["node"].append(node(args, clip, count))
            print(f"{count} worker(s): {report['node'][-1]['per_frame_fps_node']} frames/s "
                  f"({time.perf_counter() - t:.0f} s)", file=sys.stderr)
            Path(args.out).write_text(json.dumps(report, indent=2))
    best = max(report["node"], key=lambda r: r["per_frame_fps_node"])
    # Finishers: one per model worker, on spare CPUs (one each).
    report["node_end_to_end_fps"] = {
        "workers": best["workers"], "per_frame": best["per_frame_fps_node"],
        "finishers": best["workers"], "finish_capacity": round(best["workers"] * report["finisher"]["fps"], 1),
        "end_to_end": round(min(best["per_frame_fps_node"], best["workers"] * report["finisher"]["fps"]), 1)}
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps({"node_end_to_end_fps": report["node_end_to_end_fps"],
                      "per_frame_paths": report["one_worker"].get("per_frame_paths")}, indent=2))


if __name__ == "__main__":
    main()
