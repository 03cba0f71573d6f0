"""Benchmark: how fast each stage is, batched and naive, in-process and through Ray.

Every figure comes with the counts and seconds it was derived from (time.perf_counter), so it can
be recomputed. Sections, in order: `machine`, `clip`, `decode_fps`, `decode_h264_fps` (one worker's
decode of H.264 720p and 1080p with 1, 2 and 4 threads, PyAV and decord), `remote_bytes` (bytes a
loopback HTTP server sent for a probe plus every shard, and for a two-worker `run_job`, over the
file's size), `models` (each model alone,
batched, after one warm-up call), `end_to_end_fps` (`PoseWorker.process_shard` + `finish_video`
in-process, then `run_job` on a local Ray), `naive_sequential_fps` (the same models one frame and
one box at a time, as a loop around a per-image API would run them), `per_frame_paths` (the
shards' per-frame work on the reference and the device path: frames/s, host CPU ms per frame,
per-stage device ms per frame) and `speedup`; opt-in:
`workers` (run_job throughput per worker count) and `memory` (peak RSS of a worker process on a
short and a 10x longer clip). With --refine smplify the `models` section also times the refinement
(`refine`: persons/s over every person posed, reprojection error before and after) and every
end-to-end figure includes it, so a bench with and one without give the job's relative cost; with
--densepose likewise (`densepose`: persons/s, frames/s, stored PNG bytes per person).

The clip is VIDEO's first N frames (looped when it is shorter), re-encoded as mp4v in a temporary
folder, so every section reads the same N frames. With --random-weights speed depends only on the
architectures; random weights see people everywhere, so --max-persons pins the crops per frame
and the JSON reports the mean persons per frame actually processed.

`jobs/bench.py` is the command; this module measures.
"""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from posepipe.pipeline.options import JobOptions
from posepipe.pipeline.run.terminal import say

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VIDEO = REPO.parent / "shared" / "media" / "vtest.avi"
VIDEO_ID = "bench.mp4"
MEMORY_LENGTH_FACTOR = 10


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------

def rate(count: float, seconds: float, what: str = "frames", unit: str = "fps") -> dict[str, float | None]:
    """{what: count, seconds, unit: count / seconds}; the rate is None when nothing was timed."""
    return {what: count, "seconds": round(seconds, 6), unit: round(count / seconds, 3) if seconds > 0 else None}


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def ru_maxrss_mib() -> float:
    """getrusage's peak RSS of this process (KiB on Linux, bytes on macOS).

    On Linux it survives execve: a subprocess started from a big process reports at least the
    parent's size at the fork, so `peak_rss_mib` prefers the kernel's per-address-space VmHWM.
    """
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def peak_rss_mib() -> float:
    """This process's peak resident set size so far: VmHWM where /proc has it, else ru_maxrss."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return ru_maxrss_mib()


def cpus_per_worker(cpus: int, workers: int) -> int:
    """CPUs for each of `workers` so that all fit on `cpus` (at least one each)."""
    return max(1, cpus // workers)


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _log(message: str) -> None:
    say(f"bench: {message}", err=True)


# --------------------------------------------------------------------------------------------------
# The clip
# --------------------------------------------------------------------------------------------------

def generated_frames(n: int, size: tuple[int, int] = (640, 480)) -> list[np.ndarray]:
    """Two walking figures on a grey ground: a clip to time when no sample video is at hand."""
    import cv2

    w, h = size
    frames = []
    for i in range(n):
        frame = np.full((h, w, 3), 90, np.uint8)
        for k in range(2):
            x = int(80 + k * 300 + 4 * (i % 100))
            cv2.circle(frame, (x, 120), 24, (200, 180, 160), -1)
            cv2.rectangle(frame, (x - 28, 148), (x + 28, 300), (60, 60, 160), -1)
            cv2.line(frame, (x - 16, 300), (x - 28, 440), (40, 40, 40), 12)
            cv2.line(frame, (x + 16, 300), (x + 28, 440), (40, 40, 40), 12)
        frames.append(frame)
    return frames


def source_frames(uri: str, n: int) -> tuple[list[np.ndarray], float]:
    """The first `n` BGR frames of `uri` (looped when it has fewer) and its frame rate."""
    from posepipe.pipeline.io.video import open_video

    with open_video(uri) as video:
        fps = video.info.fps or 10.0
        frames = [f for _, batch, _ in video.frames(0, n, window=32) for f in batch]
    return [frames[i % len(frames)] for i in range(n)], fps


def write_clip(path: Path, frames: Sequence[np.ndarray], fps: float) -> Path:
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise BenchError(f"OpenCV cannot write an mp4v clip at {path}")
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def video_info(uri: str) -> dict[str, Any]:
    from posepipe.pipeline.io.video import probe_video

    return probe_video(uri).info.as_dict()


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------

def machine_info(options: JobOptions) -> dict[str, Any]:
    import torch

    from posepipe.models import resolve_device

    device = resolve_device(options.device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        cpuinfo = Path("/proc/cpuinfo")
        if cpuinfo.exists():
            models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
            name = models[0] if models else name
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_count": os.cpu_count(), "cpus_usable": usable, "torch_threads": torch.get_num_threads(),
        "device": str(device), "device_name": name, "python": platform.python_version(),
        "torch": torch.__version__, "ray": _package_version("ray"), "decord": _package_version("decord"),
        "random_weights": options.random_weights, "models": dict(options.models),
    }


def optional_decord() -> Any:
    """decord where it is installed (the `bench` and `test` extras), else None: it is only the
    reference the job's PyAV decoding is compared with, so a machine without it (the GPU image)
    still gets every PyAV figure, and the report says decord was not there."""
    try:
        import decord
    except ImportError:
        return None
    return decord


DECORD_ABSENT = "decord is not installed (pip install 'posepipe[bench]' for the comparison)"


def bench_decode(uri: str, n: int, window: int) -> dict[str, Any]:
    """Decoding N frames: the pipeline's decoder (PyAV, windows after one seek), and decord's get_batch
    where decord is installed."""
    from posepipe.pipeline.io.sources import local_path
    from posepipe.pipeline.io.video import open_video

    t0 = time.perf_counter()
    with open_video(uri) as video:
        t1 = time.perf_counter()
        n = min(n, video.info.num_frames)
        count = sum(len(batch) for _, batch, _ in video.frames(0, n, window=window))
        t2 = time.perf_counter()
    sequential = rate(count, t2 - t1)
    out = {"window": window, "open_seconds": round(t1 - t0, 4), "sequential": sequential}
    decord = optional_decord()
    if decord is None:
        return {**out, "get_batch": None, "get_batch_slowdown": None, "decord": DECORD_ABSENT}
    reader = decord.VideoReader(local_path(uri), ctx=decord.cpu(0), num_threads=1)  # for comparison
    t3 = time.perf_counter()
    batched = 0
    for lo in range(0, n, window):
        rgb = reader.get_batch(list(range(lo, min(lo + window, n)))).asnumpy()
        batched += len(np.ascontiguousarray(rgb[..., ::-1]))  # to BGR, as the pipeline hands frames on
    t4 = time.perf_counter()
    del reader
    get_batch = rate(batched, t4 - t3)
    return {**out, "get_batch": get_batch, "get_batch_slowdown": ratio(sequential["fps"], get_batch["fps"])}


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def detect_persons(worker: Any, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """What `PoseWorker` keeps of one detector batch: (K, 5) [x1, y1, x2, y2, score] per frame."""
    from posepipe.pipeline.perframe.persons import PERSON_CLASS, select_persons

    opts = worker.options
    dets = worker.detector.detect_batch(frames, conf_threshold=opts.det_conf, nms_threshold=opts.det_nms,
                                        classes=(PERSON_CLASS,), max_detections=opts.max_persons)
    return [select_persons(d, f.shape[1], f.shape[0], opts.max_persons) for d, f in zip(dets, frames)]


def _xywh(boxes_xyxy: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes_xyxy[:, :2], boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]], axis=1)


def bench_models(worker: Any, frames: Sequence[np.ndarray]) -> dict[str, Any]:
    """Each model alone over the N frames, batched as the pipeline batches it, after one warm-up call."""
    opts = worker.options
    n, batch = len(frames), opts.frames_per_batch
    windows = [frames[lo:lo + batch] for lo in range(0, n, batch)]
    free = worker.detector is None  # a detector-free pose model: one pass over a frame finds and poses its people
    if free:
        def find() -> list[dict[str, np.ndarray]]:
            return [r for w in windows for r in worker.pose.predict_images(w, flip_test=opts.flip_test)]

        worker.pose.predict_images(windows[0][:1], flip_test=opts.flip_test)  # warm-up
        found, seconds = _timed(find)
        persons = [np.concatenate([r["bboxes_xyxy"], r["scores"][:, None]], axis=1)[:opts.max_persons] for r in found]
        pose = [(r["keypoints"][:opts.max_persons], r["keypoint_scores"][:opts.max_persons]) for r in found]
    else:
        detect_persons(worker, windows[0])  # warm-up
        persons, seconds = _timed(lambda: [p for w in windows for p in detect_persons(worker, w)])
    detected = int(sum(len(p) for p in persons))
    out: dict[str, Any] = {"persons_per_frame": round(detected / n, 3), "boxes": opts.models["pose"] if free else "detector"}
    if free:
        out["pose"] = {"model": opts.models["pose"], "flip_test": opts.flip_test, "detector_free": True, **rate(n, seconds)}
    else:
        out["detector"] = {"model": opts.models["detector"], "batch": batch, **rate(n, seconds)}
    boxes = [p[:, :4] for p in persons]
    if detected == 0:  # nobody in view (real weights): time the crop models on one central box per frame
        h, w = frames[0].shape[:2]
        boxes = [np.array([[w / 3, h * 0.1, 2 * w / 3, h * 0.9]], np.float32) for _ in frames]
        out["boxes"] = "synthetic: one central box per frame (the detector found nobody)"
    crops = int(sum(len(b) for b in boxes))
    first = next(i for i, b in enumerate(boxes) if len(b))
    boxes_xywh = [_xywh(b) for b in boxes]

    if not free:
        worker.pose.predict_batch([frames[first]], [boxes_xywh[first]], flip_test=opts.flip_test)
        pose, seconds = _timed(lambda: worker.pose.predict_batch(frames, boxes_xywh, flip_test=opts.flip_test))
        out["pose"] = {"model": opts.models["pose"], "flip_test": opts.flip_test, "crops": crops,
                       **rate(n, seconds), "crops_per_s": rate(crops, seconds, "crops", "crops_per_s")["crops_per_s"]}

    worker.mesh.predict_batch([frames[first]], [boxes[first]])
    mesh, seconds = _timed(lambda: worker.mesh.predict_batch(frames, boxes))
    out["mesh"] = {"model": opts.models["mesh"], "crops": crops,
                   **rate(n, seconds), "crops_per_s": rate(crops, seconds, "crops", "crops_per_s")["crops_per_s"]}
    if getattr(worker, "refiner", None) is not None:
        out["refine"] = bench_refine(worker.refiner, opts, boxes, pose, mesh, n)
    if getattr(worker, "densepose", None) is not None:
        out["densepose"] = bench_densepose(worker.densepose, frames, boxes)

    # One person's T-frame track (T = N): the first person of each frame that has one, cycled.
    firsts = np.stack([k[0] for k, _ in pose if len(k)]).astype(np.float32)
    track = firsts[np.arange(n) % len(firsts)]
    h, w = frames[0].shape[:2]

    def lift() -> np.ndarray:  # as a finisher lifts a track (MotionBERT: in clips, not one frame per call)
        return finisher_of(worker).lifter.lift_batch([track], w, h, flip_augment=opts.flip_augment_3d)[0]

    lift()
    lifted, seconds = _timed(lift)
    field = finisher_of(worker).lifter.receptive_field
    out["lifter"] = {"model": opts.models["lifter"], "track_frames": n, "receptive_field": field,
                     "flip_augment": opts.flip_augment_3d, **rate(len(lifted), seconds)}
    return out


def bench_refine(refiner: Any, options: JobOptions, boxes: Sequence[np.ndarray],
                 pose: Sequence[tuple[np.ndarray, np.ndarray]], mesh: Sequence[dict[str, np.ndarray]], n: int) -> dict[str, Any]:
    """--refine smplify over every person the models section posed, as the worker refines a shard's rows
    (one call, batched over persons): persons/s, and the reprojection error before and after (frame pixels)."""
    rows = {
        "bbox_xyxy": np.concatenate(boxes).astype(np.float32),
        "keypoints_2d": np.concatenate([k for k, _ in pose]).astype(np.float32),
        "keypoint_scores": np.concatenate([s for _, s in pose]).astype(np.float32),
        **{f"smpl_{c}": np.concatenate([m[c] for m in mesh]).astype(np.float32)
           for c in ("global_orient", "body_pose", "betas", "camera")},
    }
    persons = len(rows["bbox_xyxy"])
    refined, seconds = _timed(lambda: refiner.refine(rows))
    done = np.isfinite(refined["smplify_reprojection_after"])
    median = lambda a: round(float(np.median(a[done])), 3) if done.any() else None  # noqa: E731
    return {"method": options.refine, "iterations_per_stage": refiner.smplify.options.iterations,
            "persons": persons, "refined": int(done.sum()), **rate(n, seconds),
            "persons_per_s": rate(persons, seconds, "persons", "persons_per_s")["persons_per_s"],
            "median_reprojection_px_before": median(refined["smplify_reprojection_before"]),
            "median_reprojection_px_after": median(refined["smplify_reprojection_after"])}


def bench_densepose(stage: Any, frames: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> dict[str, Any]:
    """--densepose over every box the models section posed, as a worker charts a window's rows (frames
    grouped per call): persons/s, frames/s, and the stored PNG bytes per person-frame."""
    frame_of_row = np.concatenate([np.full(len(b), i, np.int64) for i, b in enumerate(boxes)])
    rows = np.concatenate([np.asarray(b, np.float64).reshape(-1, 4) for b in boxes])
    first = frame_of_row == frame_of_row[0]
    stage.charts(frames, frame_of_row[first], rows[first])   # warm-up
    charts, seconds = _timed(lambda: stage.charts(frames, frame_of_row, rows))
    stored = [len(p) for p in charts["densepose_png"] if p is not None]
    return {"persons": len(rows), "charts": len(stored), **rate(len(frames), seconds),
            "persons_per_s": rate(len(rows), seconds, "persons", "persons_per_s")["persons_per_s"],
            "png_bytes_per_person": round(float(np.mean(stored)), 1) if stored else None}


def finisher_of(worker: Any) -> Any:
    """The temporal half of the pipeline (tracking, lifting, writing) beside `worker`, made once."""
    from posepipe.pipeline.temporal.finish import VideoFinisher

    if getattr(worker, "_bench_finisher", None) is None:
        worker._bench_finisher = VideoFinisher(worker.options, threads=None)
    return worker._bench_finisher


def _video(uri: str, info: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    return {"video_id": VIDEO_ID, "uri": uri, "info": info, "fingerprint": fingerprint}


def bench_in_process(worker: Any, uri: str, info: dict[str, Any], shard_frames: int, hashes: dict[str, str | None],
                     output: str) -> dict[str, Any]:
    """The pipeline's two units of work without Ray: every shard, then the video's finish."""
    from posepipe.pipeline.run.runner import provenance
    from posepipe.pipeline.io.schema import provenance_metadata
    from posepipe.pipeline.perframe.shards import ShardTask

    opts = worker.options
    n = info["num_frames"]
    metadata = provenance_metadata(provenance(opts, hashes))
    t0 = time.perf_counter()
    shards = [worker.process_shard(ShardTask(VIDEO_ID, uri, s, min(s + shard_frames, n))) for s in range(0, n, shard_frames)]
    t1 = time.perf_counter()
    result = finisher_of(worker).finish_video(_video(uri, info, opts.fingerprint(hashes)), shards, output, metadata, pose_boxes=worker)
    t2 = time.perf_counter()
    stages = {k: round(sum(s.timings.get(k, 0.0) for s in shards), 4) for k in ("decode", "detect", "pose2d", "smpl")}
    for stage, on in (("smplify", opts.refine), ("densepose", opts.densepose)):  # the optional stages' shares
        if on:
            stages[stage] = round(sum(s.timings.get(stage, 0.0) for s in shards), 4)
    stages["finish_video"] = round(t2 - t1, 4)
    frames = int(sum(s.frames_decoded for s in shards))
    return {"shards": len(shards), "shard_frames": shard_frames, "rows": result.rows,
            "tracks": result.record["num_tracks"], "persons_per_frame": round(result.rows / max(frames, 1), 3),
            "stage_seconds": stages, **device_windows(shards), **rate(frames, t2 - t0)}


def device_windows(shards: Sequence[Any]) -> dict[str, Any]:
    """How many windows the device path ran and, by reason, how many it gave to the reference path."""
    fallbacks: dict[str, int] = {}
    for shard in shards:
        for why, n in shard.fallback_windows.items():
            fallbacks[why] = fallbacks.get(why, 0) + n
    return {"device_windows": int(sum(s.device_windows for s in shards)), "fallback_windows": fallbacks}


def bench_per_frame_paths(worker: Any, uri: str, info: dict[str, Any], shard_frames: int) -> dict[str, Any]:
    """The shards' per-frame work (decode, detect, 2D, SMPL) on the reference path and on the device
    path, one after the other on the same worker: frames/s, the host CPU it costs per frame, and
    per-stage time on the device (CUDA events; wall time on a CPU device, where it is the compute).

    `host_cpu_ms_per_frame`: CPU time of the thread that drives the models (time.thread_time: its
    own work, kernel launches included, not its waits) per frame; `process_cpu_ms_per_frame`: every
    thread of the process (decode and torch's own threads too). On a GPU the first is what limits a
    worker: the device path exists to shrink it.
    """
    from posepipe.pipeline.perframe.ondevice import supports_device_path
    from posepipe.pipeline.perframe.shards import ShardTask

    n = info["num_frames"]
    out: dict[str, Any] = {}
    paths = [("reference", False)]
    if supports_device_path(worker.detector, worker.pose, worker.mesh):
        paths.append(("device", True))
    saved = worker.options
    try:
        for label, on_device in paths:
            worker.options = replace(saved, device_path=on_device)
            worker.process_shard(ShardTask(VIDEO_ID, uri, 0, min(n, saved.frames_per_batch * 2)))  # warm-up
            cpu0, thread0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
            shards = [worker.process_shard(ShardTask(VIDEO_ID, uri, s, min(s + shard_frames, n)))
                      for s in range(0, n, shard_frames)]
            wall, thread, cpu = time.perf_counter() - wall0, time.thread_time() - thread0, time.process_time() - cpu0
            frames = int(sum(s.frames_decoded for s in shards))
            stages = {}
            for s in shards:
                for k, v in s.timings.items():
                    stages[k] = stages.get(k, 0.0) + v
            per_frame_ms = lambda seconds: round(1000.0 * seconds / max(frames, 1), 3)  # noqa: E731
            out[label] = {
                **rate(frames, wall), "rows": int(sum(len(s.frame_index) for s in shards)),
                "host_cpu_ms_per_frame": per_frame_ms(thread), "process_cpu_ms_per_frame": per_frame_ms(cpu),
                "stage_ms_per_frame": {k: per_frame_ms(v) for k, v in sorted(stages.items())},
            }
    finally:
        worker.options = saved
    if "device" in out:
        out["device_over_reference_fps"] = ratio(out["device"]["fps"], out["reference"]["fps"])
        out["host_cpu_reference_over_device"] = ratio(out["reference"]["host_cpu_ms_per_frame"],
                                                      out["device"]["host_cpu_ms_per_frame"])
    return out


class _LiftOneByOne:
    """A lifter whose `lift_batch` lifts one track per call, as a naive loop would."""

    def __init__(self, lifter: Any) -> None:
        self.lifter = lifter

    def lift_batch(self, sequences: Sequence[np.ndarray], width: float, height: float,
                   flip_augment: bool = True) -> list[np.ndarray]:
        return [self.lifter.lift(seq, width, height, flip_augment=flip_augment) for seq in sequences]


NAIVE_MAX_FRAMES = 64  # enough for a steady rate; the naive loop is the slowest section by far


def bench_naive(worker: Any, uri: str, info: dict[str, Any]) -> dict[str, Any]:
    """Decode one frame, detect it, HRNet then HMR one box at a time; track and lift per track at the end.

    Timed on the clip's first `NAIVE_MAX_FRAMES` frames at most."""
    from posepipe.pipeline.io.video import open_video
    from posepipe.pipeline.temporal.finish import assign_tracks, lift_tracks

    opts = worker.options
    n, width, height = min(info["num_frames"], NAIVE_MAX_FRAMES), info["width"], info["height"]
    stages = dict.fromkeys(("decode", "detect", "pose2d", "smpl", "track", "lift"), 0.0)
    rows_f, rows_box, rows_score, rows_kp = [], [], [], []

    def one_frame(frame: np.ndarray, index: int) -> None:
        t = time.perf_counter()
        persons = detect_persons(worker, [frame])[0]
        stages["detect"] += time.perf_counter() - t
        for box in persons:
            t = time.perf_counter()
            kp, _ = worker.pose.predict(frame, _xywh(box[None, :4]), flip_test=opts.flip_test)
            stages["pose2d"] += time.perf_counter() - t
            rows_f.append(index)
            rows_box.append(box[:4])
            rows_score.append(box[4])
            rows_kp.append(kp[0])
        for box in persons:
            t = time.perf_counter()
            worker.mesh.predict(frame, box[None, :4])
            stages["smpl"] += time.perf_counter() - t

    with open_video(uri) as video:  # warm-up at batch size one; what it counted is then reset
        _, first, _ = next(video.frames(0, 1, window=1))
        one_frame(first[0], 0)
    stages.update(dict.fromkeys(stages, 0.0))
    for rows in (rows_f, rows_box, rows_score, rows_kp):
        rows.clear()

    t0 = time.perf_counter()
    with open_video(uri) as video:
        frames = video.frames(0, n, window=1)
        for _ in range(n):
            t = time.perf_counter()
            indices, batch, _ = next(frames)
            stages["decode"] += time.perf_counter() - t
            one_frame(batch[0], int(indices[0]))
    frame_index = np.asarray(rows_f, np.int32)
    boxes = np.asarray(rows_box, np.float32).reshape(-1, 4)
    ids, stages["track"] = _timed(lambda: assign_tracks(frame_index, boxes, np.asarray(rows_score, np.float32),
                                                       info["fps"], opts.tracker_config()))
    keypoints = np.asarray(rows_kp, np.float32).reshape(-1, 17, 2)
    _, stages["lift"] = _timed(lambda: lift_tracks(_LiftOneByOne(finisher_of(worker).lifter), frame_index, ids, keypoints,
                                                  width, height, opts.flip_augment_3d))
    seconds = time.perf_counter() - t0
    return {"crops": len(rows_f), "tracks": int(len(np.unique(ids[ids >= 0]))),
            "persons_per_frame": round(len(rows_f) / max(n, 1), 3),
            "stage_seconds": {k: round(v, 4) for k, v in stages.items()},
            "note": "no Parquet writing (the batched run includes it)", **rate(n, seconds)}


def bench_run_job(options: JobOptions) -> dict[str, Any]:
    """`run_job` on a folder of videos (the clip, or copies of it): wall time with Ray startup, and
    frames/s after it."""
    from posepipe.pipeline.run.runner import run_job

    events: list[tuple[float, str, dict[str, Any]]] = []
    t0 = time.perf_counter()
    summary = run_job(options, reporter=lambda event, data: events.append((time.perf_counter(), event, data)))
    wall = time.perf_counter() - t0
    if summary.failed or summary.ok != summary.videos:
        raise BenchError(f"run_job did not finish every video: {summary.failures or summary}")
    at = {event: t for t, event, _ in reversed(events)}  # first time of each event
    workers_data = next(d for _, e, d in events if e == "workers")
    done = max(t for t, e, _ in events if e == "video_done")
    frame_events = [(t, d["frames"]) for t, e, d in events if e == "frames"]
    # Steady state: after as many shards as workers have finished (roughly, once every worker has
    # loaded its models), count the later shards' frames over the time they took.
    k = summary.workers
    steady = None
    if len(frame_events) > k:
        frames_after = sum(f for _, f in frame_events[k:])
        steady = rate(frames_after, frame_events[-1][0] - frame_events[k - 1][0])
    after_init = rate(summary.frames, done - at["workers"])
    return {
        "workers": summary.workers, "resources": workers_data["resources"], "finishers": workers_data.get("finishers"),
        "videos": summary.videos, "shard_frames": options.shard_frames,
        "shards": len(frame_events), "rows": summary.rows, "persons_per_frame": round(summary.rows / max(summary.frames, 1), 3),
        "wall": rate(summary.frames, wall), "summary_seconds": round(summary.seconds, 4),
        "startup_seconds": round(at["workers"] - t0, 4),
        "after_ray_init": {**after_init, "note": "from worker creation to the clip's commit: includes the actors' model loading"},
        "steady": steady,
    }


def bench_workers(options: JobOptions, counts: Sequence[int], cpus: int) -> dict[str, Any]:
    runs = []
    for w in counts:
        per = cpus_per_worker(cpus, w)
        _log(f"run_job with {w} worker(s), cpus_per_worker={per}")
        opts = replace(options, num_workers=w, cpus_per_worker=float(per), output=f"{options.output}-w{w}")
        run = bench_run_job(opts)
        steady = (run.get("steady") or {}).get("fps")
        # This machine is the node: frames/s per node is the run's, per worker that over the workers.
        run["per_node_fps"] = steady
        run["per_worker_fps"] = round(steady / w, 2) if steady else None
        runs.append({"num_workers": w, "cpus_per_worker": per, **run})
    base = runs[0]
    notes = []
    if min(run["shards"] for run in runs) < max(counts):
        notes.append("fewer shards than workers: some workers had nothing to do; raise --frames or lower --shard-frames")
    for run in runs:
        run["ratio_to_first"] = {
            key: ratio((run[key] or {}).get("fps"), (base[key] or {}).get("fps")) for key in ("wall", "after_ray_init", "steady")
        }
    return {"cpus": cpus, "runs": runs, "notes": notes}


# -- memory: a worker process on a short and a long clip ------------------------------------------

def memory_child(payload: str) -> None:
    """Entry point of the measuring subprocess: run one clip through a PoseWorker, print peak RSS."""
    from posepipe.pipeline.run.runner import provenance
    from posepipe.pipeline.io.schema import provenance_metadata
    from posepipe.pipeline.perframe.shards import ShardTask
    from posepipe.pipeline.perframe.worker import PoseWorker

    args = json.loads(payload)
    options = JobOptions(**args["options"])
    peaks = {"after_imports": peak_rss_mib()}
    worker = PoseWorker(options, threads=args["threads"])
    peaks["after_load"] = peak_rss_mib()
    uri, shard = args["uri"], options.shard_frames
    info = video_info(uri)
    n = info["num_frames"]
    t0 = time.perf_counter()
    shards = [worker.process_shard(ShardTask(VIDEO_ID, uri, s, min(s + shard, n))) for s in range(0, n, shard)]
    metadata = provenance_metadata(provenance(options, args["hashes"]))
    finisher_of(worker).finish_video(_video(uri, info, options.fingerprint(args["hashes"])), shards, options.output, metadata, pose_boxes=worker)
    seconds = time.perf_counter() - t0
    peaks["end"] = peak_rss_mib()
    stages = {k: round(sum(s.timings.get(k, 0.0) for s in shards), 4) for k in ("decode", "detect", "pose2d", "smpl")}
    for stage, on in (("smplify", options.refine), ("densepose", options.densepose)):  # the optional stages' shares
        if on:
            stages[stage] = round(sum(s.timings.get(stage, 0.0) for s in shards), 4)
    print(json.dumps({"frames": n, "shards": len(shards), "rows": int(sum(len(s.frame_index) for s in shards)),
                      "stage_seconds": stages, **rate(n, seconds), "peak_rss_mib": peaks,
                      "processing_growth_mib": round(peaks["end"] - peaks["after_load"], 1),
                      "ru_maxrss_mib": ru_maxrss_mib()}))


def _measure_memory(options: JobOptions, uri: str, hashes: dict[str, str | None], threads: int) -> dict[str, Any]:
    payload = json.dumps({"options": {**asdict(options), "models": dict(options.models), "weights": dict(options.weights)},
                          "uri": uri, "hashes": hashes, "threads": threads})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    code = "import sys; from posepipe.pipeline.measure.benchmark import memory_child; memory_child(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, payload], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise BenchError(f"the memory subprocess failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_memory(options: JobOptions, frames: Sequence[np.ndarray], fps: float, folder: Path,
                 hashes: dict[str, str | None], threads: int) -> dict[str, Any]:
    short = write_clip(folder / "short.mp4", frames, fps)
    long = write_clip(folder / "long.mp4", [frames[i % len(frames)] for i in range(MEMORY_LENGTH_FACTOR * len(frames))], fps)
    out = {}
    for label, clip in (("short", short), ("long", long)):
        _log(f"memory: worker subprocess on the {label} clip")
        out[label] = _measure_memory(replace(options, output=str(folder / f"out-{label}")), str(clip), hashes, threads)
    out["long_over_short"] = ratio(out["long"]["peak_rss_mib"]["end"], out["short"]["peak_rss_mib"]["end"])
    out["threads"] = threads
    out["note"] = ("peak_rss_mib is the worker process's VmHWM; ru_maxrss_mib is getrusage's figure, which on Linux "
                   "keeps the launching process's size across exec and so overstates a subprocess")
    return out


# -- decoding H.264 at 720p and 1080p with 1, 2, 4 threads: PyAV (the job's) and decord --------------

DECODE_SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
DECODE_THREADS = (1, 2, 4)
DECODE_FRAMES = 96


def h264_clip(path: Path, frames: Sequence[np.ndarray], size: tuple[int, int], fps: float, gop: int = 60) -> Path:
    """`frames` scaled to `size`, encoded as H.264 with B-frames (x264 veryfast, CRF 23) by PyAV."""
    import av
    import cv2

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)) or 10)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23", "g": str(gop), "bf": "2"}
        for frame in frames:
            image = av.VideoFrame.from_ndarray(cv2.resize(frame, size), format="bgr24")
            container.mux(stream.encode(image))
        container.mux(stream.encode(None))
    return path


def bench_decode_h264(frames: Sequence[np.ndarray], fps: float, folder: Path, n: int = DECODE_FRAMES) -> dict[str, Any]:
    """Frames/s of one worker's decode (to BGR arrays, as the models get them) per size and thread
    count, PyAV's and (where installed) decord's."""
    from posepipe.pipeline.io.video import open_video

    decord = optional_decord()
    out: dict[str, Any] = {"frames": n, "codec": "h264 (x264 veryfast, CRF 23, GOP 60, 2 B-frames)"}
    if decord is None:
        out["decord"] = DECORD_ABSENT
    clip_frames = [frames[i % len(frames)] for i in range(n)]
    for label, size in DECODE_SIZES.items():
        clip = h264_clip(folder / f"decode-{label}.mp4", clip_frames, size, fps)
        row: dict[str, Any] = {"bytes": clip.stat().st_size}
        for threads in DECODE_THREADS:
            t = time.perf_counter()
            with open_video(str(clip), threads=threads) as video:
                count = sum(len(b) for _, b, _ in video.frames(0, n, window=8))
            pyav = rate(count, time.perf_counter() - t)
            decord_fps = None
            if decord is not None:
                reader = decord.VideoReader(str(clip), ctx=decord.cpu(0), num_threads=threads)
                t = time.perf_counter()
                for _ in range(len(reader)):
                    np.ascontiguousarray(reader.next().asnumpy()[..., ::-1])
                decord_fps = rate(len(reader), time.perf_counter() - t)["fps"]
                del reader
            row[f"threads_{threads}"] = {"pyav": pyav["fps"], "decord": decord_fps}
        out[label] = row
    return out


# -- bytes read from storage for a remote job ------------------------------------------------------

class _CountingServer:
    """A loopback HTTP server of one folder, answering byte ranges, counting the body bytes it sends."""

    def __init__(self, root: Path) -> None:
        import re
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        state = self
        self.bytes_sent, self.requests = 0, 0
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(False)

            def do_GET(self) -> None:
                self._serve(True)

            def _serve(self, body: bool) -> None:
                data = (root / self.path.lstrip("/")).read_bytes()
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                start, stop = (int(m.group(1)), int(m.group(2) or len(data) - 1) + 1) if m else (0, len(data))
                self.send_response(206 if m else 200)
                self.send_header("Content-Length", str(min(stop, len(data)) - start))
                self.send_header("Accept-Ranges", "bytes")
                if m:
                    self.send_header("Content-Range", f"bytes {start}-{min(stop, len(data)) - 1}/{len(data)}")
                self.end_headers()
                if body:
                    payload = data[start:stop]
                    self.wfile.write(payload)
                    with state._lock:
                        state.bytes_sent += len(payload)
                        state.requests += 1

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def bench_remote_bytes(uri: str, options: JobOptions, use_ray: bool) -> dict[str, Any]:
    """The clip served over loopback HTTP: bytes the server sent for a probe plus every shard
    (in process), and for a whole `run_job` with two workers, over the file's size."""
    from posepipe.pipeline.io.video import open_video, probe_video, shard_bounds

    path = Path(uri)
    size = path.stat().st_size
    server = _CountingServer(path.parent)
    url = f"{server.url}/{path.name}"
    out: dict[str, Any] = {"input_bytes": size}
    try:
        for shard in sorted({options.shard_frames, max(1, options.shard_frames // 4)}):
            server.bytes_sent = server.requests = 0
            t = time.perf_counter()
            probe = probe_video(url)
            bounds = shard_bounds(probe.info, shard)
            frames = 0
            for start, stop in bounds:
                with open_video(url, info=probe.info, header=probe.header) as video:
                    frames += sum(len(b) for _, b, _ in video.frames(start, stop, window=options.frames_per_batch))
            out[f"in_process_shard_frames_{shard}"] = {
                "shards": len(bounds), "frames": frames, "bytes_sent": server.bytes_sent, "requests": server.requests,
                "bytes_over_input": ratio(server.bytes_sent, size), "seconds": round(time.perf_counter() - t, 3)}
        if use_ray:
            server.bytes_sent = server.requests = 0
            out["run_job_2_workers"] = {**bench_run_job(replace(options, input=url, num_workers=2)),
                                        "bytes_sent": server.bytes_sent, "requests": server.requests,
                                        "bytes_over_input": ratio(server.bytes_sent, size)}
    finally:
        server.close()
    return out


class BenchError(RuntimeError):
    """A measurement could not be taken; the message says which and why."""


# --------------------------------------------------------------------------------------------------
# The whole benchmark
# --------------------------------------------------------------------------------------------------

def default_shard_frames(n_frames: int, frames_per_batch: int) -> int:
    """Four shards of the clip by default, so `run_job` has work for several workers."""
    return max(frames_per_batch, math.ceil(n_frames / 4))


def run_benchmark(options: JobOptions, video: str | None, n_frames: int, *, worker_counts: Sequence[int] = (),
                  use_ray: bool = True, memory: bool = False, decode_sizes: bool = True) -> dict[str, Any]:
    """Every section for `options` (validated; input/output are replaced by a temporary folder) on
    VIDEO's first `n_frames` frames, or generated ones where VIDEO is None and no sample is at hand.

    Raises `pipeline.run.runner.WeightsError`, `pipeline.io.video.VideoError` (VIDEO unreadable) or `BenchError`.
    """
    from posepipe.pipeline.run.runner import load_weights
    from posepipe.pipeline.perframe.worker import PoseWorker

    with tempfile.TemporaryDirectory(prefix="posepipe-bench-") as tmp:
        folder = Path(tmp)
        (folder / "input").mkdir()
        options = replace(options, input=str(folder / "input"), output=str(folder / "out-run"), force=True)
        hashes = load_weights(options)
        if options.random_weights:
            _log("RANDOM weights: the figures measure speed only")

        source = video or (str(DEFAULT_VIDEO) if DEFAULT_VIDEO.exists() else None)
        if source:
            frames, fps = source_frames(source, n_frames)
        else:
            frames, fps = generated_frames(n_frames), 10.0
        uri = str(write_clip(folder / "input" / VIDEO_ID, frames, fps))
        info = video_info(uri)
        shard = options.shard_frames
        report: dict[str, Any] = {"machine": machine_info(options)}
        report["clip"] = {"source": source or "generated", "codec": "mp4v", **info}
        report["settings"] = {"frames": n_frames, "max_persons": options.max_persons,
                              "frames_per_batch": options.frames_per_batch, "shard_frames": shard,
                              "flip_test": options.flip_test, "flip_augment_3d": options.flip_augment_3d,
                              "half": options.half if options.half is not None else report["machine"]["device"].startswith("cuda")}

        _log(f"decoding {n_frames} frames")
        report["decode_fps"] = bench_decode(uri, n_frames, options.frames_per_batch)
        if source and "://" not in source:  # the file as given too: its codec may decode differently
            report["decode_fps"]["source_video"] = bench_decode(source, n_frames, options.frames_per_batch)
        if decode_sizes:
            _log("decoding H.264 720p and 1080p with 1, 2 and 4 threads")
            report["decode_h264_fps"] = bench_decode_h264(frames, fps, folder)
        _log("bytes read from storage: the clip over loopback HTTP")
        report["remote_bytes"] = bench_remote_bytes(uri, options, use_ray)
        _log("loading the models")
        worker, load_seconds = _timed(lambda: PoseWorker(options))
        report["machine"]["model_load_seconds"] = round(load_seconds, 4)
        _log("timing each model, batched")
        report["models"] = bench_models(worker, frames)
        _log("per-frame work: the reference path and the device path")
        report["per_frame_paths"] = bench_per_frame_paths(worker, uri, info, shard)
        _log("end to end in-process (process_shard + finish_video)")
        report["end_to_end_fps"] = {"in_process": bench_in_process(worker, uri, info, shard, hashes, str(folder / "out-inproc"))}
        _log("naive per-frame loop")
        report["naive_sequential_fps"] = bench_naive(worker, uri, info)
        report["settings"]["persons_per_frame"] = report["end_to_end_fps"]["in_process"]["persons_per_frame"]
        report["speedup"] = ratio(report["end_to_end_fps"]["in_process"]["fps"], report["naive_sequential_fps"]["fps"])
        threads = report["machine"]["torch_threads"]
        del worker
        if use_ray:
            _log("end to end through run_job (local Ray)")
            report["end_to_end_fps"]["run_job"] = bench_run_job(options)
        if worker_counts:
            report["workers"] = bench_workers(options, worker_counts, report["machine"]["cpus_usable"])
        if memory:
            report["memory"] = bench_memory(options, frames, fps, folder, hashes, threads)
    return report
