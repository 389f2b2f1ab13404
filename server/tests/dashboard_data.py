"""Workflows reported over HTTP exactly as a runner reports them, for the dashboard tests.

``report_workflow`` sends the workflow, then each task's create and final update, then
the workflow's final status: the same bodies the ``api`` provider sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote
from uuid import NAMESPACE_URL, uuid5

import requests

T0 = datetime(2026, 12, 1, 2, 0, 0, tzinfo=timezone.utc)

TRACEBACK = """Traceback (most recent call last):
  File "/app/flows/etl.py", line 42, in {name}
    rows = client.fetch(table)
  File "/app/flows/client.py", line 17, in fetch
    raise {type}({message!r})
{type}: {message}
"""


@dataclass
class Step:
    """A task of a reported workflow: offsets in seconds from the workflow's start."""

    task_id: int
    name: str
    start: float
    end: float | None
    status: str = "Completed"
    group: str = "default"
    failures: Sequence[tuple[str, str]] = ()  # (type, message) per failed attempt
    result: Any = None
    initial: Any = field(default_factory=dict)

    def errors(self) -> list[dict[str, Any]]:
        return [
            {
                "attempt": attempt,
                "type": kind,
                "message": message,
                "traceback": TRACEBACK.format(name=self.name, type=kind, message=message),
            }
            for attempt, (kind, message) in enumerate(self.failures, 1)
        ]

    @property
    def retries(self) -> int:
        """Attempts after the first: a failed attempt followed by another is a retry."""
        if self.status == "Failed":
            return max(len(self.failures) - 1, 0)
        return len(self.failures)


def _at(start: datetime, offset: float | None) -> str | None:
    return None if offset is None else (start + timedelta(seconds=offset)).isoformat()


def run_id_of(workflow_id: str, number: int = 1) -> str:
    """The run id (a UUID, as runners send) of the ``number``-th run of a workflow."""
    return str(uuid5(NAMESPACE_URL, f"{workflow_id}#{number}"))


def report_workflow(
    base_url: str,
    token: str,
    workflow_id: str,
    steps: Sequence[Step],
    *,
    started: datetime = T0,
    status: str | None = None,
    run_id: str | None = None,
) -> str:
    """Report a run of a workflow and its steps; ``status`` None: derived from the steps.

    Returns the run id (``run_id``, else the workflow's first from :func:`run_id_of`).
    """
    run_id = run_id or run_id_of(workflow_id)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    path = f"{base_url}/workflows/{quote(workflow_id, safe='')}"
    finished = [step.end for step in steps if step.end is not None]
    done = all(step.end is not None for step in steps)
    failed = sum(step.status == "Failed" for step in steps)
    final = status or (("Failed" if failed else "Completed") if done else "In progress")
    end = max(finished) if finished and final != "In progress" else None
    workflow = {
        "id": workflow_id,
        "status": "In progress",
        "name": "runner-7f3c",
        "mode": "sequential",
        "created_at": started.isoformat(),
        "started_at": started.isoformat(),
        "task_count": len(steps),
        "run_id": run_id,
    }
    _check(session.post(f"{base_url}/workflows", json=workflow, timeout=30))
    for step in steps:
        body = {**task_body(step, started), "run_id": run_id}
        _check(session.post(f"{path}/tasks", json=body, timeout=30))
    workflow.update(
        status=final,
        finished_at=_at(started, end),
        duration=end,
        completed_count=sum(step.status == "Completed" for step in steps),
        failed_count=failed,
    )
    _check(session.patch(path, json=workflow, timeout=30))
    return run_id


def task_body(step: Step, started: datetime) -> dict[str, Any]:
    """The body of a task as the provider sends it after the task's last change."""
    duration = None if step.end is None else step.end - step.start
    return {
        "id": step.task_id,
        "name": step.name,
        "status": step.status,
        "group_name": step.group,
        "retry_count": step.retries,
        "duration": duration,
        "errors": step.errors(),
        "started_at": _at(started, step.start),
        "finished_at": _at(started, step.end),
        "previous_context": step.initial,
        "current_context": step.result,
    }


def _check(response: requests.Response) -> None:
    if response.status_code not in (200, 201):
        raise AssertionError(f"{response.request.method} {response.url}: {response.text}")


#: The failed nightly run the timeline, task and screenshot tests look at.
NIGHTLY_STEPS = (
    Step(1, "etl.extract", 0.0, 1.4, result={"rows": 120_000, "source": "s3://raw/orders"}),
    Step(
        2,
        "etl.transform",
        1.4,
        4.6,
        failures=[("TimeoutError", "warehouse did not answer in 30 s")] * 2,
        result={"rows": 118_204, "dropped": 1_796},
        initial={"rows": 120_000},
    ),
    Step(
        3,
        "etl.load",
        4.6,
        7.9,
        status="Failed",
        failures=[
            ("ConnectionError", "connection reset by peer"),
            ("ConnectionError", "connection reset by peer"),
            ("PermissionError", "role etl_writer cannot INSERT into orders_daily"),
        ],
        initial={"rows": 118_204},
    ),
    Step(4, "report.render", 0.3, 2.2, group="reports", result={"pages": 12}),
    Step(5, "report.publish", 2.2, 3.1, group="reports", result={"url": "/reports/1201"}),
)
