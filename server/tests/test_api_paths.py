"""Workflow ids with any character, percent-encoded in the path (``%2F`` included)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from api_helpers import AUTH_A, task_body, workflow_body
from fastapi.testclient import TestClient

ODD_IDS = [
    "a/b c",
    "a%2Fb",
    "100%",
    "x?y=1&z#frag",
    "..",
    ".",
    "tasks",
    "next-id",
    "ünï/cødé ✓",
    "trailing/",
    "/leading",
    "a//b",
    "semi;colon+plus",
]


def encoded(workflow_id: str) -> str:
    """Percent-encode a path segment; ``.``/``..`` too, or HTTP clients drop them."""
    if workflow_id in (".", ".."):
        return workflow_id.replace(".", "%2E")
    return quote(workflow_id, safe="")


def test_slash_in_id_routes_with_percent_encoding(client: TestClient) -> None:
    response = client.post("/workflows/a%2Fb%20c/tasks", json=task_body(), headers=AUTH_A)
    assert response.status_code == 201
    assert response.json()["workflow_id"] == "a/b c"
    assert client.get("/workflows/a%2Fb%20c", headers=AUTH_A).json()["id"] == "a/b c"
    tasks = client.get("/workflows/a%2Fb%20c/tasks", headers=AUTH_A).json()
    assert tasks["items"][0]["workflow_id"] == "a/b c"
    assert client.get("/workflows/a%2fb%20c/tasks/next-id", headers=AUTH_A).json()["next_id"] == 2
    # The unencoded form is a different path, not this workflow.
    assert client.get("/workflows/a/b c", headers=AUTH_A).status_code == 404


@pytest.mark.parametrize("workflow_id", ODD_IDS)
def test_any_character_round_trips(client: TestClient, workflow_id: str) -> None:
    path = f"/workflows/{encoded(workflow_id)}"
    created = client.post("/workflows", json=workflow_body(workflow_id), headers=AUTH_A)
    assert created.status_code == 201
    assert client.patch(path, json={"status": "Completed"}, headers=AUTH_A).status_code == 200
    assert client.post(f"{path}/tasks", json=task_body(), headers=AUTH_A).status_code == 201
    patched = client.patch(f"{path}/tasks/1", json=task_body(status="Completed"), headers=AUTH_A)
    assert patched.status_code == 200
    assert client.get(f"{path}/tasks/next-id", headers=AUTH_A).json()["next_id"] == 2
    workflow = client.get(path, headers=AUTH_A).json()
    assert workflow["id"] == workflow_id and workflow["status"] == "Completed"
    listed = client.get("/workflows", headers=AUTH_A).json()["items"]
    assert [item["id"] for item in listed] == [workflow_id]


def test_patch_with_id_matching_an_encoded_path(client: TestClient) -> None:
    response = client.patch(
        "/workflows/a%2Fb", json={"id": "a/b", "status": "Completed"}, headers=AUTH_A
    )
    assert response.status_code == 201
    assert response.json()["id"] == "a/b"


@pytest.mark.parametrize("raw", ["%FF", "%FE", "a%C3", "%ED%A0%80"])
def test_path_ids_that_are_not_utf8_are_422_not_merged(client: TestClient, raw: str) -> None:
    for path in (f"/workflows/{raw}/tasks", f"/workflows/{raw}"):
        response = client.post(path, json=task_body(), headers=AUTH_A)
        if path.endswith("/tasks"):
            assert response.status_code == 422
            [issue] = response.json()["detail"]
            assert issue["loc"] == ["path", "workflow_id"]
            assert "not valid UTF-8" in issue["msg"]
    assert client.get(f"/workflows/{raw}/tasks/next-id", headers=AUTH_A).status_code == 422
    patched = client.patch(f"/workflows/{raw}", json={"status": "Completed"}, headers=AUTH_A)
    assert patched.status_code == 422
    assert client.get("/workflows", headers=AUTH_A).json()["total"] == 0


def test_distinct_undecodable_ids_never_address_one_workflow(client: TestClient) -> None:
    """Once, both addressed the workflow "\ufffd"; U+FFFD itself still works."""
    assert client.post("/workflows/%FF/tasks", json=task_body(), headers=AUTH_A).status_code == 422
    replacement = quote("\ufffd", safe="")
    created = client.post(f"/workflows/{replacement}/tasks", json=task_body(), headers=AUTH_A)
    assert created.status_code == 201
    assert client.get("/workflows/%FE/tasks", headers=AUTH_A).status_code == 422
    assert client.get(f"/workflows/{replacement}/tasks", headers=AUTH_A).json()["total"] == 1


@pytest.mark.parametrize("method", ["post", "patch"])
def test_body_ids_with_lone_surrogates_are_422(client: TestClient, method: str) -> None:
    body = '{"id": "wf-\\udcff", "status": "In progress"}'
    path = "/workflows" if method == "post" else "/workflows/wf-%EF%BF%BD"
    headers = {**AUTH_A, "content-type": "application/json"}
    response = client.request(method, path, content=body, headers=headers)
    assert response.status_code == 422
    [issue] = response.json()["detail"]
    assert issue["loc"] == ["body", "id"] and "not valid UTF-8" in issue["msg"]
    assert client.get("/workflows", headers=AUTH_A).json()["total"] == 0
