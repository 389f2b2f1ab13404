"""Helpers for the suites that test the server: its own and the end-to-end tests (needs pytest).

A program a test needs but the machine lacks (PostgreSQL, nginx) skips the test with the
reason, except in CI (``CI=true``), where it fails: CI must run every variant, and a
silent skip there would hide a backend that was never tested.

    @pytest.fixture(scope="session")
    def postgres() -> Iterator[PostgresCluster]:
        with postgres_cluster() as cluster:
            yield cluster
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import pytest

from dotflow_api.pgcluster import PostgresCluster, PostgresUnavailable


def in_ci() -> bool:
    """True in CI (``CI=true``), where a missing program is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(program: str, error: BaseException) -> NoReturn:
    """Skip the current test, saying ``program`` cannot run and why; in CI, fail it."""
    reason = f"{program} cannot run: {error}"
    if in_ci():
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A private PostgreSQL cluster, stopped on exit; without PostgreSQL, :func:`unavailable`."""
    try:
        cluster = PostgresCluster.start()
    except PostgresUnavailable as error:
        unavailable("PostgreSQL", error)
    try:
        yield cluster
    finally:
        cluster.stop()
