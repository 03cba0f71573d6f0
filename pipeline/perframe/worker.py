"""The work one model worker does: a shard of frames -> person candidates, 2D keypoints and SMPL.

`PoseWorker` loads its per-frame models (detector, 2D, SMPL) once in `__init__` and is a plain
class: the runner wraps it in a Ray actor, and tests use it directly. Per-frame stages run per
shard, batched across frames. The temporal stages (tracking, lifting, writing) run per video off
the model workers, in pipeline.temporal.finish, which sends the few boxes tracking keeps but no
shard computed back here (`pose_boxes`).
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import closing
from typing import Any, Mapping, Sequence

import numpy as np

from posepipe.pipeline.faults import injected_fault
from posepipe.pipeline.io.prefetch import prefetched
from posepipe.pipeline.perframe.densepose import load_densepose_stage
from posepipe.pipeline.perframe.persons import PERSON_CLASS, select_person_rows, select_persons
from posepipe.pipeline.perframe.refine import load_refiner
from posepipe.pipeline.perframe.shards import POSE_COLUMNS, REFINED_COLUMNS, ShardResult, ShardTask, empty_rows, unrefined
from posepipe.pipeline.options import JobOptions
from posepipe.pipeline.temporal.association import MAX_CANDIDATES, pose_candidates

log = logging.getLogger(__name__)


class PoseWorker:
    """Holds the per-frame models; `process_shard` is its unit of work, `pose_boxes` a small extra one."""

    def __init__(self, options: JobOptions, *, threads: int | None = None) -> None:
        import torch

        from posepipe.models import load_model

        if threads:
            # Ray sets OMP_NUM_THREADS from num_cpus; torch needs to be told explicitly.
            torch.set_num_threads(max(1, int(threads)))
        self.options = options
        # FFmpeg frame threads per open video: by default the CPUs this worker was given, so decoding
        # (in the prefetch thread, beside the models) scales with them.
        self.decode_threads = max(1, int(options.decode_threads or threads or 1))
        common = {"device": options.device, "half": options.half, "random_weights": options.random_weights}

        def load(stage: str) -> Any:
            name = options.models[stage]
            weights = options.weights.get(name)
            kwargs = dict(common)
            if not options.random_weights:
                kwargs["weights"] = weights
            import warnings

            from posepipe.models import RandomWeightsWarning
            from posepipe.models.download import WeightsWarning

            with warnings.catch_warnings():
                # The driver loaded these same files first and showed these two, once, loudly;
                # anything else a load warns about on a worker still reaches the worker's log.
                warnings.simplefilter("ignore", RandomWeightsWarning)
                warnings.simplefilter("ignore", WeightsWarning)
                return load_model(name, **kwargs)

        # A detector-free pose model (bottom-up, one-stage) finds the people itself: such a job has no
        # detector (JobOptions leaves it out), and the model's own boxes and scores reach the tracker.
        self.detector = load("detector") if "detector" in options.models else None
        self.pose = load("pose")
        self.mesh = load("mesh")
        # --refine smplify: SMPLify on HMR's device, after either per-frame path (pipeline.perframe.refine)
        self.refiner = load_refiner(options, getattr(self.mesh, "device", "cpu"))
        # --densepose: DensePose R-CNN on the posed boxes, on HMR's device (pipeline.perframe.densepose)
        self.densepose = load_densepose_stage(options, getattr(self.mesh, "device", "cpu"))
        self.pid = os.getpid()

    def ping(self) -> int:
        return self.pid

    @property
    def use_device_path(self) -> bool:
        """Per-frame work on the models' device (pipeline.perframe.ondevice) rather than the host
        reference path: `options.device_path`, by default on for a GPU, off for a CPU."""
        from posepipe.pipeline.perframe.ondevice import supports_device_path

        if self.detector is None:  # detector-free: grouping and NMS are host work, the reference path
            return False
        wanted = self.options.device_path
        if wanted is None:
            wanted = str(getattr(self.detector, "device", "cpu")).startswith("cuda")
        return bool(wanted) and supports_device_path(self.detector, self.pose, self.mesh)

    def device_windows(self) -> Any:
        if getattr(self, "_device_windows", None) is None:
            from posepipe.pipeline.perframe.ondevice import DeviceWindows

            self._device_windows = DeviceWindows(self)
        return self._device_windows

    def weight_hashes(self) -> dict[str, str | None]:
        return {m.weights.name: m.weights_sha256 for m in (self.detector, self.pose, self.mesh) if m is not None}

    # -- per-frame stages -----------------------------------------------------------------
    def process_shard(self, task: ShardTask, header: Mapping[int, bytes] | None = None) -> ShardResult:
        from posepipe.pipeline.io.video import VideoInfo, open_video

        injected_fault("shard", task.video_id, task.start)
        t0 = time.perf_counter()
        timings = {"decode": 0.0, "detect": 0.0, "pose2d": 0.0, "smpl": 0.0}
        opts = self.options
        chunks: list[dict[str, np.ndarray]] = []
        stamps: list[np.ndarray] = []
        decoded = 0
        info = VideoInfo.from_dict(task.info) if task.info else None
        with open_video(task.uri, info=info, header=header, threads=self.decode_threads) as video:
            info = video.info
            # The next window decodes while the models run on this one; "decode" then times the
            # wait for frames, i.e. what decoding still costs the models.
            frames_iter = prefetched(video.frames(task.start, task.stop, window=opts.frames_per_batch))
            on_device = self.device_windows() if self.use_device_path else None
            pending = None
            with closing(frames_iter):  # stops the decode thread before the video closes
                td = time.perf_counter()
                for indices, frames, window_stamps in frames_iter:
                    timings["decode"] += time.perf_counter() - td
                    decoded += len(frames)
                    stamps.append(window_stamps)
                    if on_device is None:
                        chunks.append(self._with_charts(
                            self.reference_frames(frames, indices, window_stamps, info.width, info.height, timings),
                            frames, indices, timings))
                    else:  # queue this window's detection, then finish the previous one's (they overlap)
                        queued = on_device.submit(frames, indices, window_stamps)
                        if pending is not None:
                            chunks.append(self._with_charts(on_device.complete(pending, info.width, info.height),
                                                            *pending_frames, timings))
                        pending, pending_frames = queued, (frames, indices)
                    td = time.perf_counter()
                if pending is not None:
                    chunks.append(self._with_charts(on_device.complete(pending, info.width, info.height),
                                                    *pending_frames, timings))
            bytes_read = video.bytes_fetched
        if on_device is not None:
            timings.update({f"device_{k}": v for k, v in on_device.clock.device.items()})
            timings.update({f"host_{k}": v for k, v in on_device.clock.host.items()})
            on_device.clock = type(on_device.clock)()
            windows, fallbacks = on_device.windows, dict(on_device.fallbacks)
            on_device.windows, on_device.fallbacks = 0, type(on_device.fallbacks)()
        else:
            windows, fallbacks = 0, {}
        chunks = [unrefined(c) for c in chunks]  # the device path's windows carry no refined columns
        data = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]} if chunks else empty_rows()
        refiner = getattr(self, "refiner", None)  # None: no --refine (or a worker built without __init__)
        if refiner is not None and len(data["frame_index"]):
            t = time.perf_counter()
            data.update(refiner.refine(data))
            timings["smplify"] = time.perf_counter() - t
        return ShardResult(video_id=task.video_id, start=task.start, stop=task.stop, frames_decoded=decoded, uri=task.uri,
                           frame_timestamps=np.concatenate(stamps) if stamps else np.zeros(0),
                           bytes_read=bytes_read, seconds=time.perf_counter() - t0, timings=timings,
                           device_windows=windows, fallback_windows=fallbacks, **data)

    def pose_boxes(self, uri: str, info: Mapping[str, Any], frame_index: np.ndarray,
                    boxes_xyxy: np.ndarray) -> dict[str, np.ndarray]:
        """2D keypoints and SMPL for given boxes of given frames, decoding only the stretches that hold them
        (the boxes tracking kept that no shard computed: pipeline.temporal.finish)."""
        from posepipe.pipeline.io.video import VideoInfo, open_video

        out = {c: np.zeros((len(frame_index), *shape), np.float32) for c, shape in POSE_COLUMNS.items()}
        densepose = getattr(self, "densepose", None)
        if densepose is not None:
            out.update(densepose_png=np.empty(len(frame_index), object),
                       densepose_box_xywh=np.zeros((len(frame_index), 4), np.int32))
        if len(frame_index) == 0:
            return out
        opts = self.options
        wanted = np.unique(frame_index)
        # one decode per stretch of wanted frames less than a batch apart
        cuts = np.flatnonzero(np.diff(wanted) > opts.frames_per_batch) + 1
        with open_video(uri, info=VideoInfo.from_dict(dict(info)), threads=self.decode_threads) as video:
            for stretch in np.split(wanted, cuts):
                for indices, frames, _ in video.frames(int(stretch[0]), int(stretch[-1]) + 1, window=opts.frames_per_batch):
                    pick = np.flatnonzero(np.isin(np.asarray(indices), stretch)).tolist()
                    if not pick:
                        continue
                    members = [np.flatnonzero(frame_index == int(indices[i])) for i in pick]
                    images = [frames[i] for i in pick]
                    xyxy = [boxes_xyxy[m] for m in members]
                    xywh = [np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1) for b in xyxy]
                    pose = self.pose.predict_batch(images, xywh, flip_test=opts.flip_test)
                    mesh = self.mesh.predict_batch(images, xyxy)
                    for m, (keypoints, scores), smpl in zip(members, pose, mesh):
                        out["keypoints_2d"][m], out["keypoint_scores"][m] = keypoints, scores
                        for c in ("global_orient", "body_pose", "betas", "camera"):
                            out[f"smpl_{c}"][m] = smpl[c]
                    if densepose is not None:
                        rows = np.concatenate(members)
                        charts = densepose.charts(images, np.repeat(np.arange(len(members)), [len(m) for m in members]),
                                                  boxes_xyxy[rows])
                        for c, value in charts.items():
                            out[c][rows] = value
        refiner = getattr(self, "refiner", None)
        if refiner is not None:
            out.update(refiner.refine({**out, "bbox_xyxy": boxes_xyxy}))
        else:
            out.update({c: np.full((len(frame_index), *shape), np.nan, np.float32) for c, shape in REFINED_COLUMNS.items()})
        return out

    def _with_charts(self, chunk: dict[str, np.ndarray], frames: Sequence[np.ndarray], indices: np.ndarray,
                     timings: dict[str, float]) -> dict[str, np.ndarray]:
        """`chunk` (one window's rows) with DENSEPOSE_COLUMNS for its rows, when the job asked for them."""
        densepose = getattr(self, "densepose", None)  # None: no --densepose (or a worker built without __init__)
        if densepose is None:
            return chunk
        t = time.perf_counter()
        frame_of_row = np.searchsorted(np.asarray(indices), np.asarray(chunk["frame_index"]))
        chunk = {**chunk, **densepose.charts(frames, frame_of_row, chunk["bbox_xyxy"])}
        timings["densepose"] = timings.get("densepose", 0.0) + time.perf_counter() - t
        return chunk

    def reference_frames(self, frames: Sequence[np.ndarray], indices: np.ndarray, stamps: np.ndarray,
                width: int, height: int, timings: dict[str, float]) -> dict[str, np.ndarray]:
        opts = self.options
        if self.detector is None:
            return self._detector_free_frames(frames, indices, stamps, width, height, timings)
        t = time.perf_counter()
        # Every person box down to the tracker's floor reaches it (pipeline.temporal.association); 2D and SMPL
        # run here for the boxes likely to be kept, the rest only if tracking keeps them.
        dets = self.detector.detect_batch(frames, conf_threshold=opts.tracker_config().low_threshold,
                                          nms_threshold=opts.det_nms, classes=(PERSON_CLASS,),
                                          max_detections=MAX_CANDIDATES)
        candidates = [select_persons(d, width, height, MAX_CANDIDATES) for d in dets]
        persons = [c[:pose_candidates(c[:, 4], opts.det_conf, opts.max_persons)] for c in candidates]
        timings["detect"] += time.perf_counter() - t
        found = {"det_frame_index": np.repeat(np.asarray(indices), [len(c) for c in candidates]).astype(np.int32),
                 "det_bbox_xyxy": np.concatenate([c[:, :4] for c in candidates]).astype(np.float32),
                 "det_score": np.concatenate([c[:, 4] for c in candidates]).astype(np.float32),
                 "det_rank": np.concatenate([np.arange(len(p)) for p in persons]).astype(np.int32)}
        counts = np.array([len(p) for p in persons])
        if counts.sum() == 0:
            empty = empty_rows()
            empty.update(found, det_rank=np.zeros(0, np.int32))
            return empty
        boxes_xyxy = [p[:, :4] for p in persons]
        boxes_xywh = [np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1) for b in boxes_xyxy]
        t = time.perf_counter()
        pose = self.pose.predict_batch(frames, boxes_xywh, flip_test=opts.flip_test)
        timings["pose2d"] += time.perf_counter() - t
        return self._rows(frames, indices, stamps, persons, pose, found, timings)

    def _detector_free_frames(self, frames: Sequence[np.ndarray], indices: np.ndarray, stamps: np.ndarray,
                              width: int, height: int, timings: dict[str, float]) -> dict[str, np.ndarray]:
        """The reference path of a detector-free pose model: the model's persons are the candidates.

        Its boxes (RTMO's own; the keypoints' extent for Associative Embedding) and scores go through the
        same selection as a detector's (person boxes clipped to the frame, degenerate ones dropped, down to
        the tracker's floor, best first), so tracking, lifting, SMPL and the exports see them as they would
        a detector's; each candidate's keypoints are the ones the model found with it. A kept box that this
        shard did not pose is posed by `pose_boxes`, which asks the model for the person of that box.
        """
        opts = self.options
        t = time.perf_counter()
        found_persons = self.pose.predict_images(frames, flip_test=opts.flip_test)
        floor = opts.tracker_config().low_threshold
        candidates, keypoints = [], []
        for people in found_persons:
            n = len(people["scores"])
            dets = np.column_stack([people["bboxes_xyxy"], people["scores"], np.ones(n, np.float32),
                                    np.full(n, PERSON_CLASS, np.float32)]).astype(np.float32)
            dets = dets[dets[:, 4] >= floor]
            rows, chosen = select_person_rows(dets, width, height, MAX_CANDIDATES)
            above = np.flatnonzero(people["scores"] >= floor)[rows]
            candidates.append(chosen)
            keypoints.append((people["keypoints"][above], people["keypoint_scores"][above]))
        persons = [c[:pose_candidates(c[:, 4], opts.det_conf, opts.max_persons)] for c in candidates]
        pose = [(k[:len(p)], s[:len(p)]) for (k, s), p in zip(keypoints, persons)]
        timings["pose2d"] += time.perf_counter() - t
        found = {"det_frame_index": np.repeat(np.asarray(indices), [len(c) for c in candidates]).astype(np.int32),
                 "det_bbox_xyxy": np.concatenate([c[:, :4] for c in candidates]).astype(np.float32),
                 "det_score": np.concatenate([c[:, 4] for c in candidates]).astype(np.float32),
                 "det_rank": np.concatenate([np.arange(len(p)) for p in persons]).astype(np.int32)}
        if sum(len(p) for p in persons) == 0:
            empty = empty_rows()
            empty.update(found, det_rank=np.zeros(0, np.int32))
            return empty
        return self._rows(frames, indices, stamps, persons, pose, found, timings)

    def _rows(self, frames: Sequence[np.ndarray], indices: np.ndarray, stamps: np.ndarray, persons: list[np.ndarray],
              pose: list[tuple[np.ndarray, np.ndarray]], found: dict[str, np.ndarray],
              timings: dict[str, float]) -> dict[str, np.ndarray]:
        """The shard rows of the posed persons: SMPL for their boxes, then every column."""
        counts = np.array([len(p) for p in persons])
        boxes_xyxy = [p[:, :4] for p in persons]
        t = time.perf_counter()
        mesh = self.mesh.predict_batch(frames, boxes_xyxy)
        timings["smpl"] += time.perf_counter() - t
        frame_rows = np.repeat(np.asarray(indices), counts)
        return {
            "frame_index": frame_rows.astype(np.int32),
            "timestamp_s": np.asarray(stamps, np.float64)[frame_rows - int(indices[0])],
            "bbox_xyxy": np.concatenate(boxes_xyxy).astype(np.float32),
            "bbox_score": np.concatenate([p[:, 4] for p in persons]).astype(np.float32),
            "keypoints_2d": np.concatenate([k for k, _ in pose]).astype(np.float32),
            "keypoint_scores": np.concatenate([s for _, s in pose]).astype(np.float32),
            "smpl_global_orient": np.concatenate([m["global_orient"] for m in mesh]).astype(np.float32),
            "smpl_body_pose": np.concatenate([m["body_pose"] for m in mesh]).astype(np.float32),
            "smpl_betas": np.concatenate([m["betas"] for m in mesh]).astype(np.float32),
            "smpl_camera": np.concatenate([m["camera"] for m in mesh]).astype(np.float32),
            **found,
        }
