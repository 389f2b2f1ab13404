"""Constants and request bodies shared by the server tests."""

from __future__ import annotations

from typing import Any

TOKEN_A = "token-alpha-0123456789"
TOKEN_B = "token-bravo-9876543210"
AUTH_A = {"Authorization": f"Bearer {TOKEN_A}"}
AUTH_B = {"Authorization": f"Bearer {TOKEN_B}"}
NOW = "2026-11-27T12:27:15.287982+00:00"


def workflow_body(workflow_id: str = "wf-1", **overrides: Any) -> dict[str, Any]:
    """A complete workflow body as a runner sends it."""
    body: dict[str, Any] = {
        "id": workflow_id,
        "status": "In progress",
        "name": "host-1",
        "mode": "sequential",
        "created_at": NOW,
        "started_at": NOW,
        "finished_at": None,
        "duration": None,
        "task_count": 2,
        "completed_count": 0,
        "failed_count": 0,
    }
    body.update(overrides)
    return body


def task_body(task_id: int = 1, **overrides: Any) -> dict[str, Any]:
    """A complete task body as a runner sends it."""
    body: dict[str, Any] = {
        "id": task_id,
        "name": "flow.extract",
        "status": "Not started",
        "group_name": "default",
        "retry_count": 0,
        "duration": None,
        "errors": [],
        "started_at": None,
        "finished_at": None,
        "current_context": None,
        "previous_context": {"rows": [1, 2, 3]},
    }
    body.update(overrides)
    return body
