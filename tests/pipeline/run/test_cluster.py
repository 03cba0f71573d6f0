"""A job on a two-node Ray cluster loses a node mid-job and still writes the single-node answer.

Both nodes run on this machine: `ray start --block`, each in its own session with its own
--temp-dir (short, under /tmp: Ray's socket paths) and free ports, so neither becomes the
machine's "current cluster" and teardown ends exactly what was started here (`ray stop` is never
called: it would stop every Ray on the machine). The job is `posepipe run --address HEAD` in a
subprocess, with the environment a `ray job submit` driver has (RAY_JOB_CONFIG_JSON_ENV_VAR
setting a variable the runner also forwards).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.processes import processes
from tests.pipeline.run.test_faults import (FAST, SHARD, CLIPS, Reference, assert_same_rows, posepipe_command,
                                        posepipe_env, reference_job, wait_for, wait_job)

# The head's system config: find a dead node in seconds (the default takes about half a minute),
# and keep shard rows of more than 1 KB in the object store of the node that computed them (the
# default inlines up to 100 KB into the driver), so losing a node loses shard results with it.
SYSTEM_CONFIG = {"health_check_period_ms": 1000, "health_check_timeout_ms": 5000, "health_check_failure_threshold": 5,
                 "max_direct_call_object_size": 1024}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayNode:
    """One `ray start --block` node; `kill()` ends it as a lost machine would end, at once and whole."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.temp_dir = tempfile.mkdtemp(prefix=f"pp{name}-", dir="/tmp")
        self.log = Path(self.temp_dir) / "ray-start.log"
        self.proc: subprocess.Popen | None = None

    def start(self, *, resources: dict[str, float], head: str | None = None) -> "RayNode":
        bin_dir = Path(sys.executable).parent
        env = posepipe_env(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", RAY_AUTH_MODE="disabled")
        ports = ["node-manager-port", "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                 "metrics-export-port", "runtime-env-agent-port"]
        if head is None:
            ports += ["port", "ray-client-server-port"]
            role = ["--head", "--include-dashboard=false", f"--system-config={json.dumps(SYSTEM_CONFIG)}"]
        else:
            role = [f"--address={head}"]
        cmd = [str(bin_dir / "ray"), "start", "--block", *role, "--num-cpus=1", "--num-gpus=0",
               f"--resources={json.dumps(resources)}", f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
               "--object-store-memory=100000000", *(f"--{p}={free_port()}" for p in ports)]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        return self

    @property
    def address(self) -> str | None:
        """The head's GCS address once it is up (`ray start` writes it into its temp dir)."""
        path = Path(self.temp_dir) / "ray_current_cluster"
        return path.read_text().strip() or None if path.exists() else None

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"ray start ({self.name}) exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")

    def pids(self) -> set[int]:
        """Every live process of this node: `ray start`'s session and descendants, and any process
        naming its temp dir (orphans whose parent already died)."""
        if self.proc is None:
            return set()
        procs = processes()
        found = {pid for pid, p in procs.items() if p.session == self.proc.pid or self.temp_dir in p.cmdline}
        frontier = list(found | {self.proc.pid})
        while frontier:
            pid = frontier.pop()
            for child, p in procs.items():
                if p.ppid == pid and child not in found:
                    found.add(child)
                    frontier.append(child)
        return found - {os.getpid()}

    def kill(self) -> None:
        for _ in range(3):  # again, for anything spawned meanwhile
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def alive_nodes(address: str) -> dict[str, dict[str, float]]:
    """node id (hex) -> total resources of every live node, straight from the GCS (no driver needed)."""
    from ray._raylet import GcsClient

    nodes = GcsClient(address=address).get_all_node_info(timeout=10)
    return {info.node_id.hex(): dict(info.resources_total) for info in nodes.values() if info.state == 0}


@pytest.fixture
def two_nodes() -> Iterator[tuple[RayNode, RayNode]]:
    a, b = RayNode("a"), RayNode("b")
    try:
        a.start(resources={"node_a": 1})
        head = wait_for(lambda: a.check() or a.address, 120, "the head node", interval_s=0.5)
        b.start(resources={"node_b": 1}, head=head)
        wait_for(lambda: b.check() or len(alive_nodes(head)) == 2, 120, "the second node to join", interval_s=0.5)
        yield a, b
    finally:
        b.stop()
        a.stop()


@pytest.fixture(scope="module")
def reference(ray_local, tmp_path_factory) -> Reference:
    return reference_job(tmp_path_factory)


@pytest.mark.slow
def test_losing_a_node_mid_job_still_gives_the_single_node_rows(two_nodes, reference, tmp_path):
    """Two workers, one per node; node b is killed once a video is committed. Its in-flight work
    is redone on node a, videos whose shard rows lived on node b are computed again, the worker
    whose restart can never be placed is left out, and the job ends with the single-node rows."""
    node_a, node_b = two_nodes
    head = node_a.address
    nodes = alive_nodes(head)
    node_of = {node_id: ("a" if "node_a" in res else "b") for node_id, res in nodes.items()}
    out, log = tmp_path / "out", tmp_path / "run.log"
    # As inside `ray job submit --runtime-env-json '{"env_vars": {"POSEPIPE_CACHE": ...}}'`: the Job's
    # variables reach every worker; the runner must not set them again (Ray refuses to merge).
    cache = str(tmp_path / "cache")
    env = posepipe_env(POSEPIPE_CACHE=cache, RAY_AUTH_MODE="disabled",
                       RAY_JOB_CONFIG_JSON_ENV_VAR=json.dumps({"runtime_env": {"env_vars": {"POSEPIPE_CACHE": cache}}}))
    cmd = posepipe_command(str(reference.clips), "--output", str(out), "--address", head, "--num-workers", "2",
                           "--shard-frames", SHARD, *FAST, "-v")
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[3], env=env, stdout=sink,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        ready = lambda: dict(re.findall(r"worker (\d+) ready on node ([0-9a-f]+)", log.read_text()))  # noqa: E731
        wait_for(lambda: proc.poll() is not None or len(ready()) == 2, 180, "both workers to be ready")
        assert proc.poll() is None, f"the job ended early:\n{log.read_text()[-3000:]}"
        placed = ready()
        assert sorted(node_of[n] for n in placed.values()) == ["a", "b"], (placed, node_of)
        wait_for(lambda: proc.poll() is not None or list((out / "videos").glob("*.parquet")), 180, "a committed video")
        assert proc.poll() is None, f"the job ended before the node could be lost:\n{log.read_text()[-3000:]}"
        node_b.kill()  # raylet, object store, agents and the worker on it, all at once
        summary = wait_job(proc, log, timeout_s=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    text = log.read_text()
    print(text[-3000:])  # shown on failure: which recovery paths ran
    assert summary["ok"] == len(CLIPS) and summary["failed"] == 0 and summary["workers"] == 2
    assert summary["frames"] == sum(CLIPS.values())
    survivor = [n for n, name in node_of.items() if name == "a"]
    wait_for(lambda: list(alive_nodes(head)) == survivor, 60, "the GCS to mark the lost node dead", interval_s=1)
    assert_same_rows(out, reference.output)
