"""The Ray a job runs on: a private local Ray started on demand, or a cluster joined with --address;
what environment reaches its workers; how many model workers and finishers the cluster's GPUs and
CPUs allow (`cluster_plan`, `finish_plan`); and whether the local Ray is still alive.

With `address` (or `RAY_ADDRESS`, as inside `ray job submit`) the job joins that cluster.
Otherwise it starts a private local Ray (`address="local"`: never an unrelated `ray start`
cluster that happens to run on this machine). Ray ties that Ray's GCS, raylet and workers to the
driver's life, so a killed driver leaves no workers behind (Ray's two agent processes linger for
about a minute, then exit) and a rerun starts cleanly. An already initialised Ray (tests,
notebooks) is used as is. A local Ray that dies under the job (its raylet or GCS exits: e.g. its
dashboard agent was killed) can never give workers back: the scheduler checks those processes every
RAY_CHECK_S (`local_ray_death`) and stops the job (`RayDiedError`, exit 6).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
from typing import Any, Mapping

from posepipe.pipeline.options import JobOptions, OptionError

log = logging.getLogger(__name__)


# Environment the workers need that is not secret; credentials reach workers through their own
# environment or instance roles, never through job metadata.
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
                 "POSEPIPE_CACHE", "XDG_CACHE_HOME")


# These name things on the driver's machine (a folder, a profile in ~/.aws/config): a cluster's
# nodes have their own (the image sets POSEPIPE_CACHE), and a laptop's path or profile there would
# break the workers (an unwritable cache folder, botocore's ProfileNotFound).
LOCAL_ONLY_ENV = ("AWS_PROFILE", "POSEPIPE_CACHE", "XDG_CACHE_HOME")


# OpenMP threads spin while waiting for work by default. When a machine's cores are shared (several
# workers, their decode threads, other processes), spinning threads starve the ones with work and
# inference ran ~10x slower here; passive waiting cost nothing measurable on an idle machine.
# (The image sets the same for cluster nodes: infra/Dockerfile.)
WORKER_ENV_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


WORKERS_PER_GPU = 2  # the default; see cluster_plan


# How often the driver checks that the local Ray it started is still alive (its raylet and GCS
# processes). A dead raylet answers nothing: without this check the job waited WORKER_WAIT_S.
RAY_CHECK_S = 2.0


# A worker's death is first checked against the local Ray's for this long (a raylet going down
# kills its workers before its own process has exited), so it is not reported as a lost worker.
RAYLET_EXIT_S = 1.0


class RayDiedError(RuntimeError):
    """The local Ray this job started died under it; what is committed stays, a rerun resumes."""


def cluster_plan(options: JobOptions, ray: Any) -> tuple[int, dict[str, Any], int]:
    """How many workers, with which resources, and how many torch threads each."""
    resources = ray.cluster_resources()
    cpus = int(resources.get("CPU", 1))
    gpus = int(resources.get("GPU", 0))
    use_gpu = options.device.startswith("cuda") or (options.device == "auto" and gpus > 0)
    if use_gpu and gpus == 0:
        raise OptionError("--device", "cuda was asked for but the Ray cluster has no GPUs; use --device cpu or auto")
    if use_gpu:
        # Two workers per GPU by default (given 2+ CPUs each): one worker leaves the GPU idle while
        # it decodes, crops and runs NMS on the CPU; on an H100 a second one doubled the steady-state
        # frames/s (README, Benchmark).
        n = options.num_workers or max(gpus, min(gpus * WORKERS_PER_GPU, cpus // 2))
        # The node's vCPUs go to the workers (decode threads, launches, host work: docs/gpu-budget.md),
        # less one for each finisher finish_plan will start: none left idle (16 vCPUs: 2 x 7 + 2 x 1).
        finishers = max(1, min(n, cpus // CPUS_PER_FINISHER))
        per_cpu = options.cpus_per_worker or max(1, (cpus - finishers) // max(n, 1))
        return n, {"num_cpus": per_cpu, "num_gpus": min(1.0, gpus / n)}, int(per_cpu)
    per_cpu = options.cpus_per_worker or (2 if cpus >= 2 else 1)
    n = options.num_workers or max(1, cpus // int(per_cpu))
    if options.num_workers and n * per_cpu > cpus:
        per_cpu = max(cpus / n, 0.5)  # share the CPUs rather than leave workers unschedulable
    return n, {"num_cpus": per_cpu, "num_gpus": 0}, max(1, int(round(per_cpu)))


def kept_local_notice(address: str, environ: Mapping[str, str]) -> str | None:
    """What a driver joining a cluster from elsewhere should hear about the `LOCAL_ONLY_ENV` it keeps."""
    on_a_node = address in ("local", "auto") or "RAY_JOB_CONFIG_JSON_ENV_VAR" in environ
    kept = sorted(name for name in LOCAL_ONLY_ENV if environ.get(name))
    if on_a_node or not kept:  # a driver on a node shares the node's own settings
        return None
    return (f"not forwarded to the cluster's workers: {', '.join(kept)} (they name things on this machine); "
            "set them on the nodes, or pass `posepipe submit --env NAME=VALUE`")


def forwarded_env(*, local: bool, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The `FORWARDED_ENV` variables to hand the workers through `ray.init(runtime_env=...)`.

    Starting a local Ray: all of them that are set (its workers would inherit them anyway; this
    says so), plus `WORKER_ENV_DEFAULTS` unless set here. Joining a cluster: those set here,
    except `LOCAL_ONLY_ENV`, and not already set by the Ray Job's own runtime env (`ray job submit
    --runtime-env-json`, seen by the driver as RAY_JOB_CONFIG_JSON_ENV_VAR): the Job's value
    already reaches every worker, and Ray refuses to merge a `ray.init` runtime_env that sets the
    same variable (ValueError).
    """
    environ = os.environ if environ is None else environ
    env = {k: environ[k] for k in FORWARDED_ENV if k in environ}
    if local:
        defaults = {k: environ.get(k, v) for k, v in WORKER_ENV_DEFAULTS.items()}
        return {**defaults, **env}
    env = {k: v for k, v in env.items() if k not in LOCAL_ONLY_ENV}
    job_config = environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if job_config:
        try:
            job_env = (json.loads(job_config).get("runtime_env") or {}).get("env_vars") or {}
        except (ValueError, AttributeError):
            return {}  # a Job config we cannot read: forward nothing rather than risk a conflict
        env = {k: v for k, v in env.items() if k not in job_env}
    return env


def gpu_expected(options: JobOptions) -> bool | None:
    """Whether the models will run on GPUs (None: unknown until the cluster is joined)."""
    import ray

    if options.device == "cpu":
        return False
    if options.device.startswith("cuda"):
        return True
    if ray.is_initialized():
        return ray.cluster_resources().get("GPU", 0) > 0
    if options.address or os.environ.get("RAY_ADDRESS"):
        return None
    import torch

    return torch.cuda.is_available()


def start_ray(options: JobOptions) -> bool:
    """Start a private local Ray, or join `--address`; True (this job started it)."""
    import ray

    address = options.address or os.environ.get("RAY_ADDRESS") or "local"
    env = forwarded_env(local=address == "local")
    notice = kept_local_notice(address, os.environ)
    if notice:
        log.warning(notice)
    # Workers' own output (Ray's and FFmpeg's internals, tracebacks of failures the job reports
    # itself) goes to Ray's log files, not the user's terminal, unless posepipe logs at INFO (-v).
    verbose = log.isEnabledFor(logging.INFO)
    on_main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if on_main else None
    ray.init(address=address, include_dashboard=False, log_to_driver=verbose,
             logging_level=logging.WARNING if verbose else logging.ERROR,
             runtime_env={"env_vars": env} if env else None)
    if sigterm is not None:
        # ray.init replaced this process's SIGTERM handling (a sys.exit in Python, then its core
        # worker's C++ handler that dumps a stack and aborts): keep the one we had (stop_on_signals).
        signal.signal(signal.SIGTERM, sigterm)
    if verbose:
        _ray_output_through_terminal()
    else:
        _ray_errors_to_log_file()
    return True


def _ray_output_through_terminal() -> None:
    """With -v, what Ray's driver prints goes one line at a time through `terminal.plain`: the
    workers' output (FFmpeg and library messages quote file names from outside; Ray colours its
    prefixes with escape sequences), the cluster's error messages, and Ray's own log records.
    Ray prints worker output through the handler its stdstream dispatcher was given in `ray.init`,
    and error messages through the module's `print_to_stdstream`: both are replaced. Ray's
    internals may move: then what cannot be found is left as it is."""
    from posepipe.pipeline.run.terminal import plain_log_handlers, say

    plain_log_handlers("ray")
    try:
        from ray._private import worker as ray_worker

        dispatcher = getattr(ray_worker, "global_worker_stdstream_dispatcher", None)
    except Exception:
        return

    def to_terminal(data: dict[str, Any], ignore_prefix: bool = False) -> None:
        prefix = "" if ignore_prefix else f"({data.get('actor_name') or data.get('task_name') or 'pid'}={data.get('pid', '?')}) "
        say(*(prefix + line for line in data.get("lines", [])), err=bool(data.get("is_err")))

    if callable(getattr(ray_worker, "print_to_stdstream", None)):
        ray_worker.print_to_stdstream = to_terminal
    if dispatcher is not None and any(name == "ray_print_logs" for name, _ in getattr(dispatcher, "handlers", [])):
        dispatcher.remove_handler("ray_print_logs")
        dispatcher.add_handler("ray_print_logs", to_terminal)


def _ray_errors_to_log_file() -> None:
    """Send the cluster errors Ray prints on the driver's terminal to a file in its session logs.

    Whatever `log_to_driver` says, a thread of Ray's driver prints the cluster's error messages
    ("(raylet) A worker died...", "(raylet) Raylet is terminated ... Last 20 lines of the Raylet
    logs: ...") through `ray._private.worker.print_to_stdstream`. The job reports those failures
    itself, in one line each, so without -v they go to
    <session>/logs/posepipe-driver-ray-errors.log. Ray's internals may move: then nothing is changed.
    """
    try:
        from ray._private import worker as ray_worker

        path = os.path.join(ray_worker._global_node.get_logs_dir_path(), "posepipe-driver-ray-errors.log")
        if not callable(getattr(ray_worker, "print_to_stdstream", None)):
            return
    except Exception:
        return

    def to_file(data: dict[str, Any], ignore_prefix: bool = False) -> None:
        try:
            with open(path, "a", encoding="utf-8") as out:
                for line in data.get("lines", []):
                    out.write(f"({data.get('pid', '?')}) {line}\n")
        except OSError:
            pass

    ray_worker.print_to_stdstream = to_file


def local_ray_death() -> str | None:
    """Which process of the local Ray this driver started has exited ("raylet exited with code
    0"), or None: alive, or a cluster this driver joined (its nodes are Ray's to watch).

    Killing Ray's dashboard agent takes the raylet down with it; a dead raylet answers nothing, and
    the driver would wait for workers that can never come back. Checking the processes Ray started
    from this one (their `Popen.poll`) costs nothing and cannot hang."""
    try:
        from ray._private import worker as ray_worker

        started = getattr(ray_worker._global_node, "all_processes", None) or {}
        for kind in ("raylet", "gcs_server"):
            for info in started.get(kind, []):
                code = info.process.poll()
                if code is not None:
                    return f"its {kind} exited with code {code}"
    except Exception:  # Ray's internals moved: no check rather than a false alarm
        return None
    return None


# At most one finisher per this many of the cluster's CPUs (see finish_plan).
CPUS_PER_FINISHER = 2


def finish_plan(n_workers: int, worker_resources: Mapping[str, Any], ray: Any) -> tuple[int, dict[str, Any]]:
    """How many finishers (CPU actors for tracking, lifting and writing), with which resources.

    One per model worker keeps up with them, but never more than one per CPUS_PER_FINISHER of the
    cluster's CPUs (`ray.cluster_resources()` when the job starts: every node's, so a cluster's
    finishers follow its total; at least one). Each finisher is a process holding the lifter and
    its own torch (~0.6 GB): `--num-workers 8` on 2 CPUs started 8 of them (~5 GB) for work that 2
    CPUs cannot run in parallel anyway. Each takes a CPU the model workers left free, else shares."""
    cpus = float(ray.cluster_resources().get("CPU", 1))
    n = max(1, min(n_workers, int(cpus) // CPUS_PER_FINISHER))
    spare = cpus - n_workers * float(worker_resources.get("num_cpus", 1))
    return n, {"num_cpus": 1 if spare >= n else 0, "num_gpus": 0}
