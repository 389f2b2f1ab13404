"""Reading and writing workflows and tasks: one database transaction per call.

Every method takes the caller's owner key and filters on it. Writes are upserts built
from portable statements: UPDATE first; if no row matched, INSERT inside a savepoint;
if that INSERT loses a race with a concurrent request (unique constraint violated),
roll back the savepoint and UPDATE the row the other request created. Retried
requests and concurrent runners therefore never create duplicates, on any backend.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from dotflow_api.db import READ_ONLY
from dotflow_api.models import Task, Workflow, utcnow

logger = logging.getLogger("dotflow_api.store")

_workflows = Workflow.__table__
_tasks = Task.__table__

#: Workflow columns a runner may write (besides the id).
WORKFLOW_FIELDS = (
    "status",
    "name",
    "mode",
    "created_at",
    "started_at",
    "finished_at",
    "duration",
    "task_count",
    "completed_count",
    "failed_count",
)
#: Task columns a runner may write (besides the id).
TASK_FIELDS = (
    "name",
    "status",
    "group_name",
    "retry_count",
    "duration",
    "errors",
    "started_at",
    "finished_at",
    "current_context",
    "previous_context",
)
#: Status given to a workflow registered implicitly by one of its tasks.
IMPLICIT_WORKFLOW_STATUS = "In progress"


class NotFoundError(LookupError):
    """The workflow or task does not exist for this owner."""


@dataclass(frozen=True)
class Page:
    """A slice of a listing plus the total number of rows."""

    rows: list[dict[str, Any]]
    total: int


class Store:
    """Workflow and task persistence for all owners, on one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._read_engine = engine.execution_options(**{READ_ONLY: True})

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._read_engine.begin() as conn:
            yield conn

    # -- workflows ---------------------------------------------------------------

    def upsert_workflow(
        self, owner: str, workflow_id: str, fields: Mapping[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Create or update a workflow; the stored workflow and True if it was created.

        Only the given fields change on an existing workflow; a new one gets column
        defaults for the rest.
        """
        values = {name: fields[name] for name in WORKFLOW_FIELDS if name in fields}
        with self._write() as conn:
            created = _upsert(
                conn,
                update_stmt=update(_workflows).where(
                    _workflows.c.owner == owner, _workflows.c.workflow_id == workflow_id
                ),
                insert_values={
                    "owner": owner,
                    "workflow_id": workflow_id,
                    "status": IMPLICIT_WORKFLOW_STATUS,
                    **values,
                },
                update_values=values,
            )
            row = _fetch_workflow(conn, owner, workflow_id)
        if created:
            logger.info("registered workflow %r", workflow_id)
        return row, created

    def get_workflow(self, owner: str, workflow_id: str) -> dict[str, Any]:
        """The workflow as a dict (with ``stored_task_count``); ``NotFoundError`` if absent."""
        with self._read() as conn:
            return _fetch_workflow(conn, owner, workflow_id)

    def list_workflows(self, owner: str, *, limit: int, offset: int) -> Page:
        """The owner's workflows, most recently registered first."""
        with self._read() as conn:
            total = conn.execute(
                select(func.count()).select_from(_workflows).where(_workflows.c.owner == owner)
            ).scalar_one()
            rows = conn.execute(
                _workflow_select()
                .where(_workflows.c.owner == owner)
                .order_by(_workflows.c.pk.desc())
                .limit(limit)
                .offset(offset)
            ).all()
        return Page(rows=[dict(row._mapping) for row in rows], total=int(total))

    # -- tasks -------------------------------------------------------------------

    def upsert_task(
        self, owner: str, workflow_id: str, task_id: int, fields: Mapping[str, Any]
    ) -> bool:
        """Create or update a task, registering its workflow if needed; True if created."""
        values = {name: fields[name] for name in TASK_FIELDS if name in fields}
        with self._write() as conn:
            workflow_pk = _ensure_workflow(conn, owner, workflow_id)
            created = _upsert(
                conn,
                update_stmt=update(_tasks).where(
                    _tasks.c.workflow_pk == workflow_pk, _tasks.c.task_id == task_id
                ),
                insert_values={"workflow_pk": workflow_pk, "task_id": task_id, **values},
                update_values=values,
            )
        logger.debug("task %d of %r %s", task_id, workflow_id, "created" if created else "updated")
        return created

    def update_task(
        self, owner: str, workflow_id: str, task_id: int, fields: Mapping[str, Any]
    ) -> None:
        """Update an existing task; ``NotFoundError`` if the workflow or task is unknown."""
        values = {name: fields[name] for name in TASK_FIELDS if name in fields}
        with self._write() as conn:
            workflow_pk = _workflow_pk(conn, owner, workflow_id)
            if workflow_pk is None:
                raise NotFoundError(f"workflow {workflow_id!r} not found")
            result = conn.execute(
                update(_tasks)
                .where(_tasks.c.workflow_pk == workflow_pk, _tasks.c.task_id == task_id)
                .values(**values, updated_at=utcnow())
            )
            if result.rowcount == 0:
                raise NotFoundError(f"task {task_id} of workflow {workflow_id!r} not found")

    def last_task_id(self, owner: str, workflow_id: str) -> int | None:
        """The highest task id stored for the workflow, or None (also for unknown ones)."""
        with self._read() as conn:
            value = conn.execute(
                select(func.max(_tasks.c.task_id))
                .select_from(_tasks.join(_workflows, _tasks.c.workflow_pk == _workflows.c.pk))
                .where(_workflows.c.owner == owner, _workflows.c.workflow_id == workflow_id)
            ).scalar()
        return None if value is None else int(value)

    def list_tasks(self, owner: str, workflow_id: str, *, limit: int, offset: int) -> Page:
        """The workflow's tasks ordered by id; ``NotFoundError`` for an unknown workflow."""
        with self._read() as conn:
            workflow_pk = _workflow_pk(conn, owner, workflow_id)
            if workflow_pk is None:
                raise NotFoundError(f"workflow {workflow_id!r} not found")
            total = conn.execute(
                select(func.count()).select_from(_tasks).where(_tasks.c.workflow_pk == workflow_pk)
            ).scalar_one()
            rows = conn.execute(
                select(_tasks)
                .where(_tasks.c.workflow_pk == workflow_pk)
                .order_by(_tasks.c.task_id)
                .limit(limit)
                .offset(offset)
            ).all()
        return Page(rows=[dict(row._mapping) for row in rows], total=int(total))


def _workflow_select() -> Any:
    """SELECT of every workflow column plus the number of tasks stored for it."""
    stored = (
        select(func.count())
        .select_from(_tasks)
        .where(_tasks.c.workflow_pk == _workflows.c.pk)
        .scalar_subquery()
        .label("stored_task_count")
    )
    return select(_workflows, stored)


def _fetch_workflow(conn: Connection, owner: str, workflow_id: str) -> dict[str, Any]:
    row = conn.execute(
        _workflow_select().where(
            _workflows.c.owner == owner, _workflows.c.workflow_id == workflow_id
        )
    ).first()
    if row is None:
        raise NotFoundError(f"workflow {workflow_id!r} not found")
    return dict(row._mapping)


def _workflow_pk(conn: Connection, owner: str, workflow_id: str) -> int | None:
    return conn.execute(
        select(_workflows.c.pk).where(
            _workflows.c.owner == owner, _workflows.c.workflow_id == workflow_id
        )
    ).scalar()


def _ensure_workflow(conn: Connection, owner: str, workflow_id: str) -> int:
    """The workflow's primary key, registering the workflow first if it is unknown."""
    pk = _workflow_pk(conn, owner, workflow_id)
    if pk is not None:
        return pk
    now = utcnow()
    try:
        with conn.begin_nested():
            conn.execute(
                insert(_workflows).values(
                    owner=owner,
                    workflow_id=workflow_id,
                    status=IMPLICIT_WORKFLOW_STATUS,
                    registered_at=now,
                    updated_at=now,
                )
            )
        logger.info("registered workflow %r from one of its tasks", workflow_id)
    except IntegrityError:
        logger.debug("workflow %r registered concurrently", workflow_id)
    pk = _workflow_pk(conn, owner, workflow_id)
    if pk is None:  # pragma: no cover - only if the row vanished between statements
        raise NotFoundError(f"workflow {workflow_id!r} not found")
    return pk


def _upsert(
    conn: Connection,
    *,
    update_stmt: Any,
    insert_values: dict[str, Any],
    update_values: dict[str, Any],
) -> bool:
    """UPDATE, else INSERT in a savepoint, else (lost race) UPDATE; True if inserted."""
    now = utcnow()
    if conn.execute(update_stmt.values(**update_values, updated_at=now)).rowcount:
        return False
    try:
        with conn.begin_nested():
            conn.execute(
                insert(update_stmt.table).values(**insert_values, registered_at=now, updated_at=now)
            )
        return True
    except IntegrityError:
        # Most likely a concurrent request inserted the same row first: update it. If
        # there is still no row, the violation was something else: let it propagate.
        if conn.execute(update_stmt.values(**update_values, updated_at=now)).rowcount:
            logger.debug("concurrent insert on %s; updated instead", update_stmt.table.name)
            return False
        raise
