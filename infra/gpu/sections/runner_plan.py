"""The runner's own plan for this machine (pipeline/run/cluster.py: `cluster_plan`, `finish_plan`):
how many model workers, with how many CPUs and torch threads each, and how many finishers. Asked of
the runner with this machine's CPUs and GPUs, so the sections time what a job here would start."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class _Resources:
    """Stands in for the `ray` module where the plan only reads `ray.cluster_resources()`."""
    cpus: int
    gpus: int

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": float(self.cpus), "GPU": float(self.gpus)}


def machine() -> tuple[int, int]:
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cpus, torch.cuda.device_count() if torch.cuda.is_available() else 0


def runner_plan(options: Any) -> dict[str, Any]:
    """{workers, resources, threads, finishers, finisher_resources} as the runner would plan `options`
    here; {"error": ...} with a fallback of 4 threads where the runner's functions cannot be called."""
    cpus, gpus = machine()
    ray = _Resources(cpus, gpus)
    try:
        from posepipe.pipeline.run.cluster import cluster_plan, finish_plan

        workers, resources, threads = cluster_plan(options, ray)
        finishers, finish_resources = finish_plan(workers, resources, ray)
    except Exception as exc:  # the runner's private plan moved: say so, time with a plain guess
        return {"cpus": cpus, "gpus": gpus, "workers": options.num_workers or 1, "threads": 4, "finishers": 1,
                "error": f"{type(exc).__name__}: {exc}"}
    return {"cpus": cpus, "gpus": gpus, "workers": workers, "resources": resources, "threads": threads,
            "finishers": finishers, "finisher_resources": finish_resources}
