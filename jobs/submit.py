"""`posepipe submit | status | logs`: run `posepipe run` on a Ray cluster as a Ray Job.

    posepipe submit s3://bucket/videos --output s3://bucket/poses --address http://HEAD:8265 --num-workers 4 --wait
    posepipe status JOB_ID --address http://HEAD:8265 [--json]
    posepipe logs JOB_ID --address http://HEAD:8265 [--follow]

`submit` talks to the head's dashboard (the Ray Jobs HTTP API, port 8265); the job's entrypoint is
`posepipe run INPUT --output OUTPUT --address auto [RUN OPTIONS]`, run on the head node. Any option of
`posepipe run` can follow; they are checked here, with `posepipe run`'s own parser and validation,
before anything is sent.

What the job gets:
  - the code: this checkout's pipeline/, models/ and jobs/ (or the installed ones), as one runtime_env
    py_module named `posepipe`, without caches, weights or media. It goes first on the job's
    PYTHONPATH, so the job runs the code you have here.
  - no dependencies: the cluster's image must have posepipe's dependencies and the `posepipe`
    command (infra/Dockerfile builds that image). `--pip SPEC` adds packages for one job.
  - non-secret settings: AWS_ENDPOINT_URL(_S3), AWS_REGION, AWS_DEFAULT_REGION when set here, and
    `--env NAME=VALUE`. Never credentials: the cluster's nodes use their own (environment, instance
    role, IRSA). Not this machine's POSEPIPE_CACHE or AWS_PROFILE either: a local folder or profile
    means nothing on the nodes (pass `--env POSEPIPE_CACHE=/shared/weights` to choose one there).
    Job settings are readable by anyone who can see the dashboard.

Address: --address, else $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS (as Ray's own CLI), normally the
dashboard's http://HEAD:8265. Unlike Ray's client, an explicit --address wins over the environment.

Exit codes: 0 submitted, or with --wait the job SUCCEEDED; with --wait a FAILED job gives the job's
`posepipe run` exit code (3 some videos failed, 4 weights, 2 bad input, 1 otherwise) and a STOPPED job
130; 2 nothing was submitted (a bad option, the dashboard cannot be reached, an unknown job id). Ctrl-C
or SIGTERM while following (--wait, logs --follow) stops following, not the job: 130 or 143.

The job's log is printed one line at a time through `terminal.say` (escaped like everything else).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import signal
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

import click
from click.core import ParameterSource

from posepipe.jobs.config import CONFIG_META, ENV_PREFIX, merge
from posepipe.jobs.conventions import Command
from posepipe.pipeline.io.redaction import redact, scrub
from posepipe.pipeline.options import JobOptions, OptionError
from posepipe.pipeline.run.terminal import say, say_json, shell_quote

SOURCE_ROOT = Path(__file__).resolve().parents[1]  # a checkout, or site-packages/posepipe when installed
PACKAGES = ("jobs", "pipeline", "models")
# Settings a job may need on the cluster that are not secret.
JOB_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION")
# Credentials, or pointers to local ones: never sent; the nodes have their own.
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                  "AWS_SHARED_CREDENTIALS_FILE", "GOOGLE_APPLICATION_CREDENTIALS",
                  "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_KEY")
# Not uploaded with the code (runtime_env `excludes`, .gitignore syntax); mirrors .dockerignore.
PACKAGE_EXCLUDES = (
    ".git", ".venv", ".venv-*", "venv", ".whl", "out/", "build/", "dist/", "*.egg-info", "__pycache__", "*.py[cod]",
    ".pytest_cache", ".mypy_cache", ".ruff_cache", ".cache", ".ipynb_checkpoints", "/tests/", "/samples/",
    "*.pth", "*.pt", "*.ckpt", "*.tar", "*.npz", "*.mp4", "*.parquet",
    ".env", ".env.*", "*.pem", "*.key", ".aws", "credentials",
)
EXIT_NOT_SUBMITTED, EXIT_STOPPED = 2, 130
START_HINT = "start the cluster with `ray start --head --dashboard-host 0.0.0.0` or pass --address"


class SubmitError(click.ClickException):
    """What went wrong with the cluster or the job, and what to do (exit 2: nothing was submitted)."""

    exit_code = EXIT_NOT_SUBMITTED


# --------------------------------------------------------------------------- the job


def staged_package(source_root: Path) -> Path:
    """A temporary folder `posepipe/` holding copies of the checkout's jobs/, pipeline/ and models/ (no
    caches or weights): how the checkout's code imports on the cluster, as `posepipe.*`."""
    import shutil
    import tempfile

    package = Path(tempfile.mkdtemp(prefix="posepipe-submit-")) / "posepipe"
    for name in PACKAGES:
        shutil.copytree(source_root / name, package / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.pth", "*.pt", "*.npz", "*.parquet"))
    return package


def job_runtime_env(environ: Mapping[str, str], *, extra_env: Mapping[str, str] | None = None,
                    pip: Sequence[str] = (), source_root: Path = SOURCE_ROOT) -> dict[str, Any]:
    """The runtime_env of a submitted job: the code, non-secret settings, never credentials."""
    env = {name: environ[name] for name in JOB_ENV if environ.get(name)}
    env.update(extra_env or {})
    env["PYTHONUNBUFFERED"] = "1"  # the job's log streams while it runs
    # `posepipe run` calls ray.init(runtime_env={"env_vars": ...}) with some of the same variables, and
    # Ray refuses to merge that with the job's unless told to (as infra/kuberay/rayjob.yaml does). The
    # runner leaves the job's variables out (runner.forwarded_env); this keeps older runners working.
    env["RAY_OVERRIDE_JOB_RUNTIME_ENV"] = "1"
    leaked = sorted(set(env) & set(CREDENTIAL_ENV))
    if leaked:
        raise ValueError(f"{', '.join(leaked)}: credentials are never sent with a job; the cluster's nodes "
                         "must get them from their own environment or instance role")
    # The code travels as one py_module named `posepipe` (the import name of models/, pipeline/ and
    # jobs/): an installed posepipe is already that folder; a checkout is staged into one.
    package = source_root if not (source_root / "pyproject.toml").is_file() else staged_package(source_root)
    runtime_env: dict[str, Any] = {"env_vars": env, "excludes": list(PACKAGE_EXCLUDES), "py_modules": [str(package)]}
    if pip:
        runtime_env["pip"] = list(pip)
    return runtime_env


def job_options(params: Mapping[str, Any]) -> JobOptions:
    """The JobOptions `posepipe run` builds from these parsed `run` params (to validate them here)."""
    from posepipe.jobs.run import options_from_run_params

    return options_from_run_params(params, address="auto")


def on_cluster(uri: str) -> str:
    """A local path made absolute (the job runs elsewhere, in another folder); URIs unchanged."""
    return uri if "://" in uri else os.path.abspath(os.path.expanduser(uri))


def run_argv(run_ctx: click.Context) -> list[str]:
    """`posepipe run ...` for the job: the options given on the command line, joined to the cluster."""
    from posepipe.jobs.run import parse_weights, run_command

    params = run_ctx.params
    argv = ["posepipe", "run", on_cluster(params["input_uri"]), "--output", on_cluster(params["output"]),
            "--address", "auto"]
    for param in run_command.params:
        # --config's values are in params already (as defaults from the file): the file stays here
        if not isinstance(param, click.Option) or param.name in ("output", "address") or not param.expose_value:
            continue
        if run_ctx.get_parameter_source(param.name) in (None, ParameterSource.DEFAULT):
            continue
        value, flag = params[param.name], max(param.opts, key=len)
        if param.is_bool_flag:
            if value:
                argv.append(flag)
            elif param.secondary_opts:
                argv.append(max(param.secondary_opts, key=len))
        elif param.name == "weights":
            for name, uri in parse_weights(value).items():
                argv += [flag, f"{name}={on_cluster(uri)}"]
        elif param.multiple:
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


def job_exit_code(status: str, driver_exit_code: int | None = None, message: str | None = None) -> int:
    """A finished job's status as an exit code; FAILED gives `posepipe run`'s own code when known."""
    if status == "SUCCEEDED":
        return 0
    if status == "STOPPED":
        return EXIT_STOPPED
    if status != "FAILED":
        raise ValueError(f"job status {status} is not final")
    code = driver_exit_code
    if code is None:  # older clusters only say it in the message
        found = re.search(r"exit code (-?\d+)", message or "")
        code = int(found.group(1)) if found else None
    if code is None or code == 0:
        return 1
    return 128 - code if code < 0 else min(code, 255)  # killed by signal N -> 128 + N, as a shell does


# --------------------------------------------------------------------------- the cluster


def resolve_address(address: str | None) -> str:
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise SubmitError("no Ray dashboard address: pass --address http://HEAD:8265 (or set RAY_ADDRESS); "
                          f"no cluster yet? {START_HINT}")
    return address.rstrip("/")


@contextlib.contextmanager
def _without_env(*names: str) -> Iterator[None]:
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def connect(address: str) -> Any:
    """A JobSubmissionClient for the dashboard at `address`, or a SubmitError saying how to get one."""
    parts = urlsplit(address)
    if parts.scheme in ("http", "https") and parts.hostname:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:  # fail in seconds, not after a TCP timeout: Ray's client sets no timeout
            socket.create_connection((parts.hostname, port), timeout=5).close()
        except OSError as exc:
            raise SubmitError(f"cannot reach the Ray dashboard at {redact(address)} ({exc.strerror or scrub(str(exc))}): {START_HINT}") from None
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    for handler in logging.getLogger("ray").handlers:
        if not any(isinstance(f, _QuietRayClient) for f in handler.filters):
            handler.addFilter(_QuietRayClient())
    try:
        # Ray lets RAY_ADDRESS override the address it is given; here the explicit one wins.
        with _without_env("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
            return JobSubmissionClient(address)
    except AuthenticationError as exc:
        raise SubmitError(f"the Ray dashboard at {redact(address)} refused posepipe: {scrub(str(exc))}") from None
    except Exception as exc:  # refused, not a Ray dashboard, too old a Ray: all the same to the user
        raise SubmitError(f"cannot reach the Ray dashboard at {redact(address)} ({scrub(str(exc))}): {START_HINT}") from None


class _QuietRayClient(logging.Filter):
    """Ray's job client narrates uploads and sockets at INFO, and warns (Ray 2.5x) that .git and .venv
    are no longer uploaded, which posepipe excludes anyway: keep its other warnings and errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and "is now ignored by default" not in str(record.msg)


@contextlib.contextmanager
def cluster_errors(address: str, job_id: str | None = None, exit_code: int = EXIT_NOT_SUBMITTED) -> Iterator[None]:
    """Errors of Ray's job client as one message naming the cluster (and job) and what to do."""
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as exc:
        error = SubmitError(f"the Ray dashboard at {redact(address)} refused posepipe: {scrub(str(exc))}")
    except OSError as exc:  # requests' errors are OSErrors: the dashboard went away
        error = SubmitError(f"lost the Ray dashboard at {redact(address)} ({scrub(str(exc))})")
    except RuntimeError as exc:  # Ray's client: "Request failed with status code N: ..."
        if job_id and "status code 404" in str(exc):
            error = SubmitError(f"no job {job_id!r} on the Ray cluster at {redact(address)} "
                                f"(`ray job list --address {redact(address)}` lists them)")
        else:
            error = SubmitError(f"the Ray cluster at {redact(address)}: {scrub(str(exc))}")
    else:
        return
    error.exit_code = exit_code
    raise error from None


class LogLines:
    """A job's log, arriving in chunks that may end mid-line, printed a whole line at a time through
    `terminal.say`: the log holds whatever the job's processes printed (file names, library errors)."""

    def __init__(self) -> None:
        self.pending = ""

    def feed(self, chunk: str) -> None:
        *lines, self.pending = (self.pending + chunk).split("\n")
        say(*lines)

    def close(self) -> None:
        if self.pending:
            say(self.pending)
        self.pending = ""


def print_log(text: str) -> None:
    """A job's whole log, one line at a time through `terminal.say`."""
    lines = LogLines()
    lines.feed(text)
    lines.close()


def follow_logs(client: Any, job_id: str) -> None:
    """Print the job's log as it is written, until the job ends."""
    lines = LogLines()

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            lines.feed(chunk)

    try:
        asyncio.run(tail())
    except RuntimeError as exc:  # the stream broke (e.g. the dashboard restarted): say so, keep waiting
        lines.close()
        say(f"posepipe: log stream interrupted ({scrub(str(exc))}); waiting for the job to end", err=True, fg="yellow")
    finally:
        lines.close()


def wait_for_end(client: Any, job_id: str, poll_s: float = 1.0) -> Any:
    while True:
        info = client.get_job_info(job_id)
        if info.status.is_terminal():
            return info
        time.sleep(poll_s)


def describe(info: Any) -> dict[str, Any]:
    def when(ms: int | None) -> str | None:
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="seconds") if ms else None

    duration = (info.end_time - info.start_time) / 1000 if info.start_time and info.end_time else None
    return {"job_id": info.submission_id or info.job_id, "status": str(info.status.value), "message": info.message,
            "entrypoint": info.entrypoint, "start_time": when(info.start_time), "end_time": when(info.end_time),
            "duration_s": duration, "driver_exit_code": getattr(info, "driver_exit_code", None)}


def _first_line(text: str | None) -> str:
    return re.sub(r", last available logs.*$", "", (text or "").strip().split("\n", 1)[0])


def _interrupted(job_id: str, address: str, signum: int = signal.SIGINT) -> None:
    from posepipe.pipeline.run.runner import exit_code_for_signal

    say("", f"posepipe: stopped following; the job keeps running. Stop it with "
        f"`ray job stop {shell_quote(job_id)} --address {shell_quote(redact(address))}`", err=True)
    raise SystemExit(exit_code_for_signal(signum))


# --------------------------------------------------------------------------- commands

ADDRESS_HELP = ("Ray dashboard of the cluster, http://HEAD:8265. Default: $RAY_API_SERVER_ADDRESS, then $RAY_ADDRESS "
                "(one of the three is needed).")
SUBMIT_EXIT_CODES = (
    (0, "submitted, or with --wait the job SUCCEEDED"),
    (2, "nothing was submitted: a bad option, no or an unreachable dashboard, an unknown job id"),
    (3, "with --wait, the job's `posepipe run` exit code when it FAILED (3 some videos failed, 4 weights, ...); "
        "1 when it gave none"),
    (130, "with --wait, a STOPPED job; Ctrl-C (130) or SIGTERM (143) while following stops following, not the job"),
)
CLUSTER_EXIT_CODES = ((0, "done"), (2, "no or an unreachable dashboard, or an unknown job id"),
                      (1, "the dashboard went away while following"))


@click.command("submit", cls=Command, context_settings={"ignore_unknown_options": True}, exit_codes=SUBMIT_EXIT_CODES)
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED, metavar="INPUT --output OUTPUT [RUN OPTIONS]...")
@click.option("--address", default=None, help=ADDRESS_HELP)
@click.option("--wait", is_flag=True, help="Print the job's log until it ends; exit with its status.")
@click.option("--job-id", default=None, help="Submission id (default: one chosen by Ray). Must be new on the cluster.")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE",
              help="Set a (non-secret) variable for the job, e.g. POSEPIPE_CACHE=/var/cache/posepipe. Repeatable.")
@click.option("--pip", "pip", multiple=True, metavar="SPEC", help="Extra pip requirement installed for this job. Repeatable.")
@click.pass_context
def submit_command(ctx: click.Context, run_args: tuple[str, ...], address: str | None, wait: bool, job_id: str | None,
                   env: tuple[str, ...], pip: tuple[str, ...]) -> None:
    """Run `posepipe run INPUT --output OUTPUT [RUN OPTIONS]` on a Ray cluster as a Ray Job.

    RUN OPTIONS are those of `posepipe run` (--num-workers, --device, --weights, --random-weights, ...),
    checked here before anything is sent. The job runs this checkout's code; the cluster's image must
    have posepipe's dependencies. Credentials are never sent: the nodes use their own.
    """
    from posepipe.jobs.run import run_command
    from posepipe.pipeline.run.runner import stop_on_signals

    # `posepipe run`'s parser, with the defaults `posepipe run` itself would get here: the config
    # file's [run] table and the POSEPIPE_RUN_* variables (forwarded to the job as options: the
    # cluster has neither the file nor this environment).
    root = ctx.find_root()
    run_defaults = merge((root.default_map or {}).get("run") if root is not ctx else None,
                         ctx.meta.get(CONFIG_META, {}).get("run", {}))  # submit's own --config FILE
    try:
        run_ctx = run_command.make_context("run", list(run_args), default_map=run_defaults,
                                           auto_envvar_prefix=f"{ENV_PREFIX}_RUN", show_default=True)
        options = job_options(run_ctx.params)
    except click.ClickException as exc:
        raise click.UsageError(f"{exc.format_message()} (see `posepipe run --help`)", ctx=ctx) from None
    from posepipe.models import CATALOGUE

    try:
        options.validate(CATALOGUE)
    except OptionError as exc:
        raise click.UsageError(str(exc), ctx=ctx) from None
    extra_env = {}
    for item in env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: write NAME=VALUE", param_hint="--env")
        extra_env[name] = value
    try:
        runtime_env = job_runtime_env(os.environ, extra_env=extra_env, pip=pip)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--env") from None
    argv = run_argv(run_ctx)
    address = resolve_address(address)
    _notes(run_ctx.params, address)
    client = connect(address)
    entrypoint = shlex.join(argv)
    try:
        with cluster_errors(address):
            job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=job_id)
    except ValueError as exc:  # e.g. the code package is over Ray's size limit
        raise SubmitError(f"the job was not submitted: {scrub(str(exc))}") from None
    say(job_id)
    say(f"posepipe: submitted to {redact(address)}: {entrypoint}", err=True)
    job, where = shell_quote(job_id), shell_quote(redact(address))
    if not wait:
        say(f"  follow: posepipe logs {job} --address {where} --follow",
            f"  status: posepipe status {job} --address {where}",
            f"  stop:   ray job stop {job} --address {where}", err=True)
        return
    # From here the job exists: losing the dashboard is exit 1, not "nothing was submitted".
    with cluster_errors(address, job_id, exit_code=1), stop_on_signals():
        try:
            follow_logs(client, job_id)
            info = wait_for_end(client, job_id)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: stop following, as documented
            _interrupted(job_id, address, getattr(exc, "signum", signal.SIGINT))
    code = job_exit_code(info.status.value, getattr(info, "driver_exit_code", None), info.message)
    say(f"posepipe: job {job_id} {info.status.value}: {_first_line(info.message)} (exit code {code})", err=True)
    ctx.exit(code)


def _notes(params: Mapping[str, Any], address: str) -> None:
    """One line each for what the user may not expect to happen (or not happen) on the cluster."""
    from posepipe.jobs.run import parse_weights

    held = [name for name in CREDENTIAL_ENV if os.environ.get(name)]
    if held:
        say(f"posepipe: note: not forwarded to the job: {', '.join(held)} (credentials stay here; the "
            "cluster's nodes use their own environment or instance role)", err=True)
    uris = [params["input_uri"], params["output"], *parse_weights(params["weights"]).values()]
    if any(urlsplit(u).query or urlsplit(u).username for u in uris if "://" in u):
        say("posepipe: note: a URI carries a query or user info (a pre-signed URL?): it is part of the "
            "job's entrypoint, visible on the dashboard", err=True)
    host = urlsplit(address).hostname
    local = [on_cluster(u) for u in uris if "://" not in u]
    if local and host not in ("127.0.0.1", "localhost", "::1"):
        say(f"posepipe: note: local paths ({', '.join(local)}) are read on the cluster's nodes: they must "
            "exist there (a shared filesystem); else use s3://", err=True)


@click.command("status", cls=Command, exit_codes=CLUSTER_EXIT_CODES)
@click.argument("job_id")
@click.option("--address", default=None, help=ADDRESS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status_command(job_id: str, address: str | None, as_json: bool) -> None:
    """Status, message and times of a submitted job."""
    address = resolve_address(address)
    client = connect(address)
    with cluster_errors(address, job_id):
        data = describe(client.get_job_info(job_id))
    if as_json:
        say_json(data)
        return
    say(f"{data['job_id']}: {data['status']}")
    data["message"] = _first_line(data["message"])  # a failed job's message goes on with its log
    say(*(f"  {key + ':':18s}{data[key]}" for key in ("message", "entrypoint", "start_time", "end_time", "duration_s",
                                                      "driver_exit_code") if data[key] is not None))


@click.command("logs", cls=Command, exit_codes=CLUSTER_EXIT_CODES)
@click.argument("job_id")
@click.option("--address", default=None, help=ADDRESS_HELP)
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
def logs_command(job_id: str, address: str | None, follow: bool) -> None:
    """The log (stdout and stderr) of a submitted job's `posepipe run`."""
    from posepipe.pipeline.run.runner import stop_on_signals

    address = resolve_address(address)
    client = connect(address)
    with cluster_errors(address, job_id):
        client.get_job_info(job_id)  # an unknown id is named, not a bare 404
        if not follow:
            print_log(client.get_job_logs(job_id))
            return
        with stop_on_signals():
            try:
                follow_logs(client, job_id)
            except KeyboardInterrupt as exc:
                _interrupted(job_id, address, getattr(exc, "signum", signal.SIGINT))
