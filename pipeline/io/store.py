"""The one place posepipe touches an OUTPUT: reading, writing, listing, deleting, and the commit.

Layout under OUTPUT (a local folder, or an s3://, gs:// or az:// prefix)::

    poses/<video_key>/part-<first>-<end>-<attempt>.parquet   rows of one shard of one video, one finish attempt
    densepose/<video_key>/part-<first>-<end>-<attempt>.parquet  (--densepose) the same rows' charts, same names
    videos/<video_key>.parquet                               one row per input file: the video's commit
    _committed.parquet                                        (video_id, path): every committed part, at job end
    _index/videos-<utc stamp>-<id>.parquet                    the videos rows, compacted at job end

**The commit.** A finish writes its parts under its own attempt's names, then writes the video's row
naming that attempt (``commit_attempt``); the row is one atomic write (local: temp file + rename;
object stores: one upload that becomes visible whole). Only parts named by a row are committed.
Writers never delete; `Store.finish_job` (run by the driver when no worker is left) deletes what no
row names, then writes ``_committed.parquet`` and the index.

**The filesystem layer is pyarrow.fs**, not fsspec. pyarrow is already a hard dependency (every
table is Parquet through it); its S3 client (the AWS C++ SDK) takes ``endpoint_override`` and a
``retry_strategy`` (the SDK's *standard* mode: throttling, 5xx, timeouts and dropped connections are
retried with exponential backoff and jitter, bounded by ``max_attempts``), releases the GIL, so a
thread pool of reads really runs in parallel, and it ships GCS and Azure filesystems too. fsspec
itself has no S3 code: ``s3fs`` would add aiobotocore, which pins botocore below what boto3 (used for
inputs and weights) needs. pyarrow's FileInfo has no ETag, so changes are seen by size + mtime.

Tested: local folders, and S3 against moto's server on loopback (retries against a proxy that
answers 503 SlowDown). gs:// and az:// go through pyarrow's GcsFileSystem / AzureFileSystem with the
same code, but no emulator runs here, so they are **untested**.

**Errors.** Whatever the layer raises after its retries becomes `StorageError` with the URI
redacted (``missing`` when the object does not exist, ``transient`` when it was throttling, a 5xx, a
timeout or the network, i.e. an outage worth a later rerun). Deletes and writes are checked: a
failed delete is an error, not a warning.

**Completed videos in seconds.** `Store.completed_videos` lists ``videos/`` (one paged listing), reads
the newest ``_index/`` file, trusts an index row only while the listed file has the size and mtime
the index recorded *and* is older than the index by a safety margin (so a row rewritten within the
clock's resolution is re-read), and reads every other row file with a thread pool. A stale, missing
or corrupt index costs time, never correctness; a store that fails while being read stops the job.
10,000 rows (tests/pipeline/io/bench_scan.py, loaded 2-core machine): local 15 s serial, 10 s parallel,
0.2 s with the index; moto S3 101 s, 61 s, 2.6 s.

Not here: listing and reading *inputs* (`sources.py`, `objects.py`: ranged, streaming reads through
boto3/smart_open) and weights downloads (`models/download.py`) keep their own code.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import time
import unicodedata
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from posepipe.pipeline.io.redaction import redact, scrub
from posepipe.pipeline.io.uris import URIError, file_uri_path, scheme_of, split_object_uri  # noqa: F401 - scheme_of re-exported

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

OUTPUT_SCHEMES = ("", "file", "s3", "gs", "az")
VIDEOS_DIR = "videos"               # one commit row per video: videos/<key>.parquet
POSES_DIR = "poses"                 # its rows: poses/<key>/<part>.parquet, named by attempt
# --densepose: the charts of those rows, densepose/<key>/<part>.parquet, a part for each poses part with
# the same name; committed, superseded and cleaned with it (the same row names both by its attempt).
DENSEPOSE_DIR = "densepose"
PART_DIRS = (POSES_DIR, DENSEPOSE_DIR)
INDEX_DIR = "_index"
MANIFEST = "_committed.parquet"
# What the store writes at OUTPUT's top level today; `is_reserved_name` also covers what it may add.
RESERVED = (VIDEOS_DIR, POSES_DIR, DENSEPOSE_DIR, INDEX_DIR, MANIFEST)


def is_reserved_name(name: str) -> bool:
    """Whether `name`, a top-level entry of OUTPUT, is the store's: videos, poses, densepose, or '_…'/'.…' (the
    store keeps its own files under such names, and any it adds later will be). No command writes a
    file of its own there (`pipeline.io.destinations`); any other top-level name is free for side
    files (a dataset pickle, a render), which no reader of OUTPUT lists. Compared as a case-insensitive
    file system would (Unicode NFC, case folded): on such a disk ``Videos/`` *is* ``videos/``."""
    folded = unicodedata.normalize("NFC", name).casefold()
    return folded in (VIDEOS_DIR, *PART_DIRS) or folded.startswith(("_", "."))
# An index row is trusted only for row files at least this much older than the index itself: S3's
# LastModified has one-second resolution, so a row rewritten in the same second keeps its mtime.
INDEX_MARGIN_NS = 2_000_000_000
# A scan that read more row files than this outside the index writes a fresh index at once, so a
# job that is killed later does not leave the next rerun to read them all again.
REINDEX_AFTER = 1000
# Threads for latency-bound object-store calls (GETs, LISTs, DELETEs); local disks need few.
REMOTE_THREADS = 64
# Past this many video folders to look into, `committed_parts` lists all of poses/ once instead.
LIST_WHOLE_AFTER = 500
LOCAL_THREADS = 8
S3_MAX_ATTEMPTS = 10   # AWS SDK standard mode: backoff 2^n x jitter, capped at 20 s a wait
# A running job rewrites its intent every INTENT_RENEW_S (`Store.renew_job`, from the driver's loop).
# Another job's intent counts as a job that did not end, whose folders `finish_job` cleans, only once
# it is INTENT_STALE_S old: a job ending never deletes the parts a concurrent job on the same OUTPUT
# is still writing. (The price: a killed job's leftovers wait for a job that ends after that age.)
INTENT_RENEW_S = 60.0
INTENT_STALE_S = 600.0
INTENT_OWNER = "posepipe.intent_owner"  # intent metadata: "host|boot id|pid|process start", who wrote it

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_PART = re.compile(r"part-\d+-\d+(?:-(?P<attempt>[0-9a-f]+))?\.parquet$")
_TRANSIENT = re.compile(
    r"SLOW_DOWN|SlowDown|THROTTL|Throttl|REQUEST_TIMEOUT|RequestTimeout|NETWORK_CONNECTION|INTERNAL_FAILURE|"
    r"SERVICE_UNAVAILABLE|ServiceUnavailable|HTTP (?:response code|status):? (?:5\d\d|429)|curlCode|timed out|"
    r"Timeout|Connection reset",
)


class OutputError(ValueError):
    """--output cannot be used (unsupported scheme, not a folder, not writable): said before any work."""


class StorageError(RuntimeError):
    """Reading, writing, listing or deleting under OUTPUT failed after the layer's retries (an outage,
    access revoked, a full disk). The job stops: what is committed stays committed, a rerun resumes."""

    def __init__(self, message: str, *, missing: bool = False, transient: bool = False) -> None:
        super().__init__(message)
        self.missing = missing      # the object or file does not exist (deleted since it was listed)
        self.transient = transient  # throttling, 5xx, timeouts, network: the store, not the data


# -- the commit's names ------------------------------------------------------------------------

def video_key(video_id: str) -> str:
    """A file-name-safe, collision-free key for a video id (readable prefix + hash)."""
    stem = _UNSAFE.sub("_", video_id).strip("._")[:80] or "video"
    return f"{stem}-{hashlib.sha1(video_id.encode()).hexdigest()[:10]}"


def part_name(start: int, stop: int, attempt: str | None = None) -> str:
    """`part-<first frame>-<end frame>[-<attempt>].parquet`: the attempt names the finish that wrote it."""
    return f"part-{start:09d}-{stop:09d}" + (f"-{attempt}" if attempt else "") + ".parquet"


def part_attempt(name: str) -> str | None:
    """The attempt a part file belongs to (None: written before attempts were named, or not a part)."""
    found = _PART.search(name)
    return found.group("attempt") if found else None


def is_committed_part(name: str, commit_attempt: str | None) -> bool:
    """Whether part file `name` belongs to the commit whose row says `commit_attempt`."""
    return _PART.search(name) is not None and part_attempt(name) == commit_attempt


def is_visible(name: str) -> bool:
    """A `*.parquet` name no path part of which is hidden or temporary ('.…', '_…')."""
    return name.endswith(".parquet") and not any(p.startswith((".", "_")) for p in name.split("/"))


# -- the filesystem layer ------------------------------------------------------------------------

def layer_base(uri: str) -> str:
    """The base path of OUTPUT `uri` in its filesystem layer: an absolute local path, or
    'bucket/prefix' (the prefix verbatim: `pipeline.io.uris`). Raises `OutputError` for a prefix the
    layer would not keep as written: pyarrow refuses an empty segment ('a//b') and rewrites '.' and
    '..' segments, so parts would land under another prefix than the one the rows are read from."""
    scheme = scheme_of(uri)
    if scheme in ("", "file"):
        try:
            path = file_uri_path(uri) if scheme == "file" else uri
        except URIError as exc:
            raise OutputError(f"--output {exc}") from None
        return os.path.abspath(path)
    try:
        bucket, key = split_object_uri(uri)
    except URIError as exc:
        raise OutputError(f"--output {redact(uri)}: {exc}") from None
    if not bucket:
        raise OutputError(f"--output {redact(uri)}: no bucket name; write {scheme}://BUCKET/PREFIX")
    prefix = key.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise OutputError(f"--output {redact(uri)}: the prefix {prefix!r} has an empty, '.' or '..' segment, which "
                          "the storage layer would rewrite to another prefix; write the prefix without it")
    return f"{bucket}/{prefix}".rstrip("/")


@functools.lru_cache(maxsize=32)
def _s3(bucket: str, endpoint: str, region: str, attempts: int) -> pafs.S3FileSystem:
    # allow_delayed_open: a small object is one PutObject, not CreateMultipartUpload + UploadPart + Complete.
    kwargs: dict[str, Any] = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=attempts),
                              "allow_delayed_open": True}
    if endpoint:  # AWS_ENDPOINT_URL(_S3): MinIO, moto, Ceph ...; pyarrow's constructor does not read it
        parts = urlsplit(endpoint)
        kwargs["endpoint_override"] = parts.netloc or parts.path
        kwargs["scheme"] = parts.scheme or "https"
    if region:
        kwargs["region"] = region
    elif not endpoint and bucket:
        kwargs["region"] = pafs.resolve_s3_region(bucket)  # one HEAD; the SDK would otherwise assume us-east-1
    return pafs.S3FileSystem(**kwargs)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, base path inside it) for a local folder or an s3://, gs://, az:// prefix.

    S3 takes the standard AWS environment (credentials chain, AWS_ENDPOINT_URL[_S3], AWS_REGION /
    AWS_DEFAULT_REGION, AWS_MAX_ATTEMPTS); filesystems are cached per endpoint, so the workers of a
    job do not build one per call.
    """
    scheme = scheme_of(uri)
    base = layer_base(uri)
    if scheme in ("", "file"):
        return pafs.LocalFileSystem(), base
    bucket = base.partition("/")[0]
    if scheme == "s3":
        env = os.environ
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or ""
        if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
            endpoint = ""
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
        attempts = int(env.get("AWS_MAX_ATTEMPTS") or S3_MAX_ATTEMPTS)
        with _errors("connect to", uri):
            return _s3(bucket, endpoint, region, attempts), base
    # gs:// and az:// are untested here (no emulator). Both layers retry transient errors themselves
    # (GCS: retry_time_limit; Azure: the SDK's default exponential retry policy).
    if scheme == "gs":  # credentials: Application Default Credentials, as gsutil/gcloud use
        with _errors("connect to", uri):
            return pafs.GcsFileSystem(retry_time_limit=timedelta(minutes=2)), base
    if scheme == "az":  # az://CONTAINER/PREFIX; the account and its key from the environment, as adlfs reads them
        account = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME") or os.environ.get("AZURE_STORAGE_ACCOUNT")
        if not account:
            raise OutputError(f"{redact(uri)}: set AZURE_STORAGE_ACCOUNT_NAME (and AZURE_STORAGE_ACCOUNT_KEY, "
                              "or use a managed identity) to use az:// outputs")
        with _errors("connect to", uri):
            return pafs.AzureFileSystem(account_name=account,
                                        account_key=os.environ.get("AZURE_STORAGE_ACCOUNT_KEY") or None), base
    raise OutputError(f"{redact(uri)}: {scheme}:// is not supported; use a local folder or s3://, gs://, az://")


@contextlib.contextmanager
def _errors(what: str, where: str) -> Iterator[None]:
    """Turn the layer's errors into one readable `StorageError` (URIs redacted, secrets scrubbed)."""
    try:
        yield
    except (StorageError, OutputError):
        raise
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        raise  # the bytes arrived and are not a table: the caller decides (a corrupt row is not an outage)
    except OSError as exc:
        text = scrub(str(exc)).strip() or type(exc).__name__
        reason = text if not isinstance(exc, FileNotFoundError) else "it does not exist"
        if isinstance(exc, PermissionError) or "ACCESS_DENIED" in text or "AccessDenied" in text:
            reason += " (check the credentials and the permissions on it)"
        elif getattr(exc, "errno", None) == 28:
            reason += " (the disk is full)"
        raise StorageError(f"could not {what} {redact(where)}: {reason}",
                           missing=isinstance(exc, FileNotFoundError) or "NO_SUCH_KEY" in text,
                           transient=bool(_TRANSIENT.search(text))) from None


@dataclass(frozen=True)
class Entry:
    """One listed file: its name relative to the listed folder, size and modification time."""
    name: str
    size: int
    mtime_ns: int


@dataclass
class _Video:
    """What the scan knows of one videos/<key>.parquet."""
    key: str
    rows: list[dict[str, Any]]
    size: int
    mtime_ns: int
    from_index: bool = False
    parts: list[str] | None = None   # the committed part names, when known


@dataclass
class ScanStats:
    listed: int = 0
    from_index: int = 0
    read: int = 0
    unreadable: list[str] = field(default_factory=list)
    index: str | None = None
    seconds: float = 0.0


class Store:
    """Reads, writes, lists and deletes under OUTPUT, and owns the commit state of its videos."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/") or uri
        self.scheme = scheme_of(uri)
        if self.scheme not in OUTPUT_SCHEMES:
            raise OutputError(f"--output {redact(uri)}: {self.scheme}:// outputs are not supported; "
                              "write to a local folder or an s3://, gs:// or az:// prefix")
        layer_base(self.uri)  # OutputError now, before any I/O, for a prefix the layer would not keep
        self._fs: pafs.FileSystem | None = None
        self._base = ""
        self.local = self.scheme in ("", "file")
        self.threads = LOCAL_THREADS if self.local else REMOTE_THREADS
        self.stats = ScanStats()
        self._videos: dict[str, _Video] | None = None
        self._unclean: set[str] = set()   # keys whose row changed since the last index (a job did not end)
        self._intent: str | None = None
        self._intent_renewed = 0.0        # time.monotonic() of this job's last intent write
        self.removed = 0                  # parts deleted by the last `committed_parts(clean=True)`

    # -- the layer ------------------------------------------------------------------------
    @property
    def fs(self) -> pafs.FileSystem:
        if self._fs is None:  # built on first use: constructing a Store does no I/O
            self._fs, self._base = filesystem(self.uri)
        return self._fs

    def path(self, relative: str) -> str:
        """The layer's path of `relative` (e.g. 'bucket/prefix/videos/k.parquet')."""
        self.fs
        return f"{self._base}/{relative}".rstrip("/") if relative else self._base

    def where(self, relative: str) -> str:
        """`relative` as a URI a person can read (redacted): used in messages."""
        return f"{self.uri}/{relative}" if relative else self.uri

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """`fn` over `items` on the store's thread pool (the layer releases the GIL); the first error is raised."""
        items = list(items)
        if len(items) <= 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(max_workers=min(self.threads, len(items))) as pool:
            return list(pool.map(fn, items))

    # -- writing ----------------------------------------------------------------------------
    def write_table(self, relative: str, table: pa.Table) -> None:
        """Write `table` as Parquet at `relative`, whole or not at all: no reader sees half a file."""
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        self.write_bytes(relative, sink.getvalue())

    def write_bytes(self, relative: str, data: bytes | pa.Buffer) -> None:
        dest = self.path(relative)
        with _errors("write", self.where(relative)):
            if not self.local:  # one upload; the object appears whole when it completes
                with self.fs.open_output_stream(dest) as stream:
                    stream.write(data)
                return
            parent, name = os.path.split(dest)
            self.fs.create_dir(parent, recursive=True)
            # A hidden temp name that no '*.parquet' glob matches; rename is atomic on one filesystem.
            tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
            try:
                with self.fs.open_output_stream(tmp) as stream:
                    stream.write(data)
                self.fs.move(tmp, dest)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    if self.fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                        self.fs.delete_file(tmp)

    def remove(self, relative: str) -> None:
        """Delete one file if it exists; any other failure is raised."""
        with _errors("delete", self.where(relative)):
            try:
                self.fs.delete_file(self.path(relative))
            except FileNotFoundError:
                pass

    def remove_prefix(self, relative: str) -> None:
        """Delete everything under `relative`/; failures (one object that would not go) are raised."""
        with _errors("delete", self.where(relative)):
            self.fs.delete_dir_contents(self.path(relative), missing_dir_ok=True)

    # -- reading ----------------------------------------------------------------------------
    def read_table(self, relative: str, columns: Sequence[str] | None = None) -> pa.Table:
        columns = list(columns) if columns is not None else None
        with _errors("read", self.where(relative)):
            if self.local:
                return pq.read_table(self.path(relative), columns=columns, filesystem=self.fs)
            # Whole, then parsed in memory: one GET (after the layer's HEAD) instead of a ranged GET
            # for the footer and another for the data; rows and parts are small.
            with self.fs.open_input_stream(self.path(relative)) as stream:
                data = stream.read()
        return pq.read_table(pa.BufferReader(data), columns=columns)

    def read_tables(self, relatives: Sequence[str], columns: Sequence[str] | None = None) -> list[pa.Table]:
        return self.map(lambda r: self.read_table(r, columns), relatives)

    def list(self, relative: str, *, recursive: bool = True) -> list[Entry]:
        """Visible `*.parquet` files under `relative` (names relative to it), sorted; [] if it is absent."""
        base = self.path(relative)
        with _errors("list", self.where(relative)):
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=recursive, allow_not_found=True))
        cut = len(base) + 1
        found = [Entry(i.path[cut:], i.size or 0, i.mtime_ns or 0) for i in infos
                 if i.type == pafs.FileType.File and is_visible(i.path[cut:])]
        return sorted(found, key=lambda e: e.name)

    def list_parquet(self, relative: str) -> list[str]:
        return [e.name for e in self.list(relative)]

    def exists(self, relative: str) -> bool:
        with _errors("look up", self.where(relative)):
            return self.fs.get_file_info(self.path(relative)).type != pafs.FileType.NotFound

    def check_writable(self) -> None:
        """Create the output and write and delete a probe object in it, or raise `OutputError`.

        Run before any model loads or video is touched, so a wrong --output costs seconds, not a job.
        """
        # In _index/: on object stores pyarrow leaves an empty "folder" marker object where a delete
        # empties a folder, and this one is hidden among the driver's files, not at OUTPUT's top.
        probe = f"{INDEX_DIR}/.posepipe-write-check-{uuid.uuid4().hex}"
        if self.local:
            root = self.path("")
            for folder, what in ((root, None), (f"{root}/poses", "poses"), (f"{root}/videos", "videos")):
                info = pafs.LocalFileSystem().get_file_info(folder)
                if info.type == pafs.FileType.File:
                    raise OutputError(f"--output {root} is a file, not a folder; name a folder (it is created if missing)"
                                      if what is None else f"--output {root}: {what} is a file where posepipe keeps a folder")
        try:
            self.write_bytes(probe, b"")
            self.remove(probe)
        except StorageError as exc:
            raise OutputError(f"--output is not writable: {exc}") from None

    # -- the commit state -------------------------------------------------------------------
    def completed_videos(self, *, refresh_index: bool = False) -> dict[str, dict]:
        """video_id -> its videos/ row, for every video recorded under OUTPUT.

        A row file that cannot be parsed counts as not done (logged); a store that fails to list or
        read raises `StorageError`, so a job never redoes everything because of one bad request.
        With `refresh_index`, a scan that had to read many rows outside the index writes a new one.
        """
        videos = self._scan()
        if refresh_index and self.stats.read > REINDEX_AFTER:
            self._write_index(videos)
        done: dict[str, dict] = {}
        for video in videos.values():
            for row in video.rows:
                done[row["video_id"]] = row
        return done

    def _scan(self, *, rescan: Iterable[str] | None = None) -> dict[str, _Video]:
        """List videos/ and learn every row, from the index where it is current, else by reading.

        With `rescan` (the job's own video keys, at its end), this store's previous scan stands in
        for the index: only rows that changed since, or that the job wrote, are read again.
        """
        started = time.perf_counter()
        stats = ScanStats()
        listed = {e.name[: -len(".parquet")]: e for e in self.list("videos", recursive=False)}
        stats.listed = len(listed)
        if rescan is not None and self._videos is not None:
            index, index_mtime, stats.index = self._videos, 2**63, self.stats.index
            force = set(rescan)
        else:
            (index, index_mtime, stats.index), force = self._read_index(), set()
        videos: dict[str, _Video] = {}
        unread: list[Entry] = []
        for key, entry in listed.items():
            known = index.get(key)
            if (known is not None and key not in force and known.size == entry.size
                    and known.mtime_ns == entry.mtime_ns and entry.mtime_ns <= index_mtime - INDEX_MARGIN_NS):
                known.from_index = known.from_index or index is not self._videos
                videos[key] = known
            else:
                unread.append(entry)

        def read(entry: Entry) -> _Video | None:
            try:
                rows = self.read_table(f"videos/{entry.name}").to_pylist()
            except StorageError as exc:
                if exc.missing:
                    return None  # deleted since it was listed
                raise  # the store is failing: redoing everything would be the wrong answer
            except (pa.ArrowException, ValueError) as exc:
                log.warning("%s is not a readable videos row (%s); its video counts as not done",
                            redact(self.where(f"videos/{entry.name}")), scrub(str(exc))[:200])
                stats.unreadable.append(entry.name)
                return None
            return _Video(entry.name[: -len(".parquet")], rows, entry.size, entry.mtime_ns)

        for video in self.map(read, unread):
            if video is not None:
                videos[video.key] = video
        stats.from_index = sum(v.from_index for v in videos.values())
        stats.read = len(unread)
        stats.seconds = time.perf_counter() - started
        self.stats = stats
        self._unclean |= {e.name[: -len(".parquet")] for e in unread}
        self._videos = videos
        return videos

    def _read_index(self) -> tuple[dict[str, _Video], int, str | None]:
        """The newest index's videos by key, its mtime, and its name ({} when there is none or it is unreadable)."""
        indexes = [e for e in self._list_hidden(INDEX_DIR) if e.name.startswith("videos-") and e.name.endswith(".parquet")]
        if not indexes:
            return {}, 0, None
        newest = max(indexes, key=lambda e: e.name)  # names start with a UTC stamp
        try:
            table = self.read_table(f"{INDEX_DIR}/{newest.name}")
            keys = table.column("_key").to_pylist()
            sizes = table.column("_size").to_pylist()
            mtimes = table.column("_mtime_ns").to_pylist()
            parts = table.column("_parts").to_pylist()
            rows = table.drop_columns(["_key", "_size", "_mtime_ns", "_parts"]).to_pylist()
        except StorageError as exc:
            if exc.missing:  # replaced by a newer one since the listing: read the rows themselves
                return {}, 0, None
            raise
        except (pa.ArrowException, KeyError, ValueError) as exc:
            log.warning("ignoring the unreadable videos index %s (%s); reading every videos row",
                        redact(self.where(f"{INDEX_DIR}/{newest.name}")), scrub(str(exc))[:200])
            return {}, 0, None
        index: dict[str, _Video] = {}
        for key, size, mtime, part_list, row in zip(keys, sizes, mtimes, parts, rows):
            video = index.setdefault(key, _Video(key, [], size, mtime, parts=part_list))
            video.rows.append(row)
        return index, newest.mtime_ns, newest.name

    def _list_dirs(self, relative: str) -> list[Entry]:
        """The folders directly under `relative` ([] if it is absent)."""
        base = self.path(relative)
        with _errors("list", self.where(relative)):
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=False, allow_not_found=True))
        return [Entry(i.path[len(base) + 1:], 0, i.mtime_ns or 0) for i in infos if i.type == pafs.FileType.Directory]

    def _list_hidden(self, relative: str) -> list[Entry]:
        base = self.path(relative)
        with _errors("list", self.where(relative)):
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=False, allow_not_found=True))
        return [Entry(i.path[len(base) + 1:], i.size or 0, i.mtime_ns or 0) for i in infos if i.type == pafs.FileType.File]

    def _write_index(self, videos: dict[str, _Video]) -> str:
        """Write the compacted index of `videos`, then delete the older index files (errors raised)."""
        from posepipe.pipeline.io.schema import VIDEOS_SCHEMA

        old = [e.name for e in self._list_hidden(INDEX_DIR) if e.name.startswith("videos-")]
        schema = pa.schema([*(f.with_nullable(True) for f in VIDEOS_SCHEMA),
                            pa.field("_key", pa.string()), pa.field("_size", pa.int64()),
                            pa.field("_mtime_ns", pa.int64()), pa.field("_parts", pa.list_(pa.string()))])
        records = [{**row, "_key": v.key, "_size": v.size, "_mtime_ns": v.mtime_ns, "_parts": v.parts}
                   for v in sorted(videos.values(), key=lambda v: v.key) for row in v.rows]
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"videos-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
        try:
            table = pa.Table.from_pylist(records, schema=schema)
        except (pa.ArrowException, TypeError) as exc:  # a row of an older, odd shape: the index is only a shortcut
            log.warning("not writing the videos index (%s); the next run reads every row", scrub(str(exc))[:200])
            return ""
        self.write_table(f"{INDEX_DIR}/{name}", table)
        for stale in old:
            self.remove(f"{INDEX_DIR}/{stale}")
        self._unclean.clear()
        return name

    def committed_parts(self, *, clean: bool = False, video_ids: Iterable[str] = (),
                        protect: Iterable[str] = ()) -> list[tuple[str, str]]:
        """(video_id, path relative to OUTPUT) of every committed part, sorted by path.

        Parts are known from the index for videos whose row has not changed since it was written;
        the others' folders are listed (in parallel). With `clean`, the parts no row names in those
        folders, and in the folders of `video_ids`, are deleted (only when no writer is left: at the
        end of a job), except in the folders of the keys in `protect` (a running job's).
        """
        videos = self._videos if self._videos is not None else self._scan()
        protect = set(protect)
        relist = {video_key(v) for v in video_ids} | set(self._unclean)
        relist |= {k for k, v in videos.items() if v.parts is None or not v.from_index}
        listed: dict[str, list[str]] | None = None
        if len(relist) > LIST_WHOLE_AFTER:  # one paged listing of poses/ beats thousands of small ones
            listed = {}
            for name in self.list_parquet("poses"):
                key, _, rest = name.partition("/")
                listed.setdefault(key, []).append(rest)

        # densepose/ folders exist only for videos a --densepose job wrote: one listing of its top level
        # says which, so a job never lists a folder per video for a table it never wrote.
        charted = {e.name for e in self._list_dirs(DENSEPOSE_DIR)} if clean else set()

        def settle(key: str) -> int:
            video = videos.get(key)
            row = video.rows[0] if video and video.rows else {}
            keep = row.get("commit_attempt") if row.get("status") == "ok" else "\0none"
            names = listed.get(key, []) if listed is not None else self.list_parquet(f"poses/{key}")
            if video is not None:
                video.parts = [n for n in names if is_committed_part(n, keep)]
            if not clean or key in protect:
                return 0
            stale = [f"poses/{key}/{n}" for n in names if not is_committed_part(n, keep)]
            if key in charted:  # the charts' parts go with the poses parts of the same attempt
                stale += [f"{DENSEPOSE_DIR}/{key}/{n}" for n in self.list_parquet(f"{DENSEPOSE_DIR}/{key}")
                          if not is_committed_part(n, keep)]
            for name in stale:  # already on the pool's threads: one folder's few parts in turn
                self.remove(name)
            return len(stale)

        self.removed = sum(self.map(settle, sorted(relist)))
        found: list[tuple[str, str]] = []
        for key, video in videos.items():
            row = video.rows[0] if video.rows else {}
            if row.get("status") == "ok":
                found += [(row["video_id"], f"poses/{key}/{n}") for n in video.parts or []]
        return sorted(found, key=lambda p: p[1])

    def begin_job(self, video_ids: Sequence[str]) -> None:
        """Record, before any worker writes, which videos this job may write parts for: if the job
        is killed, the next job's `finish_job` cleans their folders even when it does not redo them."""
        keys = sorted({video_key(v) for v in video_ids})
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        self._intent = f"intent-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
        self._intent_keys = keys
        self.renew_job(force=True)

    def renew_job(self, *, force: bool = False) -> None:
        """Rewrite this job's intent if INTENT_RENEW_S have passed (a heartbeat: a fresh intent
        tells other jobs' `finish_job` that this one is still running)."""
        if self._intent is None or (not force and time.monotonic() - self._intent_renewed < INTENT_RENEW_S):
            return
        self._intent_renewed = time.monotonic()
        table = pa.table({"video_key": pa.array(self._intent_keys, pa.string())})
        self.write_table(f"{INDEX_DIR}/{self._intent}", table.replace_schema_metadata({INTENT_OWNER: _this_process()}))

    def finish_job(self, video_ids: Sequence[str]) -> int:
        """End of a job (no worker left that could write): delete the parts no row names for the
        videos it processed, for those that jobs which did not end meant to write (intents not renewed
        for INTENT_STALE_S: a running job's are left alone), and for any whose row changed since the
        last index; then write `_committed.parquet` and a fresh index, and
        drop the intents it has settled. Returns the parts deleted."""
        stale_ns = time.time_ns() - int(INTENT_STALE_S * 1e9)
        found = [e for e in self._list_hidden(INDEX_DIR) if e.name.startswith("intent-")]
        # Ended: this job's own, those not renewed for INTENT_STALE_S, and those whose driver ran on
        # this machine since its last boot and is gone (a killed job, settled now rather than in 10 minutes).
        intents = [e.name for e in found if e.name == self._intent or e.mtime_ns < stale_ns
                   or self._owner_is_gone(e.name)]

        def keys_of(names: list[str]) -> set[str]:
            keys: set[str] = set()
            for name in names:
                try:
                    keys |= set(self.read_table(f"{INDEX_DIR}/{name}").column("video_key").to_pylist())
                except StorageError as exc:
                    if not exc.missing:
                        raise
            return keys

        # A running job's videos are left alone even when their rows changed since the index: one
        # of its finishes may still be writing a new attempt there.
        running = keys_of([e.name for e in found if e.name not in intents])
        videos = self._scan(rescan={video_key(v) for v in video_ids})  # the rows as committed now, this job's included
        if (not video_ids and not intents and all(v.from_index and v.parts is not None for v in videos.values())
                and self.exists(MANIFEST)):
            return 0  # a rerun that found everything done, after a job that ended: nothing to settle or write
        self._unclean |= keys_of(intents)
        parts = self.committed_parts(clean=True, video_ids=video_ids, protect=running)
        # The intents are settled once their folders are clean: dropped before the manifest and the
        # index (two caches, rebuilt by any later job), so a write that fails there (a full disk)
        # leaves no intent that would look like a running job's for 10 minutes.
        for name in intents:
            self.remove(f"{INDEX_DIR}/{name}")
        manifest = pa.table({"video_id": pa.array([p[0] for p in parts], pa.string()),
                             "path": pa.array([p[1] for p in parts], pa.string())})
        self.write_table(MANIFEST, manifest)
        self._write_index(self._videos or {})
        return self.removed

    def _owner_is_gone(self, name: str) -> bool:
        """Whether intent `name` was written by a driver on this machine, since its last boot, whose
        process no longer runs (its pid gone, or reused by a process started at another time)."""
        try:
            meta = self.read_table(f"{INDEX_DIR}/{name}").schema.metadata or {}
        except StorageError:
            return False
        owner = meta.get(INTENT_OWNER.encode(), b"").decode(errors="replace").split("|")
        here = _this_process().split("|")
        if len(owner) != 4 or owner[:2] != here[:2] or not owner[1] or not owner[2].isdigit():
            return False  # another machine, another boot, or an intent without an owner (an older version)
        return _process_start(int(owner[2])) != owner[3]


def _process_start(pid: int) -> str:
    """When process `pid` started (clock ticks since boot, /proc/PID/stat field 22); "" if it is gone
    or this system has no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()
    except (OSError, IndexError):
        return ""


@functools.lru_cache(maxsize=1)
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _this_process() -> str:
    import socket

    pid = os.getpid()
    return f"{socket.gethostname()}|{_boot_id()}|{pid}|{_process_start(pid)}"
