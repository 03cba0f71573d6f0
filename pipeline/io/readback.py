"""Reading a finished OUTPUT back: the videos table and the poses of chosen videos, as Arrow tables.

Works on a local folder or an ``s3://bucket/prefix`` (gs:// and az:// too, untested), through
`pipeline.io.store` like the job itself, so AWS_ENDPOINT_URL, profiles, credentials and retries
work the same. The layout is the one the store writes::

    videos/<video_key>.parquet                      one row per input file: the video's commit marker
    poses/<video_key>/part-<start>-<stop>.parquet   rows of one shard of one video

Only *committed* videos are read: a video's poses count once its ``videos/`` row exists (that row is
written after all its parts), so the parts of a video still being processed, or of a run that
crashed mid-video, never show up. The key of a video is taken from the name of its ``videos/``
file, never recomputed, so readers do not depend on how keys are derived.

Files that are not ``*.parquet``, and hidden or temporary ones (a path part starting with ``.`` or
``_``, e.g. ``.part-….parquet.<uuid>.tmp`` or ``_SUCCESS``), are ignored.
"""
from __future__ import annotations

import difflib
import posixpath
from pathlib import Path
from typing import Iterable, Iterator, Sequence
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from posepipe.pipeline.io.redaction import redact, scrub
from posepipe.pipeline.io.schema import POSES_SCHEMA, VIDEOS_SCHEMA
from posepipe.pipeline.io.store import StorageError, Store, is_committed_part, is_visible, scheme_of


class ReadbackError(ValueError):
    """OUTPUT cannot be read back (missing, not a posepipe output, no access); the message says why."""


class UnknownVideoError(ReadbackError):
    """A video id that OUTPUT does not hold; `known` lists the ids it does hold."""

    def __init__(self, missing: Sequence[str], known: Sequence[str], output_uri: str) -> None:
        self.missing = list(missing)
        self.known = list(known)
        super().__init__(f"{_quote_ids(self.missing)} not in {redact(output_uri)}; {describe_known(self.missing[0], self.known)}")


def _quote_ids(ids: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return ("video " if len(ids) == 1 else "videos ") + shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def describe_known(wanted: str, known: Sequence[str], limit: int = 8) -> str:
    """A short, readable list of known ids, closest matches to `wanted` first."""
    if not known:
        return "it holds no videos"
    close = difflib.get_close_matches(wanted, known, n=limit, cutoff=0.5)
    shown = close + [k for k in sorted(known) if k not in close][: max(0, limit - len(close))]
    more = len(known) - len(shown)
    return f"it holds {len(known)} video(s): " + ", ".join(shown) + (f", … ({more} more)" if more > 0 else "")


class OutputReader:
    """Lists an OUTPUT once, then reads its videos table and per-video poses on demand."""

    def __init__(self, output_uri: str) -> None:
        self.uri = output_uri.rstrip("/") or output_uri
        self.scheme = scheme_of(output_uri)
        parts = urlsplit(self.uri)
        if self.scheme in ("s3", "file") and ("@" in parts.netloc or parts.query or parts.fragment):
            raise ReadbackError(
                f"OUTPUT {redact(output_uri)} was given with credentials or a query string, which posepipe will not "
                "print or use; write it as s3://BUCKET/PREFIX or a local folder, and give S3 credentials through "
                "the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role)"
            )
        if self.scheme in ("s3", "gs", "az"):
            if not parts.netloc:
                raise ReadbackError(f"OUTPUT {redact(output_uri)!r}: no bucket name; write {self.scheme}://BUCKET/PREFIX")
        elif self.scheme in ("", "file"):
            root = Path(parts.path if self.scheme == "file" else self.uri)
            if not root.is_dir():
                raise ReadbackError(f"OUTPUT {root} does not exist or is not a folder; pass the --output of a posepipe run")
        else:
            raise ReadbackError(f"OUTPUT {redact(output_uri)!r}: unsupported scheme {self.scheme!r}; use a local folder or s3://BUCKET/PREFIX")
        self._store = Store(self.uri)
        self._files = self._list_all()
        self._videos: pa.Table | None = None
        self._ids: list[str] = []
        self._key_of: dict[str, str] = {}
        self._attempt_of: dict[str, str | None] = {}   # video_id -> the attempt its row commits
        self._parts: dict[str, list[str]] | None = None

    # -- storage -------------------------------------------------------------------------
    def _list_all(self) -> list[str]:
        """Every visible parquet file under videos/ and poses/, relative to OUTPUT, sorted."""
        try:
            found = [f"videos/{e.name}" for e in self._store.list("videos", recursive=False)]
            found += [f"poses/{e.name}" for e in self._store.list("poses")]
        except StorageError as exc:
            raise ReadbackError(f"{exc}. Check AWS_ENDPOINT_URL, the credentials and the bucket name"
                                if self.scheme == "s3" else str(exc)) from None
        return sorted(f for f in found if is_visible(f))

    def _read(self, relative: str, columns: Sequence[str] | None = None) -> pa.Table:
        try:
            return self._store.read_table(relative, columns)
        except StorageError as exc:
            raise ReadbackError(str(exc)) from None
        except (pa.ArrowException, ValueError) as exc:
            raise ReadbackError(f"cannot read {redact(self.uri)}/{relative}: {type(exc).__name__}: {scrub(str(exc))}") from None

    def _read_many(self, relatives: Sequence[str], columns: Sequence[str] | None = None) -> list[pa.Table]:
        return self._store.map(lambda r: self._read(r, columns), relatives)  # latency-bound: many GETs in flight

    # -- tables ----------------------------------------------------------------------------
    def videos(self) -> pa.Table:
        """The videos table (one row per input file, sorted by video_id), cast to VIDEOS_SCHEMA."""
        if self._videos is None:
            names = [f for f in self._files if f.startswith("videos/") and f.count("/") == 1]
            if not names:
                raise ReadbackError(
                    f"OUTPUT {redact(self.uri)} holds no posepipe tables: no videos/*.parquet under it "
                    "(each processed video writes one). Pass the --output folder or s3:// prefix of a posepipe run"
                )
            tables = self._read_many(names)
            casted: list[pa.Table] = []
            for name, table in zip(names, tables):
                table = _conform(table, VIDEOS_SCHEMA, name)
                key = posixpath.splitext(posixpath.basename(name))[0]
                for video_id, attempt in zip(table.column("video_id").to_pylist(),
                                             table.column("commit_attempt").to_pylist()):
                    self._key_of[video_id] = key
                    self._attempt_of[video_id] = attempt
                casted.append(table)
            merged = pa.concat_tables(casted).replace_schema_metadata(tables[0].schema.metadata)
            self._videos = merged.sort_by("video_id")
            self._ids = self._videos.column("video_id").to_pylist()
        return self._videos

    def video_ids(self) -> list[str]:
        self.videos()
        return list(self._ids)

    def video_row(self, video_id: str) -> dict:
        """The videos-table row of one video; UnknownVideoError (listing known ids) if absent."""
        table = self.videos()
        if video_id not in self._key_of:
            raise UnknownVideoError([video_id], self._ids, self.uri)
        return table.slice(self._ids.index(video_id), 1).to_pylist()[0]

    def _parts_of(self, video_id: str) -> list[str]:
        """poses/<key>/*.parquet of a committed video, in part order: only the parts of the attempt
        its row commits (an unfinished or superseded attempt's parts are never read)."""
        if self._parts is None:
            self._parts = {}
            for name in self._files:
                parts = name.split("/")
                if parts[0] == "poses" and len(parts) == 3:
                    self._parts.setdefault(parts[1], []).append(name)
        self.videos()
        attempt = self._attempt_of.get(video_id)
        return [name for name in self._parts.get(self._key_of[video_id], []) if is_committed_part(name, attempt)]

    def poses(self, video_ids: Iterable[str] | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        """Poses rows of the given committed videos (all when None), sorted by the row key: video, frame, person_index."""
        return _concat(list(self._poses_tables(video_ids, columns)), columns)

    def iter_poses(self, video_ids: Iterable[str] | None = None, columns: Sequence[str] | None = None) -> Iterator[tuple[str, pa.Table]]:
        """(video_id, its poses rows) one video at a time, so memory stays at one video."""
        ids = self._resolve_ids(video_ids)
        for video_id in ids:
            yield video_id, _concat(list(self._poses_tables([video_id], columns)), columns)

    def _resolve_ids(self, video_ids: Iterable[str] | None) -> list[str]:
        self.videos()
        if video_ids is None:
            return list(self._ids)
        wanted = list(dict.fromkeys(video_ids))
        missing = [v for v in wanted if v not in self._key_of]
        if missing:
            raise UnknownVideoError(missing, self._ids, self.uri)
        return wanted

    def _poses_tables(self, video_ids: Iterable[str] | None, columns: Sequence[str] | None) -> Iterator[pa.Table]:
        wanted = _check_columns(columns)
        reading = list(dict.fromkeys(["video_id", "frame_index", "person_index", *wanted]))
        for video_id in self._resolve_ids(video_ids):
            names = self._parts_of(video_id)
            for name, table in zip(names, self._read_many(names, reading)):
                table = _conform(table, _subschema(reading), name)
                # defensive: a part holds one video, but never trust a file name over the data
                mask = pc.equal(table.column("video_id"), pa.scalar(video_id))
                yield table.filter(mask)


def _check_columns(columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        return list(POSES_SCHEMA.names)
    unknown = [c for c in columns if c not in POSES_SCHEMA.names]
    if unknown:
        raise ValueError(f"columns {unknown} are not in the poses table; choose from {POSES_SCHEMA.names}")
    return list(columns)


def _subschema(names: Sequence[str]) -> pa.Schema:
    return pa.schema([POSES_SCHEMA.field(n) for n in names])


def _conform(table: pa.Table, schema: pa.Schema, name: str) -> pa.Table:
    # Columns added since a file was written (nullable ones) read as nulls: older outputs stay readable.
    for field in schema:
        if field.name not in table.column_names and field.nullable:
            table = table.append_column(field.name, pa.nulls(table.num_rows, field.type))
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise ReadbackError(f"{name} lacks columns {missing}: not a posepipe table of schema version compatible with this reader")
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ReadbackError(f"{name}: a column has the wrong type for a posepipe table ({exc}); the file was not "
                            "written by a posepipe run, or was changed since") from None


def _concat(tables: list[pa.Table], columns: Sequence[str] | None) -> pa.Table:
    wanted = _check_columns(columns)
    if not tables:
        return _subschema(wanted).empty_table()
    merged = pa.concat_tables(tables).sort_by([("video_id", "ascending"), ("frame_index", "ascending"), ("person_index", "ascending")])
    return merged.select(wanted)


def read_videos(output_uri: str) -> pa.Table:
    """The videos table of OUTPUT (local folder or s3:// prefix): one row per input file."""
    return OutputReader(output_uri).videos()


def read_poses(output_uri: str, video_ids: Iterable[str] | None = None, columns: Sequence[str] | None = None) -> pa.Table:
    """Poses rows of OUTPUT's committed videos (all, or `video_ids`), `columns` of POSES_SCHEMA (all by default).

    Sorted by the row key (video_id, frame_index, person_index). Unknown video ids raise UnknownVideoError.
    """
    return OutputReader(output_uri).poses(video_ids, columns)
