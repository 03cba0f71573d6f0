"""Section 4: decoding alone, as a worker decodes (PyAV, BGR arrays in windows of 8), with 1, 4 and 8
FFmpeg threads, on the 720p H.264 clip and the street clip: frames/s and CPU ms per frame. decord too
where it is installed (never needed: the GPU image has none)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from clips import clip_720p, clip_facts, street_clip
from record import error_text, log, section_args

WINDOW = 8


def pyav(clip: Path, frames: int, threads: int) -> dict[str, Any]:
    from posepipe.pipeline.io.video import open_video

    cpu, wall = time.process_time(), time.perf_counter()
    with open_video(str(clip), threads=threads) as video:
        count = sum(len(batch) for _, batch, _ in video.frames(0, frames, window=WINDOW))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"frames": count, "seconds": round(wall, 4), "fps": round(count / wall, 1) if wall > 0 else None,
            "cpu_ms_per_frame": round(1000 * cpu / max(count, 1), 3)}


def decord_rate(clip: Path, frames: int, threads: int) -> dict[str, Any] | None:
    try:
        import decord
    except ImportError:
        return None
    cpu, wall = time.process_time(), time.perf_counter()
    reader = decord.VideoReader(str(clip), ctx=decord.cpu(0), num_threads=threads)
    count = 0
    for _ in range(min(frames, len(reader))):
        np.ascontiguousarray(reader.next().asnumpy()[..., ::-1])  # to BGR, as the worker hands frames on
        count += 1
    del reader
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"frames": count, "fps": round(count / wall, 1) if wall > 0 else None,
            "cpu_ms_per_frame": round(1000 * cpu / max(count, 1), 3)}


def main() -> None:
    args, plan, record = section_args(__doc__)
    clips = {"h264_720p": clip_720p(args.work, plan.clip_size, plan.clip_frames), "street": street_clip()}
    record.put("clips", {k: clip_facts(v) for k, v in clips.items()})
    for label, clip in clips.items():
        frames = min(plan.decode_frames, record.data["clips"][label]["frames"])
        for threads in plan.decode_threads:
            log(f"decoding {label} with {threads} thread(s)")
            row: dict[str, Any] = {"clip": label, "threads": threads}
            try:
                row["pyav"] = pyav(clip, frames, threads)
                row["decord"] = decord_rate(clip, frames, threads)
            except Exception as exc:  # one size failing leaves the others
                row["error"] = error_text(exc)
            record.add("runs", row)
    parts = [f"{r['clip']} t{r['threads']}: {(r.get('pyav') or {}).get('fps', r.get('error', '?'))} fps"
             for r in record.data["runs"]]
    record.done("PyAV " + "; ".join(parts) + ("" if any(r.get("decord") for r in record.data["runs"]) else "; decord not installed"))


if __name__ == "__main__":
    main()
