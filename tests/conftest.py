"""Shared fixtures: a real moto S3 server on loopback and a real local Ray instance."""
from __future__ import annotations

import os
from importlib import metadata

import pytest

from tests.servers import S3_ENV_UNSET, moto_s3_server, s3_env


# What a fresh install resolved: printed at the top of every run (CI's log included), so a failure that
# a new release causes names the release.
VERSIONS = ("torch", "numpy", "pyarrow", "av", "ray", "opencv-python-headless", "pillow", "scipy", "smart-open",
            "boto3", "duckdb", "polars", "pandas", "moto", "decord", "pycocotools")


def pytest_report_header(config):
    found = []
    for name in VERSIONS:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} absent")
    return "resolved: " + ", ".join(found)


@pytest.fixture(scope="session")
def s3_server():
    """One moto server process for the session; its endpoint is in the environment (as a user's would be)."""
    with moto_s3_server() as server:
        saved = {k: os.environ.get(k) for k in (*s3_env(server.endpoint_url), *S3_ENV_UNSET)}
        for key in S3_ENV_UNSET:
            os.environ.pop(key, None)
        os.environ.update(s3_env(server.endpoint_url))
        try:
            yield server
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture(scope="session")
def ray_local(s3_server, tmp_path_factory):
    """A real local Ray instance, started after the S3 environment so workers inherit it."""
    import ray

    os.environ["POSEPIPE_CACHE"] = str(tmp_path_factory.mktemp("weights-cache"))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
