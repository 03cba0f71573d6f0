"""Real servers on 127.0.0.1 for tests: a static HTTP server with Range support and a moto S3 server.

Plain context managers, no pytest fixtures (tests/conftest.py wraps them):

    with serve_directory(tmp_path) as http:
        requests.get(http.url + "/w.pth")
        http.requests                      # [(path, {header: value}), ...]
        http.truncate_next("/w.pth", 100)  # the next response stops after 100 body bytes
        http.ignore_range = True           # answer 200 with the whole file even to Range requests
        http.forbidden.add("/w.pth")       # answer 403 for that path
        http.bytes_served                  # body bytes sent so far (what a client was charged)

    with moto_s3_server() as s3:
        make_bucket(s3.endpoint_url, "weights")
        monkeypatch.setenv(...) for each item of s3_env(s3.endpoint_url), delenv each of S3_ENV_UNSET
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit

import requests

STARTUP_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------- HTTP


@dataclass
class HTTPFileServer:
    """What `serve_directory` yields: the base URL, the request log and the fault switches."""

    root: Path
    url: str = ""
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    ignore_range: bool = False
    forbidden: set[str] = field(default_factory=set)   # paths answered with 403, as a denied URL would be
    bytes_served: int = 0   # body bytes handed to the socket, whatever the client did with them
    _truncate: dict[str, list[int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def truncate_next(self, path: str, nbytes: int, times: int = 1) -> None:
        """Cut the next `times` responses for `path` after `nbytes` body bytes (headers still promise all)."""
        with self._lock:
            self._truncate.setdefault(path, []).extend([nbytes] * times)

    def count(self, path: str | None = None) -> int:
        """Requests received so far, for one path (query string ignored) or in all."""
        with self._lock:
            return sum(1 for p, _ in self.requests if path is None or urlsplit(p).path == path)

    def headers_for(self, path: str) -> list[dict[str, str]]:
        with self._lock:
            return [h for p, h in self.requests if urlsplit(p).path == path]

    def __str__(self) -> str:
        return self.url

    def _log(self, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append((path, headers))

    def _take_truncation(self, path: str) -> int | None:
        with self._lock:
            pending = self._truncate.get(path)
            return pending.pop(0) if pending else None


def _handler(state: HTTPFileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            state._log(self.path, {k: v for k, v in self.headers.items()})
            rel = unquote(urlsplit(self.path).path).lstrip("/")
            if urlsplit(self.path).path in state.forbidden:
                self._reply(403, b"forbidden\n", body=body)
                return
            file = (state.root / rel).resolve()
            if not rel or state.root.resolve() not in file.parents or not file.is_file():
                self._reply(404, b"not found\n", body=body)
                return
            data = file.read_bytes()
            size = len(data)
            status, start, end = 200, 0, size
            rng = self.headers.get("Range")
            if rng and not state.ignore_range:
                m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
                if not m or m.group(1) == m.group(2) == "":
                    self._reply(416, b"", extra={"Content-Range": f"bytes */{size}"}, body=body)
                    return
                if m.group(1) == "":  # suffix range: the last N bytes
                    start = max(0, size - int(m.group(2)))
                else:
                    start = int(m.group(1))
                    end = min(size, int(m.group(2)) + 1) if m.group(2) else size
                if start >= size or start >= end:
                    self._reply(416, b"", extra={"Content-Range": f"bytes */{size}"}, body=body)
                    return
                status = 206
            payload = data[start:end]
            extra = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
            if status == 206:
                extra["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            cut = state._take_truncation(urlsplit(self.path).path) if body else None
            self._reply(status, payload, extra=extra, body=body, cut=cut)

        def _reply(self, status: int, payload: bytes, *, extra: dict[str, str] | None = None,
                   body: bool = True, cut: int | None = None) -> None:
            self.send_response(status)
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            if cut is not None:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if not body:
                return
            body_bytes = payload if cut is None else payload[:cut]
            try:  # in pieces, so a client that hangs up early is charged only what was sent
                for at in range(0, len(body_bytes), 1 << 16):
                    piece = body_bytes[at:at + (1 << 16)]
                    self.wfile.write(piece)
                    with state._lock:
                        state.bytes_served += len(piece)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
                return
            if cut is not None:  # abort the connection mid-body, as a dropped download would
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


@contextlib.contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Run `handler` on a loopback HTTP server in a background thread; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def serve_directory(root: str | os.PathLike[str], *, ignore_range: bool = False) -> Iterator[HTTPFileServer]:
    """Serve the files under `root` at `http://127.0.0.1:<free port>` from a background thread."""
    state = HTTPFileServer(root=Path(root), ignore_range=ignore_range)
    with _serving(_handler(state)) as url:
        state.url = url
        yield state


# --------------------------------------------------------------------------- S3 (moto)

S3_ENV_UNSET = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)
"""Variables a test should delete so that a developer's real AWS setup cannot leak in."""


def s3_env(endpoint_url: str) -> dict[str, str]:
    """Environment that points boto3's default session at the test server, with dummy credentials.

    The config and credentials files are set to os.devnull so ~/.aws cannot interfere; delete the
    names in S3_ENV_UNSET as well.
    """
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def s3_client(endpoint_url: str) -> Any:
    """A boto3 S3 client for the test server that does not depend on the process environment."""
    import boto3

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )


def make_bucket(endpoint_url: str, name: str) -> None:
    s3_client(endpoint_url).create_bucket(Bucket=name)


def put_object(endpoint_url: str, bucket: str, key: str, data: bytes) -> None:
    s3_client(endpoint_url).put_object(Bucket=bucket, Key=key, Body=data)


@dataclass
class MotoServer:
    endpoint_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset API)."""
        requests.post(f"{self.endpoint_url}/moto-api/reset", timeout=10).raise_for_status()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _moto_command(port: int) -> list[str]:
    exe = Path(sys.executable).with_name("moto_server")
    found = str(exe) if exe.is_file() and os.access(exe, os.X_OK) else shutil.which("moto_server")
    head = [found] if found else [sys.executable, "-m", "moto.server"]
    return [*head, "-H", "127.0.0.1", "-p", str(port)]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)  # the server and anything it spawned
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def _wait_ready(process: subprocess.Popen[bytes], url: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            requests.get(f"{url}/moto-api/", timeout=2)
            return True
        except requests.RequestException:
            time.sleep(0.1)
    return False


@contextlib.contextmanager
def moto_s3_server(timeout_s: float = STARTUP_TIMEOUT_S) -> Iterator[MotoServer]:
    """Run `moto_server` as a real subprocess on 127.0.0.1; stopped (with its process group) on exit."""
    logdir = Path(tempfile.mkdtemp(prefix="moto-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONUNBUFFERED"] = "1"
    deadline = time.monotonic() + timeout_s
    server: MotoServer | None = None
    try:
        for attempt in range(3):  # a free port can be taken between probing and binding
            port = _free_port()
            log_path = logdir / f"moto-{attempt}.log"
            with open(log_path, "wb") as log:
                process = subprocess.Popen(
                    _moto_command(port), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=env, start_new_session=True,
                )
            url = f"http://127.0.0.1:{port}"
            if _wait_ready(process, url, deadline):
                server = MotoServer(url, process, log_path)
                break
            _stop(process)
            if time.monotonic() >= deadline:
                break
        if server is None:
            tail = "".join((p.read_text(errors="replace") for p in sorted(logdir.glob("*.log"))))[-2000:]
            raise RuntimeError(f"moto_server did not start within {timeout_s:.0f} s; its output:\n{tail}")
        yield server
    finally:
        if server is not None:
            _stop(server.process)
        shutil.rmtree(logdir, ignore_errors=True)


# --------------------------------------------------------------------------- a counting proxy


@dataclass
class CountingProxy:
    """What `counting_proxy` yields: its URL, and the body bytes of GET answers it passed on."""

    url: str = ""
    bytes_sent: int = 0
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)   # (method, path, Range)
    _lock: threading.Lock = field(default_factory=threading.Lock)


@contextlib.contextmanager
def counting_proxy(upstream: str) -> Iterator[CountingProxy]:
    """A loopback reverse proxy in front of `upstream` (e.g. a moto server) that counts the bytes a
    client was sent: what "bytes served" means for a job reading from S3."""
    state = CountingProxy()
    session = requests.Session()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            answer = session.request(self.command, upstream + self.path, headers=headers, data=body,
                                     allow_redirects=False, stream=False)
            payload = answer.content
            self.send_response(answer.status_code)
            for key, value in answer.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload) if self.command != "HEAD" else
                                                   answer.headers.get("Content-Length", "0")))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            with state._lock:
                state.requests.append((self.command, self.path, self.headers.get("Range")))
                if self.command == "GET":
                    state.bytes_sent += len(payload)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    with _serving(Handler) as url:
        state.url = url
        yield state


# --------------------------------------------------------------------------- a faulty proxy


@dataclass
class FaultProxy:
    """What `fault_proxy` yields: its URL, a queue of errors to answer with, and the requests seen."""

    url: str = ""
    faults: list[tuple[str | None, int, str]] = field(default_factory=list)   # (method or None, status, S3 code)
    failed: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, times: int, status: int, code: str, method: str | None = None) -> None:
        with self._lock:
            self.faults += [(method, status, code)] * times

    def _take(self, method: str) -> tuple[int, str] | None:
        with self._lock:
            for i, (m, status, code) in enumerate(self.faults):
                if m is None or m == method:
                    del self.faults[i]
                    self.failed += 1
                    return status, code
        return None


@contextlib.contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    """A loopback reverse proxy in front of `upstream` (a moto server) that answers the next requests
    queued with `fail_next` with an S3 error (503 SlowDown, 500, 403 AccessDenied ...), as a throttled,
    failing or forbidding store would, and passes the rest on."""
    state = FaultProxy()
    session = requests.Session()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _body(self) -> bytes | None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # the AWS C++ SDK streams PUTs
                data = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else None

        def _forward(self) -> None:
            body = self._body()
            with state._lock:
                state.requests.append((self.command, self.path))
            fault = state._take(self.command)
            if fault is not None:
                status, code = fault
                payload = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                           f"<Message>injected {code}</Message></Error>").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                return
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("host", "connection", "expect", "transfer-encoding", "content-length")}
            answer = session.request(self.command, upstream + self.path, headers=headers, data=body,
                                     allow_redirects=False, stream=False)
            payload = answer.content
            self.send_response(answer.status_code)
            for key, value in answer.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload) if self.command != "HEAD" else
                                                   answer.headers.get("Content-Length", "0")))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    with _serving(Handler) as url:
        state.url = url
        yield state
