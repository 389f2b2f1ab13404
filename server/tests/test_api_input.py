"""Bad input: malformed JSON, wrong types, oversized and deeply nested bodies."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from api_helpers import AUTH_A, TOKEN_A, task_body, workflow_body
from dotflow_api.auth import owner_key
from fastapi.testclient import TestClient

pytestmark = pytest.mark.both_backends

JSON = {**AUTH_A, "content-type": "application/json"}


def test_malformed_json_is_400_with_a_message(client: TestClient) -> None:
    for body in (b"{", b'{"id": "w", ', b"nope", b'{"id": "w"} extra'):
        response = client.post("/workflows", content=body, headers=JSON)
        assert response.status_code == 400, body
        assert response.json()["detail"].startswith("malformed JSON body")


def test_invalid_utf8_is_a_client_error(client: TestClient) -> None:
    response = client.post("/workflows", content=b'{"id": "\xff"}', headers=JSON)
    assert response.status_code in (400, 422)


@pytest.mark.parametrize(
    "body",
    [
        [],
        "text",
        42,
        {"status": "In progress"},
        {"id": "w"},
        {"id": 5, "status": "In progress"},
        {"id": "w", "status": "Running"},
        {"id": "w", "status": "In progress", "task_count": -1},
        {"id": "w", "status": "In progress", "task_count": "many"},
        {"id": "w", "status": "In progress", "duration": "slow"},
        {"id": "w", "status": "In progress", "created_at": "yesterday"},
        {"id": "", "status": "In progress"},
        {"id": "x" * 256, "status": "In progress"},
        {"id": "w", "status": "In progress", "task_count": 2**40},
        {"id": "w", "status": "In progress", "task_count": "3"},
        {"id": "w", "status": "In progress", "task_count": True},
        {"id": "w", "status": "In progress", "task_count": 3.0},
        {"id": "w", "status": "In progress", "failed_count": "1"},
        {"id": "w", "status": "In progress", "duration": "1.5"},
        {"id": "w", "status": "In progress", "duration": True},
        {"id": "w", "status": "In progress", "created_at": 1767225600},
    ],
)
def test_wrong_workflow_bodies_are_422(client: TestClient, body: object) -> None:
    response = client.post("/workflows", json=body, headers=AUTH_A)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail and all({"loc", "msg", "type"} <= set(issue) for issue in detail)
    assert client.get("/workflows", headers=AUTH_A).json()["total"] == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"status": "Done"},
        {"name": None},
        {"retry_count": -1},
        {"errors": "boom"},
        {"errors": [{"type": "E"}]},
        {"started_at": 12.5e20},
        {"duration": [1]},
        {"id": True},
        {"id": "3"},
        {"id": 3.0},
        {"retry_count": "7"},
        {"retry_count": False},
        {"duration": "1.5"},
        {"errors": [{"attempt": "2", "type": "E", "message": "m"}]},
        {"errors": [{"attempt": True, "type": "E", "message": "m"}]},
        {"started_at": 1767225600},
    ],
)
def test_wrong_task_bodies_are_422_and_write_nothing(
    client: TestClient, overrides: dict[str, object]
) -> None:
    response = client.post("/workflows/w/tasks", json=task_body(**overrides), headers=AUTH_A)
    assert response.status_code == 422
    assert client.get("/workflows/w", headers=AUTH_A).status_code == 404


def test_id_mismatch_errors_do_not_echo_the_body_id(client: TestClient) -> None:
    secret = "SENSITIVE-VALUE"
    response = client.patch(
        "/workflows/lax", json={"id": secret, "status": "Completed"}, headers=AUTH_A
    )
    assert response.status_code == 422
    assert secret not in response.text
    assert "does not match the path's workflow_id" in response.json()["detail"][0]["msg"]
    client.post("/workflows/lax/tasks", json=task_body(1), headers=AUTH_A)
    response = client.patch("/workflows/lax/tasks/1", json=task_body(987654), headers=AUTH_A)
    assert response.status_code == 422 and "987654" not in response.text


def test_integer_durations_and_iso_datetimes_are_accepted(client: TestClient) -> None:
    body = task_body(duration=2, started_at="2026-01-31T12:00:00Z", retry_count=1)
    assert client.post("/workflows/w/tasks", json=body, headers=AUTH_A).status_code == 201
    task = client.get("/workflows/w/tasks", headers=AUTH_A).json()["items"][0]
    assert task["duration"] == 2.0 and task["started_at"] == "2026-01-31T12:00:00+00:00"


def test_validation_errors_do_not_echo_the_input(client: TestClient) -> None:
    secret = "do-not-echo-" + "y" * 50
    response = client.post("/workflows", json={"id": 1, "status": secret}, headers=AUTH_A)
    assert response.status_code == 422
    assert secret not in response.text


def test_non_finite_numbers_are_rejected(client: TestClient) -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):
        body = f'{{"id": 1, "name": "n", "status": "Completed", "current_context": [{literal}]}}'
        response = client.post("/workflows/w/tasks", content=body, headers=JSON)
        assert response.status_code == 422, literal
        duration = f'{{"id": "w", "status": "Completed", "duration": {literal}}}'
        assert client.post("/workflows", content=duration, headers=JSON).status_code == 422


def test_body_without_content_type_is_read_as_json(client: TestClient) -> None:
    response = client.post(
        "/workflows", content=json.dumps(workflow_body()).encode(), headers=AUTH_A
    )
    assert response.status_code == 201


def test_lone_surrogates_are_stored_as_replacement_characters(client: TestClient) -> None:
    body = json.dumps(task_body(name="bad \ud800 name", current_context={"k\udc80": "v\ud83d"}))
    response = client.post("/workflows/w/tasks", content=body, headers=JSON)
    assert response.status_code == 201
    task = client.get("/workflows/w/tasks", headers=AUTH_A).json()["items"][0]
    assert task["name"] == "bad \ufffd name"
    assert task["current_context"] == {"k\ufffd": "v\ufffd"}


def test_deep_but_acceptable_context_round_trips(client: TestClient) -> None:
    context: object = "leaf"
    for _ in range(100):
        context = {"next": context}
    response = client.post(
        "/workflows/w/tasks", json=task_body(current_context=context), headers=AUTH_A
    )
    assert response.status_code == 201
    task = client.get("/workflows/w/tasks", headers=AUTH_A).json()["items"][0]
    assert task["current_context"] == context


@pytest.mark.parametrize("depth", [129, 300, 990, 5000, 100_000])
def test_too_deep_context_is_a_client_error_not_a_crash(client: TestClient, depth: int) -> None:
    context = "[" * depth + "]" * depth
    body = f'{{"id": 1, "name": "n", "status": "Completed", "current_context": {context}}}'
    response = client.post("/workflows/w/tasks", content=body, headers=JSON)
    assert response.status_code in (400, 422)
    assert client.get("/workflows/w", headers=AUTH_A).status_code == 404


def test_large_wide_context_is_stored(client: TestClient) -> None:
    context = {f"key-{i}": ["value"] * 20 for i in range(5000)}
    response = client.post(
        "/workflows/w/tasks", json=task_body(current_context=context), headers=AUTH_A
    )
    assert response.status_code == 201
    task = client.get("/workflows/w/tasks", headers=AUTH_A).json()["items"][0]
    assert task["current_context"] == context


def test_body_over_the_limit_is_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_body_bytes=1000)
    small = task_body(current_context="x" * 500)
    assert client.post("/workflows/w/tasks", json=small, headers=AUTH_A).status_code == 201
    big = task_body(2, current_context="x" * 2000)
    response = client.post("/workflows/w/tasks", json=big, headers=AUTH_A)
    assert response.status_code == 413
    assert "1000" in response.json()["detail"]
    listing = client.get("/workflows/w/tasks", headers=AUTH_A).json()
    assert [task["id"] for task in listing["items"]] == [1]


def test_chunked_body_over_the_limit_is_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_body_bytes=1000)

    def chunks() -> Iterator[bytes]:
        yield b'{"id": 1, "name": "n", "status": "Completed", "current_context": "'
        for _ in range(20):
            yield b"x" * 100
        yield b'"}'

    response = client.post("/workflows/w/tasks", content=chunks(), headers=JSON)
    assert response.status_code == 413
    assert client.get("/workflows/w", headers=AUTH_A).status_code == 404


def test_chunked_body_within_the_limit_is_accepted(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(max_body_bytes=1000)

    def chunks() -> Iterator[bytes]:
        yield b'{"id": 1, "name": "n", '
        yield b'"status": "Completed"}'

    assert client.post("/workflows/w/tasks", content=chunks(), headers=JSON).status_code == 201


def test_default_limit_is_six_million_bytes(client: TestClient) -> None:
    padding = 6_000_000 - len(json.dumps(task_body(current_context="")))
    body = json.dumps(task_body(current_context="x" * padding)).encode()
    assert len(body) == 6_000_000
    assert client.post("/workflows/w/tasks", content=body, headers=JSON).status_code == 201
    body = json.dumps(task_body(2, current_context="x" * (padding + 1))).encode()
    assert client.post("/workflows/w/tasks", content=body, headers=JSON).status_code == 413


def test_bad_content_length_is_400(client: TestClient) -> None:
    response = client.post("/workflows", content=b"{}", headers={**JSON, "content-length": "abc"})
    assert response.status_code == 400


def test_nul_characters_never_cause_a_server_error(client: TestClient) -> None:
    """SQLite stores NUL; PostgreSQL refuses it in text columns (then 422, nothing written)."""
    response = client.post("/workflows/w/tasks", json=task_body(name="a\x00b"), headers=AUTH_A)
    assert response.status_code in (201, 422)
    if response.status_code == 422:
        assert client.get("/workflows/w", headers=AUTH_A).status_code == 404
    context = task_body(2, current_context={"k\x00": "v\x00"})
    response = client.post("/workflows/w2/tasks", json=context, headers=AUTH_A)
    assert response.status_code in (201, 422)


def test_database_failure_is_503_without_details(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    def locked(*args: object, **kwargs: object) -> None:
        raise OperationalError("UPDATE secret_sql", {"p": "param"}, Exception("database is locked"))

    monkeypatch.setattr(client.app.state.store, "upsert_workflow", locked)  # type: ignore[attr-defined]
    response = client.post("/workflows", json=workflow_body(), headers=AUTH_A)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "secret_sql" not in response.text and "param" not in response.text


EXACT_NUMBERS = ["1.0", "-0.0", "12345678901234567890", "1e308", "0.1", "-7", "2.5e-300"]


@pytest.mark.parametrize("number", EXACT_NUMBERS)
def test_numbers_as_whole_contexts_round_trip_exactly(client: TestClient, number: str) -> None:
    """On SQLite a JSON column's NUMERIC affinity once turned 1.0 into 1 and -0.0 into 0."""
    body = json.dumps(task_body(current_context=None, previous_context=None))
    body = body.replace('"current_context": null', f'"current_context": {number}')
    body = body.replace('"previous_context": null', f'"previous_context": [{number}]')
    assert client.post("/workflows/w/tasks", content=body, headers=JSON).status_code == 201
    task = client.get("/workflows/w/tasks", headers=AUTH_A).json()["items"][0]
    assert repr(task["current_context"]) == repr(json.loads(number))
    assert repr(task["previous_context"]) == repr([json.loads(number)])


@pytest.mark.sqlite_only
def test_database_of_the_earlier_schema_reads_old_rows_and_stores_exactly(
    database_url: str, make_client: Callable[..., TestClient]
) -> None:
    """Tables created by earlier versions declare the JSON columns ``JSON``."""
    path = Path(database_url.removeprefix("sqlite:///"))
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(EARLIER_SCHEMA)
        conn.execute(
            "INSERT INTO dotflow_workflows VALUES (1, ?, 'w', 'In progress', NULL, NULL, NULL,"
            " NULL, NULL, NULL, 0, 0, 0, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
            (owner_key(TOKEN_A),),
        )
        # What earlier versions wrote: JSON text, and a number NUMERIC affinity converted.
        conn.execute(
            "INSERT INTO dotflow_tasks VALUES (1, 1, 1, 'n', 'Completed', 'default', 0, NULL,"
            " ?, NULL, NULL, ?, ?, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
            ('[{"attempt": 1, "type": "E", "message": "m", "traceback": ""}]', 1.0, '{"a": 1}'),
        )
    client = make_client()
    old = client.get("/workflows/w/tasks", headers=AUTH_A).json()["items"][0]
    assert old["errors"][0]["type"] == "E"
    assert old["current_context"] == 1 and old["previous_context"] == {"a": 1}
    body = json.dumps(task_body(2, current_context=None)).replace(
        '"current_context": null', '"current_context": 1.0'
    )
    assert client.post("/workflows/w/tasks", content=body, headers=JSON).status_code == 201
    new = client.get("/workflows/w/tasks", headers=AUTH_A).json()["items"][1]
    assert repr(new["current_context"]) == "1.0"


#: The SQLite schema created by versions before JSONValue (columns declared JSON).
EARLIER_SCHEMA = """
CREATE TABLE dotflow_workflows (
    pk INTEGER NOT NULL, owner VARCHAR(64) NOT NULL, workflow_id VARCHAR(255) NOT NULL,
    status VARCHAR(32) NOT NULL, name TEXT, mode TEXT, created_at DATETIME,
    started_at DATETIME, finished_at DATETIME, duration FLOAT,
    task_count INTEGER NOT NULL, completed_count INTEGER NOT NULL,
    failed_count INTEGER NOT NULL, registered_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL, PRIMARY KEY (pk),
    CONSTRAINT uq_dotflow_workflows_owner_id UNIQUE (owner, workflow_id)
);
CREATE INDEX ix_dotflow_workflows_owner_pk ON dotflow_workflows (owner, pk);
CREATE TABLE dotflow_tasks (
    pk INTEGER NOT NULL, workflow_pk INTEGER NOT NULL, task_id INTEGER NOT NULL,
    name TEXT NOT NULL, status VARCHAR(32) NOT NULL, group_name TEXT NOT NULL,
    retry_count INTEGER NOT NULL, duration FLOAT, errors JSON, started_at DATETIME,
    finished_at DATETIME, current_context JSON, previous_context JSON,
    registered_at DATETIME NOT NULL, updated_at DATETIME NOT NULL, PRIMARY KEY (pk),
    CONSTRAINT uq_dotflow_tasks_workflow_task UNIQUE (workflow_pk, task_id),
    FOREIGN KEY(workflow_pk) REFERENCES dotflow_workflows (pk) ON DELETE CASCADE
);
"""
