"""Finding videos under an input (folder, file or URI prefix) and opening them as streams.

S3 settings come from the standard AWS environment (AWS_ENDPOINT_URL, credentials, profile,
region) through boto3's default session, so MinIO-style endpoints work; nothing here prints or
stores a secret (URIs are stored without query strings or user info).
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator
from urllib.parse import urlsplit, urlunsplit

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts", ".3gp", ".ogv",
})
REMOTE_SCHEMES = ("s3", "gs", "az", "http", "https")


class InputError(ValueError):
    """The job's INPUT cannot be listed (missing folder, bad URI, no access)."""


@dataclass(frozen=True)
class VideoRef:
    video_id: str   # path relative to the input root, '/'-separated
    uri: str        # what to open: a local path or a URI
    size: int | None = None


def scheme_of(uri: str) -> str:
    scheme = urlsplit(uri).scheme.lower()
    return scheme if len(scheme) > 1 else ""  # 'C:' drive letters are not schemes


def is_remote(uri: str) -> bool:
    return scheme_of(uri) in REMOTE_SCHEMES


def redact(uri: str) -> str:
    """A URI safe to print and store: no user info, no query (pre-signed URLs carry secrets)."""
    parts = urlsplit(uri)
    if not parts.scheme or len(parts.scheme) == 1:
        return uri
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def local_path(uri: str) -> str:
    return urlsplit(uri).path if scheme_of(uri) == "file" else uri


def _is_video_name(name: str) -> bool:
    return posixpath.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def s3_client():  # noqa: ANN201 - boto3 client type is dynamic
    import boto3

    return boto3.session.Session().client("s3")


def _split_bucket(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    return parts.netloc, parts.path.lstrip("/")


def list_videos(input_uri: str) -> list[VideoRef]:
    """All videos under `input_uri`, sorted by video_id. A single file is returned as itself."""
    scheme = scheme_of(input_uri)
    if scheme in ("", "file"):
        return _list_local(Path(local_path(input_uri)))
    if scheme == "s3":
        return _list_s3(input_uri)
    if scheme in ("http", "https"):
        name = posixpath.basename(urlsplit(input_uri).path) or "video"
        return [VideoRef(video_id=name, uri=input_uri)]
    if scheme in ("gs", "az"):
        return _list_smart_open(input_uri)
    raise InputError(f"INPUT {redact(input_uri)!r}: unsupported scheme {scheme!r}; use a local path, file://, s3://, gs://, az:// or http(s)://")


def _list_local(root: Path) -> list[VideoRef]:
    if not root.exists():
        raise InputError(f"INPUT {root} does not exist; pass a folder of videos, a video file or a URI prefix")
    if root.is_file():
        return [VideoRef(video_id=root.name, uri=str(root), size=root.stat().st_size)]
    refs = [
        VideoRef(video_id=p.relative_to(root).as_posix(), uri=str(p), size=p.stat().st_size)
        for p in root.rglob("*")
        if p.is_file() and _is_video_name(p.name) and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(refs, key=lambda r: r.video_id)


def _list_s3(uri: str) -> list[VideoRef]:
    bucket, prefix = _split_bucket(uri)
    if not bucket:
        raise InputError(f"INPUT {uri!r}: no bucket name; write s3://BUCKET/PREFIX")
    client = s3_client()
    refs: list[VideoRef] = []
    try:
        # A key that is itself a video is a single-file input.
        if prefix and _is_video_name(prefix):
            head = client.head_object(Bucket=bucket, Key=prefix)
            return [VideoRef(video_id=posixpath.basename(prefix), uri=f"s3://{bucket}/{prefix}", size=head["ContentLength"])]
        folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if _is_video_name(key):
                    refs.append(VideoRef(video_id=key[len(folder):], uri=f"s3://{bucket}/{key}", size=obj["Size"]))
    except Exception as exc:  # botocore errors carry the reason; never the credentials
        raise InputError(f"cannot list {redact(uri)}: {type(exc).__name__}: {exc}. Check AWS_ENDPOINT_URL, credentials and the bucket name") from None
    return sorted(refs, key=lambda r: r.video_id)


def _list_smart_open(uri: str) -> list[VideoRef]:
    scheme = scheme_of(uri)
    try:
        if scheme == "gs":
            from google.cloud import storage  # type: ignore[import-not-found]

            bucket, prefix = _split_bucket(uri)
            blobs = storage.Client().list_blobs(bucket, prefix=prefix)
            refs = [VideoRef(b.name[len(prefix):].lstrip("/"), f"gs://{bucket}/{b.name}", b.size) for b in blobs if _is_video_name(b.name)]
        else:
            from azure.storage.blob import BlobServiceClient  # type: ignore[import-not-found]

            container, prefix = _split_bucket(uri)
            service = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
            blobs = service.get_container_client(container).list_blobs(name_starts_with=prefix)
            refs = [VideoRef(b.name[len(prefix):].lstrip("/"), f"az://{container}/{b.name}", b.size) for b in blobs if _is_video_name(b.name)]
    except ImportError:
        extra = "gcs" if scheme == "gs" else "azure"
        raise InputError(f"INPUT {uri!r} needs the optional dependencies: pip install 'posepipe[{extra}]'") from None
    except KeyError:
        raise InputError("az:// inputs need AZURE_STORAGE_CONNECTION_STRING in the environment") from None
    return sorted(refs, key=lambda r: r.video_id)


def open_binary(uri: str) -> IO[bytes]:
    """A seekable binary reader for any supported URI (smart-open; S3 through boto3's session)."""
    import smart_open

    if scheme_of(uri) == "s3":
        return smart_open.open(uri, "rb", transport_params={"client": s3_client()})
    return smart_open.open(local_path(uri) if scheme_of(uri) == "file" else uri, "rb")


def iter_chunks(reader: IO[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := reader.read(size):
        yield chunk
