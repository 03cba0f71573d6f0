"""How the runner sizes its workers from the cluster's resources."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from posepipe.pipeline.options import JobOptions, OptionError
from posepipe.pipeline.run.cluster import cluster_plan


def _cluster(cpus: float, gpus: float = 0) -> SimpleNamespace:
    """What `ray.cluster_resources()` reports; the plan reads nothing else."""
    return SimpleNamespace(cluster_resources=lambda: {"CPU": cpus, "GPU": gpus} if gpus else {"CPU": cpus})


def _plan(cpus: float, gpus: float = 0, **options):
    return cluster_plan(JobOptions(input="in", output="out", **options), _cluster(cpus, gpus))


@pytest.mark.parametrize("cpus, gpus, workers, gpu_share, worker_cpus", [
    (16, 1, 2, 0.5, 7),    # two per GPU: one worker leaves the GPU idle during its CPU work; all vCPUs used
    (32, 4, 8, 0.5, 3),
    (8, 1, 2, 0.5, 3),
    (2, 1, 1, 1.0, 1),     # too few CPUs to feed two; one left for the finisher
    (6, 4, 4, 1.0, 1),     # never fewer workers than GPUs
])
def test_gpu_default_is_two_workers_per_gpu_when_cpus_allow(cpus, gpus, workers, gpu_share, worker_cpus):
    n, resources, threads = _plan(cpus, gpus)
    assert (n, resources["num_gpus"], resources["num_cpus"], threads) == (workers, gpu_share, worker_cpus, worker_cpus)


def test_explicit_workers_share_the_gpus():
    n, resources, _ = _plan(16, 1, num_workers=3)
    assert n == 3 and resources["num_gpus"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("workers", [None, 3, 4])
def test_a_gpu_node_plans_every_vcpu(workers):
    """Workers and finishers together take the node's 16 vCPUs, none idle, none oversubscribed."""
    from posepipe.pipeline.run.cluster import finish_plan

    n, resources, _ = _plan(16, 1, num_workers=workers)
    finishers, finish_resources = finish_plan(n, resources, _cluster(16, 1))
    planned = n * resources["num_cpus"] + finishers * finish_resources["num_cpus"]
    assert 15 <= planned <= 16, (n, resources, finishers, finish_resources)


def test_cpu_default_is_one_worker_per_two_cpus():
    assert _plan(8, device="cpu")[:2] == (4, {"num_cpus": 2, "num_gpus": 0})
    assert _plan(1, device="cpu")[:2] == (1, {"num_cpus": 1, "num_gpus": 0})


def test_cuda_without_gpus_is_refused():
    with pytest.raises(OptionError, match="no GPUs"):
        _plan(8, device="cuda")


@pytest.mark.parametrize("cpus, workers, finishers", [
    (2, 8, 1),      # --num-workers 8 on 2 CPUs: one finisher, not eight (~0.6 GB each)
    (2, 1, 1),
    (1, 1, 1),      # always at least one
    (8, 4, 4),      # the CPU default: one worker per 2 CPUs, a finisher each
    (16, 2, 2),     # one GPU, two workers: a finisher each
    (64, 16, 16),   # a cluster: its total CPUs (every node's) decide
    (64, 40, 32),
])
def test_the_finisher_count_follows_the_cpus(cpus, workers, finishers):
    from posepipe.pipeline.run.cluster import finish_plan

    n, resources = finish_plan(workers, {"num_cpus": 1}, _cluster(cpus))
    assert n == finishers and resources["num_gpus"] == 0
    assert resources["num_cpus"] == (1 if cpus - workers >= n else 0)  # a free CPU each, else they share
