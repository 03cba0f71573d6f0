"""A section's JSON: written at once whenever a part of it is measured, so a section stopped by its
timeout (or a crash) still returns what it had; `infra/gpu/measure.py` then adds how it ended.

Every section script takes the same three arguments and starts with `section_args()`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from plan import Plan, load_plan


def clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None (json.dumps would write bare NaN, which strict readers refuse)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically: a reader (or a kill between two writes) never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(clean(data), indent=1, default=str) + "\n")
    os.replace(tmp, path)


class Record:
    """The JSON of one section, rewritten on every `put`."""

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.started = path, time.perf_counter()
        self.data: dict[str, Any] = {"section": name, "status": "running"}
        write_json(self.path, self.data)

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.data["seconds"] = round(time.perf_counter() - self.started, 2)
        write_json(self.path, self.data)

    def add(self, key: str, item: Any) -> None:
        """Append `item` to the list under `key`."""
        self.put(key, [*self.data.get(key, []), item])

    def done(self, headline: str) -> None:
        """The section finished; `headline` is the one line measure.py prints for it."""
        self.data["headline"] = headline
        self.data["status"] = "ok"
        self.put("seconds", round(time.perf_counter() - self.started, 2))


def section_args(description: str) -> tuple[argparse.Namespace, Plan, Record]:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", required=True, type=Path, help="this section's JSON")
    parser.add_argument("--plan", required=True, help="the run's plan (measure.py writes it)")
    parser.add_argument("--work", required=True, type=Path, help="scratch folder shared by the sections")
    args = parser.parse_args()
    plan = load_plan(args.plan)
    return args, plan, Record(args.out, args.out.stem)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def error_text(exc: BaseException) -> str:
    """One line: the exception's type and message, cut to a readable length."""
    return f"{type(exc).__name__}: {exc}".replace("\n", " | ")[:600]
