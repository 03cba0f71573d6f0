"""Where results go: the output layout and its commit, owned by `pipeline.io.store`.

This module keeps the names the run path imports (`Output`, `OutputError`, `StorageError`,
`video_key`, `part_name`, `part_attempt`, `is_committed_part`); everything is defined in
`posepipe.pipeline.io.store`, which documents the layout and the commit protocol.
"""
from __future__ import annotations

from posepipe.pipeline.io.store import (
    OUTPUT_SCHEMES,
    OutputError,
    StorageError,
    Store,
    is_committed_part,
    part_attempt,
    part_name,
    video_key,
)

Output = Store  # the run path's name for the store of its --output

__all__ = ["OUTPUT_SCHEMES", "Output", "OutputError", "StorageError", "Store", "is_committed_part", "part_attempt",
           "part_name", "video_key"]
