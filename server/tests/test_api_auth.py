"""Bearer tokens: 401 rules, per-token isolation, and no token leaking anywhere."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from api_helpers import AUTH_A, AUTH_B, TOKEN_A, task_body, workflow_body
from dotflow_api.app import create_app
from dotflow_api.auth import TokenSet, load_tokens, owner_key, parse_token_lines
from dotflow_api.db import create_db_engine, create_schema
from dotflow_api.store import Store
from fastapi.testclient import TestClient

PROTECTED = [
    ("get", "/workflows"),
    ("post", "/workflows"),
    ("get", "/workflows/w"),
    ("patch", "/workflows/w"),
    ("get", "/workflows/w/tasks"),
    ("post", "/workflows/w/tasks"),
    ("patch", "/workflows/w/tasks/1"),
    ("get", "/workflows/w/tasks/next-id"),
    ("get", "/no-such-path"),
]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN_A}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {TOKEN_A}x"},
        {"Authorization": TOKEN_A},
    ],
    ids=["none", "wrong", "basic", "empty", "longer", "no-scheme"],
)
@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_requests_without_a_valid_token_get_401(
    client: TestClient, headers: dict[str, str], method: str, path: str
) -> None:
    response = client.request(method, path, headers=headers, json=workflow_body())
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": "missing or invalid bearer token"}


def test_401_comes_before_body_checks(client: TestClient) -> None:
    response = client.post(
        "/workflows", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 401


def test_public_paths_need_no_token(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200


def test_scheme_is_case_insensitive(client: TestClient) -> None:
    response = client.get("/workflows", headers={"Authorization": f"bearer {TOKEN_A}"})
    assert response.status_code == 200


def test_tokens_see_only_their_own_workflows(client: TestClient) -> None:
    client.post("/workflows", json=workflow_body("secret-wf"), headers=AUTH_A)
    client.post("/workflows/secret-wf/tasks", json=task_body(), headers=AUTH_A)

    assert client.get("/workflows", headers=AUTH_B).json()["total"] == 0
    assert client.get("/workflows/secret-wf", headers=AUTH_B).status_code == 404
    assert client.get("/workflows/secret-wf/tasks", headers=AUTH_B).status_code == 404
    patch = client.patch("/workflows/secret-wf/tasks/1", json=task_body(), headers=AUTH_B)
    assert patch.status_code == 404
    next_id = client.get("/workflows/secret-wf/tasks/next-id", headers=AUTH_B).json()
    assert next_id == {"next_id": 1, "last_id": None}


def test_same_workflow_id_under_two_tokens_are_two_workflows(client: TestClient) -> None:
    assert (
        client.post("/workflows", json=workflow_body(name="a"), headers=AUTH_A).status_code == 201
    )
    assert (
        client.post("/workflows", json=workflow_body(name="b"), headers=AUTH_B).status_code == 201
    )
    client.post("/workflows/wf-1/tasks", json=task_body(4), headers=AUTH_A)

    assert client.get("/workflows/wf-1", headers=AUTH_A).json()["name"] == "a"
    assert client.get("/workflows/wf-1", headers=AUTH_B).json()["name"] == "b"
    assert client.get("/workflows/wf-1/tasks/next-id", headers=AUTH_A).json()["next_id"] == 5
    assert client.get("/workflows/wf-1/tasks/next-id", headers=AUTH_B).json()["next_id"] == 1


def test_owner_key_is_a_sha256_digest_not_the_token() -> None:
    key = owner_key(TOKEN_A)
    assert len(key) == 64 and TOKEN_A not in key
    assert TokenSet([TOKEN_A]).owner_for(TOKEN_A) == key
    assert TokenSet([TOKEN_A]).owner_for("other") is None


def test_token_set_never_shows_tokens() -> None:
    tokens = TokenSet([TOKEN_A, "second"])
    assert TOKEN_A not in repr(tokens) and TOKEN_A not in str(tokens)
    assert len(tokens) == 2


@pytest.mark.sqlite_only
def test_raw_token_is_not_stored(client: TestClient, database_url: str) -> None:
    client.post("/workflows", json=workflow_body(), headers=AUTH_A)
    client.post("/workflows/wf-1/tasks", json=task_body(), headers=AUTH_A)
    path = Path(database_url.removeprefix("sqlite:///"))
    # The WAL file holds recent writes until a checkpoint: read both.
    raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    assert TOKEN_A.encode() not in raw
    assert owner_key(TOKEN_A).encode() in raw


def test_tokens_never_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        client.post("/workflows", json=workflow_body(), headers=AUTH_A)
        client.get("/workflows", headers={"Authorization": "Bearer not-a-token-xyz"})
        client.post("/workflows/wf-1/tasks", content=b"x" * 10, headers=AUTH_A)
    assert TOKEN_A not in caplog.text
    assert "not-a-token-xyz" not in caplog.text


def test_token_file_parsing() -> None:
    text = "# comment\n\n  tok-1  \n#tok-2\ntok-3\n"
    assert parse_token_lines(text) == ["tok-1", "tok-3"]


def test_load_tokens_merges_env_and_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("file-token\n", encoding="utf-8")
    tokens = load_tokens(path, env={"DOTFLOW_API_TOKENS": " env-1 , ,env-2"})
    assert len(tokens) == 3
    for token in ("env-1", "env-2", "file-token"):
        assert tokens.owner_for(token) == owner_key(token)
    assert len(load_tokens(None, env={})) == 0


def test_tokens_file_with_a_utf8_bom_accepts_its_first_token(
    tmp_path: Path, database_url: str
) -> None:
    """Editors on Windows may start the file with a BOM; it once hid the first token."""
    path = tmp_path / "tokens"
    path.write_bytes("\ufefffirst-token\nsecond-token\n".encode())
    engine = create_db_engine(database_url)
    create_schema(engine)
    app = create_app(Store(engine), load_tokens(path, env={}))
    try:
        with TestClient(app) as client:
            for token in ("first-token", "second-token"):
                response = client.get("/workflows", headers={"Authorization": f"Bearer {token}"})
                assert response.status_code == 200, token
    finally:
        engine.dispose()
