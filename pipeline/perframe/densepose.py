"""`--densepose`: DensePose R-CNN's body-surface chart for every posed row, on the model worker.

detectron2 runs its DensePose head on given boxes (``GeneralizedRCNN.inference(..., detected_instances=)``);
so does this stage, on the boxes the worker posed (and on the boxes tracking kept that no shard posed,
through ``PoseWorker.pose_boxes``): no RPN, no box head. Per frame that holds rows, the backbone, FPN
and decoder run once on the whole frame (800 px on the short side, detectron2's test resize), then the
head runs on all the frame's boxes together (models/densepose.py). A row's result is what detectron2
stores: the quantised I, U, V planes over the integer box as PNG bytes, and that box.

Frames go to the network a few at a time (FRAMES_PER_CALL): each one's decoder map at 800x1088 is
56 MB in float32, so a whole window of frames would cost the worker more memory than the models.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np

from posepipe.pipeline.options import DENSEPOSE_MODEL

FRAMES_PER_CALL = 4


class DensePoseStage:
    """Holds DensePose R-CNN on one device; `charts` is its unit of work."""

    def __init__(self, options: Any, device: Any = "cpu") -> None:
        # torch and the model are imported here, not at the top: the driver imports the worker module
        # for its types and must not pay for torch (pipeline.perframe.refine does the same).
        import torch

        from posepipe.models import RandomWeightsWarning
        from posepipe.models.densepose import WEIGHTS, create, load_densepose

        device = torch.device(str(device))
        half = bool(options.half) if options.half is not None else device.type == "cuda"
        if options.random_weights:
            warnings.warn(f"{DENSEPOSE_MODEL}: generated weights (--random-weights): the charts are meaningless, "
                          "a plumbing check only", RandomWeightsWarning, stacklevel=2)
            self.predictor = create(WEIGHTS[DENSEPOSE_MODEL], None, device=device, half=half)
        else:
            # the file the driver checked (JobOptions.check_densepose), by the absolute path it made of it
            self.predictor = load_densepose(options.densepose_weights, device=device)
            self.predictor.half = half and device.type == "cuda"

    def charts(self, frames: Sequence[np.ndarray], frame_of_row: np.ndarray, boxes_xyxy: np.ndarray
               ) -> dict[str, np.ndarray]:
        """DENSEPOSE_COLUMNS for N rows: row i is box `boxes_xyxy[i]` (frame pixels) in `frames[frame_of_row[i]]`."""
        n = len(frame_of_row)
        png = np.empty(n, object)
        box = np.zeros((n, 4), np.int32)
        frame_of_row = np.asarray(frame_of_row, np.int64)
        boxes_xyxy = np.asarray(boxes_xyxy, np.float64).reshape(n, 4)
        used = np.unique(frame_of_row)
        for lo in range(0, len(used), FRAMES_PER_CALL):
            group = used[lo:lo + FRAMES_PER_CALL]
            members = [np.flatnonzero(frame_of_row == f) for f in group]
            found = self.predictor.predict_batch([frames[int(f)] for f in group], [boxes_xyxy[m] for m in members])
            for m, charts in zip(members, found):
                for row, chart in zip(m, charts):
                    if chart is not None:  # None: detectron2 drops a box with nothing inside the frame
                        png[row] = chart.png()
                        box[row] = chart.box_xywh
        return {"densepose_png": png, "densepose_box_xywh": box}


@dataclass(frozen=True)
class DensePoseTiming:
    """What `time_densepose` measured: per call of the frames given, the best of its repeats."""

    frames: int
    persons: int
    seconds: float
    png_bytes: int                 # the stored charts' PNG bytes, all persons together

    @property
    def persons_per_s(self) -> float:
        return self.persons / self.seconds if self.seconds > 0 else float("inf")

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")

    @property
    def bytes_per_person(self) -> float:
        return self.png_bytes / self.persons if self.persons else 0.0


def time_densepose(frames: Sequence[np.ndarray], boxes_xyxy: Sequence[np.ndarray], *, weights: str | None = None,
                   device: str = "cpu", half: bool = False, repeats: int = 3, warmup: int = 1) -> DensePoseTiming:
    """Time the --densepose stage as a model worker runs it: `frames` (uint8 BGR) with their person boxes
    (xyxy, frame pixels, one array per frame), charts made and PNG-encoded (what a row stores), FRAMES_PER_CALL
    frames a call. `weights` None: generated weights (the arithmetic, so the time, is the official file's)."""
    import torch  # the benchmark's process has it; the module's top stays light (see DensePoseStage)

    options = SimpleNamespace(random_weights=weights is None, densepose_weights=weights, half=half)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # generated weights on purpose: a timing, not a result
        stage = DensePoseStage(options, device)
    frame_of_row = np.concatenate([np.full(len(b), i, np.int64) for i, b in enumerate(boxes_xyxy)])
    boxes = np.concatenate([np.asarray(b, np.float64).reshape(-1, 4) for b in boxes_xyxy])
    best, out = float("inf"), None
    for k in range(warmup + repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = stage.charts(frames, frame_of_row, boxes)  # PNG bytes are host data: the device is done
        if k >= warmup:
            best = min(best, time.perf_counter() - t)
    png = sum(len(p) for p in out["densepose_png"] if p is not None)
    return DensePoseTiming(frames=len(frames), persons=len(boxes), seconds=best, png_bytes=png)


def load_densepose_stage(options: Any, device: Any) -> DensePoseStage | None:
    """The job's DensePose stage, or None without --densepose."""
    return DensePoseStage(options, device) if getattr(options, "densepose", False) else None


__all__ = ["FRAMES_PER_CALL", "DensePoseStage", "DensePoseTiming", "load_densepose_stage", "time_densepose"]
