"""The one GPU run, section by section (infra/gpu/measure.sh sets the environment and calls this).

Each section (infra/gpu/sections/s*.py, listed in sections/plan.py) is a process of its own, in a
process group of its own, with its own timeout; it writes $OUT/<section>.json as it measures. When it
ends, however it ends (done, failed, killed at its timeout), this adds how: `status` ok | failed |
timeout | skipped, its exit code, seconds, and the tail of its output, so every section's JSON is
there and a late failure leaves the earlier sections' figures. The run stops starting sections once
the plan's total time is spent (8 minutes on a GPU); those left get a `skipped` JSON.
All output goes to $OUT/measure.log; one line per section is printed here. At most 7 files land in
$OUT (the device tool brings back 8).

    python3 infra/gpu/measure.py --out OUT --work SCRATCH [--dry-run] [--only 3_worker,4_decode]
        [--set KEY=VALUE ...] [--timeout SECTION=SECONDS ...]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "sections"))

from plan import DRY_RUN, SECTIONS, Plan, save_plan, with_settings  # noqa: E402
from record import write_json  # noqa: E402

KILL_GRACE_S = 5.0
TAIL_LINES = 30


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "/tmp/posepipe-gpu-out"))
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (clips, the plan)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: proves the script, measures nothing")
    parser.add_argument("--only", default="", help="comma-separated sections to run (default: all)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="change the plan (sections/plan.py), e.g. --set node_workers=[2]")
    parser.add_argument("--timeout", dest="timeouts", action="append", default=[], metavar="SECTION=SECONDS",
                        help="one section's timeout, e.g. --timeout 2_floors=1")
    return parser.parse_args()


def build_plan(args: argparse.Namespace) -> Plan:
    plan = with_settings(DRY_RUN if args.dry_run else Plan(), args.settings)
    timeouts = dict(plan.timeouts)
    for item in args.timeouts:
        name, sep, seconds = item.partition("=")
        if not sep or name not in SECTIONS:
            raise SystemExit(f"--timeout {item!r}: write SECTION=SECONDS with SECTION one of {', '.join(SECTIONS)}")
        timeouts[name] = float(seconds)
    return replace(plan, timeouts=timeouts)


def tail(log: Path, offset: int) -> list[str]:
    with open(log, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace").splitlines()[-TAIL_LINES:]


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the section's process group (its pytest, Ray, worker processes), SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            if sig == signal.SIGTERM:
                os.killpg(proc.pid, signal.SIGKILL)  # the leader exited; children may linger
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def run_section(name: str, seconds: float, plan_path: Path, args: argparse.Namespace, log: Path) -> dict:
    script, _ = SECTIONS[name]
    out = args.out / f"{name}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(HERE / "sections" / script), "--out", str(out), "--plan", str(plan_path),
           "--work", str(args.work)]
    with open(log, "ab") as f:
        f.write(f"\n===== {name}: {' '.join(cmd[1:])} (timeout {seconds:.0f} s)\n".encode())
        offset = f.tell()
        f.flush()
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=seconds)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            stop_group(proc)
            rc, status = proc.returncode, "timeout"
        else:
            stop_group(proc)  # what the section left running (a Ray it started, workers)
        elapsed = time.perf_counter() - t
    try:
        data = json.loads(out.read_text()) if out.is_file() else {"section": name}
    except ValueError:
        data = {"section": name, "unreadable_partial_json": True}
    if status == "ok" and data.get("status") != "ok":
        status = "failed"  # exited 0 without saying it finished
    data.update(section=name, status=status, exit_code=rc, seconds=round(elapsed, 1), timeout_s=round(seconds))
    if status != "ok":
        data["output_tail"] = tail(log, offset)
    write_json(out, data)
    return data


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    plan = build_plan(args)
    plan_path = args.work / "plan.json"
    save_plan(plan, plan_path)
    log = args.out / "measure.log"
    only = [s for s in args.only.split(",") if s]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"--only {','.join(unknown)}: sections are {', '.join(SECTIONS)}")
    start = time.perf_counter()
    print(f"posepipe GPU run{' (DRY RUN: CPU, tiny sizes)' if plan.dry_run else ''}: {len(only or SECTIONS)} sections, "
          f"at most {plan.total_seconds:.0f} s; JSON and measure.log in {args.out}", flush=True)
    statuses = {}
    for name in SECTIONS:
        if only and name not in only:
            continue
        left = plan.total_seconds - (time.perf_counter() - start)
        seconds = min(plan.timeouts[name], left)
        if left < 5:
            data = {"section": name, "status": "skipped", "reason": f"the run's {plan.total_seconds:.0f} s were spent"}
            write_json(args.out / f"{name}.json", data)
        else:
            data = run_section(name, seconds, plan_path, args, log)
        statuses[name] = data["status"]
        headline = data.get("headline") or data.get("reason") or " | ".join(data.get("output_tail", [])[-2:])
        print(f"{name:10s} {data['status']:8s} {data.get('seconds', 0):6.1f} s  {headline}"[:2000], flush=True)
    total = time.perf_counter() - start
    print(f"done in {total:.0f} s: {sum(s == 'ok' for s in statuses.values())}/{len(statuses)} sections ok", flush=True)
    sys.exit(0 if all(s == "ok" for s in statuses.values()) else 1)


if __name__ == "__main__":
    main()
