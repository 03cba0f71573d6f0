"""Where results go: the output layout, atomic Parquet writes, and reading back what is done.

Layout under OUTPUT (a folder or an s3:// prefix):
    poses/<video_key>/part-<first frame>-<end frame>.parquet   rows of one shard of one video
    videos/<video_key>.parquet                                 one row per input file, written last

A video's `videos/` row is its commit marker: it is written only after all its poses parts, and a
rerun skips videos whose row says ok with the same job fingerprint. Parts are written whole
(local: temp file + rename; S3: one PUT), so no reader ever sees a half-written file.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from posepipe.pipeline.io.redaction import redact, scrub
from posepipe.pipeline.io.sources import local_path, s3_client, scheme_of

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
OUTPUT_SCHEMES = ("", "file", "s3")


class OutputError(ValueError):
    """--output cannot be used (unsupported scheme, not a folder, not writable): said before any work."""


class StorageError(RuntimeError):
    """Reading or writing the output failed after botocore's retries (an outage, access revoked, a
    full disk). The job stops: what is committed stays committed, and a rerun resumes."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing  # the object or file does not exist (deleted since it was listed)


@contextlib.contextmanager
def _storage(what: str, where: str) -> Iterator[None]:
    """Turn the storage layer's errors into one readable `StorageError` (URIs redacted)."""
    try:
        yield
    except (StorageError, OutputError):
        raise
    except OSError as exc:
        reason = exc.strerror if exc.strerror else (scrub(str(exc)) or type(exc).__name__)
        raise StorageError(f"could not {what} {redact(where)}: {reason}",
                           missing=isinstance(exc, FileNotFoundError)) from None
    except ValueError:
        raise  # pyarrow's ArrowInvalid and friends: the bytes arrived, they are not a table
    except Exception as exc:  # botocore ClientError / EndpointConnectionError share no base with OSError
        response = getattr(exc, "response", None)
        code = ""
        if isinstance(response, dict) and "Error" in response:
            code = str(response["Error"].get("Code", "?"))
            reason = f"{code}: {response['Error'].get('Message', '')}".rstrip(": ")
        else:
            reason = f"{type(exc).__name__}: {scrub(str(exc))}"
        raise StorageError(f"could not {what} {redact(where)}: {scrub(reason)}",
                           missing=code in ("NoSuchKey", "404", "NotFound")) from None


def video_key(video_id: str) -> str:
    """A file-name-safe, collision-free key for a video id (readable prefix + hash)."""
    stem = _UNSAFE.sub("_", video_id).strip("._")[:80] or "video"
    return f"{stem}-{hashlib.sha1(video_id.encode()).hexdigest()[:10]}"


def part_name(start: int, stop: int, attempt: str | None = None) -> str:
    """`part-<first frame>-<end frame>[-<attempt>].parquet`: the attempt names the finish that wrote it."""
    return f"part-{start:09d}-{stop:09d}" + (f"-{attempt}" if attempt else "") + ".parquet"


_PART = re.compile(r"part-\d+-\d+(?:-(?P<attempt>[0-9a-f]+))?\.parquet$")


def part_attempt(name: str) -> str | None:
    """The attempt a part file belongs to (None: written before attempts were named, or not a part)."""
    found = _PART.search(name)
    return found.group("attempt") if found else None


def is_committed_part(name: str, commit_attempt: str | None) -> bool:
    """Whether part file `name` belongs to the commit whose row says `commit_attempt`."""
    return _PART.search(name) is not None and part_attempt(name) == commit_attempt


class Output:
    """Writes and lists posepipe tables under a local folder or an s3:// prefix."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self.scheme = scheme_of(uri)
        if self.scheme not in OUTPUT_SCHEMES:
            raise OutputError(f"--output {redact(uri)}: {self.scheme}:// outputs are not supported; "
                              "write to a local folder or an s3:// prefix")
        if self.scheme == "s3":
            without = self.uri[len("s3://"):]
            self.bucket, _, self.prefix = without.partition("/")
        else:
            self.root = Path(local_path(self.uri))

    def _where(self, relative: str) -> str:
        return f"{self.uri}/{relative}"

    # -- checking ------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Create the output and write and delete a probe object in it, or raise `OutputError`.

        Run before any model loads or video is touched, so a wrong --output costs seconds, not a job.
        """
        probe = f".posepipe-write-check-{uuid.uuid4().hex}"
        try:
            if self.scheme == "s3":
                if not self.bucket:
                    raise OutputError(f"--output {redact(self.uri)}: no bucket name; write s3://BUCKET/PREFIX")
                with _storage("write to", self.uri):
                    client = s3_client()
                    client.put_object(Bucket=self.bucket, Key=self._key(probe), Body=b"")
                    client.delete_object(Bucket=self.bucket, Key=self._key(probe))
                return
            if self.root.exists() and not self.root.is_dir():
                raise OutputError(f"--output {self.root} is a file, not a folder; name a folder (it is created if missing)")
            for folder in (self.root, self.root / "poses", self.root / "videos"):
                if folder.exists() and not folder.is_dir():
                    raise OutputError(f"--output {self.root}: {folder.name} is a file where posepipe keeps a folder")
            with _storage("write to", str(self.root)):
                self.root.mkdir(parents=True, exist_ok=True)
                (self.root / probe).write_bytes(b"")
                (self.root / probe).unlink()
        except StorageError as exc:
            raise OutputError(f"--output is not writable: {exc}") from None

    # -- writing -------------------------------------------------------------------------
    def write_table(self, relative: str, table: pa.Table) -> None:
        with _storage("write", self._where(relative)):
            if self.scheme == "s3":
                buffer = io.BytesIO()
                pq.write_table(table, buffer, compression="zstd")
                s3_client().put_object(Bucket=self.bucket, Key=self._key(relative), Body=buffer.getvalue())
                return
            dest = self.root / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            # Hidden temp name that no '*.parquet' glob matches; rename is atomic on one filesystem.
            tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.tmp"
            try:
                pq.write_table(table, tmp, compression="zstd")
                os.replace(tmp, dest)
            finally:
                if tmp.exists():
                    tmp.unlink()

    def remove_prefix(self, relative: str) -> None:
        """Delete everything under poses/<key>/ before a video is (re)processed; errors are raised."""
        with _storage("delete", self._where(relative)):
            if self.scheme == "s3":
                client = s3_client()
                prefix = self._key(relative).rstrip("/") + "/"
                for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                    keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                    if keys:
                        answer = client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                        if answer.get("Errors"):
                            first = answer["Errors"][0]
                            raise StorageError(f"could not delete {len(answer['Errors'])} objects under "
                                               f"{redact(self._where(relative))} ({first.get('Code')}: {first.get('Message')})")
                return
            if (self.root / relative).exists():
                shutil.rmtree(self.root / relative)

    def remove(self, relative: str) -> None:
        """Delete one object or file, if it exists; errors are raised."""
        with _storage("delete", self._where(relative)):
            if self.scheme == "s3":
                s3_client().delete_object(Bucket=self.bucket, Key=self._key(relative))
            else:
                (self.root / relative).unlink(missing_ok=True)

    # -- reading ------------------------------------------------------------------------
    def list_parquet(self, relative: str) -> list[str]:
        with _storage("list", self._where(relative)):
            return self._list_parquet(relative)

    def _list_parquet(self, relative: str) -> list[str]:
        if self.scheme == "s3":
            client = s3_client()
            prefix = self._key(relative).rstrip("/") + "/"
            found: list[str] = []
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                found += [o["Key"][len(prefix):] for o in page.get("Contents", []) if o["Key"].endswith(".parquet")]
            return sorted(found)
        base = self.root / relative
        if not base.is_dir():
            return []
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*.parquet") if not p.name.startswith("."))

    def read_table(self, relative: str) -> pa.Table:
        with _storage("read", self._where(relative)):
            if self.scheme == "s3":
                body = s3_client().get_object(Bucket=self.bucket, Key=self._key(relative))["Body"].read()
                return pq.read_table(io.BytesIO(body))
            return pq.read_table(self.root / relative)

    def completed_videos(self) -> dict[str, dict]:
        """video_id -> its videos/ row, for every video already recorded."""
        done: dict[str, dict] = {}
        for name in self.list_parquet("videos"):  # a listing that fails stops the job (StorageError)
            try:
                for row in self.read_table(f"videos/{name}").to_pylist():
                    done[row["video_id"]] = row
            except StorageError as exc:
                if not exc.missing:
                    raise  # the store is failing: redoing everything would be the wrong answer
            except Exception:
                continue  # a corrupt marker: the video is not done
        return done

    def _key(self, relative: str) -> str:
        return f"{self.prefix.rstrip('/')}/{relative}" if self.prefix else relative
