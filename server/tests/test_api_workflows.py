"""Workflow endpoints: create, idempotent re-POST, PATCH upsert, reads and listing."""

from __future__ import annotations

from datetime import datetime

import pytest
from api_helpers import AUTH_A, NOW, workflow_body
from fastapi.testclient import TestClient

pytestmark = pytest.mark.both_backends


def test_healthz_needs_no_token(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_post_workflow_creates_then_repost_updates(client: TestClient) -> None:
    first = client.post("/workflows", json=workflow_body(), headers=AUTH_A)
    assert first.status_code == 201
    assert first.json()["id"] == "wf-1"
    assert first.json()["status"] == "In progress"

    again = client.post(
        "/workflows", json=workflow_body(status="Completed", duration=1.5), headers=AUTH_A
    )
    assert again.status_code == 200
    assert again.json()["status"] == "Completed"
    assert again.json()["duration"] == 1.5

    listing = client.get("/workflows", headers=AUTH_A).json()
    assert listing["total"] == 1
    assert [item["id"] for item in listing["items"]] == ["wf-1"]


def test_post_workflow_minimal_body_gets_defaults(client: TestClient) -> None:
    response = client.post("/workflows", json={"id": "w", "status": "Failed"}, headers=AUTH_A)
    assert response.status_code == 201
    body = response.json()
    assert body["name"] is None and body["mode"] is None and body["created_at"] is None
    assert body["task_count"] == body["completed_count"] == body["failed_count"] == 0


def test_repost_keeps_fields_it_does_not_send(client: TestClient) -> None:
    client.post("/workflows", json=workflow_body(name="kept"), headers=AUTH_A)
    response = client.post("/workflows", json={"id": "wf-1", "status": "Failed"}, headers=AUTH_A)
    assert response.status_code == 200
    assert response.json()["name"] == "kept"
    assert response.json()["status"] == "Failed"


def test_datetimes_round_trip_as_utc_with_offset(client: TestClient) -> None:
    client.post(
        "/workflows",
        json=workflow_body(created_at="2026-11-27T14:27:15.287982+02:00", started_at=NOW),
        headers=AUTH_A,
    )
    body = client.get("/workflows/wf-1", headers=AUTH_A).json()
    assert body["created_at"] == "2026-11-27T12:27:15.287982+00:00"
    assert body["started_at"] == NOW
    # Python 3.10's fromisoformat must parse what the server returns.
    assert datetime.fromisoformat(body["registered_at"]).utcoffset() is not None


def test_naive_datetime_is_taken_as_utc(client: TestClient) -> None:
    client.post("/workflows", json=workflow_body(created_at="2026-01-02T03:04:05"), headers=AUTH_A)
    body = client.get("/workflows/wf-1", headers=AUTH_A).json()
    assert body["created_at"] == "2026-01-02T03:04:05+00:00"


def test_patch_updates_existing_workflow(client: TestClient) -> None:
    client.post("/workflows", json=workflow_body(), headers=AUTH_A)
    response = client.patch(
        "/workflows/wf-1",
        json={"status": "Completed", "finished_at": NOW, "duration": 2.0, "completed_count": 2},
        headers=AUTH_A,
    )
    assert response.status_code == 200
    body = client.get("/workflows/wf-1", headers=AUTH_A).json()
    assert body["status"] == "Completed"
    assert body["finished_at"] == NOW
    assert body["duration"] == 2.0
    assert body["completed_count"] == 2
    assert body["task_count"] == 2  # not sent, kept
    assert body["name"] == "host-1"


def test_patch_unknown_workflow_registers_it(client: TestClient) -> None:
    response = client.patch(
        "/workflows/external-id", json={"status": "In progress"}, headers=AUTH_A
    )
    assert response.status_code == 201
    assert response.json()["id"] == "external-id"
    again = client.patch("/workflows/external-id", json={"status": "Completed"}, headers=AUTH_A)
    assert again.status_code == 200
    assert client.get("/workflows", headers=AUTH_A).json()["total"] == 1


def test_patch_accepts_matching_id_and_rejects_other_id(client: TestClient) -> None:
    ok = client.patch("/workflows/w1", json={"id": "w1", "status": "Failed"}, headers=AUTH_A)
    assert ok.status_code == 201
    bad = client.patch("/workflows/w1", json={"id": "w2", "status": "Failed"}, headers=AUTH_A)
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "id"]
    assert client.get("/workflows/w2", headers=AUTH_A).status_code == 404


def test_patch_requires_status(client: TestClient) -> None:
    response = client.patch("/workflows/w1", json={"name": "x"}, headers=AUTH_A)
    assert response.status_code == 422
    assert ["body", "status"] in [issue["loc"] for issue in response.json()["detail"]]


def test_get_unknown_workflow_is_404(client: TestClient) -> None:
    response = client.get("/workflows/nope", headers=AUTH_A)
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]


def test_list_is_newest_first_and_paginated(client: TestClient) -> None:
    for index in range(5):
        client.post("/workflows", json=workflow_body(f"wf-{index}"), headers=AUTH_A)
    listing = client.get("/workflows", headers=AUTH_A).json()
    assert [item["id"] for item in listing["items"]] == [f"wf-{i}" for i in (4, 3, 2, 1, 0)]
    assert listing["total"] == 5 and listing["limit"] == 100 and listing["offset"] == 0

    page = client.get("/workflows", params={"limit": 2, "offset": 1}, headers=AUTH_A).json()
    assert [item["id"] for item in page["items"]] == ["wf-3", "wf-2"]
    assert page["total"] == 5


def test_list_limit_bounds(client: TestClient) -> None:
    assert client.get("/workflows?limit=1000", headers=AUTH_A).status_code == 200
    assert client.get("/workflows?limit=1001", headers=AUTH_A).status_code == 422
    assert client.get("/workflows?limit=0", headers=AUTH_A).status_code == 422
    assert client.get("/workflows?offset=-1", headers=AUTH_A).status_code == 422
    assert client.get("/workflows?limit=abc", headers=AUTH_A).status_code == 422


def test_workflow_shows_reported_and_stored_task_counts(client: TestClient) -> None:
    client.post("/workflows", json=workflow_body(task_count=3), headers=AUTH_A)
    for task_id in (1, 2):
        client.post(
            "/workflows/wf-1/tasks",
            json={"id": task_id, "name": "t", "status": "Completed"},
            headers=AUTH_A,
        )
    body = client.get("/workflows/wf-1", headers=AUTH_A).json()
    assert body["task_count"] == 3
    assert body["stored_task_count"] == 2
    listed = client.get("/workflows", headers=AUTH_A).json()["items"][0]
    assert listed["stored_task_count"] == 2


def test_unknown_fields_are_ignored(client: TestClient) -> None:
    response = client.post(
        "/workflows", json=workflow_body(future_field={"x": 1}, another=3), headers=AUTH_A
    )
    assert response.status_code == 201
    assert "future_field" not in response.json()
