"""Shared fixtures: every test starts from a clean dotflow environment."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from dotflow_core.testing import RecordingProvider, isolate_environment


@pytest.fixture(autouse=True)
def clean_dotflow_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """No dotflow variable leaks in from the developer's shell; the user dir is private."""
    home = tmp_path_factory.mktemp("dotflow-home")
    isolate_environment(monkeypatch, home)
    yield home


@pytest.fixture
def recorder() -> RecordingProvider:
    return RecordingProvider()


def needs_distributed() -> Any:
    """The ``distributed`` module; skips when absent, except in CI (it is in requirements)."""
    import importlib.util
    import os

    if importlib.util.find_spec("distributed") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("distributed is not installed: pip install -r requirements/test.txt")
        pytest.skip("distributed is not installed: pip install 'dotflow-core[dask]'")
    import distributed

    return distributed


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """One real Dask LocalCluster for the session: 2 worker processes, one thread each.

    ``allowed-failures`` is 0, so a task whose worker dies fails at once instead of
    being tried on the other workers first.
    """
    distributed = needs_distributed()
    import logging

    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = distributed.Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()


@pytest.fixture(scope="session")
def process_pool() -> Iterator[ProcessPoolExecutor]:
    """One ProcessPoolExecutor for the session (tests that break a pool make their own)."""
    with ProcessPoolExecutor(max_workers=2) as pool:
        yield pool
