"""Per-frame work on the model device, window by window: frames up once, small arrays down.

The reference path (`PoseWorker.reference_frames`) hands each model numpy frames and gets numpy back, so a GPU
worker spends its time on the host: letterbox, NMS, one crop per box, heatmap decoding, a sync per
forward. Here a window's frames go to the device once (from a pinned buffer, asynchronously) and
each model's `*_frames` method keeps its work there (models.yolox.detect_frames, the 2D families'
and HMR's predict_frames, models.ondevice). Per window the host reads the device twice:

1. the detector's candidates (what the tracker needs anyway: every person box down to its floor,
   about 300 x 7 floats a frame at most) with its fp16-overflow / exactness flag;
2. the 2D keypoints and SMPL of the boxes chosen from them, with the 2D and SMPL overflow flags.

Between the two the host picks the boxes to pose exactly as the reference path does
(`select_persons`, `pose_candidates`), so the rows are the reference path's rows up to the models'
arithmetic (README, "Per-frame work on the device"). Windows overlap: window k's upload and
detection are queued before the host waits on window k-1's keypoints, so the device works on one
while the host reads the other. An overflow (fp16) or an inexact NMS result (more candidates than
the device pass considered) sends that window to the reference path: never a wrong row. Such windows
are counted by reason (`DeviceWindows.fallbacks`, a shard's `fallback_windows`, the job summary and
the bench), and an fp16 overflow is redone in fp32 for that window only (`precision.fp32_pass`).
"""
from __future__ import annotations

import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from posepipe.models.precision import fp32_pass, note_overflow
from posepipe.pipeline.perframe.persons import PERSON_CLASS, select_persons
from posepipe.pipeline.perframe.shards import empty_rows
from posepipe.pipeline.temporal.association import MAX_CANDIDATES, pose_candidates

# Why a window left the device path (the keys of `DeviceWindows.fallbacks`):
DETECTOR_OVERFLOW = "detector_fp16_overflow"  # YOLOX's fp16 output held inf/NaN: the window in fp32, on the host
NMS_NOT_EXACT = "nms_not_exact"               # more candidates than the device NMS considered, or not converged
POSE_OVERFLOW = "pose_fp16_overflow"          # 2D or HMR fp16 overflowed: their part of the window in fp32
HMR_CROP_BOUND = "hmr_crop_bound"             # a box's SPIN canvas exceeded its static bound


def supports_device_path(detector: Any, pose: Any, mesh: Any) -> bool:
    """Whether all three per-frame models have device methods (every family but some 2D ones do)."""
    return all(hasattr(m, name) and getattr(m, "supports_device", True)
               for m, name in ((detector, "detect_frames"), (pose, "predict_frames"), (mesh, "predict_frames")))


@dataclass
class StageClock:
    """Per-stage time of a shard: `host` is this thread's CPU seconds (time.thread_time: the host's
    own work, kernel launches included, not waits), `device` the stage's device seconds (CUDA events;
    on a CPU device the stage's wall time, which is its compute)."""
    host: dict[str, float] = field(default_factory=dict)
    device: dict[str, float] = field(default_factory=dict)
    _events: list[tuple[str, Any, Any]] = field(default_factory=list)

    def add_host(self, stage: str, seconds: float) -> None:
        self.host[stage] = self.host.get(stage, 0.0) + seconds

    def add_device(self, stage: str, seconds: float) -> None:
        self.device[stage] = self.device.get(stage, 0.0) + seconds

    def mark(self, stage: str, start: Any, end: Any) -> None:
        self._events.append((stage, start, end))

    def settle(self) -> None:
        """Read the CUDA events recorded so far (they are complete once their window's results are)."""
        for stage, start, end in self._events:
            self.add_device(stage, start.elapsed_time(end) / 1000.0)
        self._events.clear()


class _Span:
    """Times one stage: thread CPU seconds on the host, and device time (events on CUDA, wall on CPU)."""

    def __init__(self, clock: StageClock, stage: str, device: torch.device) -> None:
        self.clock, self.stage, self.cuda = clock, stage, device.type == "cuda"

    def __enter__(self) -> "_Span":
        self.t_cpu = time.thread_time()
        if self.cuda:
            self.start = torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.t_wall = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.clock.add_host(self.stage, time.thread_time() - self.t_cpu)
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.clock.mark(self.stage, self.start, end)
        else:
            self.clock.add_device(self.stage, time.perf_counter() - self.t_wall)


@dataclass
class _Pending:
    """A window whose detection is queued on the device, its candidates on their way to the host."""
    frames_host: Sequence[np.ndarray]
    frames: torch.Tensor
    indices: np.ndarray
    stamps: np.ndarray
    candidates: torch.Tensor     # (B, K, 7) on the host (pinned when CUDA), filled asynchronously
    count: torch.Tensor          # (B,)
    fallback: torch.Tensor       # () bool: overflow or an inexact NMS
    overflow: torch.Tensor       # () bool
    ready: Any                   # CUDA event after the copies, or None


class DeviceWindows:
    """Runs `PoseWorker`'s per-frame models on its device, one window behind the decoder."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.device = torch.device(worker.detector.device)
        self.cuda = self.device.type == "cuda"
        self.clock = StageClock()
        # The device NMS considers the best `candidates` boxes of a frame that pass the floor; a frame with
        # more (and fewer than MAX_CANDIDATES kept) is not certainly exact and sends its window to the
        # host. A person yields ~5-20 anchors over the tracker's floor, so a 100-person crowd needs ~2,000;
        # the IoU matrix is candidates^2 floats a frame (16 MiB at 2,048), cheap on a GPU, not on a CPU.
        self.candidates = 2048 if self.cuda else 1024
        self.nms_iterations = 16
        # Crops per network pass (their mirrors ride along with the flip test): a GPU wants big batches.
        self.crop_batch = 256 if self.cuda else 64
        # Uploads run on a stream of their own, so a window's copy overlaps the previous window's kernels.
        self._copy_stream = torch.cuda.Stream(device=self.device) if self.cuda else None
        self.windows = 0                   # windows completed (since the worker last read the counts)
        self.fallbacks: Counter[str] = Counter()  # windows (or their 2D/SMPL part) redone the reference way, by reason
        # Two pinned staging buffers, used in turn; each with the event after its last upload, so the
        # host never overwrites frames a queued copy has not read yet.
        self._pinned: list[tuple[torch.Tensor, Any] | None] = [None, None]
        self._turn = 0

    # -- the two halves of a window ----------------------------------------------------------------
    def submit(self, frames: Sequence[np.ndarray], indices: np.ndarray, stamps: np.ndarray) -> _Pending:
        """Upload a window and queue its detection; returns at once on CUDA."""
        opts = self.worker.options
        with _Span(self.clock, "upload", self.device):
            batch = self._upload(frames)
        with _Span(self.clock, "detect", self.device):
            dets = self.worker.detector.detect_frames(
                batch, conf_threshold=opts.tracker_config().low_threshold, nms_threshold=opts.det_nms,
                classes=(PERSON_CLASS,), max_detections=MAX_CANDIDATES, candidates=self.candidates,
                nms_iterations=self.nms_iterations)
            rows = torch.cat([dets.boxes, dets.obj[..., None], dets.cls_conf[..., None],
                              dets.labels[..., None].to(torch.float32)], dim=-1)
            candidates, count, fallback, overflow = (self._to_host(t) for t in (rows, dets.count, dets.fallback,
                                                                                 dets.overflow))
            ready = self._event()
        return _Pending(frames, batch, np.asarray(indices), np.asarray(stamps), candidates, count, fallback, overflow,
                        ready)

    def complete(self, pending: _Pending, width: int, height: int) -> dict[str, np.ndarray]:
        """Pick the boxes to pose, run 2D and SMPL on the device, and bring the rows back."""
        worker, opts = self.worker, self.worker.options
        t_cpu = time.thread_time()
        if pending.ready is not None:
            pending.ready.synchronize()
        self.windows += 1
        if bool(pending.fallback):
            # fp16 overflowed in the detector, or its NMS could not promise exactness: this window
            # goes the reference way (in fp32 if it overflowed; the next window tries fp16 again).
            overflow = bool(pending.overflow)
            self.fallbacks[DETECTOR_OVERFLOW if overflow else NMS_NOT_EXACT] += 1
            if overflow:
                note_overflow(worker.detector, "YOLOX")
            self.clock.add_host("select", time.thread_time() - t_cpu)
            with fp32_pass(worker.detector) if overflow else nullcontext():
                return worker.reference_frames(list(pending.frames_host), pending.indices, pending.stamps, width, height,
                                      {"decode": 0.0, "detect": 0.0, "pose2d": 0.0, "smpl": 0.0})
        rows, counts = pending.candidates.numpy(), pending.count.numpy()
        dets = [rows[b, :int(n)] for b, n in enumerate(counts)]
        candidates = [select_persons(d, width, height, MAX_CANDIDATES) for d in dets]
        persons = [c[:pose_candidates(c[:, 4], opts.det_conf, opts.max_persons)] for c in candidates]
        found = {"det_frame_index": np.repeat(pending.indices, [len(c) for c in candidates]).astype(np.int32),
                 "det_bbox_xyxy": np.concatenate([c[:, :4] for c in candidates]).astype(np.float32),
                 "det_score": np.concatenate([c[:, 4] for c in candidates]).astype(np.float32),
                 "det_rank": np.concatenate([np.arange(len(p)) for p in persons]).astype(np.int32)}
        counts = np.array([len(p) for p in persons])
        self.clock.add_host("select", time.thread_time() - t_cpu)
        if counts.sum() == 0:
            empty = empty_rows()
            empty.update(found, det_rank=np.zeros(0, np.int32))
            return empty
        boxes_xyxy = np.concatenate([p[:, :4] for p in persons]).astype(np.float32)
        frame_rows = np.repeat(pending.indices, counts)
        outputs, reason = self._pose_and_mesh(pending.frames, np.repeat(np.arange(len(counts)), counts), boxes_xyxy)
        if outputs is None:  # fp16 overflowed in 2D or SMPL, or an HMR crop past its bound: again, the reference way
            self.fallbacks[reason] += 1
            with fp32_pass(worker.pose, worker.mesh) if reason == POSE_OVERFLOW else nullcontext():
                pose = worker.pose.predict_batch(list(pending.frames_host), _split_xywh(boxes_xyxy, counts),
                                                 flip_test=opts.flip_test)
                mesh = worker.mesh.predict_batch(list(pending.frames_host), np.split(boxes_xyxy, np.cumsum(counts)[:-1]))
            outputs = {"keypoints_2d": np.concatenate([k for k, _ in pose]), "keypoint_scores": np.concatenate([s for _, s in pose]),
                       **{f"smpl_{c}": np.concatenate([m[c] for m in mesh]) for c in ("global_orient", "body_pose", "betas", "camera")}}
        return {
            "frame_index": frame_rows.astype(np.int32),
            "timestamp_s": pending.stamps.astype(np.float64)[frame_rows - int(pending.indices[0])],
            "bbox_xyxy": boxes_xyxy,
            "bbox_score": np.concatenate([p[:, 4] for p in persons]).astype(np.float32),
            **{k: np.asarray(v, np.float32) for k, v in outputs.items()},
            **found,
        }

    # -- helpers -------------------------------------------------------------------------------------
    def _pose_and_mesh(self, frames: torch.Tensor, frame_of_box: np.ndarray,
                       boxes_xyxy: np.ndarray) -> tuple[dict[str, np.ndarray] | None, str]:
        """The boxes' 2D keypoints and SMPL from the device, or (None, why) when they must be redone."""
        worker, opts = self.worker, self.worker.options
        t_cpu = time.thread_time()
        fob = torch.from_numpy(frame_of_box.astype(np.int64)).to(self.device, non_blocking=self.cuda)
        xyxy = torch.from_numpy(boxes_xyxy).to(self.device, non_blocking=self.cuda)
        xywh = torch.cat([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], dim=1)
        self.clock.add_host("upload", time.thread_time() - t_cpu)
        with _Span(self.clock, "pose2d", self.device):
            pose = worker.pose.predict_frames(frames, fob, xywh, flip_test=opts.flip_test, batch_size=self.crop_batch)
        with _Span(self.clock, "smpl", self.device):
            # Each HMR crop costs about its own canvas, bucketed by the boxes' sides (known here, on the host).
            mesh = worker.mesh.predict_frames(frames, fob, xyxy, batch_size=self.crop_batch,
                                              box_sides=(boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]).max(axis=1))
        t_cpu = time.thread_time()
        mesh_out = mesh._asdict() if hasattr(mesh, "_asdict") else dict(mesh)
        overflow = pose.overflow | torch.as_tensor(mesh_out.pop("overflow", False), device=self.device)
        # HMR's crop canvas has a static size bound; a box past it (never inside the frame) is redone on the host.
        cut = torch.as_tensor(mesh_out.pop("cut", False), device=self.device)
        names = {"keypoints_2d": pose.keypoints, "keypoint_scores": pose.scores,
                 **{f"smpl_{c}": mesh_out[c] for c in ("global_orient", "body_pose", "betas", "camera")}}
        # One copy down for the window's results: everything packed into one float32 tensor.
        flags = torch.stack([overflow, cut]).float().reshape(1, 2).expand(len(boxes_xyxy), 2)
        flat = torch.cat([t.reshape(len(boxes_xyxy), -1).float() for t in names.values()] + [flags], dim=1)
        host = flat.to("cpu", non_blocking=self.cuda)
        done = self._event()
        if done is not None:
            done.synchronize()
        self.clock.settle()
        host = host.numpy()
        if host[0, -2] > 0 or host[0, -1] > 0:
            if host[0, -2] > 0:  # fp16 overflowed (in either model: one flag): redone in fp32
                for model in (worker.pose, worker.mesh):
                    if getattr(model, "half", False):
                        note_overflow(model, getattr(model, "label", type(model).__name__))
            self.clock.add_host("unpack", time.thread_time() - t_cpu)
            return None, POSE_OVERFLOW if host[0, -2] > 0 else HMR_CROP_BOUND
        out, at = {}, 0
        for name, t in names.items():
            width = int(np.prod(t.shape[1:]))
            out[name] = host[:, at:at + width].reshape(len(boxes_xyxy), *t.shape[1:])
            at += width
        self.clock.add_host("unpack", time.thread_time() - t_cpu)
        return out, ""

    def _upload(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        if not self.cuda:
            return torch.from_numpy(np.stack(frames))
        # Pinned (page-locked) memory: the copy to the device runs asynchronously, at full bus speed.
        # Each buffer is allocated once per frame size, for a whole window; a shorter window (a shard's
        # last) uses its first rows.
        self._turn ^= 1
        slot = self._pinned[self._turn]
        frame_shape = tuple(frames[0].shape)
        rows = max(len(frames), int(self.worker.options.frames_per_batch))
        if slot is None or tuple(slot[0].shape[1:]) != frame_shape or slot[0].shape[0] < len(frames):
            slot = (torch.empty((rows, *frame_shape), dtype=torch.uint8, pin_memory=True), None)
        buffer, last_copy = slot
        if last_copy is not None:
            last_copy.synchronize()  # this buffer's previous upload (two windows ago) has been read
        view = buffer[:len(frames)]
        np.stack(frames, out=view.numpy())
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self._copy_stream):
            batch = view.to(self.device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self._copy_stream)
        compute.wait_event(copied)          # the window's kernels start once its frames are there
        batch.record_stream(compute)        # allocated on the copy stream, used on the compute stream
        self._pinned[self._turn] = (buffer, copied)
        return batch

    def _to_host(self, t: torch.Tensor) -> torch.Tensor:
        return t.to("cpu", non_blocking=True) if self.cuda else t

    def _event(self) -> Any:
        if not self.cuda:
            return None
        event = torch.cuda.Event()
        event.record()
        return event


def _split_xywh(boxes_xyxy: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    per_frame = np.split(boxes_xyxy, np.cumsum(counts)[:-1])
    return [np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1) for b in per_frame]
