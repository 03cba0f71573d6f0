"""The clips the sections time: the street clip as it is, and a 720p H.264 clip encoded on the
machine from its frames with PyAV's x264 (real footage is mostly H.264; the street clip's MPEG-4
Part 2 decodes several times faster). Encoded once per run into the scratch folder, then reused.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]


def street_clip() -> Path:
    """vtest.avi (768x576 street footage, or prepare.sh's cut of it) where the shared media are, else
    the repo's samples/street.mp4 (384x288, 30 frames)."""
    shared = Path(os.environ.get("POSEPIPE_SHARED") or REPO.parent / "shared")
    for path in (shared / "media" / "vtest.avi", REPO / "samples" / "street.mp4"):
        if path.is_file():
            return path
    raise FileNotFoundError(f"no street clip: neither {shared}/media/vtest.avi nor samples/street.mp4")


def clip_facts(path: Path) -> dict[str, Any]:
    from posepipe.pipeline.io.video import probe_video

    info = probe_video(str(path)).info
    seconds = (info.num_frames / info.fps) if info.fps else None
    size = path.stat().st_size
    return {"path": path.name, "codec": codec_name(path), "width": info.width, "height": info.height,
            "frames": info.num_frames, "fps": info.fps, "keyframes": len(info.keyframes), "bytes": size,
            "kbit_per_s": round(8 * size / seconds / 1000, 1) if seconds else None}


def clip_720p(work: Path, size: tuple[int, int], frames: int) -> Path:
    """The street clip's first `frames` frames (looped when it has fewer) at `size`, as H.264
    (x264 veryfast, CRF 23, GOP 60, 2 B-frames: pipeline.measure.benchmark.h264_clip)."""
    from posepipe.pipeline.measure.benchmark import h264_clip, source_frames

    path = work / f"h264_{size[0]}x{size[1]}_{frames}.mp4"
    stamp = path.with_suffix(".json")
    if path.is_file() and stamp.is_file():
        return path
    source = street_clip()
    images, fps = source_frames(str(source), frames)
    h264_clip(path, images, tuple(size), fps)
    stamp.write_text(json.dumps({"source": source.name, "frames": frames, "size": list(size)}))
    return path


def codec_name(path: Path) -> str:
    import av

    with av.open(str(path)) as container:
        return container.streams.video[0].codec_context.name
