"""The queries of the store: workflows, runs and tasks as dicts of their columns."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select

from dotflow_api.writes import NotFoundError, runs, tasks, workflows


def workflow_select() -> Any:
    """Every workflow column, the number of tasks stored, and its runs (count, latest)."""
    stored = (
        select(func.count())
        .select_from(tasks)
        .where(tasks.c.workflow_pk == workflows.c.pk)
        .scalar_subquery()
        .label("stored_task_count")
    )
    run_count = (
        select(func.count())
        .select_from(runs)
        .where(runs.c.workflow_pk == workflows.c.pk)
        .scalar_subquery()
        .label("run_count")
    )
    latest = (
        select(runs.c.run_id)
        .where(runs.c.workflow_pk == workflows.c.pk)
        .order_by(runs.c.pk.desc())
        .limit(1)
        .scalar_subquery()
        .label("latest_run_id")
    )
    return select(workflows, stored, run_count, latest)


def fetch_workflow(conn: Connection, owner: str, workflow_id: str) -> dict[str, Any]:
    row = conn.execute(
        workflow_select().where(workflows.c.owner == owner, workflows.c.workflow_id == workflow_id)
    ).first()
    if row is None:
        raise NotFoundError(f"workflow {workflow_id!r} not found")
    return dict(row._mapping)


def run_select() -> Any:
    """Every run column plus the tasks stored for it: count, first and last id."""
    of_run = (tasks.c.workflow_pk == runs.c.workflow_pk) & (tasks.c.run_id == runs.c.run_id)

    def aggregate(function: Any, label: str) -> Any:
        return select(function).select_from(tasks).where(of_run).scalar_subquery().label(label)

    return select(
        runs,
        aggregate(func.count(), "stored_task_count"),
        aggregate(func.min(tasks.c.task_id), "first_task_id"),
        aggregate(func.max(tasks.c.task_id), "last_task_id"),
    )


def require_workflow_pk(conn: Connection, owner: str, workflow_id: str) -> int:
    pk = conn.execute(
        select(workflows.c.pk).where(
            workflows.c.owner == owner, workflows.c.workflow_id == workflow_id
        )
    ).scalar()
    if pk is None:
        raise NotFoundError(f"workflow {workflow_id!r} not found")
    return int(pk)


def fetch_run(conn: Connection, owner: str, workflow_id: str, run_id: str) -> dict[str, Any]:
    wpk = require_workflow_pk(conn, owner, workflow_id)
    row = conn.execute(
        run_select().where(runs.c.workflow_pk == wpk, runs.c.run_id == run_id)
    ).first()
    if row is None:
        raise NotFoundError(f"run {run_id!r} of workflow {workflow_id!r} not found")
    return dict(row._mapping)


def find_run(conn: Connection, owner: str, run_id: str) -> tuple[str, dict[str, Any]]:
    """The owner's run ``run_id`` in any workflow, with that workflow's id; the most recent
    one should two workflows hold the id (runners send a new UUID per run)."""
    row = conn.execute(
        run_select()
        .add_columns(workflows.c.workflow_id.label("owner_workflow_id"))
        .join(workflows, workflows.c.pk == runs.c.workflow_pk)
        .where(workflows.c.owner == owner, runs.c.run_id == run_id)
        .order_by(runs.c.pk.desc())
        .limit(1)
    ).first()
    if row is None:
        raise NotFoundError(f"run {run_id!r} not found")
    found = dict(row._mapping)
    return str(found.pop("owner_workflow_id")), found
