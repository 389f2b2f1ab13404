"""The dashboard's reads: one read-only transaction per call, always scoped to an owner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Engine, func, select

from dotflow_api.db import READ_ONLY
from dotflow_api.models import Run, Task, Workflow
from dotflow_api.reads import fetch_run, require_workflow_pk
from dotflow_api.store import NotFoundError

_workflows = Workflow.__table__
_tasks = Task.__table__
_runs = Run.__table__

#: The statuses the filter always offers (those seen in the data are added).
KNOWN_STATUSES: Final = ("In progress", "Completed", "Failed")
#: Tasks shown on one run's page; beyond this the page says so.
MAX_TASKS_SHOWN: Final = 2000


@dataclass(frozen=True)
class WorkflowPage:
    """One page of a list (workflows, runs) and the number of rows in all pages."""

    rows: list[dict[str, Any]]
    total: int


class DashboardQueries:
    """What the dashboard's pages show, read for one owner at a time."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine.execution_options(**{READ_ONLY: True})

    def workflows(
        self, owner: str, *, status: str | None, search: str | None, limit: int, offset: int
    ) -> WorkflowPage:
        """The owner's workflows, newest first (by start, else registration), filtered by
        status and by a case-insensitive part of the id."""
        where = [_workflows.c.owner == owner]
        if status:
            where.append(_workflows.c.status == status)
        if search:
            where.append(
                func.lower(_workflows.c.workflow_id).contains(search.lower(), autoescape=True)
            )
        with self._engine.begin() as conn:
            total = conn.execute(select(func.count()).select_from(_workflows).where(*where))
            rows = conn.execute(
                select(_workflows)
                .where(*where)
                .order_by(
                    func.coalesce(_workflows.c.started_at, _workflows.c.registered_at).desc(),
                    _workflows.c.pk.desc(),
                )
                .limit(limit)
                .offset(offset)
            ).all()
            count = int(total.scalar_one())
        return WorkflowPage(rows=[dict(row._mapping) for row in rows], total=count)

    def statuses(self, owner: str) -> list[str]:
        """The statuses the filter offers: the known ones, then any other seen."""
        with self._engine.begin() as conn:
            seen = conn.execute(
                select(_workflows.c.status).distinct().where(_workflows.c.owner == owner)
            ).scalars()
            extra = sorted(set(seen) - set(KNOWN_STATUSES))
        return [*KNOWN_STATUSES, *extra]

    def workflow(self, owner: str, workflow_id: str) -> dict[str, Any]:
        """One workflow row; ``NotFoundError`` if this owner has none by that id."""
        with self._engine.begin() as conn:
            row = conn.execute(
                select(_workflows).where(
                    _workflows.c.owner == owner, _workflows.c.workflow_id == workflow_id
                )
            ).first()
        if row is None:
            raise NotFoundError(f"workflow {workflow_id!r} not found")
        return dict(row._mapping)

    def task(self, owner: str, workflow_id: str, task_id: int) -> dict[str, Any]:
        """One task; ``NotFoundError`` if absent for this owner."""
        with self._engine.begin() as conn:
            row = conn.execute(
                select(_tasks)
                .join(_workflows, _tasks.c.workflow_pk == _workflows.c.pk)
                .where(
                    _workflows.c.owner == owner,
                    _workflows.c.workflow_id == workflow_id,
                    _tasks.c.task_id == task_id,
                )
            ).first()
        if row is None:
            raise NotFoundError(f"task {task_id} of workflow {workflow_id!r} not found")
        return dict(row._mapping)

    def runs(self, owner: str, workflow_id: str, *, limit: int, offset: int) -> WorkflowPage:
        """The workflow's runs, newest first; ``NotFoundError`` for an unknown workflow."""
        with self._engine.begin() as conn:
            wpk = require_workflow_pk(conn, owner, workflow_id)
            total = conn.execute(
                select(func.count()).select_from(_runs).where(_runs.c.workflow_pk == wpk)
            ).scalar_one()
            rows = conn.execute(
                select(_runs)
                .where(_runs.c.workflow_pk == wpk)
                .order_by(_runs.c.pk.desc())
                .limit(limit)
                .offset(offset)
            ).all()
        return WorkflowPage(rows=[dict(row._mapping) for row in rows], total=int(total))

    def run(self, owner: str, workflow_id: str, run_id: str) -> dict[str, Any]:
        """One run; ``NotFoundError`` if the workflow or the run is unknown to this owner."""
        with self._engine.begin() as conn:
            return fetch_run(conn, owner, workflow_id, run_id)

    def run_tasks(self, owner: str, workflow_id: str, run_id: str | None) -> list[dict[str, Any]]:
        """The tasks of one run by id (``run_id`` None: those sent without a run), at most
        ``MAX_TASKS_SHOWN``."""
        of_run = _tasks.c.run_id.is_(None) if run_id is None else _tasks.c.run_id == run_id
        with self._engine.begin() as conn:
            rows = conn.execute(
                select(_tasks)
                .join(_workflows, _tasks.c.workflow_pk == _workflows.c.pk)
                .where(_workflows.c.owner == owner, _workflows.c.workflow_id == workflow_id, of_run)
                .order_by(_tasks.c.task_id)
                .limit(MAX_TASKS_SHOWN)
            ).all()
        return [dict(row._mapping) for row in rows]
