"""Shared fixtures: every test starts from a clean dotflow environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dotflow_core.testing import RecordingProvider

DOTFLOW_ENV_VARS = (
    "DOTFLOW_PROVIDER",
    "DOTFLOW_CONFIG",
    "DOTFLOW_TRACE_HOOKS",
    "WORKFLOW_ID",
    "SERVER_BASE_URL",
    "SERVER_USER_TOKEN",
    "SERVER_USER_TOKEN_FILE",
    "SERVER_STRICT",
)


@pytest.fixture(autouse=True)
def clean_dotflow_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """No dotflow variable leaks in from the developer's shell; the user dir is private."""
    for name in DOTFLOW_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path_factory.mktemp("dotflow-home")
    monkeypatch.setenv("DOTFLOW_HOME", str(home))
    yield home


@pytest.fixture
def recorder() -> RecordingProvider:
    return RecordingProvider()
