"""The machine's processes, read from /proc: tests that start Ray find and end what they started."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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
