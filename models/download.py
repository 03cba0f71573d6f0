"""Resolve a checkpoint URI to a local file: local paths as they are, remote ones through a cache.

    from posepipe.models.download import fetch
    path = fetch("https://download.openmmlab.com/.../hrnet_w32_coco_256x192-c78dce93_20200708.pth",
                 hash_prefix="c78dce93", filename="hrnet_w32_coco_256x192-c78dce93_20200708.pth")

Supported: plain paths and ``file://`` (used in place, never copied), ``http(s)://`` (resumable
download with HTTP Range), ``s3://`` (boto3's standard configuration: ``AWS_ENDPOINT_URL``,
credentials, profile, region) and, when smart-open's extras are installed, ``gs://`` and ``az://``.

The cache (``default_cache_dir()``) has two kinds of entry, each recorded with its source URI
(redacted) and sha256 in a ``<file>.source.json`` next to it:

- a catalogue model's official file, ``<cache>/<filename>`` (``filename=`` given): filled by the
  official URL, by ``posepipe weights fetch NAME --from MIRROR``, or by hand (a file placed there
  without a record is used as it is);
- any other URI (``--weights NAME=URI``): ``<cache>/by-uri/<key>/<name>``, where ``key`` hashes the
  normalised URI (scheme, host, path and query, without credentials or request signatures). Two
  URLs never share an entry, whatever their file names, and an entry is used only while its file
  still has the sha256 recorded when it was downloaded.

Downloads land as ``<name>.<key>.partial`` and are renamed into place only once complete and
checked. A per-entry lock keeps concurrent processes on one machine (e.g. several Ray actors) from
downloading the same file twice.

Hash policy: a full ``sha256`` we have pinned is enforced (a mismatching download is deleted); a
``hash_prefix`` taken from a file name (mmpose's ``-c78dce93_``) is checked, but a mismatch only
warns (``HashPrefixWarning``, naming both values) because these prefixes are not confirmed to be
sha256 prefixes of the 2020 files. Callers record ``sha256_file(path)`` of whatever is used.
Every error is a ``WeightsUnavailable`` that says how to supply the file instead. Messages never
contain credentials or query strings (pre-signed URLs carry signatures there).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import IO, Any, Iterator
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit
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
    """A checkpoint's sha256 is not the one pinned for it."""


class WeightsWarning(UserWarning):
    """Something about a checkpoint file worth knowing that does not stop the run."""


class HashPrefixWarning(WeightsWarning):
    """A file's sha256 does not start with the hash prefix in its published file name."""


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


def _expected_text(sha256: str | None, hash_prefix: str | None) -> str:
    return f"sha256 {sha256}" if sha256 else f"a sha256 starting with {hash_prefix}"


def _warn_prefix(path: Path, actual: str, hash_prefix: str | None) -> None:
    if hash_prefix and not actual.startswith(hash_prefix):
        warnings.warn(
            f"{path.name}: the hash prefix in its published file name is {hash_prefix}, but the file's sha256 "
            f"is {actual} (prefix {actual[:len(hash_prefix)]}). Using it anyway: whether these mmpose file-name "
            f"prefixes are sha256 prefixes is not established. Its actual sha256 is recorded in each run's "
            f"provenance; compare it with a copy you trust if in doubt.",
            HashPrefixWarning, stacklevel=3,
        )


# --------------------------------------------------------------------------- cache keys and records

# Query parameters that authenticate a request rather than name the file (pre-signed S3/GCS/Azure
# URLs, tokens): left out of the cache key, so a re-signed URL finds the same entry.
_CREDENTIAL_PARAMS = {"awsaccesskeyid", "signature", "expires", "sig", "se", "st", "sp", "sv", "sr", "spr", "skoid",
                      "sktid", "skt", "ske", "sks", "skv", "token", "access_token"}
RECORD_SUFFIX = ".source.json"


def _display_uri(uri: str) -> str:
    """The URI without user:password@, query string or fragment."""
    parts = urlsplit(uri)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else uri.split("?", 1)[0]


def normalise_uri(uri: str) -> str:
    """What identifies a remote file: scheme and host lower-cased, no credentials, fragment or request signature."""
    parts = urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1].lower()
    default_port = {"http": ":80", "https": ":443"}.get(parts.scheme.lower())
    if default_port and host.endswith(default_port):
        host = host[: -len(default_port)]
    query = sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                   if k.lower() not in _CREDENTIAL_PARAMS and not k.lower().startswith(("x-amz-", "x-goog-")))
    return urlunsplit((parts.scheme.lower(), host, parts.path or "/", urlencode(query), ""))


def uri_key(uri: str) -> str:
    """Hex sha256 of `normalise_uri(uri)`: the cache key of a URI."""
    return hashlib.sha256(normalise_uri(uri).encode("utf-8")).hexdigest()


def _cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def cache_path(uri: str, *, cache_dir: str | os.PathLike[str] | None = None, filename: str | None = None) -> Path:
    """Where `fetch(uri, cache_dir=..., filename=...)` keeps the file (whether or not it is there)."""
    root = _cache_root(cache_dir)
    if filename is not None:
        if not filename or filename in (".", "..") or "/" in filename or "\\" in filename:
            raise ValueError(f"filename={filename!r} must be a plain file name")
        return root / filename
    name = unquote(urlsplit(uri).path.rstrip("/").rsplit("/", 1)[-1])
    if not name or name in (".", "..") or "\\" in name:
        name = "checkpoint"
    return root / "by-uri" / uri_key(uri)[:16] / name


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + RECORD_SUFFIX)


def cache_record(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The record of a cached file (``source``, ``key``, ``sha256``, ``bytes``, ``fetched``) while it still
    describes the file there; None for a file placed by hand, replaced since, or not in the cache."""
    path = Path(path)
    try:
        record = json.loads(_record_path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not path.is_file() or record.get("sha256") != sha256_file(path):
        return None
    return record


def _write_record(target: Path, uri: str, sha: str, size: int) -> None:
    record = {"source": _display_uri(uri), "key": uri_key(uri), "sha256": sha, "bytes": size,
              "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = target.with_name(f"{target.name}{RECORD_SUFFIX}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, _record_path(target))


# --------------------------------------------------------------------------- messages


def _scrub(text: str) -> str:
    """Remove query strings and userinfo from URLs/paths quoted inside an exception's text."""
    text = re.sub(r"(\w+://)[^/\s@]*@", r"\1", text)
    return re.sub(r"(\S)\?[^\s'\")]*", r"\1", text)


class _Entry:
    """One cache entry being resolved: where it lives and what is expected of it."""

    def __init__(self, uri: str, target: Path, slot: bool, sha256: str | None, hash_prefix: str | None) -> None:
        self.uri, self.target, self.slot, self.sha256, self.hash_prefix = uri, target, slot, sha256, hash_prefix
        self.display = _display_uri(uri)
        self.key = uri_key(uri)
        self.partial = target.with_name(f"{target.name}.{self.key[:12]}.partial")

    def unavailable(self, reason: str) -> str:
        if not self.slot:
            return (f"could not download {self.display}: {reason}. Download the file yourself and pass the local "
                    f"copy with --weights NAME=PATH.")
        known = f" (expected {_expected_text(self.sha256, None)})" if self.sha256 else ""
        if known and self.target.is_file():
            known += f"; the file there now has sha256 {sha256_file(self.target)}, which does not match"
        return (f"could not download {self.display}: {reason}. Either place the file by hand at "
                f"{self.target}{known}, or pass a local copy with --weights NAME=PATH.")


# --------------------------------------------------------------------------- entry point


def fetch(
    uri: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
    hash_prefix: str | None = None,
    filename: str | None = None,
    progress: bool = False,
    download: bool = True,
    require_source: bool = False,
) -> Path:
    """Return a local path holding the checkpoint at `uri`, downloading it into the cache if needed.

    `sha256` (full hex digest) is enforced for local and remote files alike: a remote file that fails
    it is deleted. `hash_prefix` (its first characters, as in mmpose file names) is checked, and a
    mismatch only warns (HashPrefixWarning). `filename` makes the entry a catalogue model's official
    file, ``<cache>/<filename>``, which any source may fill (the official URL, a mirror, a user by
    hand); without it the entry belongs to `uri` alone (``<cache>/by-uri/<key>/<name>``).
    `require_source`: a ``filename`` entry counts only if it was downloaded from this very `uri`
    (``posepipe weights fetch NAME --from MIRROR``). `download=False` never goes to the network.
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
    try:
        target = cache_path(uri, cache_dir=cache_dir, filename=filename)
    except ValueError as exc:
        raise WeightsUnavailable(f"cannot cache {_display_uri(uri)}: {exc}") from None
    entry = _Entry(uri, target, filename is not None, sha256, hash_prefix)
    if _cache_hit(entry, require_source):
        return target
    if not download:
        raise WeightsUnavailable(entry.unavailable("it is not in the cache, and this command does not download"))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsUnavailable(
            f"cannot create the weights cache {target.parent} ({exc.strerror}); set POSEPIPE_CACHE to a writable "
            f"directory or pass a local copy with --weights NAME=PATH"
        ) from None
    with _file_lock(_cache_root(cache_dir), target.name if entry.slot else f"by-uri-{entry.key[:16]}"):
        if _cache_hit(entry, require_source):  # another process finished while we waited
            return target
        if scheme in ("http", "https"):
            _download_http(uri, entry, progress)
        else:
            _download_object(uri, scheme, entry, progress)
        partial = entry.partial
        actual = _sha256_uncached(partial)
        if sha256 is not None and actual != sha256:
            partial.unlink(missing_ok=True)
            raise WeightsHashMismatch(
                f"{entry.display}: downloaded file has sha256 {actual}, expected {_expected_text(sha256, None)}; "
                f"it was deleted. The server may be serving a different file: check the URL, or pass a "
                f"verified local copy with --weights NAME=PATH"
            )
        _write_record(target, uri, actual, partial.stat().st_size)
        os.replace(partial, target)
        _remember_hash(target, actual)
    _warn_prefix(target, actual, hash_prefix)
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
        if sha256 and actual != sha256:
            raise WeightsHashMismatch(
                f"{path}: sha256 is {actual}, expected {_expected_text(sha256, None)}; "
                f"this is not the published checkpoint"
            )
        _warn_prefix(path, actual, hash_prefix)
    return path


def _cache_hit(entry: _Entry, require_source: bool) -> bool:
    target = entry.target
    if not target.is_file():
        return False
    actual = sha256_file(target)
    if entry.sha256 is not None and actual != entry.sha256:
        # A stale or wrong file is a miss; it is kept (it may be a user's hand-placed file) until a
        # verified download replaces it.
        return False
    record = cache_record(target)  # None unless it describes this very file
    if entry.slot:
        if require_source and (record is None or record.get("key") != entry.key):
            return False
    elif record is None or record.get("key") != entry.key:
        return False  # a URI's entry: only what was downloaded from that URI, unchanged since
    _warn_prefix(target, actual, entry.hash_prefix)
    return True


@contextlib.contextmanager
def _file_lock(root: Path, name: str) -> Iterator[None]:
    """An exclusive advisory lock per cache entry, held while it downloads (POSIX; no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    locks = root / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- progress


class _Progress:
    """A download counter on stderr: redrawn with '\r' on a terminal, written once when done elsewhere
    (in a log the redraws would pile up); the label's hidden characters are escaped (it is a URL's)."""

    def __init__(self, enabled: bool, label: str, total: int | None, done: int = 0) -> None:
        self.enabled = enabled
        self.redraw = enabled and sys.stderr.isatty()  # elsewhere: one line when it is done
        self.label = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in label)
        self.total, self.done = total, done
        self._last = 0.0

    def update(self, n: int) -> None:
        self.done += n
        if self.redraw and time.monotonic() - self._last >= 0.5:
            self._last = time.monotonic()
            self._print("\r")

    def close(self) -> None:
        if self.enabled:
            self._print("\r" if self.redraw else "")
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


def _download_http(uri: str, entry: _Entry, progress: bool) -> None:
    import requests

    partial, display = entry.partial, entry.display
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
            raise WeightsUnavailable(entry.unavailable(_http_reason(exc))) from None
    have = partial.stat().st_size if partial.exists() else 0
    reason = f"the transfer broke {HTTP_ATTEMPTS} times ({_http_reason(last) if last else 'short read'}); " \
             f"{have} bytes are kept in {partial} and the next run resumes from there"
    raise WeightsUnavailable(entry.unavailable(reason))


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


def _download_object(uri: str, scheme: str, entry: _Entry, progress: bool) -> None:
    """Stream an object-store URI with smart_open (no resume: these transfers restart cleanly)."""
    partial, display = entry.partial, entry.display
    try:
        import smart_open

        params = _transport_params(scheme)
    except ImportError:
        extra = _SMART_OPEN_EXTRA[scheme]
        raise WeightsUnavailable(entry.unavailable(
            f"{scheme}:// support is not installed (pip install 'smart-open[{extra}]')")) from None
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
        raise WeightsUnavailable(entry.unavailable(_object_reason(exc))) from None


__all__ = [
    "HashPrefixWarning", "WeightsHashMismatch", "WeightsUnavailable", "WeightsWarning", "cache_path", "cache_record",
    "default_cache_dir", "fetch", "normalise_uri", "sha256_file", "uri_key",
]
