"""Task endpoints: create, idempotent re-POST/PATCH, next-id, reads, managed mode."""

from __future__ import annotations

import pytest
from api_helpers import AUTH_A, NOW, task_body, workflow_body
from fastapi.testclient import TestClient

pytestmark = pytest.mark.both_backends


def test_post_task_creates_then_repost_updates(client: TestClient) -> None:
    client.post("/workflows", json=workflow_body(), headers=AUTH_A)
    first = client.post("/workflows/wf-1/tasks", json=task_body(), headers=AUTH_A)
    assert first.status_code == 201
    assert first.json() == {"workflow_id": "wf-1", "id": 1, "status": "Not started"}

    again = client.post(
        "/workflows/wf-1/tasks", json=task_body(status="In progress"), headers=AUTH_A
    )
    assert again.status_code == 200
    tasks = client.get("/workflows/wf-1/tasks", headers=AUTH_A).json()
    assert tasks["total"] == 1
    assert tasks["items"][0]["status"] == "In progress"


def test_post_task_registers_unknown_workflow(client: TestClient) -> None:
    response = client.post("/workflows/managed-1/tasks", json=task_body(), headers=AUTH_A)
    assert response.status_code == 201
    workflow = client.get("/workflows/managed-1", headers=AUTH_A).json()
    assert workflow["status"] == "In progress"
    assert workflow["stored_task_count"] == 1


def test_minimal_task_body_gets_defaults(client: TestClient) -> None:
    response = client.post(
        "/workflows/w/tasks", json={"id": 3, "name": "n", "status": "Retry"}, headers=AUTH_A
    )
    assert response.status_code == 201
    task = client.get("/workflows/w/tasks", headers=AUTH_A).json()["items"][0]
    assert task["group_name"] == "default"
    assert task["retry_count"] == 0
    assert task["errors"] == []
    assert task["current_context"] is None and task["previous_context"] is None
    assert task["duration"] is None and task["started_at"] is None


def test_patch_task_updates_everything_and_is_idempotent(client: TestClient) -> None:
    client.post("/workflows/wf-1/tasks", json=task_body(), headers=AUTH_A)
    update = task_body(
        status="Completed",
        retry_count=1,
        duration=0.25,
        errors=[{"attempt": 1, "type": "ValueError", "message": "boom", "traceback": "tb"}],
        started_at=NOW,
        finished_at=NOW,
        current_context={"result": [1, {"nested": True}], "text": "héllo"},
        previous_context=[1, 2],
    )
    for _ in range(2):
        response = client.patch("/workflows/wf-1/tasks/1", json=update, headers=AUTH_A)
        assert response.status_code == 200
        assert response.json()["status"] == "Completed"
    tasks = client.get("/workflows/wf-1/tasks", headers=AUTH_A).json()
    assert tasks["total"] == 1
    task = tasks["items"][0]
    assert task["status"] == "Completed"
    assert task["retry_count"] == 1
    assert task["duration"] == 0.25
    assert task["errors"] == update["errors"]
    assert task["started_at"] == NOW and task["finished_at"] == NOW
    assert task["current_context"] == update["current_context"]
    assert task["previous_context"] == [1, 2]


def test_patch_task_id_must_match_path(client: TestClient) -> None:
    client.post("/workflows/wf-1/tasks", json=task_body(), headers=AUTH_A)
    response = client.patch("/workflows/wf-1/tasks/1", json=task_body(2), headers=AUTH_A)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "id"]


def test_patch_unknown_task_or_workflow_is_404(client: TestClient) -> None:
    response = client.patch("/workflows/nope/tasks/1", json=task_body(), headers=AUTH_A)
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]
    client.post("/workflows/wf-1/tasks", json=task_body(), headers=AUTH_A)
    response = client.patch("/workflows/wf-1/tasks/7", json=task_body(7), headers=AUTH_A)
    assert response.status_code == 404
    assert "task 7" in response.json()["detail"]


def test_task_id_path_must_be_a_positive_int(client: TestClient) -> None:
    assert (
        client.patch("/workflows/w/tasks/abc", json=task_body(), headers=AUTH_A).status_code == 422
    )
    assert (
        client.patch("/workflows/w/tasks/0", json=task_body(0), headers=AUTH_A).status_code == 422
    )


@pytest.mark.parametrize("spelling", ["01", "+1", "1%20", "%201", "1.0", "1_0", "%EF%BC%91"])
def test_task_id_path_must_be_canonical_decimal(client: TestClient, spelling: str) -> None:
    """Each of these once addressed task 1 (or 10); ``%EF%BC%91`` is a fullwidth 1."""
    client.post("/workflows/w/tasks", json=task_body(1), headers=AUTH_A)
    client.post("/workflows/w/tasks", json=task_body(10), headers=AUTH_A)
    response = client.patch(f"/workflows/w/tasks/{spelling}", json=task_body(1), headers=AUTH_A)
    assert response.status_code == 422
    assert "plain decimal digits" in response.json()["detail"][0]["msg"]
    assert client.patch("/workflows/w/tasks/1", json=task_body(1), headers=AUTH_A).is_success


def test_task_id_bounds(client: TestClient) -> None:
    for bad in (0, -1, 2**53 + 1, "x", 1.5, None):
        response = client.post("/workflows/w/tasks", json=task_body(bad), headers=AUTH_A)
        assert response.status_code == 422, bad


def test_every_next_id_answered_is_accepted(client: TestClient) -> None:
    """next-id once answered 2**31 after task 2**31-1, and the server refused that id."""
    assert client.post("/workflows/w/tasks", json=task_body(2**31 - 1), headers=AUTH_A).is_success
    for _ in range(2):
        next_id = client.get("/workflows/w/tasks/next-id", headers=AUTH_A).json()["next_id"]
        created = client.post("/workflows/w/tasks", json=task_body(next_id), headers=AUTH_A)
        assert created.status_code == 201, next_id
        patched = client.patch(
            f"/workflows/w/tasks/{next_id}", json=task_body(next_id), headers=AUTH_A
        )
        assert patched.status_code == 200
    assert client.get("/workflows/w/tasks/next-id", headers=AUTH_A).json()["next_id"] == 2**31 + 2


def test_next_id_after_the_largest_task_id_is_a_clear_409(client: TestClient) -> None:
    """2**53 is also the largest next_id the api client accepts."""
    assert client.post("/workflows/w/tasks", json=task_body(2**53), headers=AUTH_A).is_success
    response = client.get("/workflows/w/tasks/next-id", headers=AUTH_A)
    assert response.status_code == 409
    assert "largest task id" in response.json()["detail"]
    listed = client.get("/workflows/w/tasks", headers=AUTH_A).json()["items"]
    assert [task["id"] for task in listed] == [2**53]


def test_next_id_unknown_workflow(client: TestClient) -> None:
    response = client.get("/workflows/nope/tasks/next-id", headers=AUTH_A)
    assert response.status_code == 200
    assert response.json() == {"next_id": 1, "last_id": None}


def test_next_id_follows_the_highest_id(client: TestClient) -> None:
    for task_id in (1, 5, 3):
        client.post("/workflows/w/tasks", json=task_body(task_id), headers=AUTH_A)
    response = client.get("/workflows/w/tasks/next-id", headers=AUTH_A)
    assert response.json() == {"next_id": 6, "last_id": 5}


def test_tasks_are_listed_by_id_with_pagination(client: TestClient) -> None:
    for task_id in (3, 1, 2):
        client.post("/workflows/w/tasks", json=task_body(task_id), headers=AUTH_A)
    listing = client.get("/workflows/w/tasks", headers=AUTH_A).json()
    assert [task["id"] for task in listing["items"]] == [1, 2, 3]
    assert all(task["workflow_id"] == "w" for task in listing["items"])
    page = client.get("/workflows/w/tasks?limit=1&offset=1", headers=AUTH_A).json()
    assert [task["id"] for task in page["items"]] == [2]
    assert page["total"] == 3


def test_tasks_of_unknown_workflow_is_404(client: TestClient) -> None:
    assert client.get("/workflows/nope/tasks", headers=AUTH_A).status_code == 404


def test_same_task_id_in_two_workflows_are_distinct(client: TestClient) -> None:
    client.post("/workflows/a/tasks", json=task_body(1, name="in-a"), headers=AUTH_A)
    client.post("/workflows/b/tasks", json=task_body(1, name="in-b"), headers=AUTH_A)
    assert client.get("/workflows/a/tasks", headers=AUTH_A).json()["items"][0]["name"] == "in-a"
    assert client.get("/workflows/b/tasks", headers=AUTH_A).json()["items"][0]["name"] == "in-b"


def test_errors_entries_are_validated(client: TestClient) -> None:
    response = client.post(
        "/workflows/w/tasks", json=task_body(errors=[{"attempt": "x"}]), headers=AUTH_A
    )
    assert response.status_code == 422


def test_contexts_take_any_json(client: TestClient) -> None:
    values = [None, 0, -1.5, "text", True, [], {}, [1, "a", None], {"a": {"b": [{"c": 1}]}}]
    for task_id, value in enumerate(values, start=1):
        response = client.post(
            "/workflows/w/tasks",
            json=task_body(task_id, current_context=value, previous_context=value),
            headers=AUTH_A,
        )
        assert response.status_code == 201
    items = client.get("/workflows/w/tasks", headers=AUTH_A).json()["items"]
    assert [item["current_context"] for item in items] == values
