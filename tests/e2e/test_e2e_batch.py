"""Batches end to end: ``dotflow start`` against the reference server with and without
its batch endpoint (``serve --no-batch``), counted from the server's access log."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dotflow_api.process import ServerProcess

from .conftest import TOKEN, Api, Runner

pytestmark = pytest.mark.slow

TWENTY = ("e2eflow.extract", "e2eflow.transform", "e2eflow.load") * 6 + (
    "e2eflow.extract",
    "e2eflow.transform",
)
_REQUEST_LINE = re.compile(r'"(GET|POST|PATCH|PUT) (\S+) HTTP/1\.1" (\d{3})')


def _serve(tmp_path: Path, name: str, *options: str) -> ServerProcess:
    workdir = tmp_path / name
    workdir.mkdir()
    return ServerProcess.start(
        f"sqlite:///{workdir / 'api.sqlite3'}", [TOKEN], workdir=workdir, extra_args=list(options)
    )


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    batching = _serve(tmp_path, "batching")
    single = _serve(tmp_path, "single", "--no-batch")
    yield batching, single
    batching.stop()
    single.stop()


def _requests(server: ServerProcess) -> list[tuple[str, str, int]]:
    """Every request the server's access log shows: method, path and status."""
    text = server.stdout.read_text(errors="replace") + server.stderr.read_text(errors="replace")
    return [(m[1], m[2], int(m[3])) for m in _REQUEST_LINE.finditer(text)]


def _runner_requests(server: ServerProcess) -> list[tuple[str, str, int]]:
    """The runners' requests: not the readiness probes nor this test's reads."""
    return [r for r in _requests(server) if r[0] != "GET" or "/next-id" in r[1]]


def _stored(api: Api, workflow_id: str) -> list[dict[str, Any]]:
    fields = ("id", "status", "current_context", "previous_context", "error")
    tasks = api.get(f"/workflows/{workflow_id}/tasks?limit=1000")["items"]
    return [{name: task.get(name) for name in fields} for task in tasks]


def test_a_twenty_task_run_sends_at_most_four_requests_and_stores_what_single_requests_store(
    servers: tuple[ServerProcess, ServerProcess], tmp_path: Path
) -> None:
    batching, single = servers
    stored = []
    for server in (batching, single):
        runner = Runner(server, tmp_path / f"run-{server.port}")
        run = runner.run(TWENTY, WORKFLOW_ID="twenty", SERVER_FLUSH_TIMEOUT="30")
        assert run.returncode == 0, run.stderr
        assert runner.outbox_files() == [], run.stderr
        stored.append(_stored(Api(server), "twenty"))
    batched_requests = _runner_requests(batching)
    single_requests = _runner_requests(single)
    assert len(batched_requests) <= 4, batched_requests
    assert any(path.endswith("/events") for _, path, _ in batched_requests), batched_requests
    assert all(status < 300 for _, _, status in batched_requests), batched_requests
    assert not any(path.endswith("/events") for _, path, _ in single_requests)
    assert len(single_requests) > 20
    assert len(stored[0]) == 20
    assert stored[0] == stored[1]


def test_a_thousand_task_run_sends_at_most_thirty_requests(
    servers: tuple[ServerProcess, ServerProcess], tmp_path: Path
) -> None:
    batching, _ = servers
    steps = (("e2eflow.extract", "e2eflow.transform", "e2eflow.load") * 334)[:1000]
    runner = Runner(batching, tmp_path / "thousand")
    # SQLite stores about 3 ms per event on 2 cores: a longer flush deadline than 2 s.
    run = runner.run(steps, WORKFLOW_ID="thousand", SERVER_FLUSH_TIMEOUT="60")
    assert run.returncode == 0, run.stderr[-2000:]
    assert runner.outbox_files() == [], run.stderr[-2000:]
    requests = _runner_requests(batching)
    assert len(requests) <= 30, requests
    assert all(status < 300 for _, _, status in requests), requests
    stored = _stored(Api(batching), "thousand")
    assert [task["id"] for task in stored] == list(range(1, 1001))
    assert {task["status"] for task in stored} == {"Completed"}


def test_a_new_workflows_run_takes_two_requests_and_its_run_record_is_whole(
    servers: tuple[ServerProcess, ServerProcess], tmp_path: Path
) -> None:
    batching, _ = servers
    runner = Runner(batching, tmp_path / "new")
    run = runner.run(TWENTY, SERVER_FLUSH_TIMEOUT="30")  # no WORKFLOW_ID: a new workflow
    assert run.returncode == 0, run.stderr
    api = Api(batching)
    (workflow,) = api.workflows()
    workflow_id = workflow["id"]
    # Its create, then every task and the final status in one batch, applied in order.
    assert _runner_requests(batching) == [
        ("POST", "/workflows", 201),
        ("POST", f"/workflows/{workflow_id}/events", 200),
    ]
    (record,) = api.get(f"/workflows/{workflow_id}/runs")["items"]
    assert record["status"] == "Completed" and record["finished_at"] is not None
    assert (record["task_count"], record["completed_count"], record["failed_count"]) == (20, 20, 0)
    assert (record["stored_task_count"], record["first_task_id"], record["last_task_id"]) == (
        20,
        1,
        20,
    )
    assert {task["status"] for task in _stored(api, workflow_id)} == {"Completed"}
