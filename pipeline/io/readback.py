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

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from posepipe.pipeline.io.redaction import has_secrets, redact, scrub
from posepipe.pipeline.io.schema import DENSEPOSE_SCHEMA, POSES_SCHEMA, VIDEOS_SCHEMA
from posepipe.pipeline.io.store import DENSEPOSE_DIR, POSES_DIR, VIDEOS_DIR
from posepipe.pipeline.io.store import (
    INDEX_DIR, MANIFEST, OutputError, StorageError, Store, is_committed_part, is_visible, scheme_of,
)


class ReadbackError(ValueError):
    """OUTPUT cannot be read back (missing, not a posepipe output, no access); the message says why."""


class NotAnOutputError(ReadbackError):
    """What was given as OUTPUT is not one (missing, a file, a folder or prefix no posepipe run wrote,
    an unsupported URI): the commands that take OUTPUT refuse it with exit code 2."""


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
        self._store = open_store(output_uri)
        self.uri = self._store.uri
        self.scheme = self._store.scheme
        self._files = self._list_all()
        self._videos: pa.Table | None = None
        self._ids: list[str] = []
        self._key_of: dict[str, str] = {}
        self._attempt_of: dict[str, str | None] = {}   # video_id -> the attempt its row commits
        self._parts: dict[str, list[str]] | None = None

    # -- storage -------------------------------------------------------------------------
    def _list_all(self) -> list[str]:
        """Every visible parquet file under videos/ and poses/, relative to OUTPUT, sorted (densepose/ is
        listed when first asked for: most outputs have none)."""
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
            if not names:  # an OUTPUT (open_store checked) whose job has committed no video yet
                raise ReadbackError(
                    f"OUTPUT {redact(self.uri)} holds no committed video yet: no videos/*.parquet under it (each "
                    "video a run processes writes one when it is done). Is its job still running, or did it find "
                    "no video in its INPUT?"
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

    def _chart_parts_of(self, video_id: str) -> list[str]:
        """densepose/<key>/*.parquet of a committed video: the parts of the attempt its row commits."""
        self.videos()
        key = self._key_of[video_id]
        try:
            names = [f"{DENSEPOSE_DIR}/{key}/{e.name}" for e in self._store.list(f"{DENSEPOSE_DIR}/{key}")]
        except StorageError as exc:
            raise ReadbackError(str(exc)) from None
        attempt = self._attempt_of.get(video_id)
        return [n for n in names if is_visible(n) and is_committed_part(n, attempt)]

    def densepose(self, video_ids: Iterable[str] | None = None) -> pa.Table:
        """DensePose rows (--densepose) of the given committed videos (all when None), sorted by the row key
        (video_id, frame_index, person_index: the poses rows'); empty for videos a job ran without it.
        pipeline.downstream.densepose decodes a row's chart."""
        tables = []
        for video_id in self._resolve_ids(video_ids):
            names = self._chart_parts_of(video_id)
            for name, table in zip(names, self._read_many(names)):
                table = _conform(table, DENSEPOSE_SCHEMA, name)
                tables.append(table.filter(pc.equal(table.column("video_id"), pa.scalar(video_id))))
        if not tables:
            return DENSEPOSE_SCHEMA.empty_table()
        return pa.concat_tables(tables).sort_by([("video_id", "ascending"), ("frame_index", "ascending"),
                                                 ("person_index", "ascending")])

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


# -- what an OUTPUT is ----------------------------------------------------------------------

OUTPUT_MARKS = "videos/*.parquet, _committed.parquet or a job's _index/ files"
_RUN_HINT = "pass the --output of a posepipe run (a local folder or s3://bucket/prefix)"


def open_store(output_uri: str) -> Store:
    """The store of OUTPUT, checked to be a posepipe OUTPUT; `NotAnOutputError` saying why not.

    The one definition every command that takes OUTPUT uses (files, export, render, eval): a local
    folder or an object-store prefix holding at least one mark a run leaves,

    * a ``videos/*.parquet`` row: every video a run processes (ok or failed) writes one;
    * ``_committed.parquet``: written when a job ends, even a job that found no video;
    * ``_index/intent-*.parquet`` or ``_index/videos-*.parquet``: a job began here (its videos are
      not committed yet, or it was killed before its end).

    A folder with none of them (an empty folder, an INPUT folder, OUTPUT's own ``videos/``) is not
    an OUTPUT, even where it holds Parquet files. A store that cannot be listed (access, outage)
    raises `ReadbackError`: that is not the folder's fault.
    """
    if not output_uri.strip():
        raise NotAnOutputError(f"OUTPUT is empty; {_RUN_HINT}")
    uri = output_uri.rstrip("/") or output_uri
    scheme = scheme_of(output_uri)
    if has_secrets(output_uri):  # shown scrubbed: without user info, query or fragment
        raise NotAnOutputError(
            f"OUTPUT {scrub(output_uri)} was given with credentials or a query string, which posepipe will "
            "not print or use; write it as s3://BUCKET/PREFIX or a local folder, and give S3 credentials through "
            "the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role)"
        )
    if scheme not in ("", "file", "s3", "gs", "az"):
        raise NotAnOutputError(f"OUTPUT {redact(output_uri)!r}: unsupported scheme {scheme!r}; use a local folder or "
                               "s3://BUCKET/PREFIX")
    if scheme in ("s3", "gs", "az") and not uri[len(scheme) + 3:].partition("/")[0]:
        raise NotAnOutputError(f"OUTPUT {redact(output_uri)!r}: no bucket name; write {scheme}://BUCKET/PREFIX")
    try:
        store = Store(uri)
        if store.local:  # the path as the store reads it (file:// decoded), so both agree on the folder
            root = Path(store.path(""))
            if not root.exists():
                raise NotAnOutputError(f"OUTPUT {root} does not exist; {_RUN_HINT}")
            if not root.is_dir():
                raise NotAnOutputError(f"OUTPUT {root} is a file, not a posepipe OUTPUT folder; {_RUN_HINT}")
            for name in (VIDEOS_DIR, POSES_DIR):
                if (root / name).exists() and not (root / name).is_dir():
                    raise NotAnOutputError(f"OUTPUT {root}: {name} is a file where a posepipe OUTPUT holds a "
                                           f"folder, so this is not one (or it was damaged); {_RUN_HINT}")
        marked = _is_output(store)
    except NotAnOutputError:
        raise
    except StorageError as exc:
        raise ReadbackError(f"{exc}. Check AWS_ENDPOINT_URL, the credentials and the bucket name"
                            if scheme == "s3" else str(exc)) from None
    except ValueError as exc:  # OutputError, or a URI the store will not use as written
        raise NotAnOutputError(f"OUTPUT: {exc}") from None
    if not marked:
        try:
            reason = _not_an_output(store)
        except (OSError, StorageError):  # only the wording is at stake
            reason = f"not a posepipe OUTPUT: {redact(store.uri)} holds no {OUTPUT_MARKS}; {_RUN_HINT}"
        raise NotAnOutputError(reason)
    return store


def _is_output(store: Store) -> bool:
    if store.exists(MANIFEST):
        return True
    rows = store.list(VIDEOS_DIR, recursive=False)
    if rows:  # someone else's Parquet files in a folder named videos/ do not make an OUTPUT
        try:
            store.read_table(f"{VIDEOS_DIR}/{rows[0].name}", ["video_id", "status"])
            return True
        except (pa.ArrowException, ValueError):
            return False
    return any(e.name.startswith(("intent-", "videos-")) and e.name.endswith(".parquet")
               for e in store.list(INDEX_DIR, recursive=False))


def _not_an_output(store: Store) -> str:
    """Why `store` is not an OUTPUT, in words, with a hint where the user pointed inside one."""
    where = redact(store.uri)
    parent, _, name = store.uri.rpartition("/")
    if parent and (name in (VIDEOS_DIR, POSES_DIR, INDEX_DIR)) and scheme_of(parent) == store.scheme:
        try:
            if _is_output(Store(parent)):
                return (f"{where} is the {name}/ folder of the posepipe OUTPUT {redact(parent)}, not an OUTPUT; "
                        f"pass {redact(parent)}")
        except (OutputError, StorageError):
            pass
    if not store.local:
        kind = store.fs.get_file_info(store.path("")).type
        if kind == pafs.FileType.NotFound:
            return f"OUTPUT {where} does not exist (no bucket or nothing stored under that prefix); {_RUN_HINT}"
        if kind == pafs.FileType.File:
            return f"OUTPUT {where} is an object (a file), not a posepipe OUTPUT prefix; {_RUN_HINT}"
    return f"not a posepipe OUTPUT: {where} holds no {OUTPUT_MARKS} (a run writes them); {_RUN_HINT}"


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


def read_densepose(output_uri: str, video_ids: Iterable[str] | None = None) -> pa.Table:
    """DensePose rows (--densepose) of OUTPUT's committed videos (all, or `video_ids`), DENSEPOSE_SCHEMA, sorted
    by the row key; pipeline.downstream.densepose.decode_row turns one into numpy arrays."""
    return OutputReader(output_uri).densepose(video_ids)
