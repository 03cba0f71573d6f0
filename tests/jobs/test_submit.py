"""`posepipe submit | status | logs` against a real Ray head with its dashboard, started and torn
down here; plus the checks that need no cluster (credentials, option checking, unreachable address).

The head is this module's own: unique ports, its own --temp-dir (so it never becomes the machine's
"current cluster" that another `ray.init()` would join), and on teardown only the processes it
started are stopped, found by parentage and by that temp dir. `ray stop` is never called.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pytest
import requests
from click.testing import CliRunner

from posepipe.jobs import submit
from posepipe.jobs.cli import main
from posepipe.jobs.run import run_command
from tests import media
from tests.processes import processes

FAST = ["--random-weights", "--max-persons", "1", "--no-flip-test"]
SECRETS = {"AWS_ACCESS_KEY_ID": "AKIAPOSEPIPETESTKEY", "AWS_SECRET_ACCESS_KEY": "posepipe-test-secret-value",
           "AWS_SESSION_TOKEN": "posepipe-test-session-token"}


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def no_ray_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)


# --------------------------------------------------------------------------- no cluster


def test_runtime_env_never_carries_credentials(tmp_path):
    environ = {**SECRETS, "AWS_PROFILE": "prod", "AWS_REGION": "eu-west-1", "POSEPIPE_CACHE": "/var/cache/posepipe",
               "AWS_ENDPOINT_URL": "http://minio:9000", "HOME": "/home/me"}
    runtime_env = submit.job_runtime_env(environ)
    env = runtime_env["env_vars"]
    assert {k: env[k] for k in ("AWS_REGION", "AWS_ENDPOINT_URL")} == {
        "AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://minio:9000"}
    # This machine's cache folder and AWS profile mean nothing on the cluster's nodes.
    assert "POSEPIPE_CACHE" not in env and "AWS_PROFILE" not in env
    assert submit.job_runtime_env({}, extra_env={"POSEPIPE_CACHE": "/mnt/w"})["env_vars"]["POSEPIPE_CACHE"] == "/mnt/w"
    text = json.dumps(runtime_env)
    assert not set(env) & set(submit.CREDENTIAL_ENV), env
    assert not any(value in text for value in SECRETS.values()) and "HOME" not in env
    # The checkout's code goes as one module named posepipe, holding its three packages.
    (staged,) = runtime_env["py_modules"]
    assert Path(staged).name == "posepipe" and "working_dir" not in runtime_env
    assert {p.name for p in Path(staged).iterdir()} == set(submit.PACKAGES)
    assert (Path(staged) / "pipeline" / "run" / "runner.py").read_bytes() == (submit.SOURCE_ROOT / "pipeline" / "run" / "runner.py").read_bytes()
    assert {".git", ".venv", "/tests/", "*.pth"} <= set(runtime_env["excludes"])
    assert submit.job_runtime_env({}, pip=["smart-open[gcs]"])["pip"] == ["smart-open[gcs]"]
    with pytest.raises(ValueError, match="AWS_SECRET_ACCESS_KEY"):
        submit.job_runtime_env({}, extra_env={"AWS_SECRET_ACCESS_KEY": "x"})
    # An installed posepipe (site-packages/posepipe, no checkout around it) ships that folder.
    installed = submit.job_runtime_env({}, source_root=tmp_path)
    assert "working_dir" not in installed and installed["py_modules"] == [str(tmp_path)]


def test_bad_options_are_refused_before_any_network_call(tmp_path, monkeypatch):
    def no_network(address):
        raise AssertionError(f"contacted {address}")

    monkeypatch.setattr(submit, "connect", no_network)
    base = ["submit", str(tmp_path), "--output", str(tmp_path / "o"), "--address", "http://127.0.0.1:9"]
    for args, needle in [(["--bogus"], "No such option '--bogus'"), (["--shard-frames", "x"], "--shard-frames"),
                         (["--shard-frames", "0"], "--shard-frames"), (["--device", "tpu"], "--device"),
                         (["--weights", "nope"], "NAME=URI"), (["--detector", "hrnet_w32_coco_256x192"], "--detector"),
                         (["--env", "AWS_SECRET_ACCESS_KEY=x"], "credentials"), (["--env", "novalue"], "NAME=VALUE")]:
        result = cli(*base, *args)
        assert result.exit_code == 2 and needle in result.output, (args, result.output)
    result = cli("submit", "--address", "http://127.0.0.1:9", "--random-weights")
    assert result.exit_code == 2 and "Missing argument 'INPUT'" in result.output, result.output


def test_entrypoint_is_posepipe_run_with_the_same_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["videos", "-o", "s3://b/poses", "--num-workers=3", "--no-half", "-v", "--det-conf", "0.25",
            "--weights", "yolox_s=w/yolox.pth", "--weights", "hmr_spin_resnet50=s3://w/hmr.pt"]
    argv = submit.run_argv(run_command.make_context("run", list(args)))  # (click consumes the list)
    assert argv[:7] == ["posepipe", "run", str(tmp_path / "videos"), "--output", "s3://b/poses", "--address", "auto"]
    assert f"yolox_s={tmp_path}/w/yolox.pth" in argv and "hmr_spin_resnet50=s3://w/hmr.pt" in argv
    assert "--shard-frames" not in argv  # defaults stay defaults of the cluster's posepipe
    given, parsed = run_command.make_context("run", list(args)).params, run_command.make_context("run", argv[2:]).params
    assert {k: v for k, v in parsed.items() if k not in ("input_uri", "address", "weights")} == \
           {k: v for k, v in given.items() if k not in ("input_uri", "address", "weights")}
    assert shlex.split(shlex.join(argv)) == argv


def test_job_options_read_every_run_option():
    """`submit` validates with the JobOptions `run` would build: a new `run` option must be mapped too."""
    class Recording(dict):
        read: set[str] = set()

        def __getitem__(self, key):
            self.read.add(key)
            return super().__getitem__(key)

    params = Recording(run_command.make_context("run", ["in", "-o", "out"]).params)
    submit.job_options(params)
    assert set(params) - params.read == {"address", "as_json", "explain_skip", "quiet", "verbose"}


@pytest.mark.parametrize("status, code, message, expected", [
    ("SUCCEEDED", 0, "Job finished successfully.", 0),
    ("FAILED", 3, "Job entrypoint command failed with exit code 3", 3),
    ("FAILED", None, "Job entrypoint command failed with exit code 4, last available logs ...", 4),
    ("FAILED", None, "runtime_env setup failed", 1),
    ("FAILED", -9, "", 137),
    ("STOPPED", None, "Job was intentionally stopped.", 130),
])
def test_job_exit_code(status, code, message, expected):
    assert submit.job_exit_code(status, code, message) == expected


def test_unreachable_or_missing_address_is_a_clear_error(tmp_path, no_ray_address):
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["submit", str(tmp_path), "-o", str(tmp_path / "o"), *FAST, "--address", url],
                 ["status", "raysubmit_x", "--address", url], ["logs", "raysubmit_x", "--address", url]):
        result = cli(*args)
        assert result.exit_code == 2, result.output
        assert f"cannot reach the Ray dashboard at {url}" in result.output
        assert "ray start --head --dashboard-host 0.0.0.0" in result.output and "--address" in result.output
    result = cli("status", "raysubmit_x")
    assert result.exit_code == 2 and "pass --address http://HEAD:8265" in result.output, result.output


@contextlib.contextmanager
def answering(status: int):
    """An HTTP server on loopback that answers every request with `status` (not a Ray dashboard)."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"error": "nope"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_dashboard_that_refuses_or_is_not_ray_is_named(no_ray_address):
    with answering(401) as url:
        result = cli("status", "raysubmit_x", "--address", url)
    assert result.exit_code == 2 and f"the Ray dashboard at {url} refused posepipe" in result.output, result.output
    assert "RAY_AUTH_TOKEN" in result.output  # Ray's own advice on tokens
    with answering(404) as url:
        result = cli("logs", "raysubmit_x", "--address", url)
    assert result.exit_code == 2 and f"cannot reach the Ray dashboard at {url}" in result.output, result.output


# --------------------------------------------------------------------------- a real head


class RayHead:
    """`ray start --head --block` on free ports with its own temp dir; stop() ends only what it started."""

    def __init__(self) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="pp-ray-", dir="/tmp")  # short: Ray's socket paths
        self.dashboard_port = free_port()
        self.url = f"http://127.0.0.1:{self.dashboard_port}"
        self.log = Path(self.temp_dir) / "ray-start.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120.0) -> "RayHead":
        bin_dir = Path(sys.executable).parent
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
        # Ray >= 2.5x turns token auth on when ~/.ray/auth_token exists; this head runs without it, as the
        # clusters posepipe's image makes (Ray 2.40) do. Auth errors are checked against a stub below.
        env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0",
                   RAY_AUTH_MODE="disabled")
        ports = {f"--{name}": str(free_port()) for name in (
            "port", "ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
            "metrics-export-port", "runtime-env-agent-port", "node-manager-port", "object-manager-port")}
        cmd = [str(bin_dir / "ray"), "start", "--head", "--block", "--num-cpus=2", "--num-gpus=0",
               "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
               f"--temp-dir={self.temp_dir}", "--object-store-memory=200000000", "--disable-usage-stats",
               *(f"{k}={v}" for k, v in ports.items())]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/api/jobs/", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(1)
        raise RuntimeError(f"the dashboard at {self.url} did not answer in {timeout_s:.0f}s:\n{self.log.read_text()[-3000:]}")

    def owned(self) -> dict[int, str]:
        """pid -> start time of every process this head started: its descendants, and anything naming its
        temp dir (a process whose parent already died)."""
        procs = processes()
        owned: dict[int, str] = {}
        frontier = [self.proc.pid] if self.proc else []
        while frontier:
            pid = frontier.pop()
            if pid in procs and pid not in owned:
                owned[pid] = procs[pid].start
                frontier += [child for child, p in procs.items() if p.ppid == pid]
        owned.update({pid: p.start for pid, p in procs.items() if self.temp_dir in p.cmdline})
        return owned

    def stop(self) -> None:
        if self.proc is None:
            return
        try:  # stop jobs first, so drivers end through Ray
            for job in requests.get(f"{self.url}/api/jobs/", timeout=5).json():
                if job.get("status") in ("PENDING", "RUNNING") and job.get("submission_id"):
                    requests.post(f"{self.url}/api/jobs/{job['submission_id']}/stop", timeout=5)
        except (requests.RequestException, ValueError):
            pass
        owned = self.owned()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # `ray start --block` shuts its node down on SIGTERM
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        owned.update(self.owned())
        deadline = time.monotonic() + 10
        while True:
            procs = processes()
            alive = [pid for pid, start in owned.items() if pid in procs and procs[pid].start == start
                     and pid != os.getpid()]
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        for pid in alive:  # same pid and start time: still ours
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head():
    head = RayHead()
    try:
        yield head.start()
    finally:
        head.stop()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning")  # inside Ray's log tail
def test_submit_wait_status_logs_on_a_real_head(ray_head, tmp_path, monkeypatch, no_ray_address):
    media.street_clip(tmp_path / "in" / "walk.mp4", n=6)
    out = tmp_path / "out"
    monkeypatch.setenv("POSEPIPE_CACHE", "/Users/me/.cache/posepipe")  # this machine's: not forwarded
    cluster_cache = str(tmp_path / "cache")  # the nodes' own, given by --env
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    job_id = f"posepipe-test-{uuid.uuid4().hex[:8]}"

    result = cli("submit", str(tmp_path / "in"), "--output", str(out), "--address", ray_head.url, *FAST,
                 "--shard-frames", "3", "--wait", "--job-id", job_id, "--env", f"POSEPIPE_CACHE={cluster_cache}")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == job_id
    assert "not forwarded to the job: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN" in result.stderr
    assert "posepipe: 1 ok, 0 failed" in result.stdout  # the job's log, followed
    assert not any(value in result.output for value in SECRETS.values())

    status = cli("status", job_id, "--address", ray_head.url, "--json")
    info = json.loads(status.stdout)
    assert status.exit_code == 0 and info["status"] == "SUCCEEDED" and info["driver_exit_code"] == 0, status.output
    assert info["entrypoint"].startswith(f"posepipe run {tmp_path / 'in'} --output {out} --address auto")
    logs = cli("logs", job_id, "--address", ray_head.url)
    assert logs.exit_code == 0 and "posepipe: 1 ok, 0 failed, 0 already complete of 1 videos" in logs.stdout

    con = duckdb.connect()
    assert con.sql(f"SELECT count(DISTINCT frame_index), max(video_id) FROM read_parquet('{out}/poses/**/*.parquet')"
                   ).fetchall() == [(6, "walk.mp4")]
    assert con.sql(f"SELECT status FROM read_parquet('{out}/videos/*.parquet')").fetchall() == [("ok",)]

    # What the cluster received: the settings without credentials, the code without the rest.
    job = requests.get(f"{ray_head.url}/api/jobs/{job_id}", timeout=5).json()
    env = job["runtime_env"]["env_vars"]
    assert env["POSEPIPE_CACHE"] == cluster_cache and not set(env) & set(submit.CREDENTIAL_ENV)
    assert not any(value in json.dumps(job) for value in SECRETS.values())
    unpacked = [p for p in Path(ray_head.temp_dir).glob("session_2*/runtime_resources/py_modules_files/*/posepipe") if p.is_dir()]
    assert len(unpacked) == 1, list(Path(ray_head.temp_dir).glob("session_2*/runtime_resources/*/*"))
    shipped = {str(p.relative_to(unpacked[0])) for p in unpacked[0].rglob("*")}
    assert {"pipeline/run/runner.py", "jobs/cli.py", "jobs/submit.py", "models/__init__.py"} <= shipped
    assert not [p for p in shipped if p.split("/")[0] in (".git", ".venv", "tests", "out", "samples")
                or p.endswith((".pth", ".mp4", ".parquet", ".pyc"))]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning")
def test_failed_job_exits_with_the_runs_code_and_unknown_ids_are_named(ray_head, tmp_path, no_ray_address):
    result = cli("submit", str(tmp_path / "missing"), "--output", str(tmp_path / "o"), "--address", ray_head.url,
                 *FAST, "--wait")
    assert result.exit_code == 2, result.output  # `posepipe run`: bad input
    job_id = result.stdout.splitlines()[0]
    info = json.loads(cli("status", job_id, "--address", ray_head.url, "--json").stdout)
    assert info["status"] == "FAILED" and info["driver_exit_code"] == 2
    follow = cli("logs", job_id, "--address", ray_head.url, "--follow")
    assert follow.exit_code == 0 and "missing" in follow.stdout, follow.output
    for command in ("status", "logs"):
        result = cli(command, "raysubmit_nosuchjob", "--address", ray_head.url)
        assert result.exit_code == 2 and "no job 'raysubmit_nosuchjob'" in result.output, result.output
