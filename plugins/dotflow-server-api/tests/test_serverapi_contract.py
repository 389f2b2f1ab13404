"""The dotflow provider contract kit, run against the fake server over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dotflow_server_api import ServerAPI
from fake_api import TOKEN, FakeAPI

from dotflow_core import Settings
from dotflow_core.testing import ProviderContract


class TestServerAPIContract(ProviderContract):
    """Every contract test, plus: after flush the server holds the final state."""

    server: FakeAPI
    outbox: Path

    @pytest.fixture(autouse=True)
    def _server(self, fake: FakeAPI, outbox_dir: Path) -> Iterator[None]:
        self.server = fake
        self.outbox = outbox_dir
        yield

    def make_provider(self) -> ServerAPI:
        return ServerAPI(outbox_dir=self.outbox)

    def make_settings(self) -> Settings:
        return Settings(
            config={"server": {"flush_timeout": 5}},
            environ={"SERVER_BASE_URL": self.server.url, "SERVER_USER_TOKEN": TOKEN},
        )

    def delivered_state(self, provider: Any, workflow_id: str) -> dict[str, Any] | None:
        return self.server.delivered_state(workflow_id)
