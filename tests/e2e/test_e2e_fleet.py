"""Runs sharing one WORKFLOW_ID: ids never collide, history is never overwritten.

Real ``dotflow start`` processes against the reference server in a subprocess:
runners started together, an outage at start followed by a replay, and a stale
outbox replayed after newer runs stored the same ids. Each runs on SQLite and on
PostgreSQL (the server's id reservation and conflict checks differ per backend).
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from dotflow_api.process import ServerProcess

from .conftest import Api, Runner

pytestmark = [pytest.mark.slow, pytest.mark.both_backends]

FIVE = tuple(f"e2eflow.{name}" for name in ("extract", "transform", "load", "extract", "transform"))


def _tasks(api: Api, workflow_id: str) -> list[dict[str, Any]]:
    return api.get(f"/workflows/{workflow_id}/tasks?limit=1000")["items"]


def _by_run(tasks: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for task in sorted(tasks, key=lambda task: task["id"]):
        runs.setdefault(task["run_id"], []).append(task)
    return runs


def test_twenty_runners_started_together_store_every_task_under_disjoint_ids(
    runner: Runner, api: Api
) -> None:
    # 20 processes share 2 cores with the server: a longer flush deadline
    environment = runner.environment(WORKFLOW_ID="fleet", SERVER_FLUSH_TIMEOUT="60")
    processes = [
        subprocess.Popen(
            runner.command(FIVE),
            cwd=runner.flow_dir,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(20)
    ]
    outputs = [process.communicate(timeout=240)[1] for process in processes]
    assert [process.returncode for process in processes] == [0] * 20, outputs

    tasks = _tasks(api, "fleet")
    assert len(tasks) == 100, outputs
    assert len({task["id"] for task in tasks}) == 100
    runs = _by_run(tasks)
    assert len(runs) == 20
    # A runner whose reservation did not answer within the next-id budget (a loaded
    # machine: 20 processes and the server on 2 cores) numbers from 1 and meets other
    # runs' ids; its tasks are moved, none lost nor overwritten, but a task the server
    # took before another was refused keeps its id, so only such runs may be out of order.
    fell_back = sum("could not read the next task id" in output for output in outputs)
    scattered = 0
    for run_tasks in runs.values():  # each run's five tasks, all completed
        assert Counter(task["name"] for task in run_tasks) == Counter(FIVE)
        assert {task["status"] for task in run_tasks} == {"Completed"}
        first = run_tasks[0]["id"]  # a block reserved for the run: consecutive ids, in order
        in_block = [task["id"] for task in run_tasks] == list(range(first, first + 5))
        scattered += not (in_block and [task["name"] for task in run_tasks] == list(FIVE))
    assert scattered <= fell_back, outputs
    assert runner.outbox_files() == []
    for output in outputs:  # a run that got its reservation never meets another run's ids
        if "taken by another run" in output:
            assert "could not read the next task id" in output, output


def test_an_outage_at_start_then_a_replay_overwrites_no_earlier_task(
    runner: Runner, api: Api, server: ServerProcess
) -> None:
    earlier = runner.run(WORKFLOW_ID="nightly")
    assert earlier.returncode == 0, earlier.stderr
    stored = _tasks(api, "nightly")
    assert [task["id"] for task in stored] == [1, 2, 3]

    server.stop()
    offline = runner.run(WORKFLOW_ID="nightly")  # numbering falls back to 1, events spooled
    assert offline.returncode == 0, offline.stderr
    assert any("may collide" in line for line in offline.logs("WARNING"))
    assert runner.outbox_files()
    server.run()

    flush = runner.flush()
    assert flush.returncode == 0, flush.stderr
    tasks = _tasks(api, "nightly")
    assert tasks[:3] == stored, flush.stderr  # the earlier run's tasks, untouched
    assert [task["id"] for task in tasks] == [1, 2, 3, 4, 5, 6]
    runs = _by_run(tasks)
    assert [len(run) for run in runs.values()] == [3, 3]
    moved = [line for line in flush.logs("WARNING") if "taken by another run" in line]
    assert len(moved) == 1 and "1-3" in moved[0] and "4-6" in moved[0], flush.stderr
    assert runner.outbox_files() == []


def test_a_stale_outbox_replayed_later_overwrites_no_newer_row(
    runner: Runner, api: Api, server: ServerProcess, tmp_path: Path
) -> None:
    server.stop()
    stale = Runner(server, tmp_path / "other-home")  # another machine's outbox
    offline = stale.run(FIVE, WORKFLOW_ID="shared")
    assert offline.returncode == 0, offline.stderr
    server.run()
    for _ in range(2):  # newer runs store tasks 1-10
        newer = runner.run(FIVE, WORKFLOW_ID="shared")
        assert newer.returncode == 0, newer.stderr
    before = _tasks(api, "shared")
    assert [task["id"] for task in before] == list(range(1, 11))

    flush = stale.flush()
    assert flush.returncode == 0, flush.stderr
    after = _tasks(api, "shared")
    assert after[:10] == before, flush.stderr  # 0 newer rows overwritten
    assert [task["id"] for task in after] == list(range(1, 16))
    assert Counter(task["run_id"] for task in after).most_common()[0][1] == 5
    assert [task["name"] for task in after[10:]] == list(FIVE)
    assert stale.outbox_files() == []
