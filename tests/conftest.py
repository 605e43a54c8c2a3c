"""Shared fixtures: tiny pipelines built from configs, saved once per session, loaded fresh per test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def dcobench_cache(tmp_path_factory):
    """Every tiny model and subject is built under one cache per test session."""
    path = os.environ.get("DCOBENCH_TEST_CACHE") or str(tmp_path_factory.mktemp("dcobench-cache"))
    os.environ["DCOBENCH_CACHE"] = path
    return Path(path)


@pytest.fixture(scope="session")
def tiny_sd_path(dcobench_cache):
    from dcobench.models.tiny import tiny_model_path

    return tiny_model_path("sd")


@pytest.fixture(scope="session")
def tiny_sd_vpred_path(dcobench_cache):
    from dcobench.models.tiny import tiny_model_path

    return tiny_model_path("sd", prediction_type="v_prediction")


@pytest.fixture
def tiny_pipe(tiny_sd_path):
    from dcobench.models.pipeline import load_pipeline

    return load_pipeline(tiny_sd_path)


@pytest.fixture(scope="session")
def tiny_suite(dcobench_cache):
    from dcobench.suites import get_suite

    return get_suite("tiny")


def run_cli(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    """Run `python -m dcobench ARGS` in a subprocess, as a user would."""
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "dcobench", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli
