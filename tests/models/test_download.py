"""fetch(): local paths, resumable HTTP downloads into the cache, S3 through a real moto server."""
from __future__ import annotations

import hashlib
import os
import socket
import threading
from pathlib import Path

import pytest

from models.download import (
    HTTP_ATTEMPTS,
    WeightsHashMismatch,
    WeightsUnavailable,
    default_cache_dir,
    fetch,
    sha256_file,
)
from tests.servers import S3_ENV_UNSET, make_bucket, moto_s3_server, put_object, s3_env, serve_directory

PAYLOAD = bytes(range(256)) * 1000 + b"tail"          # 256 004 bytes, more than one CHUNK-sized read
SHA = hashlib.sha256(PAYLOAD).hexdigest()
NAME = f"w-{SHA[:8]}.pth"


@pytest.fixture()
def http(tmp_path: Path):
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / NAME).write_bytes(PAYLOAD)
    with serve_directory(tmp_path / "srv") as server:
        yield server


@pytest.fixture()
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def cache_files(cache: Path) -> list[str]:
    """Files a user would see in the cache (the lock directory is bookkeeping)."""
    return sorted(p.name for p in cache.iterdir() if p.name != ".locks") if cache.exists() else []


def closed_port() -> int:
    """A loopback port that nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- cache dir, hashing


def test_default_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("POSEPIPE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "posepipe" / "weights"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "posepipe" / "weights"
    monkeypatch.setenv("POSEPIPE_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


def test_fetch_uses_default_cache_dir(monkeypatch, http, tmp_path):
    monkeypatch.setenv("POSEPIPE_CACHE", str(tmp_path / "envcache"))
    assert fetch(f"{http.url}/{NAME}") == tmp_path / "envcache" / NAME


def test_sha256_file_matches_hashlib_and_follows_changes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    assert sha256_file(path) == SHA
    assert sha256_file(str(path)) == SHA
    path.write_bytes(b"other")
    assert sha256_file(path) == hashlib.sha256(b"other").hexdigest()


# --------------------------------------------------------------------------- local files


def test_local_path_and_file_uri_are_used_in_place(tmp_path, cache):
    path = tmp_path / "local.pth"
    path.write_bytes(PAYLOAD)
    assert fetch(str(path), cache_dir=cache) == path
    assert fetch(path.as_uri(), cache_dir=cache, sha256=SHA) == path
    assert fetch(str(path), cache_dir=cache, hash_prefix=SHA[:8]) == path
    assert not cache.exists()  # nothing copied


def test_local_file_hash_is_checked_and_file_kept(tmp_path):
    path = tmp_path / "local.pth"
    path.write_bytes(PAYLOAD)
    with pytest.raises(WeightsHashMismatch) as err:
        fetch(str(path), hash_prefix="00000000")
    assert "00000000" in str(err.value) and SHA in str(err.value)
    assert path.read_bytes() == PAYLOAD  # a user's own file is never deleted


@pytest.mark.parametrize("as_uri", [False, True])
def test_missing_local_file_names_path_and_remedy(tmp_path, as_uri):
    path = tmp_path / "nope.pth"
    with pytest.raises(WeightsUnavailable) as err:
        fetch(path.as_uri() if as_uri else str(path))
    assert str(path) in str(err.value)
    assert "--weights NAME=PATH" in str(err.value)


# --------------------------------------------------------------------------- HTTP


def test_download_then_cache_hit_without_network(http, cache):
    url = f"{http.url}/{NAME}"
    path = fetch(url, cache_dir=cache, sha256=SHA)
    assert path == cache / NAME and path.read_bytes() == PAYLOAD
    assert cache_files(cache) == [NAME]
    assert fetch(url, cache_dir=cache, sha256=SHA) == path
    assert fetch(url, cache_dir=cache, hash_prefix=SHA[:8]) == path
    assert fetch(url, cache_dir=cache) == path
    assert http.count(f"/{NAME}") == 1


def test_filename_overrides_url_basename(http, cache):
    path = fetch(f"{http.url}/{NAME}?download=1", cache_dir=cache, filename="renamed.pth")
    assert path == cache / "renamed.pth" and path.read_bytes() == PAYLOAD


def test_hash_mismatch_is_refused_and_nothing_is_left(http, cache):
    wrong = "0" * 64
    with pytest.raises(WeightsHashMismatch) as err:
        fetch(f"{http.url}/{NAME}", cache_dir=cache, sha256=wrong)
    assert wrong in str(err.value) and SHA in str(err.value)
    assert cache_files(cache) == []
    with pytest.raises(WeightsHashMismatch):
        fetch(f"{http.url}/{NAME}", cache_dir=cache, hash_prefix="deadbeef")
    assert cache_files(cache) == []


def test_corrupt_cached_file_is_downloaded_again(http, cache):
    cache.mkdir()
    (cache / NAME).write_bytes(b"corrupt")
    path = fetch(f"{http.url}/{NAME}", cache_dir=cache, hash_prefix=SHA[:8])
    assert path.read_bytes() == PAYLOAD
    assert http.count(f"/{NAME}") == 1


def test_wrong_file_in_cache_is_named_when_offline(cache):
    cache.mkdir()
    (cache / "w.pth").write_bytes(b"hand-placed but wrong")
    port = closed_port()
    with pytest.raises(WeightsUnavailable) as err:
        fetch(f"http://127.0.0.1:{port}/w.pth", cache_dir=cache, sha256=SHA)
    assert hashlib.sha256(b"hand-placed but wrong").hexdigest() in str(err.value)
    assert (cache / "w.pth").exists()  # not deleted: it may be the user's only copy


def test_existing_partial_is_resumed_with_range(http, cache):
    cache.mkdir()
    (cache / f"{NAME}.partial").write_bytes(PAYLOAD[:100_000])
    path = fetch(f"{http.url}/{NAME}", cache_dir=cache, sha256=SHA)
    assert sha256_file(path) == SHA
    assert [h.get("Range") for h in http.headers_for(f"/{NAME}")] == ["bytes=100000-"]
    assert cache_files(cache) == [NAME]


def test_broken_transfer_is_resumed_in_the_same_call(http, cache):
    http.truncate_next(f"/{NAME}", 70_000)
    path = fetch(f"{http.url}/{NAME}", cache_dir=cache, sha256=SHA)
    assert path.read_bytes() == PAYLOAD
    assert [h.get("Range") for h in http.headers_for(f"/{NAME}")] == [None, "bytes=70000-"]


def test_transfer_that_keeps_breaking_keeps_its_partial_for_next_run(http, cache):
    http.truncate_next(f"/{NAME}", 10_000, times=HTTP_ATTEMPTS)
    with pytest.raises(WeightsUnavailable) as err:
        fetch(f"{http.url}/{NAME}", cache_dir=cache, sha256=SHA)
    assert ".partial" in str(err.value)
    partial = cache / f"{NAME}.partial"
    kept = partial.read_bytes()
    assert len(kept) == 10_000 * HTTP_ATTEMPTS and PAYLOAD.startswith(kept)
    assert fetch(f"{http.url}/{NAME}", cache_dir=cache, sha256=SHA).read_bytes() == PAYLOAD
    assert http.headers_for(f"/{NAME}")[-1]["Range"] == f"bytes={len(kept)}-"


def test_server_ignoring_range_restarts_cleanly(http, cache):
    http.ignore_range = True
    cache.mkdir()
    (cache / f"{NAME}.partial").write_bytes(b"X" * 5000)  # would corrupt the file if appended to
    path = fetch(f"{http.url}/{NAME}", cache_dir=cache)  # no hash: only a clean restart gives PAYLOAD
    assert path.read_bytes() == PAYLOAD
    assert http.headers_for(f"/{NAME}")[0]["Range"] == "bytes=5000-"


def test_complete_partial_answered_416_is_accepted(http, cache):
    cache.mkdir()
    (cache / f"{NAME}.partial").write_bytes(PAYLOAD)
    assert fetch(f"{http.url}/{NAME}", cache_dir=cache, sha256=SHA).read_bytes() == PAYLOAD
    assert http.count(f"/{NAME}") == 1


def test_oversized_partial_restarts(http, cache):
    cache.mkdir()
    (cache / f"{NAME}.partial").write_bytes(PAYLOAD + b"junk")
    assert fetch(f"{http.url}/{NAME}", cache_dir=cache).read_bytes() == PAYLOAD


def test_404_is_a_clear_error(http, cache):
    url = f"{http.url}/missing-1234abcd.pth"
    with pytest.raises(WeightsUnavailable) as err:
        fetch(url, cache_dir=cache, hash_prefix="1234abcd")
    msg = str(err.value)
    assert url in msg and "HTTP 404" in msg
    assert str(cache / "missing-1234abcd.pth") in msg and "1234abcd" in msg
    assert "--weights NAME=PATH" in msg
    assert cache_files(cache) == []


def test_signatures_and_credentials_never_reach_messages(http, cache):
    url = f"http://user:hunter2@{http.url[len('http://'):]}/missing.pth?X-Amz-Signature=s3cr3t&X-Amz-Credential=AKIA"
    with pytest.raises(WeightsUnavailable) as err:
        fetch(url, cache_dir=cache)
    text = str(err.value) + repr(err.value.__cause__) + repr(err.value.__context__)
    for secret in ("s3cr3t", "AKIA", "hunter2", "Signature"):
        assert secret not in text
    assert f"{http.url}/missing.pth" in str(err.value)


def test_connection_refused_is_a_clear_error(cache):
    port = closed_port()
    url = f"http://127.0.0.1:{port}/w.pth?sig=s3cr3t"
    with pytest.raises(WeightsUnavailable) as err:
        fetch(url, cache_dir=cache)
    msg = str(err.value)
    assert f"http://127.0.0.1:{port}/w.pth" in msg and "refused" in msg and "s3cr3t" not in msg
    assert str(cache / "w.pth") in msg and "--weights NAME=PATH" in msg


def test_concurrent_fetches_download_once(http, cache):
    results: list[Path | BaseException] = []

    def worker() -> None:
        try:
            results.append(fetch(f"{http.url}/{NAME}", cache_dir=cache, sha256=SHA))
        except BaseException as exc:  # surfaced by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [cache / NAME] * 4
    assert http.count(f"/{NAME}") == 1


def test_progress_goes_to_stderr(http, cache, capsys):
    fetch(f"{http.url}/{NAME}", cache_dir=cache, progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and NAME in captured.err


def test_unsupported_scheme(cache):
    with pytest.raises(WeightsUnavailable, match="ftp"):
        fetch("ftp://example.org/w.pth", cache_dir=cache)


# --------------------------------------------------------------------------- S3 (real moto server)


@pytest.fixture(scope="module")
def moto():
    with moto_s3_server() as server:
        yield server


@pytest.fixture()
def s3(moto, monkeypatch):
    moto.reset()
    for key in S3_ENV_UNSET:
        monkeypatch.delenv(key, raising=False)
    for key, value in s3_env(moto.endpoint_url).items():
        monkeypatch.setenv(key, value)
    make_bucket(moto.endpoint_url, "weights")
    return moto


def test_s3_download_through_aws_endpoint_url_then_cache_hit(s3, cache):
    put_object(s3.endpoint_url, "weights", f"models/{NAME}", PAYLOAD)
    uri = f"s3://weights/models/{NAME}"
    path = fetch(uri, cache_dir=cache, sha256=SHA)  # only AWS_ENDPOINT_URL says where the server is
    assert path == cache / NAME and path.read_bytes() == PAYLOAD
    s3.reset()  # the object is gone: a second fetch must not need the server
    assert fetch(uri, cache_dir=cache, sha256=SHA) == path


def test_s3_hash_mismatch_leaves_nothing(s3, cache):
    put_object(s3.endpoint_url, "weights", NAME, PAYLOAD)
    with pytest.raises(WeightsHashMismatch):
        fetch(f"s3://weights/{NAME}", cache_dir=cache, hash_prefix="00000000")
    assert cache_files(cache) == []


def test_s3_missing_object_is_a_clear_error(s3, cache):
    with pytest.raises(WeightsUnavailable) as err:
        fetch("s3://weights/absent.pth", cache_dir=cache)
    msg = str(err.value)
    assert "s3://weights/absent.pth" in msg and "no such" in msg
    assert str(cache / "absent.pth") in msg and "--weights NAME=PATH" in msg
    assert "testing" not in msg  # the access key id never appears
    assert cache_files(cache) == []


def test_moto_server_is_stopped_on_exit():
    with moto_s3_server() as server:
        pid = server.process.pid
    assert server.process.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
