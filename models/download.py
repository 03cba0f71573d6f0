"""Resolve a checkpoint URI to a local file: local paths as they are, remote ones through a cache.

    from models.download import fetch
    path = fetch("https://download.openmmlab.com/.../hrnet_w32_coco_256x192-c78dce93_20200708.pth",
                 hash_prefix="c78dce93")

Supported: plain paths and ``file://`` (used in place, never copied), ``http(s)://`` (resumable
download with HTTP Range), ``s3://`` (boto3's standard configuration: ``AWS_ENDPOINT_URL``,
credentials, profile, region) and, when smart-open's extras are installed, ``gs://`` and ``az://``.

Remote files land in ``default_cache_dir()`` as ``<name>.partial`` and are renamed into place
only once complete and, when a hash is known, verified. A per-file lock keeps concurrent
processes on one machine (e.g. several Ray actors) from downloading the same file twice.
Every error is a ``WeightsUnavailable`` that says where to put the file by hand instead.
Messages never contain credentials or query strings (pre-signed URLs carry signatures there).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Iterator
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

CHUNK = 1 << 20                   # bytes per read/write and hash update
CONNECT_TIMEOUT_S = 15.0
READ_TIMEOUT_S = 60.0             # longest silence tolerated mid-download
HTTP_ATTEMPTS = 3                 # a broken transfer is resumed (Range) this many times in all
RETRY_PAUSE_S = 1.0               # pause before a retry when the last attempt received nothing
OBJECT_STORE_SCHEMES = ("s3", "gs", "az")
_SMART_OPEN_EXTRA = {"gs": "gcs", "az": "azure", "s3": "s3"}


class WeightsUnavailable(RuntimeError):
    """A checkpoint could not be found, downloaded or verified."""


class WeightsHashMismatch(WeightsUnavailable):
    """A checkpoint's sha256 is not the one published for it."""


# --------------------------------------------------------------------------- cache location


def default_cache_dir() -> Path:
    """``$POSEPIPE_CACHE``, else ``$XDG_CACHE_HOME/posepipe/weights``, else ``~/.cache/posepipe/weights``."""
    if os.environ.get("POSEPIPE_CACHE"):
        return Path(os.environ["POSEPIPE_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "posepipe" / "weights"
    return Path.home() / ".cache" / "posepipe" / "weights"


# --------------------------------------------------------------------------- hashing

_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _sha256_uncached(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks; remembered per (path, size, mtime) in this process."""
    path = Path(path)
    key = _stat_key(path)
    with _HASH_LOCK:
        if key in _HASH_CACHE:
            return _HASH_CACHE[key]
    value = _sha256_uncached(path)
    with _HASH_LOCK:
        _HASH_CACHE[key] = value
    return value


def _remember_hash(path: Path, value: str) -> None:
    with _HASH_LOCK:
        _HASH_CACHE[_stat_key(path)] = value


def _check_expected(sha256: str | None, hash_prefix: str | None) -> tuple[str | None, str | None]:
    for label, value in (("sha256", sha256), ("hash_prefix", hash_prefix)):
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{1,64}", value):
            raise ValueError(f"{label}={value!r} is not a hex sha256 digest (or a prefix of one)")
    if sha256 is not None and len(sha256) != 64:
        raise ValueError(f"sha256={sha256!r} has {len(sha256)} hex digits, not 64; pass a prefix as hash_prefix=")
    return (sha256.lower() if sha256 else None), (hash_prefix.lower() if hash_prefix else None)


def _hash_matches(actual: str, sha256: str | None, hash_prefix: str | None) -> bool:
    return (sha256 is None or actual == sha256) and (hash_prefix is None or actual.startswith(hash_prefix))


def _expected_text(sha256: str | None, hash_prefix: str | None) -> str:
    return f"sha256 {sha256}" if sha256 else f"a sha256 starting with {hash_prefix}"


# --------------------------------------------------------------------------- messages


def _display_uri(uri: str) -> str:
    """The URI without user:password@, query string or fragment."""
    parts = urlsplit(uri)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else uri.split("?", 1)[0]


def _scrub(text: str) -> str:
    """Remove query strings and userinfo from URLs/paths quoted inside an exception's text."""
    text = re.sub(r"(\w+://)[^/\s@]*@", r"\1", text)
    return re.sub(r"(\S)\?[^\s'\")]*", r"\1", text)


def _unavailable_text(display: str, reason: str, target: Path, sha256: str | None, hash_prefix: str | None) -> str:
    known = f" (expected {_expected_text(sha256, hash_prefix)})" if (sha256 or hash_prefix) else ""
    if known and target.is_file():
        known += f"; the file there now has sha256 {sha256_file(target)}, which does not match"
    return (
        f"could not download {display}: {reason}.\n"
        f"Either place the file by hand at {target}{known}, "
        f"or pass a local copy with --weights NAME=PATH."
    )


# --------------------------------------------------------------------------- entry point


def fetch(
    uri: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
    hash_prefix: str | None = None,
    filename: str | None = None,
    progress: bool = False,
) -> Path:
    """Return a local path holding the checkpoint at `uri`, downloading it into the cache if needed.

    `sha256` (full hex digest) or `hash_prefix` (its first characters, as in mmpose/torchvision file
    names) are checked for local and remote files alike; a remote file that fails the check is
    deleted. `filename` names the cached file (default: the URI's last path component).
    """
    uri = os.fspath(uri)
    sha256, hash_prefix = _check_expected(sha256, hash_prefix)
    scheme = urlsplit(uri).scheme.lower() if "://" in uri else ""
    if scheme in ("", "file"):
        return _local(uri, scheme, sha256, hash_prefix)
    if scheme not in ("http", "https", *OBJECT_STORE_SCHEMES):
        raise WeightsUnavailable(
            f"unsupported checkpoint URI scheme {scheme!r} in {_display_uri(uri)}; use a local path, "
            f"file://, http(s)://, s3://, gs:// or az://"
        )
    display = _display_uri(uri)
    name = filename or unquote(urlsplit(uri).path.rstrip("/").rsplit("/", 1)[-1])
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise WeightsUnavailable(f"cannot derive a cache file name from {display}; pass filename=")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / name

    if _cache_hit(target, sha256, hash_prefix):
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsUnavailable(
            f"cannot create the weights cache {root} ({exc.strerror}); set POSEPIPE_CACHE to a writable "
            f"directory or pass a local copy with --weights NAME=PATH"
        ) from None
    with _file_lock(root, name):
        if _cache_hit(target, sha256, hash_prefix):  # another process finished while we waited
            return target
        partial = target.with_name(target.name + ".partial")
        if scheme in ("http", "https"):
            _download_http(uri, partial, display, target, sha256, hash_prefix, progress)
        else:
            _download_object(uri, scheme, partial, display, target, sha256, hash_prefix, progress)
        actual = _sha256_uncached(partial)
        if not _hash_matches(actual, sha256, hash_prefix):
            partial.unlink(missing_ok=True)
            raise WeightsHashMismatch(
                f"{display}: downloaded file has sha256 {actual}, expected {_expected_text(sha256, hash_prefix)}; "
                f"it was deleted. The server may be serving a different file: check the URL, or pass a "
                f"verified local copy with --weights NAME=PATH"
            )
        os.replace(partial, target)
        _remember_hash(target, actual)
    return target


def _local(uri: str, scheme: str, sha256: str | None, hash_prefix: str | None) -> Path:
    if scheme == "file":
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise WeightsUnavailable(f"file:// URI with a remote host is not supported: {_display_uri(uri)}")
        path = Path(url2pathname(unquote(parts.path)))
    else:
        path = Path(uri).expanduser()
    if not path.is_file():
        what = "is a directory, not a checkpoint file" if path.is_dir() else "does not exist"
        raise WeightsUnavailable(
            f"checkpoint {path} {what}. Supply the file with --weights NAME=PATH (a local path or a "
            f"file://, http(s):// or s3:// URI), or omit --weights to download the official checkpoint"
        )
    if sha256 or hash_prefix:
        actual = sha256_file(path)
        if not _hash_matches(actual, sha256, hash_prefix):
            raise WeightsHashMismatch(
                f"{path}: sha256 is {actual}, expected {_expected_text(sha256, hash_prefix)}; "
                f"this is not the published checkpoint"
            )
    return path


def _cache_hit(target: Path, sha256: str | None, hash_prefix: str | None) -> bool:
    if not target.is_file():
        return False
    if sha256 is None and hash_prefix is None:
        return True
    # A stale or corrupt entry is a miss; it is kept (it may be a user's hand-placed file) until a
    # verified download replaces it.
    return _hash_matches(sha256_file(target), sha256, hash_prefix)


@contextlib.contextmanager
def _file_lock(root: Path, name: str) -> Iterator[None]:
    """An exclusive advisory lock per cached file, held while it downloads (POSIX; no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    locks = root / ".locks"
    locks.mkdir(exist_ok=True)
    with open(locks / f"{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- progress


class _Progress:
    def __init__(self, enabled: bool, label: str, total: int | None, done: int = 0) -> None:
        self.enabled, self.label, self.total, self.done = enabled, label, total, done
        self._last = 0.0

    def update(self, n: int) -> None:
        self.done += n
        if self.enabled and time.monotonic() - self._last >= 0.5:
            self._last = time.monotonic()
            self._print("\r")

    def close(self) -> None:
        if self.enabled:
            self._print("\r")
            sys.stderr.write("\n")

    def _print(self, lead: str) -> None:
        mb = self.done / 1e6
        tail = f"{mb:.1f}/{self.total / 1e6:.1f} MB" if self.total else f"{mb:.1f} MB"
        sys.stderr.write(f"{lead}downloading {self.label}: {tail}")
        sys.stderr.flush()


def _copy(src: IO[bytes] | Iterator[bytes], dst: IO[bytes], bar: _Progress) -> None:
    chunks = iter(lambda: src.read(CHUNK), b"") if hasattr(src, "read") else src
    for chunk in chunks:
        if chunk:
            dst.write(chunk)
            bar.update(len(chunk))


def _finish(handle: IO[bytes]) -> None:
    handle.flush()
    os.fsync(handle.fileno())


# --------------------------------------------------------------------------- http(s)


class _Retryable(Exception):
    """The transfer broke after the server answered; what arrived is kept in the .partial file."""


class _Restart(_Retryable):
    """The .partial could not be resumed and was deleted: try again at once from byte 0."""


def _http_reason(exc: BaseException) -> str:
    import requests

    text = str(exc)
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        hint = {404: " (the file is not at this URL; it may have moved)",
                401: " (the server wants credentials)", 403: " (access denied)"}.get(status, "")
        return f"HTTP {status} {exc.response.reason or ''}".rstrip() + hint
    if isinstance(exc, _Retryable):
        return str(exc)
    if "IncompleteRead" in text or isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the connection dropped mid-transfer"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS error ({_scrub(text)})"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"connection timed out after {CONNECT_TIMEOUT_S:.0f} s (no internet, or a firewall?)"
    if isinstance(exc, requests.exceptions.ReadTimeout) or type(exc).__name__ == "ReadTimeoutError":
        return f"the server stopped sending data for {READ_TIMEOUT_S:.0f} s"
    if isinstance(exc, requests.exceptions.ConnectionError):
        low = text.lower()
        if any(s in low for s in ("name or service not known", "nodename nor servname", "name resolution",
                                  "getaddrinfo failed", "no address associated")):
            return "DNS lookup failed (no internet access?)"
        if "connection refused" in low:
            return "connection refused (nothing is listening at that address)"
        if "network is unreachable" in low:
            return "network is unreachable (no internet access?)"
    return f"{type(exc).__name__}: {_scrub(text)}"


def _download_http(uri: str, partial: Path, display: str, target: Path,
                   sha256: str | None, hash_prefix: str | None, progress: bool) -> None:
    import requests

    last: BaseException | None = None
    for attempt in range(HTTP_ATTEMPTS):
        before = partial.stat().st_size if partial.exists() else 0
        try:
            _http_attempt(uri, partial, display, progress)
            return
        except _Restart as exc:
            last = exc
        except _Retryable as exc:
            last = exc.__cause__ or exc
            if (partial.stat().st_size if partial.exists() else 0) <= before:
                time.sleep(RETRY_PAUSE_S * (attempt + 1))  # no progress: back off before trying again
        except requests.RequestException as exc:
            raise WeightsUnavailable(
                _unavailable_text(display, _http_reason(exc), target, sha256, hash_prefix)
            ) from None
    have = partial.stat().st_size if partial.exists() else 0
    reason = f"the transfer broke {HTTP_ATTEMPTS} times ({_http_reason(last) if last else 'short read'}); " \
             f"{have} bytes are kept in {partial} and the next run resumes from there"
    raise WeightsUnavailable(_unavailable_text(display, reason, target, sha256, hash_prefix))


class _RawReader:
    def __init__(self, raw: Any, decode: bool) -> None:
        self.raw, self.decode = raw, decode

    def read(self, n: int) -> bytes:
        return self.raw.read(n, decode_content=self.decode)


def _http_attempt(uri: str, partial: Path, display: str, progress: bool) -> None:
    import requests
    import urllib3

    offset = partial.stat().st_size if partial.exists() else 0
    headers = {"Accept-Encoding": "identity", "User-Agent": "posepipe"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with requests.get(uri, headers=headers, stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)) as r:
        if r.status_code == 416 and offset:
            # Range past the end: the .partial is complete if the server says so, otherwise stale.
            m = re.fullmatch(r"bytes \*/(\d+)", r.headers.get("Content-Range", "").strip())
            if m and int(m.group(1)) == offset:
                return
            partial.unlink()
            raise _Restart("the server has fewer bytes than the partial download")
        if r.status_code not in (200, 206):
            raise requests.HTTPError(f"HTTP {r.status_code}", response=r)
        append = False
        if r.status_code == 206:
            m = re.match(r"bytes (\d+)-", r.headers.get("Content-Range", ""))
            append = bool(m) and int(m.group(1)) == offset
            if not append:  # a range we did not ask for: start over
                partial.unlink(missing_ok=True)
                raise _Restart("the server answered a range we did not ask for")
        # We ask for identity; a server that compresses anyway gets decoded, but then byte offsets
        # are not resumable, so a break restarts from zero.
        encoded = r.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
        if encoded and append:
            partial.unlink(missing_ok=True)
            raise _Restart("the server compressed a range response")
        length = r.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() and not encoded else None
        start = offset if append else 0
        bar = _Progress(progress, display, (start + expected) if expected is not None else None, start)
        with open(partial, "ab" if append else "wb") as out:
            try:  # raw.read hands over what arrived before a break; iter_content would drop it
                _copy(_RawReader(r.raw, decode=encoded), out, bar)
            except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
                _finish(out)
                if encoded:
                    partial.unlink(missing_ok=True)
                raise _Retryable("transfer broke") from exc
            finally:
                bar.close()
            _finish(out)
        if expected is not None and partial.stat().st_size != start + expected:
            raise _Retryable(f"short read: {partial.stat().st_size - start} of {expected} bytes")


# --------------------------------------------------------------------------- object stores


def _transport_params(scheme: str) -> dict[str, Any]:
    if scheme == "s3":
        import boto3
        import botocore

        session = boto3.session.Session()  # env, profile, region, credential chain as the AWS CLI
        kwargs: dict[str, Any] = {}
        major, minor = (int(x) for x in botocore.__version__.split(".")[:2])
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and (major, minor) < (1, 31):  # older botocore ignores AWS_ENDPOINT_URL
            kwargs["endpoint_url"] = endpoint
        return {"client": session.client("s3", **kwargs)}
    if scheme == "az":
        from azure.storage.blob import BlobServiceClient

        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        if conn:
            return {"client": BlobServiceClient.from_connection_string(conn)}
        account = os.environ.get("AZURE_STORAGE_ACCOUNT")
        if not account:
            raise WeightsUnavailable(
                "az:// needs AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with azure-identity"
            )
        from azure.identity import DefaultAzureCredential

        return {"client": BlobServiceClient(f"https://{account}.blob.core.windows.net",
                                            credential=DefaultAzureCredential())}
    return {}  # gs: smart_open builds google.cloud.storage.Client() from the default credentials


def _object_reason(exc: BaseException) -> str:
    seen = exc
    while seen is not None:  # smart_open wraps the botocore error in an OSError
        if isinstance(getattr(seen, "response", None), dict) or type(seen).__name__ == "NoCredentialsError":
            exc = seen
            break
        seen = seen.__cause__ or seen.__context__
    name = type(exc).__name__
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:  # botocore ClientError
        code = response["Error"].get("Code", "?")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        if code in ("NoSuchKey", "404", "NotFound"):
            return f"no such object (HTTP {status} {code})"
        if code in ("NoSuchBucket",):
            return f"no such bucket (HTTP {status} {code})"
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"access denied (HTTP {status} {code}); check the AWS credentials/profile in use"
        return f"HTTP {status} {code}"
    if name == "NoCredentialsError":
        return "no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a role)"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError"):
        return f"cannot reach the storage endpoint ({_scrub(str(exc))}; no internet access?)"
    return f"{name}: {_scrub(str(exc))}"


def _download_object(uri: str, scheme: str, partial: Path, display: str, target: Path,
                     sha256: str | None, hash_prefix: str | None, progress: bool) -> None:
    """Stream an object-store URI with smart_open (no resume: these transfers restart cleanly)."""
    try:
        import smart_open

        params = _transport_params(scheme)
    except ImportError:
        extra = _SMART_OPEN_EXTRA[scheme]
        raise WeightsUnavailable(_unavailable_text(
            display, f"{scheme}:// support is not installed (pip install 'smart-open[{extra}]')",
            target, sha256, hash_prefix)) from None
    try:
        with smart_open.open(uri, "rb", compression="disable", transport_params=params) as src, \
                open(partial, "wb") as out:
            bar = _Progress(progress, display, None)
            try:
                _copy(src, out, bar)
            finally:
                bar.close()
            _finish(out)
    except Exception as exc:  # botocore/google/azure errors share no base class
        partial.unlink(missing_ok=True)
        raise WeightsUnavailable(
            _unavailable_text(display, _object_reason(exc), target, sha256, hash_prefix)
        ) from None


__all__ = ["WeightsHashMismatch", "WeightsUnavailable", "default_cache_dir", "fetch", "sha256_file"]
