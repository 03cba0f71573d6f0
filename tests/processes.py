"""The machine's processes, read from /proc, and `posepipe` run as a user runs it: tests that start
Ray (or a whole `posepipe run`) find and end what they started, and nothing else."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# `posepipe` as the console script starts it, from this interpreter (its argv[0] is `posepipe`, so a
# rerun hint reads `posepipe run ...`).
LAUNCHER = "import sys; from posepipe.jobs.cli import main; sys.argv[0] = 'posepipe'; main()"


@dataclass(frozen=True)
class Process:
    ppid: int
    session: int
    start: str     # start time in clock ticks since boot: with the pid, tells a reused pid apart
    cmdline: str


def processes() -> dict[int, Process]:
    """pid -> Process for every process this user can see."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it ended while we looked
        fields = stat[stat.rindex(")") + 2:].split()  # after the command name, which may hold spaces
        found[int(entry)] = Process(ppid=int(fields[1]), session=int(fields[3]), start=fields[19], cmdline=cmd)
    return found


def session_members(sid: int) -> list[int]:
    """Processes of the session a subprocess was started in (Ray's processes stay in it, orphans too)."""
    return [pid for pid, p in processes().items() if p.session == sid]


def posepipe_env(**extra: str) -> dict[str, str]:
    """This environment without Ray addresses or fault settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_JOB_CONFIG_JSON_ENV_VAR")
           and not k.startswith("POSEPIPE_TEST_")}
    # Passive OpenMP waits: a worker's torch threads otherwise spin against the other processes on
    # these two cores, and inference slows down tenfold.
    env.update(PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0", OMP_WAIT_POLICY="PASSIVE", **extra)
    return env


def posepipe_argv(*args: str) -> list[str]:
    """`posepipe ARGS...` from this interpreter."""
    return [sys.executable, "-c", LAUNCHER, *args]


class Spawner:
    """Starts subprocesses each in a new session; `cleanup` kills whatever is left of those sessions."""

    def __init__(self) -> None:
        self.sessions: list[int] = []

    def start(self, cmd: list[str], log: Path, env: dict[str, str], cwd: Path = REPO) -> subprocess.Popen:
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.sessions.append(proc.pid)
        return proc

    def cleanup(self) -> None:
        for sid in self.sessions:
            for pid in session_members(sid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
