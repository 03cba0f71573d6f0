"""Which of an OUTPUT's videos a random-weights plumbing run wrote, so what is made from them says so.

`posepipe run --random-weights` (and `posepipe demo` offline) exercises every stage with meaningless
numbers and records it in the provenance of every table it writes (`plumbing_run_random_weights` in
the schema metadata's `posepipe.provenance`). A render of such rows is watermarked on every frame and
an export warns on stderr and marks its files where the format has room (`PLUMBING_NOTE`), so a
picture or a dataset made from a plumbing run cannot pass for real poses.

Each video's own committed row is read (`videos/<key>.parquet`): one OUTPUT can hold videos of a
plumbing run beside videos redone with real weights.
"""
from __future__ import annotations

import json
from typing import Iterable

from posepipe.pipeline.io.readback import open_store
from posepipe.pipeline.io.store import StorageError, video_key

PROVENANCE_KEY = b"posepipe.provenance"
PLUMBING_FLAG = "plumbing_run_random_weights"
PLUMBING_NOTE = "PLUMBING RUN: random weights, every pose is meaningless"


def plumbing_videos(output_uri: str, video_ids: Iterable[str]) -> set[str]:
    """The ids among `video_ids` whose committed videos row a random-weights run wrote. A row that
    cannot be read here counts as not one (the command reading it reports that row's problem itself)."""
    store = open_store(output_uri)
    ids = list(dict.fromkeys(video_ids))

    def flagged(video_id: str) -> bool:
        try:
            metadata = store.read_table(f"videos/{video_key(video_id)}.parquet", ["video_id"]).schema.metadata or {}
            return bool(json.loads(metadata.get(PROVENANCE_KEY, b"{}")).get(PLUMBING_FLAG))
        except (StorageError, ValueError, OSError, AttributeError):
            return False

    return {video_id for video_id, plumbing in zip(ids, store.map(flagged, ids)) if plumbing}


__all__ = ["PLUMBING_FLAG", "PLUMBING_NOTE", "plumbing_videos"]
