"""Shared fixtures: a real moto S3 server on loopback and a real local Ray instance."""
from __future__ import annotations

import os

import pytest

from tests.servers import S3_ENV_UNSET, moto_s3_server, s3_env


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
