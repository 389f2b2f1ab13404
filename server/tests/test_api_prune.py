"""``dotflow-api prune --older-than AGE``: old runs go with their tasks, in batches."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from api_helpers import AUTH_A, AUTH_B, task_body, workflow_body
from dotflow_api.models import Run, Task, Workflow, utcnow
from dotflow_api.retention import parse_age
from fastapi.testclient import TestClient
from sqlalchemy import select, update

pytestmark = pytest.mark.both_backends

DOTFLOW_API = Path(sys.executable).with_name("dotflow-api")


def _prune(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DOTFLOW_API), "prune", "--database", database_url, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _run(client: TestClient, workflow_id: str, run_id: str, task_ids: list[int], auth=AUTH_A):
    body = workflow_body(workflow_id, run_id=run_id, status="Completed")
    assert client.post("/workflows", json=body, headers=auth).status_code in (200, 201)
    for task_id in task_ids:
        task = task_body(task_id, run_id=run_id, status="Completed")
        answer = client.post(f"/workflows/{workflow_id}/tasks", json=task, headers=auth)
        assert answer.status_code == 201, answer.text


def _age(client: TestClient, table: object, condition: object, days: int) -> None:
    engine = client.app.state.store.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(
            update(table).where(condition).values(updated_at=utcnow() - timedelta(days=days))
        )


def test_prune_deletes_old_runs_with_their_tasks_and_keeps_the_rest(
    client: TestClient, database_url: str
) -> None:
    runs, tasks, workflows = Run.__table__, Task.__table__, Workflow.__table__
    _run(client, "mixed", "old", [1, 2])
    _run(client, "mixed", "recent", [3])
    _run(client, "mixed", "month", [4])
    for number, run_id in enumerate(("a", "b", "c")):
        _run(client, "stale", run_id, [number + 1])
    _run(client, "stale-b", "x", [1], auth=AUTH_B)  # every tenant's old runs go
    client.post("/workflows", json=workflow_body("legacy"), headers=AUTH_A)
    for task_id in (1, 2):
        client.post("/workflows/legacy/tasks", json=task_body(task_id), headers=AUTH_A)
    old_runs = runs.c.run_id.in_(["old", "a", "b", "c", "x"])
    _age(client, runs, old_runs, 40)
    _age(client, runs, runs.c.run_id == "month", 29)  # younger than 30 days: kept
    _age(client, tasks, tasks.c.run_id.in_(["old", "a", "b", "c", "x"]), 40)
    _age(client, tasks, tasks.c.run_id.is_(None) & (tasks.c.task_id == 1), 40)
    _age(client, workflows, workflows.c.workflow_id.in_(["stale", "stale-b", "mixed"]), 40)

    result = _prune(database_url, "--older-than", "30d", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Deleted 5 run(s), 7 task(s) and 2 workflow(s) last changed")

    engine = client.app.state.store.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        left_runs = set(conn.execute(select(runs.c.run_id)).scalars())
        left_tasks = {tuple(row) for row in conn.execute(select(tasks.c.run_id, tasks.c.task_id))}
        left_workflows = set(conn.execute(select(workflows.c.workflow_id)).scalars())
    assert left_runs == {"recent", "month"}
    assert left_tasks == {("recent", 3), ("month", 4), (None, 2)}
    assert left_workflows == {"mixed", "legacy"}  # "mixed" still has runs
    mixed = client.get("/workflows/mixed/runs", headers=AUTH_A).json()
    assert [run["run_id"] for run in mixed["items"]] == ["month", "recent"]

    again = _prune(database_url, "--older-than", "30d")
    assert again.returncode == 0 and again.stdout.startswith("Deleted 0 run(s), 0 task(s)")


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("30x", "'30x' is not an age: expected a whole number above 0 followed by d (days)"),
        ("30", "'30' is not an age"),
        ("0d", "'0d' is not an age"),
        ("-5d", "'-5d' is not an age"),
        ("99999999d", "'99999999d' is longer than 36500d"),
    ],
)
def test_a_bad_age_is_one_line_naming_it_with_exit_2(
    database_url: str, value: str, message: str
) -> None:
    result = _prune(database_url, f"--older-than={value}")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


@pytest.mark.sqlite_only
def test_prune_needs_an_age(database_url: str) -> None:
    result = _prune(database_url)
    assert result.returncode == 2 and "--older-than" in result.stderr


@pytest.mark.parametrize(
    ("text", "age"),
    [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), (" 90m ", timedelta(minutes=90))],
)
def test_ages_read_as_days_hours_or_minutes(text: str, age: timedelta) -> None:
    assert parse_age(text) == age
