"""Shared fixtures: an in-process app over a fresh SQLite database per test."""

from __future__ import annotations

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
from dotflow_api.store import Store  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("filterwarnings", r"ignore:Using `httpx` with `starlette.testclient`")


def build_app(database_url: str, *, max_body_bytes: int | None = None) -> FastAPI:
    """An app accepting TOKEN_A and TOKEN_B over ``database_url`` (schema created)."""
    engine = create_db_engine(database_url)
    create_schema(engine)
    kwargs: dict[str, Any] = {}
    if max_body_bytes is not None:
        kwargs["max_body_bytes"] = max_body_bytes
    return create_app(Store(engine), TokenSet([TOKEN_A, TOKEN_B]), **kwargs)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'api.sqlite3'}"


@pytest.fixture
def app(database_url: str) -> FastAPI:
    return build_app(database_url)


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
