"""Batches whose task events are written in bulk answer and store exactly what the same
events sent as single requests do: 409s, 404s, 422s, events without a run, expired and
renewed reservations, values the database refuses, concurrent batches."""

from __future__ import annotations

import json
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from api_helpers import AUTH_A, task_body, workflow_body
from dotflow_api.models import utcnow
from dotflow_api.writes import MAX_TASK_ID, runs
from fastapi.testclient import TestClient
from sqlalchemy import update

pytestmark = pytest.mark.both_backends

RUN_1 = "11111111-1111-4111-8111-111111111111"
RUN_2 = "22222222-2222-4222-8222-222222222222"
RUN_3 = "33333333-3333-4333-8333-333333333333"
RUN_4 = "44444444-4444-4444-8444-444444444444"
VOLATILE = {"registered_at", "updated_at", "workflow_id"}


def create(task_id: int, run_id: str | None, **fields: Any) -> dict[str, Any]:
    body = task_body(task_id, **fields)
    if run_id is not None:
        body["run_id"] = run_id
    return {"op": "create_task", "body": body}


def patch(task_id: int, run_id: str | None, **fields: Any) -> dict[str, Any]:
    """An update setting only the required fields and ``fields``."""
    body = {"id": task_id, "name": "flow.extract", "status": "In progress", **fields}
    if run_id is not None:
        body["run_id"] = run_id
    return {"op": "update_task", "body": body}


def send_single(client: TestClient, workflow_id: str, event: dict[str, Any]) -> Any:
    """The event as the single request it stands for: (status, body)."""
    body, op = event["body"], event["op"]
    if op == "create_task":
        response = client.post(f"/workflows/{workflow_id}/tasks", json=body, headers=AUTH_A)
    elif op == "update_task":
        path = f"/workflows/{workflow_id}/tasks/{body.get('id')}"
        response = client.patch(path, json=body, headers=AUTH_A)
    else:
        response = client.patch(f"/workflows/{workflow_id}", json=body, headers=AUTH_A)
    return response.status_code, response.json()


def send_batch(client: TestClient, workflow_id: str, events: list[dict[str, Any]]) -> Any:
    response = client.post(
        f"/workflows/{workflow_id}/events", json={"events": events}, headers=AUTH_A
    )
    assert response.status_code == 200, response.text
    return [(result["status"], result["body"]) for result in response.json()["results"]]


def state(client: TestClient, workflow_id: str) -> Any:
    """Tasks, runs and the workflow as stored, without the server's clock or the id."""

    def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k not in VOLATILE | {"id"}} for row in rows]

    base = f"/workflows/{workflow_id}"
    tasks = client.get(f"{base}/tasks?limit=1000", headers=AUTH_A).json()["items"]
    found = client.get(f"{base}/runs", headers=AUTH_A).json()["items"]
    workflow = client.get(base, headers=AUTH_A).json()
    return (
        [(task["id"], strip([task])[0]) for task in tasks],
        strip(found),
        strip([workflow]),
        client.get(f"{base}/tasks/next-id", headers=AUTH_A).json(),
    )


def normalised(answers: list[Any], workflow_id: str) -> Any:
    """The answers without the server's clock, the workflow id (named in messages)
    replaced."""
    bodies = [
        (code, {k: v for k, v in body.items() if k not in {"registered_at", "updated_at"}})
        for code, body in answers
    ]
    return json.loads(json.dumps(bodies).replace(workflow_id, "WF"))


def prepare(client: TestClient, workflow_id: str) -> None:
    """Task 1 stored by run 2; run 3 reserved 2-6, stored task 2, then went silent for
    25 hours (its reservation expired: a runner that died)."""
    for event in (create(1, RUN_2), create(2, RUN_3)):
        send_single(client, workflow_id, event)
    reserve = client.post(
        f"/workflows/{workflow_id}/runs/{RUN_3}/reserve", json={"count": 5}, headers=AUTH_A
    )
    assert reserve.json()["first_id"] == 3
    engine = client.app.state.store.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(
            update(runs)
            .where(runs.c.run_id == RUN_3)
            .values(updated_at=utcnow() - timedelta(hours=25))
        )


def mixed(workflow_id: str) -> list[dict[str, Any]]:
    """Every case a task event can meet, with a workflow event in the middle."""
    start = workflow_body(workflow_id, run_id=RUN_1, task_count=3)
    return [
        create(5, RUN_1, name="five"),  # 201: run 3's reservation 3-7 has expired
        patch(5, RUN_1, retry_count=1),  # 200, merged with the create
        patch(2, RUN_3, status="Completed"),  # 200: run 3 reports again, its lease renewed
        create(4, RUN_1),  # 409: reserved by run 3 again; ids reserved for run 1
        create(1, RUN_1),  # 409: stored by run 2; run 1 keeps ids 8-107
        patch(40, RUN_1),  # 404
        create(41, RUN_1),  # 201 (the ids run 1 was given)
        {"op": "create_task", "body": {"id": "x", "name": "n", "status": "Done"}},  # 422
        create(8, None, name="no run"),  # 201, no run
        patch(8, None, status="Completed", retry_count=2),  # 200
        patch(1, None, status="Failed"),  # 200: without a run, run 2's task is updated
        patch(99, None),  # 404
        {"op": "update_workflow", "body": start},
        create(42, RUN_1),  # 201
        patch(42, RUN_1, status="Completed", current_context={"rows": 3}),  # 200
        {**patch(42, RUN_1, status="Completed", duration=1.5), "op": "create_task"},  # 200
        patch(41, RUN_1, errors=[{"attempt": 1, "type": "E", "message": "m", "traceback": ""}]),
        create(500, RUN_4),  # 201: a new run, the latest (past run 1's ids)
        patch(5, RUN_1, status="Completed", finished_at="2026-12-04T12:00:00+00:00"),  # 200
    ]


def test_a_mixed_batch_answers_and_stores_what_single_requests_do(client: TestClient) -> None:
    prepare(client, "one-by-one")
    prepare(client, "batched")
    single = [send_single(client, "one-by-one", e) for e in mixed("one-by-one")]
    batched = send_batch(client, "batched", mixed("batched"))
    assert [status for status, _ in batched] == [
        201, 200, 200, 409, 409, 404, 201, 422, 201, 200, 200, 404,
        200, 201, 200, 200, 200, 201, 200,
    ]  # fmt: skip
    assert batched[3][1]["next_id"] == 8 and "reserved by another run" in batched[3][1]["detail"]
    assert batched[4][1]["next_id"] == 8 and "stored by another run" in batched[4][1]["detail"]
    assert normalised(batched, "batched") == normalised(single, "one-by-one")
    assert state(client, "batched") == state(client, "one-by-one")
    stored = dict(state(client, "batched")[0])
    assert stored[1]["run_id"] == RUN_2 and stored[1]["status"] == "Failed"
    assert stored[5]["status"] == "Completed" and stored[5]["previous_context"] == {
        "rows": [1, 2, 3]
    }
    assert stored[42]["duration"] == 1.5 and stored[42]["current_context"] == {"rows": 3}


def test_a_batch_of_new_workflow_events_that_are_all_refused_registers_nothing(
    client: TestClient,
) -> None:
    events = [patch(1, RUN_1), patch(2, None)]
    single = [send_single(client, "ghost-1", event) for event in events]
    batched = send_batch(client, "ghost-2", events)
    assert normalised(batched, "ghost-2") == normalised(single, "ghost-1")
    assert [body["detail"] for _, body in batched] == [
        "task 1 of workflow 'ghost-2' not found",
        "workflow 'ghost-2' not found",
    ]
    assert client.get("/workflows/ghost-2", headers=AUTH_A).status_code == 404


def test_conflicts_near_the_largest_id_answer_as_single_requests(client: TestClient) -> None:
    """Too few ids left to reserve: the 409 names the next id, or none at all."""
    near, largest = MAX_TASK_ID - 50, MAX_TASK_ID
    events = [create(near, RUN_1), create(largest, RUN_2), create(largest, RUN_1)]
    events.append(patch(near, RUN_1))
    answers = {}
    for workflow_id in ("one-by-one", "batched"):
        send_single(client, workflow_id, create(near, RUN_2))
    answers["one-by-one"] = [send_single(client, "one-by-one", event) for event in events]
    answers["batched"] = send_batch(client, "batched", events)
    assert normalised(answers["batched"], "batched") == normalised(
        answers["one-by-one"], "one-by-one"
    )
    assert [(code, body.get("next_id")) for code, body in answers["batched"]] == [
        (409, near + 1),
        (201, None),
        (409, None),
        (409, None),
    ]
    assert state(client, "batched") == state(client, "one-by-one")


def test_large_segments_are_written_in_bulk_and_read_back_whole(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    first = [create(task_id, RUN_1, name=f"t{task_id}") for task_id in range(1, 601)]
    assert {status for status, _ in send_batch(client, "big", first)} == {201}
    second = [patch(task_id, RUN_1, status="Completed") for task_id in range(1, 601)]
    second += [create(task_id, RUN_1) for task_id in range(601, 901)]
    second.append(create(550, RUN_2))  # beyond the first 500 ids read: still refused
    with caplog.at_level(logging.DEBUG, logger="dotflow_api.store"):
        answers = send_batch(client, "big", second)
    assert [status for status, _ in answers] == [200] * 600 + [201] * 300 + [409]
    assert any("wrote 901 task events in bulk" in r.getMessage() for r in caplog.records)
    tasks = client.get("/workflows/big/tasks?limit=1000", headers=AUTH_A).json()["items"]
    assert len(tasks) == 900
    assert {t["status"] for t in tasks[:600]} == {"Completed"}
    assert {t["run_id"] for t in tasks} == {RUN_1}


def test_a_value_the_database_refuses_answers_422_for_its_own_event_only(
    client: TestClient, database_url: str
) -> None:
    """PostgreSQL refuses NUL in text; SQLite stores it (then the event is a 201)."""
    refuses = database_url.startswith("postgresql")
    events = [
        create(1, RUN_1),
        create(2, RUN_1),
        create(3, RUN_1, name="bad\x00name"),
        patch(1, RUN_1, status="Completed"),
        create(4, None, current_context={"k": "v"}),
    ]
    answers = send_batch(client, "nul", events)
    assert [status for status, _ in answers] == [201, 201, 422 if refuses else 201, 200, 201]
    if refuses:
        assert answers[2][1] == {"detail": "a value in the event cannot be stored by the database"}
    tasks = client.get("/workflows/nul/tasks", headers=AUTH_A).json()["items"]
    assert [t["id"] for t in tasks] == ([1, 2, 4] if refuses else [1, 2, 3, 4])
    assert tasks[0]["status"] == "Completed"


def test_concurrent_batches_without_a_run_create_each_task_once(client: TestClient) -> None:
    """The same new tasks from several batches at once: each created once, then updated."""

    def run(index: int) -> list[int]:
        events = [create(task_id, None, retry_count=index) for task_id in range(1, 41)]
        return [status for status, _ in send_batch(client, "race", events)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(run, range(4)))
    for task_index in range(40):
        assert sorted(statuses[task_index] for statuses in answers) == [200, 200, 200, 201]
    assert client.get("/workflows/race/tasks", headers=AUTH_A).json()["total"] == 40


RUNS = (RUN_1, RUN_2, RUN_3, RUN_4, "55555555-5555-4555-8555-555555555555", None)


def random_events(seed: int, workflow_id: str, count: int) -> list[dict[str, Any]]:
    """A seeded mix: creates and updates of a few ids by a few runs (and none), runs
    starting and ending, ids in and out of the reservations."""
    chooser = random.Random(seed)
    events: list[dict[str, Any]] = []
    for _ in range(count):
        run_id = chooser.choice(RUNS)
        task_id = chooser.choice([*range(1, 16), *range(100, 106), *range(200, 204)])
        kind = chooser.random()
        if kind < 0.1:
            status = chooser.choice(["In progress", "Completed", "Failed"])
            body = workflow_body(workflow_id, run_id=run_id, status=status)
            events.append({"op": "update_workflow", "body": body})
        elif kind < 0.55:
            events.append(create(task_id, run_id, name=f"n{chooser.randint(1, 9)}"))
        else:
            extra = chooser.choice([{}, {"retry_count": chooser.randint(0, 3)}, {"duration": 0.5}])
            events.append(patch(task_id, run_id, status="Completed", **extra))
    return events


@pytest.mark.parametrize("seed", range(4))
def test_random_batches_answer_and_store_what_single_requests_do(
    client: TestClient, seed: int
) -> None:
    for workflow_id in ("one-by-one", "batched"):
        prepare(client, workflow_id)
        path = f"/workflows/{workflow_id}/runs/{RUN_4}/reserve"
        assert client.post(path, json={"count": 10}, headers=AUTH_A).status_code == 200
    single_events = random_events(seed, "one-by-one", 80)
    single = [send_single(client, "one-by-one", event) for event in single_events]
    batched = send_batch(client, "batched", random_events(seed, "batched", 80))
    assert normalised(batched, "batched") == normalised(single, "one-by-one")
    assert state(client, "batched") == state(client, "one-by-one")
    assert {status for status, _ in batched} >= {200, 201, 404, 409}
