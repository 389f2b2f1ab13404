"""The runs listing and the run-scoped task filters, as real runs report them to the real server.

``test_e2e_runs_cli.py`` checks what ``dotflow runs`` prints; this checks what the
server answers on the wire: each run's status and counts as its runner reported them,
the tasks stored for it, one run's own resource, and ``tasks?run_id=&status=``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from dotflow_server_api.payloads import segment

from .conftest import STEPS, Api, Runner

pytestmark = pytest.mark.slow

WORKFLOW = "reports/daily"
PATH = f"/workflows/{segment(WORKFLOW)}"


def _ids(page: dict[str, Any]) -> list[int]:
    assert page["total"] == len(page["items"]), page
    return [task["id"] for task in page["items"]]


def test_a_workflow_s_runs_and_their_tasks_read_back_per_run_and_status(
    runner: Runner, api: Api
) -> None:
    completed_run = runner.run(WORKFLOW_ID=WORKFLOW)
    assert completed_run.returncode == 0, completed_run.stderr
    failed_run = runner.run(("e2eflow.extract", "e2eflow.fails"), WORKFLOW_ID=WORKFLOW)
    assert failed_run.returncode == 1, failed_run.stderr

    listing = api.get(f"{PATH}/runs")
    assert listing["total"] == 2
    failed, completed = listing["items"]  # newest first
    assert failed["run_id"] != completed["run_id"]
    assert {failed["workflow_id"], completed["workflow_id"]} == {WORKFLOW}
    counts = ("status", "task_count", "completed_count", "failed_count", "stored_task_count")
    assert [completed[key] for key in counts] == ["Completed", 3, 3, 0, 3]
    assert [failed[key] for key in counts] == ["Failed", 2, 1, 1, 2]
    assert (completed["first_task_id"], completed["last_task_id"]) == (1, 3)
    assert (failed["first_task_id"], failed["last_task_id"]) == (4, 5)
    for run in (completed, failed):  # each run numbered inside the block it reserved
        assert run["reserved_first_id"] <= run["first_task_id"]
        assert run["last_task_id"] <= run["reserved_last_id"]
        assert run["duration"] >= 0
    started = [datetime.fromisoformat(run["started_at"]) for run in (completed, failed)]
    assert started[0] <= datetime.fromisoformat(completed["finished_at"]) <= started[1]
    assert api.get(f"{PATH}/runs?limit=1&offset=1")["items"] == [completed]

    for run in (completed, failed):  # one run's resource: the listing's item, field for field
        assert api.get(f"{PATH}/runs/{run['run_id']}") == run
        assert api.get(f"/runs/{run['run_id']}") == run

    completed_tasks = api.get(f"{PATH}/tasks?run_id={completed['run_id']}")
    assert _ids(completed_tasks) == [1, 2, 3]
    assert [task["name"] for task in completed_tasks["items"]] == list(STEPS)
    failed_tasks = api.get(f"{PATH}/tasks?run_id={failed['run_id']}")
    assert _ids(failed_tasks) == [4, 5]
    assert {task["run_id"] for task in failed_tasks["items"]} == {failed["run_id"]}

    only_failed = api.get(f"{PATH}/tasks?status=Failed")
    assert _ids(only_failed) == [5]
    failure = only_failed["items"][0]
    assert (failure["name"], failure["run_id"]) == ("e2eflow.fails", failed["run_id"])
    assert [(error["attempt"], error["message"]) for error in failure["errors"]] == [
        (1, "e2e failure"),
        (2, "e2e failure"),
    ]
    assert _ids(api.get(f"{PATH}/tasks?status=Completed")) == [1, 2, 3, 4]
    assert _ids(api.get(f"{PATH}/tasks?run_id={failed['run_id']}&status=Completed")) == [4]
    assert _ids(api.get(f"{PATH}/tasks?run_id={completed['run_id']}&status=Failed")) == []
