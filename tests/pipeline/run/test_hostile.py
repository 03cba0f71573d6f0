"""A hostile world: bad files, odd names, bad weights files and secrets in URIs, run as a user would.

Each test reproduces a finding of the hostile pass (issue 12) the way it was found: the real CLI,
real files and links on disk, a real local Ray, real HTTP and S3 servers on loopback.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import torch
from click.testing import CliRunner

from posepipe.jobs.cli import main
from tests import media
from tests.servers import S3_ENV_UNSET, make_bucket, moto_s3_server, s3_client, s3_env, serve_directory

FAST = ["--random-weights", "--max-persons", "1", "--no-flip-test"]


def run_cli(*args: str):
    result = CliRunner().invoke(main, ["run", *args, "--json"], catch_exceptions=False)
    summary = json.loads(result.stdout[result.stdout.index("{"):]) if "{" in result.stdout else None
    return result, summary


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every result file under OUTPUT; `_index/` (the driver's own state, rewritten by each job) aside."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.relative_to(folder).as_posix().startswith("_index/")}


@pytest.mark.slow
def test_bad_files_and_markup_names_never_stop_the_job(ray_local, tmp_path):
    src = tmp_path / "in"
    media.street_clip(src / "good.mp4", n=4)
    media.street_clip(src / "q[/x]" / "[bold]clip[/].mp4", n=4)  # names rich would read as markup
    expected = media.hostile_files(src / "bad")
    (src / ".hidden.mp4").write_bytes((src / "good.mp4").read_bytes())
    os.mkfifo(src / "pipe.mp4")
    (src / "gone.mp4").symlink_to(src / "nowhere.mp4")
    (src / "loop.mp4").symlink_to(src / "loop.mp4")
    (src / "link.mp4").symlink_to(src / "good.mp4")  # a good link is followed

    out = tmp_path / "out"
    result, summary = run_cli(str(src), "--output", str(out), *FAST)
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output and "MarkupError" not in result.output
    assert summary["ok"] == 3 and summary["failed"] == len(expected)
    reasons = dict(duckdb.sql(f"SELECT video_id, error FROM read_parquet('{out}/videos/*.parquet') "
                              "WHERE status = 'failed'").fetchall())
    for name, needle in expected.items():
        assert needle in reasons[f"bad/{name}"], (name, reasons[f"bad/{name}"])
    ok = {r[0] for r in duckdb.sql(f"SELECT video_id FROM read_parquet('{out}/videos/*.parquet') WHERE status = 'ok'").fetchall()}
    assert ok == {"good.mp4", "link.mp4", "q[/x]/[bold]clip[/].mp4"}
    skipped = {s["name"]: s["reason"] for s in summary["skipped_inputs"]}
    assert set(skipped) == {".hidden.mp4", "pipe.mp4", "gone.mp4", "loop.mp4"}
    assert "FIFO" in skipped["pipe.mp4"] and "broken" in skipped["gone.mp4"] and "loop" in skipped["loop.mp4"]
    assert "skipped pipe.mp4: a FIFO" in result.output  # said on the terminal too, not only in JSON

    # Every rerun used to die on the same file, so the files after it were never processed.
    result, summary = run_cli(str(src), "--output", str(out), *FAST)
    assert result.exit_code == 3 and summary["skipped_complete"] == 3 and summary["failed"] == len(expected)


@pytest.mark.slow
def test_a_failure_never_deletes_committed_results(ray_local, tmp_path):
    clip = media.street_clip(tmp_path / "in" / "walk.mp4", n=4)
    out = tmp_path / "out"
    assert run_cli(str(clip.parent), "--output", str(out), *FAST)[0].exit_code == 0
    before = snapshot(out)
    clip.write_text("the camera's upload was cut off\n")  # the same name, now unreadable
    result, summary = run_cli(str(clip.parent), "--output", str(out), "--force", *FAST)
    assert result.exit_code == 3 and summary["failed"] == 1
    assert "earlier committed results are kept" in summary["failures"][0]["error"]
    assert snapshot(out) == before


@pytest.mark.slow
def test_a_bad_weights_file_on_rerun_changes_nothing(ray_local, tmp_path):
    clip = media.street_clip(tmp_path / "in" / "walk.mp4", n=4)
    out = tmp_path / "out"
    assert run_cli(str(clip.parent), "--output", str(out), *FAST)[0].exit_code == 0
    before = snapshot(out)

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path}/pwned",))

    (tmp_path / "empty.pth").write_bytes(b"")
    torch.save({"model": {"w": torch.zeros(1)}, "x": RunsCode()}, tmp_path / "evil.pth")
    (tmp_path / "page.pth").write_text("<html><body>404 Not Found</body></html>\n")
    torch.save({"model": {"w": torch.zeros(3)}}, tmp_path / "whole.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "whole.pth").read_bytes()[:200])
    for name, needle in [("empty.pth", "empty"), ("evil.pth", "system"), ("page.pth", "yolox_s"),
                         ("cut.pth", "yolox_s"), ("whole.pth", "yolox_s")]:
        result = CliRunner().invoke(main, ["run", str(clip.parent), "--output", str(out),
                                           "--weights", f"yolox_s={tmp_path / name}"], catch_exceptions=False)
        assert result.exit_code == 4, (name, result.output)  # documented: weights, nothing processed
        assert needle in result.output and "Traceback" not in result.output, (name, result.output)
        assert snapshot(out) == before, name
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_secrets_in_an_http_uri_are_never_stored_or_shown(ray_local, tmp_path):
    media.street_clip(tmp_path / "site" / "clip.mp4", n=3)
    media.street_clip(tmp_path / "site" / "denied.mp4", n=3)
    with serve_directory(tmp_path / "site") as http:
        http.forbidden.add("/denied.mp4")
        secret = http.url.replace("http://", "http://alice:hunter2@")
        # A video read through the credentials (rows, provenance, summary) and one refused (error text).
        done, done_summary = run_cli(f"{secret}/clip.mp4?token=SECRET123", "--output", str(tmp_path / "ok"), *FAST)
        result, summary = run_cli(f"{secret}/denied.mp4?token=SECRET123", "--output", str(tmp_path / "out"), *FAST)
    assert done.exit_code == 0 and done_summary["ok"] == 1 and done_summary["rows"] > 0, done.output
    assert result.exit_code == 3 and summary["failed"] == 1, result.output
    stored = duckdb.sql(f"SELECT uri, error FROM read_parquet('{tmp_path}/out/videos/*.parquet')").fetchall()[0]
    assert "403" in stored[1]
    everything = done.output + result.output + json.dumps([done_summary, summary])
    for name in ("hunter2", "SECRET123", "alice"):
        assert name not in everything
        for part in [*(tmp_path / "ok").rglob("*.parquet"), *(tmp_path / "out").rglob("*.parquet")]:
            assert name.encode() not in part.read_bytes(), part  # rows and the provenance metadata


def test_credentials_in_object_store_uris_are_refused_unprinted(tmp_path):
    media.street_clip(tmp_path / "in" / "a.mp4", n=2)
    for args in (["s3://AKIAXX:wJalrSECRET@bucket/videos", "--output", str(tmp_path / "o")],
                 [str(tmp_path / "in"), "--output", "s3://AKIAXX:wJalrSECRET@bucket/poses"],
                 [str(tmp_path / "in"), "--output", "s3://bucket/poses?token=wJalrSECRET"]):
        result = CliRunner().invoke(main, ["run", *args, "--random-weights", "--json"])
        assert result.exit_code == 2, result.output
        assert "wJalrSECRET" not in result.output and "credentials" in result.output
    result = CliRunner().invoke(main, ["submit", str(tmp_path / "in"), "--output", "s3://b/o",
                                       "--address", "http://admin:wJalrSECRET@127.0.0.1:9"])
    assert result.exit_code != 0 and "wJalrSECRET" not in result.output and "127.0.0.1:9" in result.output


def test_unusable_outputs_fail_before_any_work(tmp_path):
    media.street_clip(tmp_path / "in" / "a.mp4", n=2)
    (tmp_path / "a_file").write_text("x")
    # (gs:// and az:// are outputs now, through pyarrow's GCS and Azure layers; a scheme no layer has:)
    cases = [(str(tmp_path / "a_file"), "is a file"), ("ftp://host/poses", "not supported")]
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    if subprocess.run(["chattr", "+i", str(frozen)], capture_output=True).returncode == 0:
        cases.append((str(frozen), "not writable"))
    try:
        for output, needle in cases:
            started = time.monotonic()
            result = CliRunner().invoke(main, ["run", str(tmp_path / "in"), "--output", output, *FAST])
            assert result.exit_code == 2 and needle in result.output, (output, result.output)
            assert "Traceback" not in result.output
            assert time.monotonic() - started < 20  # refused up front, not after the frames were processed
    finally:
        subprocess.run(["chattr", "-i", str(frozen)], capture_output=True)


def test_useless_options_and_special_inputs_are_refused(tmp_path):
    media.street_clip(tmp_path / "in" / "a.mp4", n=2)
    os.mkfifo(tmp_path / "fifo.mp4")
    for args, needle in [([str(tmp_path / "in"), "--max-persons", "100000000000000000000"], "--max-persons"),
                         ([str(tmp_path / "in"), "--max-persons", "101"], "--max-persons"),
                         ([str(tmp_path / "fifo.mp4")], "FIFO")]:
        result = CliRunner().invoke(main, ["run", *args, "--output", str(tmp_path / "o"), "--random-weights"])
        assert result.exit_code == 2 and needle in result.output, (args, result.output)
    assert not (tmp_path / "o" / "videos").exists()


@pytest.mark.slow
def test_an_s3_outage_mid_job_ends_it_with_one_line_and_the_rerun_command(tmp_path):
    """The output bucket's server dies while videos are being written: exit 5, one readable line and
    the command to rerun, no traceback. A subprocess, as a user runs it, with its own local Ray, and
    botocore's retries cut short by the standard AWS variable."""
    src = tmp_path / "in"
    for i in range(4):
        media.street_clip(src / f"clip{i}.mp4", n=4)
    env = {k: v for k, v in os.environ.items() if k not in S3_ENV_UNSET and k != "RAY_ADDRESS"}
    env.update(AWS_MAX_ATTEMPTS="2", POSEPIPE_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    command = [str(Path(sys.executable).with_name("posepipe")), "run", str(src), "--output", "s3://out/poses",
               "--num-workers", "1", *FAST]
    with moto_s3_server() as s3:
        env.update(s3_env(s3.endpoint_url))
        make_bucket(s3.endpoint_url, "out")
        job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               cwd=Path(__file__).resolve().parents[3])
        client = s3_client(s3.endpoint_url)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and job.poll() is None:
            keys = [o["Key"] for o in client.list_objects_v2(Bucket="out", Prefix="poses/videos/").get("Contents", [])]
            if keys:
                break
            time.sleep(0.2)
        s3.process.kill()  # the outage
        s3.process.wait()
        output = job.communicate(timeout=300)[0].decode(errors="replace")
    assert job.returncode == 5, output
    assert "Traceback" not in output and "EndpointConnectionError(" not in output
    assert "rerun the same command" in output and "posepipe run" in output
