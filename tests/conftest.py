"""Shared fixtures: every test starts from a clean dotflow environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
