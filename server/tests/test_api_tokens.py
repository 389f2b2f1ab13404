"""``dotflow-api tokens``: end to end against a running server, and the store's rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests
from api_helpers import TOKEN_A, workflow_body
from dotflow_api.db import create_db_engine, create_schema
from dotflow_api.process import ServerProcess
from dotflow_api.tokens import TOKEN_PREFIX, TokenNameError, TokenStore

DOTFLOW_API = Path(sys.executable).with_name("dotflow-api")


def _cli(action: str, *args: str, database: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DOTFLOW_API), "tokens", action, "--database", database, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _get(server: ServerProcess, token: str) -> int:
    response = requests.get(
        f"{server.base_url}/workflows", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    return response.status_code


@pytest.mark.slow
def test_created_token_works_until_revoked_and_configured_tokens_keep_working(
    tmp_path: Path,
) -> None:
    database = f"sqlite:///{tmp_path / 'api.sqlite3'}"
    with ServerProcess.start(database, [TOKEN_A], workdir=tmp_path) as server:
        created = _cli("create", "ci-runner", database=database)
        assert created.returncode == 0, created.stderr
        token = created.stdout.strip()
        assert token.startswith(TOKEN_PREFIX) and len(token) >= 40
        assert created.stdout.count("\n") == 1  # the token alone on stdout
        assert "shown only this once" in created.stderr and token not in created.stderr

        assert _get(server, token) == 200  # the running server honours it at once
        headers = {"Authorization": f"Bearer {token}"}
        response = requests.post(
            f"{server.base_url}/workflows", json=workflow_body("ci-1"), headers=headers, timeout=30
        )
        assert response.status_code == 201
        assert _get(server, TOKEN_A) == 200
        mine = requests.get(f"{server.base_url}/workflows", headers=headers, timeout=30).json()
        assert [item["id"] for item in mine["items"]] == ["ci-1"]  # its own tenant

        listing = _cli("list", database=database)
        assert listing.returncode == 0
        assert "ci-runner" in listing.stdout and token not in listing.stdout
        line = next(row for row in listing.stdout.splitlines() if row.startswith("ci-runner"))
        assert not line.endswith("never")  # last used is recorded

        revoked = _cli("revoke", "ci-runner", database=database)
        assert revoked.returncode == 0, revoked.stderr
        assert _get(server, token) == 401
        assert _get(server, TOKEN_A) == 200  # the environment's token is untouched
        assert "ci-runner" not in _cli("list", database=database).stdout
        log = server.stderr.read_text(errors="replace")
        assert token not in log


@pytest.mark.slow
def test_server_starts_with_stored_tokens_only(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'api.sqlite3'}"
    token = _cli("create", "only", database=database).stdout.strip()
    with ServerProcess.start(database, [], workdir=tmp_path) as server:
        assert _get(server, token) == 200
        assert _get(server, TOKEN_A) == 401


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "has space"), "invalid token name 'has space'"),
        (("create", "-x"), "invalid token name"),
        (("revoke", "nobody"), "no token named 'nobody'; stored tokens: none"),
    ],
)
def test_bad_names_are_one_line_errors_with_exit_2(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = _cli(args[0], "--", *args[1:], database=f"sqlite:///{tmp_path / 'db'}")
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_duplicate_name_is_refused(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'db'}")
    create_schema(engine)
    store = TokenStore(engine)
    first = store.create("ci")
    with pytest.raises(TokenNameError, match="exists already"):
        store.create("ci")
    second = store.create("ci-2")
    assert first != second
    assert [info.name for info in store.list_tokens()] == ["ci", "ci-2"]
    assert store.list_tokens()[0].last_used_at is None
    assert store.owner_for(first.encode()) is not None
    assert store.list_tokens()[0].last_used_at is not None
    assert store.owner_for(b"dfa_unknown") is None
    store.revoke("ci")
    assert store.owner_for(first.encode()) is None
    assert store.owner_for(second.encode()) is not None
