"""Where results go: the output layout, atomic Parquet writes, and reading back what is done.

Layout under OUTPUT (a folder or an s3:// prefix):
    poses/<video_key>/part-<first frame>-<end frame>.parquet   rows of one shard of one video
    videos/<video_key>.parquet                                 one row per input file, written last

A video's `videos/` row is its commit marker: it is written only after all its poses parts, and a
rerun skips videos whose row says ok with the same job fingerprint. Parts are written whole
(local: temp file + rename; S3: one PUT), so no reader ever sees a half-written file.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.sources import local_path, s3_client, scheme_of

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def video_key(video_id: str) -> str:
    """A file-name-safe, collision-free key for a video id (readable prefix + hash)."""
    stem = _UNSAFE.sub("_", video_id).strip("._")[:80] or "video"
    return f"{stem}-{hashlib.sha1(video_id.encode()).hexdigest()[:10]}"


def part_name(start: int, stop: int) -> str:
    return f"part-{start:09d}-{stop:09d}.parquet"


class Output:
    """Writes and lists posepipe tables under a local folder or an s3:// prefix."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self.scheme = scheme_of(uri)
        if self.scheme not in ("", "file", "s3"):
            raise ValueError(f"--output {uri!r}: write to a local folder or an s3:// prefix")
        if self.scheme == "s3":
            without = self.uri[len("s3://"):]
            self.bucket, _, self.prefix = without.partition("/")
        else:
            self.root = Path(local_path(self.uri))

    # -- writing -------------------------------------------------------------------------
    def write_table(self, relative: str, table: pa.Table) -> None:
        if self.scheme == "s3":
            buffer = io.BytesIO()
            pq.write_table(table, buffer, compression="zstd")
            s3_client().put_object(Bucket=self.bucket, Key=self._key(relative), Body=buffer.getvalue())
            return
        dest = self.root / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Hidden temp name that no '*.parquet' glob matches; rename is atomic on one filesystem.
        tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.tmp"
        try:
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                tmp.unlink()

    def remove_prefix(self, relative: str) -> None:
        """Delete everything under poses/<key>/ before a video is (re)processed."""
        if self.scheme == "s3":
            client = s3_client()
            prefix = self._key(relative).rstrip("/") + "/"
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
            return
        shutil.rmtree(self.root / relative, ignore_errors=True)

    # -- reading ------------------------------------------------------------------------
    def list_parquet(self, relative: str) -> list[str]:
        if self.scheme == "s3":
            client = s3_client()
            prefix = self._key(relative).rstrip("/") + "/"
            found: list[str] = []
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                found += [o["Key"][len(prefix):] for o in page.get("Contents", []) if o["Key"].endswith(".parquet")]
            return sorted(found)
        base = self.root / relative
        if not base.is_dir():
            return []
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*.parquet") if not p.name.startswith("."))

    def read_table(self, relative: str) -> pa.Table:
        if self.scheme == "s3":
            body = s3_client().get_object(Bucket=self.bucket, Key=self._key(relative))["Body"].read()
            return pq.read_table(io.BytesIO(body))
        return pq.read_table(self.root / relative)

    def completed_videos(self) -> dict[str, dict]:
        """video_id -> its videos/ row, for every video already recorded."""
        done: dict[str, dict] = {}
        for name in self.list_parquet("videos"):
            try:
                for row in self.read_table(f"videos/{name}").to_pylist():
                    done[row["video_id"]] = row
            except Exception:
                continue  # unreadable marker: treat the video as not done
        return done

    def _key(self, relative: str) -> str:
        return f"{self.prefix.rstrip('/')}/{relative}" if self.prefix else relative
