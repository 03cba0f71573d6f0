"""Test-only crash points, inert unless POSEPIPE_TEST_KILL_AT is set (the runner's recovery tests).

They sit where the model workers and the finishers do their work (pipeline.perframe.worker,
pipeline.temporal.finish), so both import them from here rather than from each other.
"""
from __future__ import annotations

import os


def injected_fault(stage: str, video_id: str, start: int | None = None) -> None:
    """Test-only crash point, inert unless POSEPIPE_TEST_KILL_AT is set (the runner's recovery tests).

    POSEPIPE_TEST_KILL_AT lists points, comma-separated: `shard:VIDEO_ID:START` (as the worker
    starts that shard) or `finish:VIDEO_ID` (after writing the video's parts, before its commit row).
    At a listed point the worker process exits at once, as if killed; a point written
    `oom@shard:VIDEO_ID:START` instead raises a CUDA out-of-memory error there (a failure that
    passes). Each point fires once per job, whichever worker reaches it, however often actors
    restart, unless its marker file already exists in POSEPIPE_TEST_KILL_DIR.
    """
    points = os.environ.get("POSEPIPE_TEST_KILL_AT")
    if not points:
        return
    point = f"{stage}:{video_id}" if start is None else f"{stage}:{video_id}:{start}"
    listed = points.split(",")
    oom = f"oom@{point}" in listed
    if point not in listed and not oom:
        return
    import hashlib

    marker = os.path.join(os.environ["POSEPIPE_TEST_KILL_DIR"], hashlib.sha1(point.encode()).hexdigest()[:16])
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    if oom:
        import torch

        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by POSEPIPE_TEST_KILL_AT)")
    os._exit(1)


__all__ = ["injected_fault"]
