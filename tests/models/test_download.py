"""fetch(): local paths, resumable HTTP downloads into the cache, S3 through a real moto server, and the
cache's keying: a URI's entry belongs to that URI (never to a file name), a catalogue file's entry to
its model, and the hash policy (a pinned sha256 is enforced, a file-name prefix only warns)."""
from __future__ import annotations

import hashlib
import os
import socket
import threading
from pathlib import Path

import pytest

from posepipe.models.download import (
    HTTP_ATTEMPTS,
    HashPrefixWarning,
    WeightsHashMismatch,
    WeightsUnavailable,
    cache_path,
    cache_record,
    default_cache_dir,
    fetch,
    normalise_uri,
    sha256_file,
    uri_key,
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
    """Checkpoint files in the cache, relative to it (locks and source records are bookkeeping)."""
    if not cache.exists():
        return []
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")
                  if p.is_file() and ".locks" not in p.parts and not p.name.endswith(".source.json"))


def entry(url: str, cache: Path, filename: str | None = None) -> str:
    """Where a URL's file lives in the cache, relative to it (as `cache_files` lists it)."""
    return str(cache_path(url, cache_dir=cache, filename=filename).relative_to(cache))


def partial_of(url: str, cache: Path, filename: str | None = None) -> Path:
    """The .partial a download of `url` writes (named by the URI's key: another source's never resumes it)."""
    target = cache_path(url, cache_dir=cache, filename=filename)
    return target.with_name(f"{target.name}.{uri_key(url)[:12]}.partial")


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
    path = fetch(f"{http.url}/{NAME}")
    assert path == cache_path(f"{http.url}/{NAME}") and path.is_relative_to(tmp_path / "envcache")
    assert fetch(f"{http.url}/{NAME}", filename=NAME) == tmp_path / "envcache" / NAME


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
        fetch(str(path), sha256="0" * 64)
    assert "0" * 64 in str(err.value) and SHA in str(err.value)
    assert path.read_bytes() == PAYLOAD  # a user's own file is never deleted
    with pytest.warns(HashPrefixWarning) as caught:  # a file-name prefix only warns, naming both values
        assert fetch(str(path), hash_prefix="00000000") == path
    assert "00000000" in str(caught[0].message) and SHA in str(caught[0].message)


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
    assert path == cache_path(url, cache_dir=cache) and path.name == NAME and path.read_bytes() == PAYLOAD
    assert cache_files(cache) == [entry(url, cache)]
    assert fetch(url, cache_dir=cache, sha256=SHA) == path
    assert fetch(url, cache_dir=cache, hash_prefix=SHA[:8]) == path
    assert fetch(url, cache_dir=cache) == path
    assert http.count(f"/{NAME}") == 1


def test_filename_overrides_url_basename(http, cache):
    path = fetch(f"{http.url}/{NAME}?download=1", cache_dir=cache, filename="renamed.pth")
    assert path == cache / "renamed.pth" and path.read_bytes() == PAYLOAD


@pytest.mark.parametrize("filename", [None, NAME])
def test_pinned_sha256_mismatch_is_refused_and_nothing_is_left(http, cache, filename):
    wrong = "0" * 64
    with pytest.raises(WeightsHashMismatch) as err:
        fetch(f"{http.url}/{NAME}", cache_dir=cache, sha256=wrong, filename=filename)
    assert wrong in str(err.value) and SHA in str(err.value)
    assert cache_files(cache) == []


def test_file_name_prefix_mismatch_warns_naming_both_and_keeps_the_file(http, cache):
    url = f"{http.url}/{NAME}"
    with pytest.warns(HashPrefixWarning) as caught:
        path = fetch(url, cache_dir=cache, hash_prefix="deadbeef", filename=NAME)
    text = str(caught[0].message)
    assert "deadbeef" in text and SHA in text and NAME in text
    assert path.read_bytes() == PAYLOAD and cache_record(path)["sha256"] == SHA
    with pytest.warns(HashPrefixWarning):  # and again whenever the file is used
        assert fetch(url, cache_dir=cache, hash_prefix="deadbeef", filename=NAME) == path
    assert http.count(f"/{NAME}") == 1


def test_corrupt_cached_file_is_downloaded_again(http, cache):
    url = f"{http.url}/{NAME}"
    path = fetch(url, cache_dir=cache)
    path.write_bytes(b"corrupt")  # changed since it was downloaded: its record no longer matches
    assert fetch(url, cache_dir=cache).read_bytes() == PAYLOAD
    (cache / NAME).write_bytes(b"corrupt")  # a catalogue file with a pinned sha256 that does not match
    assert fetch(url, cache_dir=cache, sha256=SHA, filename=NAME).read_bytes() == PAYLOAD
    assert http.count(f"/{NAME}") == 3


def test_wrong_file_in_cache_is_named_when_offline(cache):
    cache.mkdir()
    (cache / "w.pth").write_bytes(b"hand-placed but wrong")
    port = closed_port()
    with pytest.raises(WeightsUnavailable) as err:
        fetch(f"http://127.0.0.1:{port}/w.pth", cache_dir=cache, sha256=SHA, filename="w.pth")
    assert hashlib.sha256(b"hand-placed but wrong").hexdigest() in str(err.value)
    assert (cache / "w.pth").exists()  # not deleted: it may be the user's only copy


def test_existing_partial_is_resumed_with_range(http, cache):
    url = f"{http.url}/{NAME}"
    partial = partial_of(url, cache)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(PAYLOAD[:100_000])
    path = fetch(url, cache_dir=cache, sha256=SHA)
    assert sha256_file(path) == SHA
    assert [h.get("Range") for h in http.headers_for(f"/{NAME}")] == ["bytes=100000-"]
    assert cache_files(cache) == [entry(url, cache)]


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
    kept = partial_of(f"{http.url}/{NAME}", cache).read_bytes()
    assert len(kept) == 10_000 * HTTP_ATTEMPTS and PAYLOAD.startswith(kept)
    assert fetch(f"{http.url}/{NAME}", cache_dir=cache, sha256=SHA).read_bytes() == PAYLOAD
    assert http.headers_for(f"/{NAME}")[-1]["Range"] == f"bytes={len(kept)}-"


def test_server_ignoring_range_restarts_cleanly(http, cache):
    http.ignore_range = True
    partial = partial_of(f"{http.url}/{NAME}", cache)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"X" * 5000)  # would corrupt the file if appended to
    path = fetch(f"{http.url}/{NAME}", cache_dir=cache)  # no hash: only a clean restart gives PAYLOAD
    assert path.read_bytes() == PAYLOAD
    assert http.headers_for(f"/{NAME}")[0]["Range"] == "bytes=5000-"


def test_complete_partial_answered_416_is_accepted(http, cache):
    partial = partial_of(f"{http.url}/{NAME}", cache)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(PAYLOAD)
    assert fetch(f"{http.url}/{NAME}", cache_dir=cache, sha256=SHA).read_bytes() == PAYLOAD
    assert http.count(f"/{NAME}") == 1


def test_oversized_partial_restarts(http, cache):
    partial = partial_of(f"{http.url}/{NAME}", cache)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(PAYLOAD + b"junk")
    assert fetch(f"{http.url}/{NAME}", cache_dir=cache).read_bytes() == PAYLOAD


def test_404_is_a_clear_error(http, cache):
    url = f"{http.url}/missing-1234abcd.pth"
    with pytest.raises(WeightsUnavailable) as err:
        fetch(url, cache_dir=cache, sha256=SHA, filename="missing-1234abcd.pth")
    msg = str(err.value)
    assert url in msg and "HTTP 404" in msg
    assert str(cache / "missing-1234abcd.pth") in msg and SHA in msg  # where to place it by hand, and what
    assert "--weights NAME=PATH" in msg
    with pytest.raises(WeightsUnavailable) as err:  # a URI of the user's own: no hand-placing advice
        fetch(url, cache_dir=cache)
    assert "HTTP 404" in str(err.value) and "--weights NAME=PATH" in str(err.value)
    assert "by-uri" not in str(err.value)
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
    assert "--weights NAME=PATH" in msg


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
    assert results == [cache_path(f"{http.url}/{NAME}", cache_dir=cache)] * 4
    assert http.count(f"/{NAME}") == 1


def test_progress_goes_to_stderr(http, cache, capsys):
    fetch(f"{http.url}/{NAME}", cache_dir=cache, progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and NAME in captured.err


def test_unsupported_scheme(cache):
    with pytest.raises(WeightsUnavailable, match="ftp"):
        fetch("ftp://example.org/w.pth", cache_dir=cache)


# --------------------------------------------------------------------------- cache keys


def test_two_urls_with_one_file_name_never_share_an_entry(tmp_path, cache):
    """--weights yolox_s=http://host/a/yolox_s.pth, then .../b/yolox_s.pth: b is downloaded, not a served."""
    other = b"another checkpoint" * 1000
    for folder, data in (("a", PAYLOAD), ("b", other)):
        (tmp_path / "srv" / folder).mkdir(parents=True)
        (tmp_path / "srv" / folder / "yolox_s.pth").write_bytes(data)
    with serve_directory(tmp_path / "srv") as server:
        a = fetch(f"{server.url}/a/yolox_s.pth", cache_dir=cache)
        b = fetch(f"{server.url}/b/yolox_s.pth", cache_dir=cache)
        assert a != b and a.read_bytes() == PAYLOAD and b.read_bytes() == other
        assert sha256_file(b) == hashlib.sha256(other).hexdigest()  # what a run's provenance records for b
        assert cache_record(b)["source"] == f"{server.url}/b/yolox_s.pth"
        assert fetch(f"{server.url}/a/yolox_s.pth", cache_dir=cache) == a  # both stay cached
        assert server.count("/a/yolox_s.pth") == 1 and server.count("/b/yolox_s.pth") == 1
        # ... and neither is ever served for the catalogue's own yolox_s.pth entry.
        assert not (cache / "yolox_s.pth").exists()


def test_cache_key_ignores_credentials_and_signatures_but_not_the_query():
    signed = "https://u:p@Host.example:443/w.pth?X-Amz-Signature=abc&X-Amz-Credential=AKIA&X-Amz-Date=1"
    resigned = "https://host.example/w.pth?X-Amz-Signature=def&X-Amz-Date=2#frag"
    assert uri_key(signed) == uri_key(resigned) == uri_key("https://host.example/w.pth")
    assert "abc" not in normalise_uri(signed) and "AKIA" not in normalise_uri(signed)
    assert uri_key("https://host.example/dl?id=1") != uri_key("https://host.example/dl?id=2")
    assert uri_key("https://host.example/a/w.pth") != uri_key("https://host.example/b/w.pth")
    assert uri_key("s3://bucket/w.pth") != uri_key("gs://bucket/w.pth")


def test_cache_record_is_redacted(http, cache):
    url = f"http://user:hunter2@{http.url[len('http://'):]}/{NAME}?token=s3cr3t"
    path = fetch(url, cache_dir=cache)
    record_text = path.with_name(path.name + ".source.json").read_text()
    assert "hunter2" not in record_text and "s3cr3t" not in record_text and "token" not in record_text
    assert cache_record(path)["source"] == f"{http.url}/{NAME}" and cache_record(path)["sha256"] == SHA


def test_hand_placed_official_file_is_used_offline(cache):
    """The official file put by hand where the error message says works without any network."""
    cache.mkdir()
    (cache / NAME).write_bytes(PAYLOAD)
    url = f"http://127.0.0.1:{closed_port()}/{NAME}"
    assert fetch(url, cache_dir=cache, filename=NAME, sha256=SHA) == cache / NAME
    assert fetch(url, cache_dir=cache, filename=NAME, hash_prefix=SHA[:8]) == cache / NAME
    assert cache_record(cache / NAME) is None  # placed by hand: no download record
    with pytest.raises(WeightsUnavailable):  # ... but a URI of the user's own never finds it by name
        fetch(url, cache_dir=cache)


def test_mirror_fills_the_official_entry(tmp_path, cache):
    """`weights fetch NAME --from MIRROR` replaces what is there; the official URL then finds it offline."""
    (tmp_path / "official").mkdir()
    (tmp_path / "official" / NAME).write_bytes(b"older copy")
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / NAME).write_bytes(PAYLOAD)
    with serve_directory(tmp_path / "official") as official, serve_directory(tmp_path / "mirror") as mirror:
        fetch(f"{official.url}/{NAME}", cache_dir=cache, filename=NAME)
        mirrored = fetch(f"{mirror.url}/{NAME}", cache_dir=cache, filename=NAME, require_source=True)
        assert mirrored == cache / NAME and mirrored.read_bytes() == PAYLOAD
        assert fetch(f"{mirror.url}/{NAME}", cache_dir=cache, filename=NAME, require_source=True) == mirrored
        assert mirror.count(f"/{NAME}") == 1
    offline = f"http://127.0.0.1:{closed_port()}/{NAME}"
    assert fetch(offline, cache_dir=cache, filename=NAME).read_bytes() == PAYLOAD
    assert cache_record(cache / NAME)["source"] == f"{mirror.url}/{NAME}"


def test_download_false_never_uses_the_network(http, cache):
    with pytest.raises(WeightsUnavailable, match="not in the cache"):
        fetch(f"{http.url}/{NAME}", cache_dir=cache, filename=NAME, download=False)
    assert http.count() == 0
    fetch(f"{http.url}/{NAME}", cache_dir=cache, filename=NAME)
    assert fetch(f"{http.url}/{NAME}", cache_dir=cache, filename=NAME, download=False) == cache / NAME
    assert http.count() == 1


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
    assert path == cache_path(uri, cache_dir=cache) and path.read_bytes() == PAYLOAD
    s3.reset()  # the object is gone: a second fetch must not need the server
    assert fetch(uri, cache_dir=cache, sha256=SHA) == path


def test_s3_hash_mismatch_leaves_nothing(s3, cache):
    put_object(s3.endpoint_url, "weights", NAME, PAYLOAD)
    with pytest.raises(WeightsHashMismatch):
        fetch(f"s3://weights/{NAME}", cache_dir=cache, sha256="0" * 64)
    assert cache_files(cache) == []


def test_s3_missing_object_is_a_clear_error(s3, cache):
    with pytest.raises(WeightsUnavailable) as err:
        fetch("s3://weights/absent.pth", cache_dir=cache)
    msg = str(err.value)
    assert "s3://weights/absent.pth" in msg and "no such" in msg and "--weights NAME=PATH" in msg
    assert "testing" not in msg  # the access key id never appears
    assert cache_files(cache) == []


def test_moto_server_is_stopped_on_exit():
    with moto_s3_server() as server:
        pid = server.process.pid
    assert server.process.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
