"""Reading an input object by byte ranges, so a shard costs the bytes it decodes, not the whole video.

The decoder (PyAV's FFmpeg) reads through a Python file object. `RangeReader` is that object for
any input: every read it cannot answer from memory becomes one *bounded* ranged GET (never an
open-ended `bytes=N-` whose unread tail the server sends anyway). Sequential reads grow the next
request (64 KiB doubling to 2 MiB) so a decode costs few requests; a seek starts small again. A
`limit` (where the next shard's keyframe begins, from the container index) is an end of file for
the decoder, so it flushes its last frames instead of reading the next shard's packets; the video
module lifts it if a stream turns out to need more. `known` pre-loads byte ranges another process
already read (the container header the probe fetched), so every shard of a video opens without
fetching it again.

Transport: S3 through boto3 (botocore's standard retries: `pipeline.io.sources.s3_client`), http(s)
through requests with urllib3's retry policy, local files as they are; gs:// and az:// through
smart-open's readers (their own buffering).
"""
from __future__ import annotations

import io
import os
import threading
from typing import Callable, Mapping

from posepipe.pipeline.io.redaction import redact, scrub
from posepipe.pipeline.io.sources import s3_client
from posepipe.pipeline.io.uris import local_path, scheme_of, split_object_uri, without_fragment

MIN_READ = 64 << 10          # first request after a seek
MAX_READ = 2 << 20           # largest request sequential reading grows to
KEEP_BLOCKS = 4              # fetched ranges kept in memory: demuxers jump back a little (headers, interleaving)
HTTP_ATTEMPTS = 5            # urllib3 retries of connection errors and 429/5xx answers, with backoff
HTTP_TIMEOUT_S = (15.0, 60.0)


class ObjectReadError(OSError):
    """A byte range of an input object could not be read (after the transport's retries).

    `transient`: the store was throttling, failing (5xx) or unreachable, so trying again later may
    work; otherwise (403, 404, no range support) the object itself is the problem."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                    "ServiceUnavailable", "InternalError", "500", "502", "503", "504"}


def _transient_exception(exc: BaseException) -> bool:
    """Connection trouble, timeouts: the kinds of failure that pass."""
    names = {type(e).__name__ for e in (exc, exc.__cause__, exc.__context__) if e is not None}
    return bool(names & {"ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "ChunkedEncodingError",
                         "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                         "ConnectionClosedError", "IncompleteReadError", "ResponseStreamingError",
                         "ProtocolError", "TimeoutError", "ConnectionResetError"})


Fetch = Callable[[int, int], bytes]   # (start, stop) -> bytes[start:stop]


def _http_session():  # noqa: ANN202 - requests.Session
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(total=HTTP_ATTEMPTS, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504),
                  allowed_methods=("GET", "HEAD"), raise_on_status=False)
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


def _http(uri: str) -> tuple[Fetch, int]:
    import requests

    session = _http_session()
    headers = {"Accept-Encoding": "identity", "User-Agent": "posepipe"}

    def check(response: "requests.Response") -> None:
        if response.status_code >= 400:
            raise ObjectReadError(f"HTTP {response.status_code} {response.reason or ''}".rstrip()
                                  + (" (access denied)" if response.status_code in (401, 403) else ""),
                                  transient=response.status_code in (408, 429) or response.status_code >= 500)

    try:
        head = session.head(uri, headers=headers, timeout=HTTP_TIMEOUT_S, allow_redirects=True)
        check(head)
        size = int(head.headers.get("Content-Length", "-1"))
        if size < 0 or head.headers.get("Accept-Ranges", "bytes").lower() == "none":
            raise ObjectReadError("the server does not answer byte-range requests (no Content-Length or "
                                  "Accept-Ranges: none); download the file and pass the local copy")
    except requests.RequestException as exc:
        raise ObjectReadError(f"{type(exc).__name__}: {scrub(str(exc))}", transient=_transient_exception(exc)) from None

    def fetch(start: int, stop: int) -> bytes:
        try:
            r = session.get(uri, headers={**headers, "Range": f"bytes={start}-{stop - 1}"}, timeout=HTTP_TIMEOUT_S)
            check(r)
            if r.status_code != 206 and not (start == 0 and stop >= size):
                raise ObjectReadError(f"the server ignored a byte-range request (HTTP {r.status_code})")
            return r.content
        except requests.RequestException as exc:
            raise ObjectReadError(f"{type(exc).__name__}: {scrub(str(exc))}",
                                  transient=_transient_exception(exc)) from None

    return fetch, size


def _s3(uri: str) -> tuple[Fetch, int]:
    bucket, key = split_object_uri(uri)  # the key verbatim: '#', '?', '%' are characters of it
    client = s3_client()

    def call(what: Callable[[], object]) -> object:
        try:
            return what()
        except Exception as exc:  # botocore's errors, after its own retries
            response = getattr(exc, "response", None)
            if isinstance(response, dict) and "Error" in response:
                code = response["Error"].get("Code", "?")
                status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
                raise ObjectReadError(f"HTTP {status} {code}", transient=str(code) in _TRANSIENT_CODES) from None
            raise ObjectReadError(f"{type(exc).__name__}: {scrub(str(exc))}", transient=_transient_exception(exc)) from None

    size = int(call(lambda: client.head_object(Bucket=bucket, Key=key))["ContentLength"])  # type: ignore[index]

    def fetch(start: int, stop: int) -> bytes:
        body = call(lambda: client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{stop - 1}")["Body"])
        return call(body.read)  # type: ignore[attr-defined,return-value]

    return fetch, size


def _smart_open(uri: str) -> tuple[Fetch, int]:
    from posepipe.pipeline.io.sources import open_binary

    handle = open_binary(uri)  # gs:// and az:// objects by their (bucket, key) pair
    lock = threading.Lock()
    size = handle.seek(0, io.SEEK_END)

    def fetch(start: int, stop: int) -> bytes:
        with lock:
            handle.seek(start)
            return handle.read(stop - start)

    return fetch, size


class RangeReader(io.RawIOBase):
    """A seekable, read-only file over `fetch(start, stop)`; counts the bytes it fetched."""

    def __init__(self, fetch: Fetch, size: int, *, name: str = "", known: Mapping[int, bytes] | None = None,
                 limit: int | None = None) -> None:
        super().__init__()
        self._fetch, self.size, self.name = fetch, size, name
        self._known = sorted((start, data) for start, data in (known or {}).items() if data)
        self.limit = limit
        self._pos = 0
        self._blocks: list[tuple[int, bytes]] = []   # the last few fetched ranges, newest last
        self._next_read = MIN_READ
        self.bytes_fetched = 0
        self.requests = 0
        self.recorded: dict[int, bytes] | None = None   # set to {} to keep every range fetched

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        target = max(0, base + offset)
        if target != self._pos:
            self._next_read = MIN_READ  # a jump: guess small until reading is sequential again
        self._pos = target
        return self._pos

    def readinto(self, buffer: "memoryview | bytearray") -> int:  # type: ignore[override]
        end = self.size if self.limit is None else min(self.size, self.limit)
        want = min(len(buffer), end - self._pos)
        if want <= 0:
            return 0
        data = self._from_memory(self._pos, want)
        if data is None:
            data = self._from_source(self._pos, want)
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n

    def _from_memory(self, pos: int, want: int) -> bytes | None:
        for start, data in (*reversed(self._blocks), *self._known):
            if start <= pos < start + len(data):
                return data[pos - start:pos - start + want]
        return None

    def _from_source(self, pos: int, want: int) -> bytes:
        last = self._blocks[-1] if self._blocks else (0, b"")
        sequential = pos == last[0] + len(last[1])
        end = self.size if self.limit is None else min(self.size, self.limit)
        stop = min(end, pos + max(want, self._next_read))
        for start, _ in self._known:  # and where bytes already in memory begin
            if pos < start < stop and start - pos >= want:
                stop = start
        block = self._fetch(pos, stop)
        self._blocks = [*self._blocks[-(KEEP_BLOCKS - 1):], (pos, block)]
        self.bytes_fetched += len(block)
        if self.recorded is not None:
            self.recorded[pos] = block
        self.requests += 1
        if sequential or pos == 0:
            self._next_read = min(MAX_READ, self._next_read * 2)
        if not block:
            raise ObjectReadError(f"{redact(self.name)}: the object ended at byte {pos} of {self.size}")
        return block[:want]


def _local(path: str) -> tuple[Fetch, int]:
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    # The descriptor lives as long as the reader's fetch function does (closed when it is collected).
    holder = _Descriptor(fd)
    return (lambda start, stop: os.pread(holder.fd, stop - start, start)), size


class _Descriptor:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def open_ranged(uri: str, *, known: Mapping[int, bytes] | None = None, limit: int | None = None) -> RangeReader:
    """A seekable binary reader of `uri` that reads by bounded byte ranges, local files included."""
    scheme = scheme_of(uri)
    try:
        if scheme in ("", "file"):
            fetch, size = _local(local_path(uri))
        elif scheme == "s3":
            fetch, size = _s3(uri)
        elif scheme in ("http", "https"):
            fetch, size = _http(without_fragment(uri))  # the query is sent, a fragment never is
        else:
            fetch, size = _smart_open(uri)
    except (ObjectReadError, FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as exc:  # smart-open's readers, client construction
        raise ObjectReadError(f"{type(exc).__name__}: {scrub(str(exc))}") from None
    return RangeReader(fetch, size, name=uri, known=known, limit=limit)


__all__ = ["ObjectReadError", "RangeReader", "open_ranged"]
