"""Serve smart-open streams to FFmpeg over loopback HTTP, so decord reads any URI as a stream.

decord's Python API accepts either a path/URL, which FFmpeg opens itself, or a file object, which
it reads *whole* into memory. To decode s3://, gs://, az:// or http(s):// objects without a local
copy and without holding the whole video in memory, we expose each opened smart-open reader at a
private loopback URL. FFmpeg's http protocol then reads it in Range requests (seeks become new
ranges), and memory stays at smart-open's read buffer. The server binds 127.0.0.1 only; the path is
a random token, and credentials never leave the process (smart-open signs the upstream requests).
"""
from __future__ import annotations

import re
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Callable

_CHUNK = 1 << 20
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class _Entry:
    """One published object. Readers are pooled: FFmpeg opens a new connection to seek while the
    old one may still be draining, so each request needs its own handle (a shared one deadlocks)."""

    def __init__(self, opener: Callable[[], IO[bytes]]):
        self.opener = opener
        self.lock = threading.Lock()
        self.idle: list[IO[bytes]] = []
        self.size: int | None = None

    def acquire(self) -> IO[bytes]:
        with self.lock:
            if self.idle:
                return self.idle.pop()
        handle = self.opener()
        if self.size is None:
            handle.seek(0, 2)
            self.size = handle.tell()
            handle.seek(0)
        return handle

    def release(self, handle: IO[bytes]) -> None:
        with self.lock:
            if len(self.idle) < 2:
                self.idle.append(handle)
                return
        handle.close()

    def close(self) -> None:
        with self.lock:
            handles, self.idle = self.idle, []
        for handle in handles:
            try:
                handle.close()
            except Exception:
                pass


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep FFmpeg's requests out of logs
        pass

    def _entry(self) -> _Entry | None:
        entry = self.server.entries.get(self.path.lstrip("/"))
        if entry is None:
            self.send_error(404)
        return entry

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def do_GET(self) -> None:
        self._respond(body=True)

    def _respond(self, body: bool) -> None:
        token = self.path.lstrip("/")
        entry = self._entry()
        if entry is None:
            return
        try:
            handle = entry.acquire()
        except Exception as exc:  # upstream failure: FFmpeg sees an HTTP error, we keep the reason
            self.server.errors[token] = f"{type(exc).__name__}: {exc}"
            self.send_error(502)
            return
        broken = False
        try:
            size = entry.size or 0
            start, end = 0, size - 1
            match = _RANGE.match(self.headers.get("Range", "").strip())
            if match and not (match.group(1) or match.group(2)):
                match = None
            if match:
                if match.group(1):
                    start = int(match.group(1))
                    end = int(match.group(2)) if match.group(2) else size - 1
                else:  # suffix range
                    start = max(0, size - int(match.group(2)))
            end = min(end, size - 1)
            if match and start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            length = max(0, end - start + 1)
            self.send_response(206 if match else 200)
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            if match:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if not body:
                return
            handle.seek(start)
            remaining = length
            while remaining > 0:
                chunk = handle.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # FFmpeg drops a connection when it seeks: normal
        except Exception as exc:
            broken = True
            self.server.errors[token] = f"{type(exc).__name__}: {exc}"
            self.close_connection = True
        finally:
            if broken:
                handle.close()
            else:
                entry.release(handle)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    entries: dict[str, _Entry]
    errors: dict[str, str]


class StreamServer:
    """A loopback HTTP server; `publish(opener)` returns a URL FFmpeg can read with ranges."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.entries = {}
        self._server.errors = {}
        self._thread = threading.Thread(target=self._server.serve_forever, name="posepipe-stream", daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def publish(self, opener: Callable[[], IO[bytes]]) -> str:
        token = secrets.token_urlsafe(16)
        self._server.entries[token] = _Entry(opener)
        return f"{self.base_url}/{token}"

    def upstream_error(self, url: str) -> str | None:
        return self._server.errors.get(url.rsplit("/", 1)[-1])

    def withdraw(self, url: str) -> None:
        entry = self._server.entries.pop(url.rsplit("/", 1)[-1], None)
        if entry is not None:
            entry.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        for entry in list(self._server.entries.values()):
            entry.close()
        self._server.entries.clear()


_shared: StreamServer | None = None
_shared_lock = threading.Lock()


def shared_server() -> StreamServer:
    """One server per process (each Ray actor gets its own)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = StreamServer()
        return _shared


__all__ = ["StreamServer", "shared_server"]
