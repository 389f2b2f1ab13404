"""Shared fixtures: an in-process app over a fresh database per test.

A test that takes ``database_url`` runs on a new SQLite file; in modules marked
``both_backends`` (those whose behaviour depends on the database: the store, runs,
input values, migrations, real servers) it runs on PostgreSQL too, from empty tables.
PostgreSQL is a private cluster this session starts (``dotflow_api.pgcluster``), or
the server ``DOTFLOW_API_TEST_DATABASE_URL`` names
(e.g. ``postgresql+psycopg://postgres@127.0.0.1/dotflow_test``). Without PostgreSQL
installed the PostgreSQL variants skip, saying so, except in CI (``CI=true``), where
they fail. Tests that only make sense on SQLite are marked with ``sqlite_only``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# starlette 1.x prefers httpx2 for its TestClient; httpx works the same for these tests.
warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient`")

from api_helpers import TOKEN_A, TOKEN_B  # noqa: E402
from dotflow_api.app import create_app  # noqa: E402
from dotflow_api.auth import TokenSet  # noqa: E402
from dotflow_api.db import create_db_engine, create_schema  # noqa: E402
from dotflow_api.models import Base  # noqa: E402
from dotflow_api.store import Store  # noqa: E402
from dotflow_api.testing import postgres_cluster  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

#: Another database to run the in-process tests against (SQLite files otherwise).
EXTERNAL_DATABASE_URL = os.environ.get("DOTFLOW_API_TEST_DATABASE_URL")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("filterwarnings", r"ignore:Using `httpx` with `starlette.testclient`")
    config.addinivalue_line("markers", "sqlite_only: checks SQLite specifics")
    config.addinivalue_line("markers", "both_backends: run on SQLite and on PostgreSQL")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database_url" in metafunc.fixturenames:
        both = metafunc.definition.get_closest_marker("both_backends") is not None
        backends = ["sqlite", "postgresql"] if both else ["sqlite"]
        metafunc.parametrize("database_url", backends, indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="SQLite-specific")
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("database_url") if callspec else None
        if backend == "postgresql" and item.get_closest_marker("sqlite_only"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A PostgreSQL database for the session: migrated once, emptied before each test."""
    if EXTERNAL_DATABASE_URL:
        yield EXTERNAL_DATABASE_URL
        return
    with postgres_cluster() as cluster:
        yield cluster.create_database("dotflow_test")


def empty_postgres(url: str) -> None:
    """Bring the schema up to date and delete every row (ids start from 1 again)."""
    engine = create_db_engine(url)
    try:
        create_schema(engine)
        tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    finally:
        engine.dispose()


def build_app(database_url: str, *, max_body_bytes: int | None = None) -> FastAPI:
    """An app accepting TOKEN_A and TOKEN_B over ``database_url`` (schema created)."""
    engine = create_db_engine(database_url)
    create_schema(engine)
    kwargs: dict[str, Any] = {}
    if max_body_bytes is not None:
        kwargs["max_body_bytes"] = max_body_bytes
    return create_app(Store(engine), TokenSet([TOKEN_A, TOKEN_B]), **kwargs)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_admin_url")
        empty_postgres(url)
        return url
    return f"sqlite:///{tmp_path / 'api.sqlite3'}"


def dispose(app: FastAPI) -> None:
    """Close the app's database connections (an external database has a connection cap)."""
    app.state.store.engine.dispose()


@pytest.fixture
def app(database_url: str) -> Iterator[FastAPI]:
    application = build_app(database_url)
    yield application
    dispose(application)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=True) as test_client:
        yield test_client


@pytest.fixture
def make_client(database_url: str) -> Iterator[Callable[..., TestClient]]:
    """Build a client for an app with custom settings (e.g. a small body limit)."""
    clients: list[TestClient] = []

    def make(**kwargs: Any) -> TestClient:
        test_client = TestClient(build_app(database_url, **kwargs))
        clients.append(test_client)
        return test_client

    yield make
    for test_client in clients:
        test_client.close()
        dispose(test_client.app)  # type: ignore[arg-type]
