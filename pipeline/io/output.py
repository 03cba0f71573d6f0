"""Where results go: the output layout and its commit, owned by `pipeline.io.store`.

This module keeps the names the run path imports (`Output`, `OutputError`, `StorageError`,
`video_key`, `part_name`, `part_attempt`, `is_committed_part`); everything is defined in
`posepipe.pipeline.io.store`, which documents the layout and the commit protocol.

It also names what of OUTPUT's top level belongs to the store (`is_reserved_name`): ``videos/``,
``poses/``, and every name that starts with ``_`` or ``.`` (``_index/``, ``_committed.parquet``, the
store's temp files, and any file a later version adds: the store keeps its own files under such
names). No command writes a file of its own there (`pipeline.downstream.destinations`); any other
top-level name is free for side files (a dataset pickle, a render), which no reader of OUTPUT lists.
"""
from __future__ import annotations

import unicodedata

from posepipe.pipeline.io.store import (
    INDEX_DIR,
    MANIFEST,
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

VIDEOS_DIR = "videos"
POSES_DIR = "poses"
# What the store writes at OUTPUT's top level today; `is_reserved_name` also covers what it may add.
RESERVED = (VIDEOS_DIR, POSES_DIR, INDEX_DIR, MANIFEST)


def is_reserved_name(name: str) -> bool:
    """Whether `name`, a top-level entry of OUTPUT, is the store's: videos, poses, or '_…'/'.…'.

    Compared as a case-insensitive file system would (Unicode NFC, case folded): on such a disk
    ``Videos/`` *is* ``videos/``."""
    folded = unicodedata.normalize("NFC", name).casefold()
    return folded in (VIDEOS_DIR, POSES_DIR) or folded.startswith(("_", "."))


__all__ = ["OUTPUT_SCHEMES", "Output", "OutputError", "POSES_DIR", "RESERVED", "StorageError", "Store", "VIDEOS_DIR",
           "is_committed_part", "is_reserved_name", "part_attempt", "part_name", "video_key"]
