"""Finding videos under an input (folder, file or URI prefix) and opening them as streams.

S3 settings come from the standard AWS environment (AWS_ENDPOINT_URL, credentials, profile,
region) through boto3's default session, so MinIO-style endpoints work; nothing here prints or
stores a secret (URIs are stored without query strings or user info).

What the INPUT is, is decided once, here (`pipeline.io.uris`): a local path is made absolute, a
file:// URI becomes that path, an object-store URI becomes (bucket, prefix) and every listed key
travels verbatim in `VideoRef.uri` (``s3://BUCKET/KEY``, read back only by `uris.split_object_uri`),
an http(s) URL keeps its query (sent, never shown) and loses its fragment (never sent).
"""
from __future__ import annotations

import errno
import os
import posixpath
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator
from urllib.parse import unquote, urlsplit

from posepipe.pipeline.io.redaction import redact, scrub
from posepipe.pipeline.io.uris import (REMOTE_SCHEMES, URIError, is_remote, local_path, object_uri, scheme_of,  # noqa: F401 - re-exported
                                       split_object_uri, without_fragment)

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts", ".3gp", ".ogv",
})


class InputError(ValueError):
    """The job's INPUT cannot be listed (missing folder, bad URI, no access)."""


@dataclass(frozen=True)
class VideoRef:
    video_id: str   # path relative to the input root, '/'-separated (an object's key relative to the prefix, verbatim)
    uri: str        # what to open: an absolute local path, scheme://BUCKET/KEY (key verbatim) or a URL
    size: int | None = None
    version: str | None = None   # ETag (object stores) or mtime in ns (files): changes when the file is replaced

    @property
    def identity(self) -> str | None:
        """The input as listed: a rerun redoes a video whose identity differs from its row's."""
        if self.size is None and self.version is None:
            return None
        return f"size={self.size};version={self.version}"


def _is_video_name(name: str) -> bool:
    return posixpath.splitext(name)[1].lower() in VIDEO_EXTENSIONS


# Transient S3 failures (throttling, 5xx, dropped connections, an endpoint briefly unreachable)
# are retried by botocore's "standard" mode with exponential backoff and jitter (capped at 20 s a
# wait); about two minutes in all before an outage is reported. AWS_RETRY_MODE / AWS_MAX_ATTEMPTS
# in the environment take precedence, as everywhere in the AWS SDKs.
S3_RETRY = {"mode": "standard", "max_attempts": 10}


def s3_client():  # noqa: ANN201 - boto3 client type is dynamic
    import boto3
    from botocore.config import Config

    retries = {} if ("AWS_MAX_ATTEMPTS" in os.environ or "AWS_RETRY_MODE" in os.environ) else S3_RETRY
    return boto3.session.Session().client("s3", config=Config(retries=retries) if retries else None)


def _split_bucket(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of a typed object-store URI; the prefix verbatim (a key is never URL-parsed)."""
    try:
        bucket, key = split_object_uri(uri)
    except URIError as exc:
        raise InputError(f"INPUT {redact(uri)!r}: {exc}") from None
    return bucket, key


def absolute_path(path: str | os.PathLike[str]) -> Path:
    """`path` made absolute once, at the edge, so a stored path names the same file from any working
    directory. The folders above are resolved (links and '..' as the system follows them); the last
    name is kept as given, so a link to a video keeps its own name (its video_id)."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        return Path(os.path.realpath(path))
    return Path(os.path.realpath(path.parent)) / path.name


@dataclass(frozen=True)
class Listing:
    """What an INPUT holds: the videos to process, and each video-named entry left out, with why."""
    videos: list[VideoRef]
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (name relative to INPUT, reason)


def list_videos(input_uri: str) -> list[VideoRef]:
    """All videos under `input_uri`, sorted by video_id. A single file is returned as itself."""
    return scan_inputs(input_uri).videos


def scan_inputs(input_uri: str) -> Listing:
    """`list_videos`, plus the entries that look like videos but cannot be processed, and why.

    The same rules hold locally and in object stores: names (a file's, or a folder's on its path)
    starting with '.' are hidden and skipped; locally, links are followed once (a broken or looping
    link is skipped with its reason) and only regular files are videos (not FIFOs or devices).
    """
    scheme = scheme_of(input_uri)
    if scheme in ("", "file"):
        try:
            path = local_path(input_uri)
        except URIError as exc:
            raise InputError(f"INPUT {exc}") from None
        return _scan_local(absolute_path(path))
    if scheme == "s3":
        return _scan_s3(input_uri)
    if scheme in ("http", "https"):
        # A URL the user typed: its query is part of it (signed URLs need it), its fragment is not
        # (never sent). The video is named by the last segment of its path, percent-decoded.
        url = without_fragment(input_uri)
        try:
            path = urlsplit(url).path
        except ValueError as exc:
            raise InputError(f"INPUT {redact(input_uri)!r} is not a valid URL ({exc})") from None
        name = unquote(posixpath.basename(path))
        name = (name if "/" not in name else posixpath.basename(path)) or "video"  # an encoded '/' stays encoded
        return Listing([VideoRef(video_id=name, uri=url)])
    if scheme in ("gs", "az"):
        return _list_smart_open(input_uri)
    raise InputError(f"INPUT {redact(input_uri)!r}: unsupported scheme {scheme!r}; use a local path, file://, s3://, gs://, "
                     f"az:// or http(s):// (a local name with ':' in it is written ./{input_uri})")


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a regular file"


def _stat_problem(path: Path) -> tuple[os.stat_result | None, str]:
    """`os.stat` following links, or None and the reason a person would want to hear."""
    try:
        return path.stat(), ""
    except FileNotFoundError:
        if path.is_symlink():
            return None, f"broken symbolic link (its target {os.readlink(path)} does not exist)"
        return None, "disappeared while the input was listed"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, "symbolic link loop (the link points back to itself)"
        return None, f"cannot be read ({exc.strerror})"


def _scan_local(root: Path) -> Listing:
    st, problem = _stat_problem(root)
    if st is None:
        if problem.startswith("disappeared"):
            raise InputError(f"INPUT {root} does not exist; pass a folder of videos, a video file or a URI prefix")
        raise InputError(f"INPUT {root}: {problem}")
    if stat.S_ISREG(st.st_mode):
        if _undecodable(root.name):
            raise InputError(f"INPUT {root}: {UNDECODABLE}")
        return Listing([VideoRef(video_id=root.name, uri=str(root), size=st.st_size, version=str(st.st_mtime_ns))])
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"INPUT {root} is {_file_kind(st.st_mode)}, not a video file or a folder of videos")
    refs: list[VideoRef] = []
    skipped: list[tuple[str, str]] = []
    seen_dirs = {(st.st_dev, st.st_ino)}
    # Real folders first, links to folders after them: a link to a folder that is also searched as
    # itself (or to one of its ancestors: a loop) is reported, never searched twice.
    pending: list[tuple[Path, str]] = [(root, "")]
    links: list[tuple[Path, str]] = []
    while pending or links:
        folder, prefix = pending.pop() if pending else links.pop(0)
        if folder is not root:
            dir_st, problem = _stat_problem(folder)
            if dir_st is None:
                skipped.append((prefix, problem))
                continue
            if (dir_st.st_dev, dir_st.st_ino) in seen_dirs:
                skipped.append((prefix, "link to a folder already searched (a loop or a second link)"))
                continue
            seen_dirs.add((dir_st.st_dev, dir_st.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            skipped.append((prefix or ".", f"folder cannot be listed ({exc.strerror})"))
            continue
        for entry in entries:
            rel = prefix + entry.name
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows links
            except OSError:
                is_dir = False
            if is_dir:
                (links if entry.is_symlink() else pending).append((path, rel + "/"))
                continue
            if not _is_video_name(entry.name):
                continue
            if _hidden(rel):
                skipped.append((rel, "hidden (a name on its path starts with '.')"))
                continue
            if _undecodable(rel):
                skipped.append((rel, UNDECODABLE))
                continue
            file_st, problem = _stat_problem(path)
            if file_st is None:
                skipped.append((rel, problem))
            elif not stat.S_ISREG(file_st.st_mode):
                skipped.append((rel, f"{_file_kind(file_st.st_mode)}, not a video file"))
            else:
                refs.append(VideoRef(video_id=rel, uri=str(path), size=file_st.st_size, version=str(file_st.st_mtime_ns)))
    return Listing(sorted(refs, key=lambda r: r.video_id), sorted(skipped))


# A name the file system holds as bytes that are not UTF-8 (Python keeps them as lone surrogates):
# a video id is text in every table, so such a file is skipped with this reason, never a failed job.
UNDECODABLE = ("its name is not valid UTF-8 text (video ids are stored as text in Parquet); rename it, "
               "e.g. with `convmv -f latin1 -t utf8`")


def _undecodable(name: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in name)


def _hidden(relative_key: str) -> bool:
    return any(part.startswith(".") for part in relative_key.split("/") if part)


def _scan_s3(uri: str) -> Listing:
    bucket, prefix = _split_bucket(uri)
    if not bucket:
        raise InputError(f"INPUT {redact(uri)!r}: no bucket name; write s3://BUCKET/PREFIX")
    client = s3_client()
    refs: list[VideoRef] = []
    skipped: list[tuple[str, str]] = []
    try:
        # A key that is itself a video is a single-file input.
        if prefix and _is_video_name(prefix):
            head = client.head_object(Bucket=bucket, Key=prefix)
            return Listing([VideoRef(video_id=posixpath.basename(prefix), uri=object_uri("s3", bucket, prefix),
                                     size=head["ContentLength"], version=head.get("ETag", "").strip('"') or None)])
        folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                relative = key[len(folder):]
                if not _is_video_name(key):
                    continue
                if _hidden(relative):
                    skipped.append((relative, "hidden (a name on its path starts with '.')"))
                else:
                    refs.append(VideoRef(video_id=relative, uri=object_uri("s3", bucket, key), size=obj["Size"],
                                         version=obj.get("ETag", "").strip('"') or None))
    except Exception as exc:  # botocore errors carry the reason; never the credentials
        raise InputError(f"cannot list {redact(uri)}: {type(exc).__name__}: {scrub(str(exc))}. "
                         "Check AWS_ENDPOINT_URL, credentials and the bucket name") from None
    return Listing(sorted(refs, key=lambda r: r.video_id), sorted(skipped))


def _list_smart_open(uri: str) -> Listing:
    scheme = scheme_of(uri)
    try:
        if scheme == "gs":
            from google.cloud import storage  # type: ignore[import-not-found]

            bucket, prefix = _split_bucket(uri)
            blobs = storage.Client().list_blobs(bucket, prefix=prefix)
            refs = [VideoRef(b.name[len(prefix):].lstrip("/"), object_uri("gs", bucket, b.name), b.size) for b in blobs
                    if _is_video_name(b.name) and not _hidden(b.name[len(prefix):])]
        else:
            from azure.storage.blob import BlobServiceClient  # type: ignore[import-not-found]

            container, prefix = _split_bucket(uri)
            service = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
            blobs = service.get_container_client(container).list_blobs(name_starts_with=prefix)
            refs = [VideoRef(b.name[len(prefix):].lstrip("/"), object_uri("az", container, b.name), b.size) for b in blobs
                    if _is_video_name(b.name) and not _hidden(b.name[len(prefix):])]
    except ImportError:
        extra = "gcs" if scheme == "gs" else "azure"
        raise InputError(f"INPUT {uri!r} needs the optional dependencies: pip install 'posepipe[{extra}]'") from None
    except KeyError:
        raise InputError("az:// inputs need AZURE_STORAGE_CONNECTION_STRING in the environment") from None
    return Listing(sorted(refs, key=lambda r: r.video_id))


def open_binary(uri: str) -> IO[bytes]:
    """A seekable binary reader for any supported URI (smart-open; S3 through boto3's session).

    Objects are opened by their (bucket, key) pair, never by handing smart-open the URI string: its
    URI parser is not ours, and a key is never parsed twice."""
    import smart_open

    scheme = scheme_of(uri)
    if scheme == "s3":
        import smart_open.s3

        bucket, key = split_object_uri(uri)
        return smart_open.s3.open(bucket, key, "rb", client=s3_client())
    if scheme == "gs":
        import smart_open.gcs

        bucket, key = split_object_uri(uri)
        return smart_open.gcs.open(bucket, key, "rb")
    if scheme == "az":
        import smart_open.azure
        from azure.storage.blob import BlobServiceClient  # type: ignore[import-not-found]

        container, key = split_object_uri(uri)
        client = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
        return smart_open.azure.open(container, key, "rb", client=client)
    if scheme in ("http", "https"):
        return smart_open.open(without_fragment(uri), "rb")
    return open(local_path(uri), "rb")


def iter_chunks(reader: IO[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := reader.read(size):
        yield chunk
