"""A pytest plugin (loaded by s1_parity.py with `-p parity_plugin`): one JSON line per test as it
ends, so a run cut short by its timeout still says which tests passed, failed or never ran."""
from __future__ import annotations

import json
import os


def pytest_runtest_logreport(report):  # noqa: ANN001, ANN201 - pytest's hook signature
    if report.when != "call" and not (report.when == "setup" and (report.skipped or report.failed)) \
            and not (report.when == "teardown" and report.failed):
        return
    path = os.environ.get("POSEPIPE_PARITY_JSONL")
    if not path:
        return
    message = ""
    if report.failed:
        message = str(report.longrepr).strip().splitlines()[-1][:400] if report.longrepr else ""
    elif report.skipped and isinstance(report.longrepr, tuple):
        message = str(report.longrepr[2])[:200]
    with open(path, "a") as f:
        f.write(json.dumps({"test": report.nodeid, "when": report.when, "outcome": report.outcome,
                            "seconds": round(report.duration, 2), "message": message}) + "\n")
