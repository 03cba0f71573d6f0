"""Section 1: CUDA parity only. The repo's CUDA tests (the models against their golden values in fp32
and fp16, a worker's GPU rows against its CPU rows, the device path against the reference path), then
the device path's rows against the reference path's measured directly on the street clip, with fp16
autocast (the GPU default) and with --no-half. On a CPU the tests skip and the comparison runs in fp32."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from clips import REPO, street_clip
from record import error_text, log, section_args

TESTS = ["tests/models/test_cuda.py", "tests/pipeline/perframe/test_worker_cuda.py", "tests/pipeline/perframe/test_device_path.py",
         "tests/models/test_ondevice.py", "tests/models/test_yolox_device.py"]
SELECT = "cuda"          # the CUDA tests of those files (their names, ids or module say cuda)
COMPARE_SECONDS = 30.0   # kept for the direct comparison after the tests
FIGURE_WORDS = ("diff", "exact", "overflow", " rows")
COLUMNS = ("bbox_xyxy", "keypoints_2d", "keypoint_scores", "smpl_global_orient", "smpl_body_pose", "smpl_betas",
           "smpl_camera", "det_bbox_xyxy", "det_score")


def run_tests(work: Path, seconds: float) -> dict:
    jsonl, output = work / "parity.jsonl", work / "parity.out"
    jsonl.unlink(missing_ok=True)
    here = str(Path(__file__).resolve().parent)
    env = dict(os.environ, POSEPIPE_PARITY_JSONL=str(jsonl),
               PYTHONPATH=os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
    cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-p", "parity_plugin",
           "-k", SELECT, *TESTS]
    t = time.perf_counter()
    with open(output, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=seconds)
            cut = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            rc, cut = proc.wait(), True
    results = [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.is_file() else []
    text = output.read_text(errors="replace").splitlines()
    counts: dict[str, int] = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    return {"command": " ".join(cmd[1:]), "exit_code": rc, "cut_by_timeout": cut, "timeout_s": round(seconds),
            "seconds": round(time.perf_counter() - t, 1), "counts": counts, "results": results,
            "figures": [line.strip() for line in text if any(w in line for w in FIGURE_WORDS)][:80],
            "output_tail": text[-25:]}


def rows(worker, clip: str, frames: int, on_device: bool) -> tuple[dict, dict]:
    from posepipe.pipeline.io.video import probe_video
    from posepipe.pipeline.perframe.shards import ShardTask

    worker.options = replace(worker.options, device_path=on_device)
    probe = probe_video(clip)
    shard = worker.process_shard(ShardTask("street", clip, 0, min(frames, probe.info.num_frames),
                                           info=probe.info.as_dict()), header=probe.header)
    facts = {"rows": len(shard.frame_index), "candidates": len(shard.det_score),
             "device_windows": getattr(shard, "device_windows", None),
             "fallback_windows": getattr(shard, "fallback_windows", None)}
    return {c: getattr(shard, c) for c in (*COLUMNS, "frame_index", "det_frame_index", "det_rank")}, facts


def compare(plan, half: bool) -> dict:
    """The device path's rows against the reference path's, on one worker (same random weights)."""
    import torch

    from posepipe.pipeline.perframe.worker import PoseWorker
    from posepipe.pipeline.options import JobOptions

    clip = str(street_clip())
    frames = 12 if not plan.dry_run else plan.street_frames
    options = JobOptions(input=clip, output="unused", random_weights=True, max_persons=plan.max_persons,
                         device=plan.device, half=half, frames_per_batch=plan.windows[0], models=plan.models())
    torch.manual_seed(0)
    worker = PoseWorker(options, threads=4)
    reference, ref_facts = rows(worker, clip, frames, False)
    device, dev_facts = rows(worker, clip, frames, True)
    out: dict = {"half": half, "frames": frames, "reference": ref_facts, "device": dev_facts}
    same = {k: bool(np.array_equal(device[k], reference[k])) for k in ("frame_index", "det_frame_index", "det_rank")}
    out["same_rows_and_candidates"] = same
    if all(same.values()):
        diffs = {}
        for c in COLUMNS:
            d = np.abs(np.asarray(device[c], np.float64) - np.asarray(reference[c], np.float64))
            diffs[c] = {"max": float(d.max(initial=0.0)), "median": float(np.median(d)) if d.size else 0.0,
                        "share_exact": float(np.mean(d == 0)) if d.size else 1.0}
        out["abs_diff"] = diffs
    return out


def main() -> None:
    args, plan, record = section_args(__doc__)
    budget = plan.timeouts.get("1_parity", 110.0)
    log(f"CUDA tests (-k {SELECT}), at most {budget - COMPARE_SECONDS:.0f} s")
    record.put("tests", run_tests(args.work, max(10.0, budget - COMPARE_SECONDS)))
    for half in ((True, False) if plan.device.startswith("cuda") else (False,)):
        label = "fp16" if half else "no_half"
        log(f"device path against reference path, {label}")
        try:
            record.add("device_vs_reference", compare(plan, half))
        except Exception as exc:  # a comparison that breaks is a finding; the other one still runs
            record.add("device_vs_reference", {"half": half, "error": error_text(exc)})
    counts = record.data["tests"]["counts"]
    parts = []
    for c in record.data.get("device_vs_reference", []):
        kp = (c.get("abs_diff") or {}).get("keypoints_2d", {})
        parts.append(f"{'fp16' if c.get('half') else 'fp32'}: " + (c["error"][:80] if "error" in c else
                     f"rows equal {all(c['same_rows_and_candidates'].values())}, keypoints max {kp.get('max', float('nan')):.3g} px"))
    record.done(f"tests {counts}{' (cut by timeout)' if record.data['tests']['cut_by_timeout'] else ''}; "
                f"device vs reference: {'; '.join(parts)}")


if __name__ == "__main__":
    main()
