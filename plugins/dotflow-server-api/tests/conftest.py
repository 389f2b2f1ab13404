"""Shared fixtures: a clean environment, a private outbox, a fake server, fast providers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dotflow_server_api import ServerAPI
from dotflow_server_api.delivery import IDLE_RETIREMENT, Delivery
from dotflow_server_api.delivery.limiter import INITIAL_LIMIT
from dotflow_server_api.settings import ApiSettings
from fake_api import TOKEN, FakeAPI

from dotflow_core.testing import isolate_environment


@pytest.fixture(autouse=True)
def clean_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """No dotflow variable leaks in; the user dir and the outbox are private temp dirs."""
    home = tmp_path_factory.mktemp("dotflow-home")
    isolate_environment(monkeypatch, home)
    monkeypatch.setenv("DOTFLOW_OUTBOX_DIR", str(home / "outbox"))
    monkeypatch.chdir(home)  # no pyproject.toml of the repo is found
    yield home


@pytest.fixture
def outbox_dir(clean_environment: Path) -> Path:
    return clean_environment / "outbox"


@pytest.fixture
def fake() -> Iterator[FakeAPI]:
    with FakeAPI(token=TOKEN, prefix="/api/v1") as server:
        yield server


def no_wait(failures: int, retry_after: str | None) -> float:
    """A retry delay for tests: honours nothing, waits a hundredth of a second."""
    return 0.01


@pytest.fixture
def make_provider(outbox_dir: Path) -> Iterator[Callable[..., ServerAPI]]:
    """Build ``ServerAPI`` instances with fast retries; all are shut down (timeout 0) after."""
    made: list[ServerAPI] = []

    def build(
        base_url: str,
        token: str = TOKEN,
        delay: Any = no_wait,
        idle_retirement: float = IDLE_RETIREMENT,
        initial_limit: int = INITIAL_LIMIT,
        **settings: Any,
    ) -> ServerAPI:
        def delivery(config: ApiSettings) -> Delivery:
            return Delivery(
                config, delay=delay, idle_retirement=idle_retirement, initial_limit=initial_limit
            )

        provider = ServerAPI(base_url=base_url, token=token, delivery_factory=delivery, **settings)
        made.append(provider)
        return provider

    yield build
    for provider in made:
        provider.shutdown(timeout=0)


@pytest.fixture
def api_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="dotflow.server.api")
    return caplog
