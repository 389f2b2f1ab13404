"""Managed mode end to end: real ``dotflow start`` processes, a real server, real HTTP."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from .conftest import STEPS, TOKEN, Api, Runner

pytestmark = pytest.mark.slow


def test_a_generated_workflow_reaches_the_server_with_every_final_status(
    runner: Runner, api: Api
) -> None:
    run = runner.run((*STEPS, "e2eflow.fails"), "--keep-going")
    assert run.returncode == 1, run.stderr  # a task failed after its retries
    workflow_id = run.summary["workflow_id"]

    workflow = api.workflow(workflow_id)
    assert workflow["status"] == "Failed"
    assert (workflow["completed_count"], workflow["failed_count"]) == (3, 1)
    tasks = api.tasks(workflow_id)
    assert [task["id"] for task in tasks] == [1, 2, 3, 4]
    assert [task["name"] for task in tasks] == [*STEPS, "e2eflow.fails"]
    assert [task["status"] for task in tasks] == ["Completed", "Completed", "Completed", "Failed"]
    assert tasks[1]["current_context"] == 6 and tasks[2]["current_context"] == {"loaded": 6}
    assert all(task["duration"] is not None and task["finished_at"] for task in tasks)
    failed = tasks[3]
    assert failed["retry_count"] == 1
    assert [(e["attempt"], e["type"], e["message"]) for e in failed["errors"]] == [
        (1, "ValueError", "e2e failure"),
        (2, "ValueError", "e2e failure"),
    ]
    assert runner.outbox_files() == []


def test_the_same_workflow_id_twice_continues_the_numbering(runner: Runner, api: Api) -> None:
    first = runner.run(WORKFLOW_ID="nightly/etl 1")
    assert first.returncode == 0, first.stderr
    after_first = api.tasks("nightly/etl 1")
    assert [task["id"] for task in after_first] == [1, 2, 3]

    second = runner.run(WORKFLOW_ID="nightly/etl 1")
    assert second.returncode == 0, second.stderr
    tasks = api.tasks("nightly/etl 1")
    assert [task["id"] for task in tasks] == [1, 2, 3, 4, 5, 6]
    assert [task["name"] for task in tasks] == [*STEPS, *STEPS]
    assert tasks[:3] == after_first  # nothing of the first run was overwritten
    assert api.workflow("nightly/etl 1")["status"] == "Completed"
    assert not any("may collide" in line for line in first.logs() + second.logs())


def test_a_server_restart_mid_run_loses_and_duplicates_nothing(runner: Runner, api: Api) -> None:
    workflow_id = "restart-survivor"
    paused = runner.popen(
        ("e2eflow.extract", "e2eflow.gate", "e2eflow.transform"), WORKFLOW_ID=workflow_id
    )
    deadline = time.monotonic() + 60
    while not (runner.gate_dir / "reached").exists():
        assert paused.poll() is None, paused.communicate()[1]
        assert time.monotonic() < deadline, "the run never reached the gate"
        time.sleep(0.02)
    runner.server.stop()  # the server goes away in the middle of the run
    (runner.gate_dir / "open").touch()
    _, stderr = paused.communicate(timeout=60)
    assert paused.returncode == 0, stderr  # the run itself is unaffected
    assert runner.outbox_files(), "undelivered events must be spooled to the outbox"

    runner.server.run()  # the same port and database again
    second = runner.run(("e2eflow.extract", "e2eflow.transform"), WORKFLOW_ID=workflow_id)
    assert second.returncode == 0, second.stderr

    tasks = api.tasks(workflow_id)
    ids = [task["id"] for task in tasks]
    assert ids == [1, 2, 3, 4, 5], f"{stderr}\n---\n{second.stderr}"  # every task once, none twice
    assert [task["status"] for task in tasks] == ["Completed"] * 5
    assert tasks[1]["name"] == "e2eflow.gate" and tasks[1]["current_context"] == {"rows": [10, 20]}
    assert tasks[2]["current_context"] == 30
    assert api.workflow(workflow_id)["status"] == "Completed"
    assert runner.outbox_files() == []


def test_ten_runners_at_once_plus_two_sharing_a_workflow_id(runner: Runner, api: Api) -> None:
    shared: list[int] = []

    def two_runs_one_after_the_other() -> None:
        for _ in range(2):
            shared.append(runner.run(WORKFLOW_ID="shared-by-two").returncode)

    sequence = threading.Thread(target=two_runs_one_after_the_other)
    sequence.start()
    processes = [runner.popen() for _ in range(10)]
    outputs = [process.communicate(timeout=180)[1] for process in processes]
    sequence.join(timeout=180)
    assert [process.returncode for process in processes] == [0] * 10, outputs
    assert shared == [0, 0]

    workflows = {workflow["id"]: workflow for workflow in api.workflows()}
    assert len(workflows) == 11
    for workflow_id, workflow in workflows.items():
        tasks = api.tasks(workflow_id)
        expected = 6 if workflow_id == "shared-by-two" else 3
        assert [task["id"] for task in tasks] == list(range(1, expected + 1)), workflow_id
        assert {task["status"] for task in tasks} == {"Completed"}
        assert workflow["status"] == "Completed"


def test_a_wrong_token_completes_the_run_with_one_clear_error(runner: Runner, api: Api) -> None:
    run = runner.run(token="not-the-configured-token")
    assert run.returncode == 0, run.stderr  # every task completed
    errors = run.logs("ERROR")
    assert len(errors) == 1, errors
    assert "rejected" in errors[0] and "not-the-configured-token" not in run.stderr
    assert api.workflows() == []  # the server holds nothing
    assert runner.outbox_files() == []  # and nothing waits to be replayed under another token


@pytest.mark.parametrize("workflow_id", ["..", "a/b?c#d%20e"])
def test_workflow_ids_that_look_like_url_syntax_arrive_intact(
    runner: Runner, api: Api, workflow_id: str
) -> None:
    run = runner.run(WORKFLOW_ID=workflow_id)
    assert run.returncode == 0, run.stderr
    assert [task["id"] for task in api.tasks(workflow_id)] == [1, 2, 3]
    assert api.workflow(workflow_id)["status"] == "Completed"


def test_the_last_line_names_the_runs_dashboard_page(runner: Runner, api: Api) -> None:
    run = runner.run(WORKFLOW_ID="see/me")
    assert run.returncode == 0, run.stderr
    runs = api.get("/workflows/see%2Fme/runs")["items"]
    run_id = runs[0]["run_id"]
    page = f"{runner.server.base_url}/ui/workflows/see%2Fme/runs/{run_id}"
    summary = json.loads(run.stderr.splitlines()[-1])  # the runner asks for JSON lines
    assert summary["event"] == "summary" and summary["links"] == [page]
    assert api.workflow("see/me")["status"] == "Completed"
    # The link opens that run's page once signed in with the runner's token.
    browser = requests.Session()
    signed_in = browser.post(
        f"{runner.server.base_url}/ui/login",
        data={"token": TOKEN, "next": "/ui/workflows/see%2Fme/runs/" + run_id},
        timeout=30,
    )
    assert signed_in.status_code == 200 and signed_in.url == page
    shown = browser.get(page, timeout=30)
    assert shown.status_code == 200 and f"Run {run_id}" in shown.text and "Completed" in shown.text
