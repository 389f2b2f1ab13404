"""``dotflow_api.testing``: a missing program skips a test, saying why, and fails it in CI."""

from __future__ import annotations

import pytest
from dotflow_api import pgcluster
from dotflow_api.testing import postgres_cluster, unavailable


@pytest.mark.parametrize("ci", ["", "false", "0"])
def test_a_missing_program_skips_with_the_reason_outside_ci(
    ci: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match=r"^nginx cannot run: not found$"):
        unavailable("nginx", FileNotFoundError("not found"))


@pytest.mark.parametrize("ci", ["true", "TRUE", "1", "yes"])
def test_a_missing_program_fails_in_ci(ci: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=r"^CI=true and nginx cannot run: not found$"):
        unavailable("nginx", FileNotFoundError("not found"))


def test_postgres_cluster_without_postgresql_skips_naming_the_missing_initdb(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(pgcluster, "find_bindir", lambda: None)
    skipped = pytest.raises(pytest.skip.Exception, match=r"PostgreSQL cannot run: .*no initdb")
    with skipped, postgres_cluster():
        pass
