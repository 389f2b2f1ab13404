"""Small helpers shared by the api provider's test modules."""

from __future__ import annotations

import socket
from pathlib import Path

from dotflow_server_api.settings import ApiSettings
from fake_api import TOKEN

from dotflow_core import Secret


def free_port() -> int:
    """A port of 127.0.0.1 nothing listens on (a server that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def config_for(url: str, outbox_dir: Path) -> ApiSettings:
    """Settings for ``url`` with the tests' token and the test's private outbox."""
    return ApiSettings(base_url=url, token=Secret(TOKEN), outbox_dir=outbox_dir)
