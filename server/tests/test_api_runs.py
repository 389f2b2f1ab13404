"""Runs, run-scoped task writes (409), reservations, batches, /api/v1 and the header."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from api_helpers import AUTH_A, AUTH_B, task_body, workflow_body
from fastapi.testclient import TestClient

pytestmark = pytest.mark.both_backends

RUN_1 = "11111111-1111-4111-8111-111111111111"
RUN_2 = "22222222-2222-4222-8222-222222222222"
WF = "/workflows/nightly"


def run_of(client: TestClient, run_id: str, task_ids: range, **final: Any) -> None:
    """What a managed runner sends for one run: tasks, start, updates, end."""
    for task_id in task_ids:
        body = task_body(task_id, run_id=run_id, name=f"step.{task_id}")
        assert client.post(f"{WF}/tasks", json=body, headers=AUTH_A).status_code == 201
    start = workflow_body("nightly", run_id=run_id, task_count=len(task_ids))
    assert client.patch(WF, json=start, headers=AUTH_A).status_code in (200, 201)
    for task_id in task_ids:
        status = final.get("failed", ()) and task_id in final["failed"] and "Failed"
        body = task_body(
            task_id, run_id=run_id, name=f"step.{task_id}", status=status or "Completed"
        )
        assert client.patch(f"{WF}/tasks/{task_id}", json=body, headers=AUTH_A).status_code == 200
    failed = len(final.get("failed", ()))
    end = workflow_body(
        "nightly",
        run_id=run_id,
        status="Failed" if failed else "Completed",
        task_count=len(task_ids),
        completed_count=len(task_ids) - failed,
        failed_count=failed,
        duration=1.5,
        finished_at="2026-11-27T12:30:00+00:00",
    )
    assert client.patch(WF, json=end, headers=AUTH_A).status_code == 200


def test_runs_are_listed_newest_first_with_their_own_state(client: TestClient) -> None:
    run_of(client, RUN_1, range(1, 4), failed=(2,))
    run_of(client, RUN_2, range(4, 6))
    runs = client.get(f"{WF}/runs", headers=AUTH_A).json()
    assert runs["total"] == 2
    newest, oldest = runs["items"]
    assert newest["run_id"] == RUN_2 and oldest["run_id"] == RUN_1
    assert oldest["status"] == "Failed" and oldest["failed_count"] == 1
    assert (oldest["first_task_id"], oldest["last_task_id"], oldest["stored_task_count"]) == (
        1,
        3,
        3,
    )
    assert (newest["first_task_id"], newest["last_task_id"]) == (4, 5)
    assert newest["status"] == "Completed" and newest["duration"] == 1.5
    assert newest["name"] == "host-1" and newest["finished_at"].startswith("2026-11-27T12:30")
    one = client.get(f"{WF}/runs/{RUN_1}", headers=AUTH_A).json()
    assert one == oldest
    # the workflow row shows the latest run; all five tasks stay stored
    workflow = client.get(WF, headers=AUTH_A).json()
    assert workflow["latest_run_id"] == RUN_2 and workflow["run_count"] == 2
    assert workflow["status"] == "Completed" and workflow["task_count"] == 2
    assert workflow["stored_task_count"] == 5


def test_unknown_runs_and_other_tokens_get_404(client: TestClient) -> None:
    run_of(client, RUN_1, range(1, 2))
    assert client.get(f"{WF}/runs/{RUN_2}", headers=AUTH_A).status_code == 404
    assert client.get(f"{WF}/runs", headers=AUTH_B).status_code == 404
    assert client.get(f"{WF}/runs/{RUN_1}", headers=AUTH_B).status_code == 404


def test_a_run_is_found_by_its_id_alone_for_its_token_only(client: TestClient) -> None:
    run_of(client, RUN_1, range(1, 3), failed=(2,))
    other = workflow_body("weekly", run_id=RUN_2, status="Completed")
    assert client.post("/workflows", json=other, headers=AUTH_A).status_code == 201
    found = client.get(f"/runs/{RUN_1}", headers=AUTH_A).json()
    assert found == client.get(f"{WF}/runs/{RUN_1}", headers=AUTH_A).json()
    assert found["workflow_id"] == "nightly" and found["status"] == "Failed"
    weekly = client.get(f"/api/v1/runs/{RUN_2}", headers=AUTH_A).json()
    assert weekly["workflow_id"] == "weekly" and weekly["run_id"] == RUN_2
    assert client.get(f"/runs/{RUN_1}", headers=AUTH_B).status_code == 404
    missing = client.get("/runs/no-such-run", headers=AUTH_A)
    assert missing.status_code == 404 and missing.json()["detail"] == "run 'no-such-run' not found"
    assert client.get("/runs/" + "r" * 65, headers=AUTH_A).status_code == 422
    assert client.get(f"/runs/{RUN_1}").status_code == 401


def test_tasks_carry_their_run_and_filter_by_run_and_status(client: TestClient) -> None:
    run_of(client, RUN_1, range(1, 4), failed=(2,))
    run_of(client, RUN_2, range(4, 6), failed=(5,))
    everything = client.get(f"{WF}/tasks", headers=AUTH_A).json()["items"]
    assert [(t["id"], t["run_id"]) for t in everything] == [
        (1, RUN_1),
        (2, RUN_1),
        (3, RUN_1),
        (4, RUN_2),
        (5, RUN_2),
    ]
    failed = client.get(f"{WF}/tasks", params={"status": "Failed"}, headers=AUTH_A).json()
    assert [t["id"] for t in failed["items"]] == [2, 5] and failed["total"] == 2
    of_run = client.get(f"{WF}/tasks", params={"run_id": RUN_2}, headers=AUTH_A).json()
    assert [t["id"] for t in of_run["items"]] == [4, 5]
    both = client.get(
        f"{WF}/tasks", params={"run_id": RUN_1, "status": "Completed"}, headers=AUTH_A
    ).json()
    assert [t["id"] for t in both["items"]] == [1, 3]


def test_an_unknown_status_filter_is_refused_naming_the_valid_ones(client: TestClient) -> None:
    run_of(client, RUN_1, range(1, 2))
    response = client.get(f"{WF}/tasks", params={"status": "Done"}, headers=AUTH_A)
    assert response.status_code == 422
    (issue,) = response.json()["detail"]
    assert issue["loc"] == ["query", "status"]
    assert "'Completed'" in issue["msg"] and "'Not started'" in issue["msg"]


def test_a_run_never_changes_a_task_of_another_run(client: TestClient) -> None:
    run_of(client, RUN_1, range(1, 3))
    for method, path in (("post", f"{WF}/tasks"), ("patch", f"{WF}/tasks/2")):
        body = task_body(2, run_id=RUN_2, name="intruder", status="Failed")
        response = client.request(method, path, json=body, headers=AUTH_A)
        assert response.status_code == 409, response.text
        assert response.json()["next_id"] == 3
        assert "another run" in response.json()["detail"]
    stored = client.get(f"{WF}/tasks", headers=AUTH_A).json()["items"]
    assert [(t["name"], t["status"], t["run_id"]) for t in stored] == [
        ("step.1", "Completed", RUN_1),
        ("step.2", "Completed", RUN_1),
    ]
    # the same run may write its own task again (a retry)
    again = task_body(2, run_id=RUN_1, name="step.2", status="Completed")
    assert client.post(f"{WF}/tasks", json=again, headers=AUTH_A).status_code == 200


def test_tasks_written_without_a_run_id_also_belong_to_no_run_of_ours(client: TestClient) -> None:
    assert client.post(f"{WF}/tasks", json=task_body(1), headers=AUTH_A).status_code == 201
    response = client.post(f"{WF}/tasks", json=task_body(1, run_id=RUN_1), headers=AUTH_A)
    assert response.status_code == 409 and response.json()["next_id"] == 2
    # and clients that send no run id work as before: last write wins
    later = task_body(1, status="Completed")
    assert client.post(f"{WF}/tasks", json=later, headers=AUTH_A).status_code == 200
    assert client.get(f"{WF}/tasks", headers=AUTH_A).json()["items"][0]["status"] == "Completed"


def test_reservations_are_disjoint_and_hold_until_the_run_ends(client: TestClient) -> None:
    def reserve(run_id: str, count: int) -> dict[str, Any]:
        response = client.post(f"{WF}/runs/{run_id}/reserve", json={"count": count}, headers=AUTH_A)
        assert response.status_code == 200, response.text
        return response.json()

    first = reserve(RUN_1, 5)
    assert (first["first_id"], first["last_id"]) == (1, 5)
    second = reserve(RUN_2, 5)
    assert (second["first_id"], second["last_id"]) == (6, 10)
    assert client.get(f"{WF}/tasks/next-id", headers=AUTH_A).json() == {
        "next_id": 11,
        "last_id": None,
    }
    # run 1 may not take run 2's ids, though nothing is stored there yet
    intruder = task_body(6, run_id=RUN_1)
    for _ in range(2):  # refused, and ids of its own reserved for it, the same on a retry
        response = client.post(f"{WF}/tasks", json=intruder, headers=AUTH_A)
        assert (
            response.status_code == 409 and "reserved by another run" in response.json()["detail"]
        )
        assert response.json()["next_id"] == 11
        run_1 = client.get(f"{WF}/runs/{RUN_1}", headers=AUTH_A).json()
        assert (run_1["reserved_first_id"], run_1["reserved_last_id"]) == (11, 110)
    # a run that ended holds nothing: its unused ids are free again
    run_of(client, RUN_2, range(6, 8))
    assert client.get(f"{WF}/runs/{RUN_2}", headers=AUTH_A).json()["reserved_last_id"] == 10
    assert client.get(f"{WF}/tasks/next-id", headers=AUTH_A).json()["next_id"] == 111
    run_of(client, RUN_1, range(11, 12))
    assert client.get(f"{WF}/tasks/next-id", headers=AUTH_A).json()["next_id"] == 12


def test_concurrent_reservations_never_overlap(client: TestClient) -> None:
    def reserve(index: int) -> tuple[int, int]:
        run_id = f"run-{index}"
        body = client.post(f"{WF}/runs/{run_id}/reserve", json={"count": 3}, headers=AUTH_A)
        assert body.status_code == 200, body.text
        return body.json()["first_id"], body.json()["last_id"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        blocks = sorted(pool.map(reserve, range(20)))
    ids = [task_id for first, last in blocks for task_id in range(first, last + 1)]
    assert ids == list(range(1, 61))


def test_bad_reservations_are_refused(client: TestClient) -> None:
    for count in (0, -1, 10_001, "3", 1.5):
        response = client.post(f"{WF}/runs/{RUN_1}/reserve", json={"count": count}, headers=AUTH_A)
        assert response.status_code == 422, count
    assert (
        client.post(f"{WF}/runs/{RUN_1}/reserve", json={}, headers=AUTH_B).json()["first_id"] == 1
    )


def _events(run_id: str, task_ids: range) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for task_id in task_ids:
        events.append({"op": "create_task", "body": task_body(task_id, run_id=run_id)})
    events.append(
        {"op": "update_workflow", "body": workflow_body("nightly", run_id=run_id, task_count=2)}
    )
    for task_id in task_ids:
        done = task_body(task_id, run_id=run_id, status="Completed", current_context=[task_id])
        events.append({"op": "update_task", "body": done})
    return events


def test_a_batch_answers_per_event_like_the_single_requests(client: TestClient) -> None:
    response = client.post(
        f"{WF}/events", json={"events": _events(RUN_1, range(1, 3))}, headers=AUTH_A
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 201, 200, 200, 200]  # workflow: implicit
    assert results[0]["body"] == {"workflow_id": "nightly", "id": 1, "status": "Not started"}
    assert results[2]["body"]["latest_run_id"] == RUN_1
    # another run's batch: its events on tasks 1-2 are refused, the rest applied
    mixed = _events(RUN_2, range(2, 4))
    results = client.post(f"{WF}/events", json={"events": mixed}, headers=AUTH_A).json()["results"]
    assert [r["status"] for r in results] == [409, 201, 200, 409, 200]
    assert results[0]["body"]["next_id"] == 3  # at that moment
    stored = client.get(f"{WF}/tasks", headers=AUTH_A).json()["items"]
    assert [(t["id"], t["run_id"], t["current_context"]) for t in stored] == [
        (1, RUN_1, [1]),
        (2, RUN_1, [2]),
        (3, RUN_2, [3]),
    ]


def test_batch_and_single_requests_store_the_same(make_client: Any) -> None:
    events = _events(RUN_1, range(1, 4))
    single, batch = make_client(), make_client()
    for event in events:
        body, op = event["body"], event["op"]
        if op == "create_task":
            single.post(f"{WF}/tasks", json=body, headers=AUTH_A)
        elif op == "update_task":
            single.patch(f"{WF}/tasks/{body['id']}", json=body, headers=AUTH_A)
        else:
            single.patch(WF, json=body, headers=AUTH_A)
    # make_client shares one database: the batch goes to another workflow
    moved = [{**e, "body": {**e["body"]}} for e in events]
    for event in moved:
        if event["op"] == "update_workflow":
            event["body"]["id"] = "nightly-2"
    assert (
        batch.post(
            "/workflows/nightly-2/events", json={"events": moved}, headers=AUTH_A
        ).status_code
        == 200
    )

    def state(client: TestClient, workflow_id: str) -> Any:
        tasks = client.get(f"/workflows/{workflow_id}/tasks", headers=AUTH_A).json()["items"]
        runs = client.get(f"/workflows/{workflow_id}/runs", headers=AUTH_A).json()["items"]
        volatile = {"registered_at", "updated_at", "workflow_id"}
        return (
            [{k: v for k, v in t.items() if k not in volatile} for t in tasks],
            [{k: v for k, v in r.items() if k not in volatile} for r in runs],
        )

    assert state(single, "nightly") == state(batch, "nightly-2")


def test_a_batch_reports_bad_events_alone(client: TestClient) -> None:
    events = [
        {"op": "create_task", "body": task_body(1, run_id=RUN_1)},
        {"op": "create_task", "body": {"id": "x", "name": "n", "status": "Done"}},
        {"op": "update_task", "body": task_body(9, run_id=RUN_1)},
        {"op": "create_workflow", "body": workflow_body("elsewhere")},
    ]
    results = client.post(f"{WF}/events", json={"events": events}, headers=AUTH_A).json()["results"]
    assert [r["status"] for r in results] == [201, 422, 404, 422]
    assert {issue["loc"][-1] for issue in results[1]["body"]["detail"]} == {"id", "status"}
    assert client.get(f"{WF}/tasks", headers=AUTH_A).json()["total"] == 1
    for bad in ({"events": []}, {"events": [{"op": "delete_task", "body": {}}]}, {}):
        assert client.post(f"{WF}/events", json=bad, headers=AUTH_A).status_code == 422


def test_every_answer_advertises_the_batch_endpoint(client: TestClient) -> None:
    for response in (
        client.get("/healthz"),
        client.get("/workflows", headers=AUTH_A),
        client.get("/workflows"),  # 401
        client.get("/workflows/none", headers=AUTH_A),  # 404
        client.post("/workflows", json={}, headers=AUTH_A),  # 422
    ):
        assert response.headers["Dotflow-Batch"] == "max-events=1000, max-bytes=6000000"


def test_the_api_is_served_under_api_v1_too(client: TestClient) -> None:
    assert client.get("/api/v1/healthz").json() == {"status": "ok"}
    assert client.get("/api/v1/workflows").status_code == 401
    body = task_body(1, run_id=RUN_1)
    assert (
        client.post("/api/v1/workflows/a%2Fb/tasks", json=body, headers=AUTH_A).status_code == 201
    )
    assert client.get("/workflows/a%2Fb/tasks", headers=AUTH_A).json()["total"] == 1
    assert client.get("/api/v1/workflows/a%2Fb/runs", headers=AUTH_A).json()["total"] == 1
    assert client.get("/api/v1/nothing", headers=AUTH_A).status_code == 404
