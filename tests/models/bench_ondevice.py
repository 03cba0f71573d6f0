"""Milliseconds per batch of 24 crops (8 frames x 3 persons, 768x576): ``predict_batch`` (the reference
path: one OpenCV/Pillow crop per box on the host, numpy out) against ``predict_frames`` (frames and
boxes on the device, everything there, tensors out), for HRNet-W32 with the flip test and for HMR.

    .venv/bin/python -m tests.models.bench_ondevice [--device cpu|cuda] [--repeats 7] [--half]

Each line: median and min wall ms over the repeats, and the host CPU ms of the process, all threads (on a
GPU the device path should leave the host idle). "crops" rows time the cropping alone (the part the
device path moves off the host), "total" the whole call. The frames are vtest.avi's (../shared/media)
when present, else samples/street.mp4 upscaled; weights are random (timing only). Not a test: the
figures depend on the machine (and on its load: compare the rows of one run).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from posepipe.models import hmr, hrnet, ondevice, strict_fp32
from tests.golden import MEDIA

ROOT = Path(__file__).resolve().parents[2]
# Three people-sized boxes per frame (x, y, w, h), moving a little from frame to frame.
BOXES = np.array([[60, 120, 110, 300], [330, 80, 140, 380], [560, 200, 90, 240]], np.float32)


def frames_768x576(n: int = 8) -> list[np.ndarray]:
    path = MEDIA / "vtest.avi"
    cap = cv2.VideoCapture(str(path if path.exists() else ROOT / "samples" / "street.mp4"))
    out = []
    while len(out) < n:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(cv2.resize(frame, (768, 576)) if frame.shape[:2] != (576, 768) else frame)
    cap.release()
    return out


def timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> tuple[float, float, float]:
    """(median wall ms, min wall ms, median host CPU ms) of `fn`, after one warm-up call."""
    fn()
    sync()
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        sync()
        walls.append(1000 * (time.perf_counter() - t))
        cpus.append(1000 * (time.process_time() - c))
    return statistics.median(walls), min(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--half", action="store_true", help="fp16 autocast on CUDA (default: strict fp32)")
    args = parser.parse_args()
    device = torch.device(args.device)
    strict_fp32(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    frames = frames_768x576()
    rng = np.random.default_rng(0)
    xywh = [BOXES + rng.uniform(-4, 4, BOXES.shape).astype(np.float32) for _ in frames]
    xyxy = [np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1) for b in xywh]
    fob = torch.arange(len(frames)).repeat_interleave(len(BOXES)).to(device)
    frames_t = torch.from_numpy(np.stack(frames)).to(device)
    xywh_t = torch.from_numpy(np.concatenate(xywh)).to(device)
    xyxy_t = torch.from_numpy(np.concatenate(xyxy)).to(device)
    torch.manual_seed(0)
    pose = hrnet.create(hrnet.WEIGHTS["hrnet_w32_coco_256x192"], None, device=device, half=args.half)
    mesh = hmr.create(hmr.WEIGHTS["hmr_spin_resnet50"], None, device=device, half=args.half)
    n = len(fob)
    print(f"{n} crops from {len(frames)} frames {frames[0].shape[1]}x{frames[0].shape[0]}, device {device}, "
          f"torch threads {torch.get_num_threads()}, {args.repeats} repeats (+1 warm-up)")

    def hrnet_ref_crops() -> object:
        for image, boxes in zip(frames, xywh):
            c, s = pose.box_to_center_scale(boxes)
            hrnet.crop_images(image, c, s, input_size=pose.input_size, color=pose.weights.color)
        return None

    def hrnet_dev_crops() -> object:
        c, s = ondevice.hrnet_center_scale(xywh_t, 192 / 256, hrnet.BOX_PADDING, hrnet.PIXEL_STD)
        return ondevice.warp_affine_float(frames_t, fob, ondevice.hrnet_affine(c, s, (192, 256), hrnet.PIXEL_STD), (192, 256))

    def hmr_ref_crops() -> object:
        return [mesh.crops(image, boxes) for image, boxes in zip(frames, xyxy)]

    rows = [
        ("HRNet-W32 flip  crops", hrnet_ref_crops, hrnet_dev_crops),
        ("HRNet-W32 flip  total", lambda: pose.predict_batch(frames, xywh, flip_test=True),
         lambda: pose.predict_frames(frames_t, fob, xywh_t, flip_test=True)),
        ("HMR             crops", hmr_ref_crops, lambda: ondevice.spin_crops(frames_t, fob, xyxy_t)),
        ("HMR             total", lambda: mesh.predict_batch(frames, xyxy),
         lambda: mesh.predict_frames(frames_t, fob, xyxy_t)),
    ]
    print(f"{'':22s} {'reference (predict_batch)':>32s} {'device (predict_frames)':>32s}")
    print(f"{'':22s} {'median':>10s} {'min':>10s} {'host cpu':>10s} {'median':>10s} {'min':>10s} {'host cpu':>10s}")
    for label, ref, dev in rows:
        r, d = timed(ref, args.repeats, sync), timed(dev, args.repeats, sync)
        print(f"{label:22s} " + " ".join(f"{v:10.1f}" for v in (*r, *d)))


if __name__ == "__main__":
    main()
