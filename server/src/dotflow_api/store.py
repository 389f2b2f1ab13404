"""Reading and writing workflows, runs and tasks: one database transaction per call.

Every method takes the caller's owner key and filters on it. The writes themselves
(upserts, run checks, reservations) live in :mod:`dotflow_api.writes`, the queries in
:mod:`dotflow_api.reads`; :meth:`Store.batch` applies several writes in one
transaction, with the same answers as the writes one by one (each in a savepoint of
its own, consecutive task writes in bulk: :mod:`dotflow_api.batch`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from dotflow_api import reads, writes
from dotflow_api.batch import BatchWrite, TaskWrite, apply_one, groups, write_segment
from dotflow_api.db import READ_ONLY
from dotflow_api.writes import (
    WORKFLOW_FIELDS,
    ConflictError,
    NotFoundError,
    runs,
    tasks,
    workflows,
)

__all__ = [
    "WORKFLOW_FIELDS",
    "BatchWrite",
    "ConflictError",
    "NotFoundError",
    "Page",
    "Store",
]

logger = logging.getLogger("dotflow_api.store")


@dataclass(frozen=True)
class Page:
    """A slice of a listing plus the total number of rows."""

    rows: list[dict[str, Any]]
    total: int


class Store:
    """Workflow, run and task persistence for all owners, on one SQLAlchemy engine."""

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
        self,
        owner: str,
        workflow_id: str,
        fields: Mapping[str, Any],
        run_id: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Create or update a workflow; the stored workflow and True if it was created.

        Only the given fields change on an existing workflow; a new one gets column
        defaults for the rest. With ``run_id`` the fields go to that run, and to the
        workflow while that run is its latest.
        """
        with self._write() as conn:
            created = writes.upsert_workflow(conn, owner, workflow_id, fields, run_id)
            row = reads.fetch_workflow(conn, owner, workflow_id)
        return row, created

    def get_workflow(self, owner: str, workflow_id: str) -> dict[str, Any]:
        """The workflow as a dict (with ``stored_task_count``); ``NotFoundError`` if absent."""
        with self._read() as conn:
            return reads.fetch_workflow(conn, owner, workflow_id)

    def list_workflows(self, owner: str, *, limit: int, offset: int) -> Page:
        """The owner's workflows, most recently registered first."""
        with self._read() as conn:
            total = conn.execute(
                select(func.count()).select_from(workflows).where(workflows.c.owner == owner)
            ).scalar_one()
            rows = conn.execute(
                reads.workflow_select()
                .where(workflows.c.owner == owner)
                .order_by(workflows.c.pk.desc())
                .limit(limit)
                .offset(offset)
            ).all()
        return Page(rows=[dict(row._mapping) for row in rows], total=int(total))

    # -- runs --------------------------------------------------------------------

    def list_runs(self, owner: str, workflow_id: str, *, limit: int, offset: int) -> Page:
        """The workflow's runs, newest first; ``NotFoundError`` for an unknown workflow."""
        with self._read() as conn:
            wpk = reads.require_workflow_pk(conn, owner, workflow_id)
            total = conn.execute(
                select(func.count()).select_from(runs).where(runs.c.workflow_pk == wpk)
            ).scalar_one()
            rows = conn.execute(
                reads.run_select()
                .where(runs.c.workflow_pk == wpk)
                .order_by(runs.c.pk.desc())
                .limit(limit)
                .offset(offset)
            ).all()
        return Page(rows=[dict(row._mapping) for row in rows], total=int(total))

    def get_run(self, owner: str, workflow_id: str, run_id: str) -> dict[str, Any]:
        """One run; ``NotFoundError`` if the workflow or the run is unknown."""
        with self._read() as conn:
            return reads.fetch_run(conn, owner, workflow_id, run_id)

    def find_run(self, owner: str, run_id: str) -> tuple[str, dict[str, Any]]:
        """The owner's run ``run_id`` in whichever workflow holds it, and that workflow's id;
        ``NotFoundError`` if none does."""
        with self._read() as conn:
            return reads.find_run(conn, owner, run_id)

    def reserve(self, owner: str, workflow_id: str, run_id: str, count: int) -> int:
        """Reserve ``count`` consecutive free task ids for a run (atomic); the first one."""
        with self._write() as conn:
            return writes.reserve(conn, owner, workflow_id, run_id, count)

    # -- tasks -------------------------------------------------------------------

    def upsert_task(
        self,
        owner: str,
        workflow_id: str,
        task_id: int,
        fields: Mapping[str, Any],
        run_id: str | None = None,
    ) -> bool:
        """Create or update a task, registering its workflow if needed; True if created.

        :raises ConflictError: ``run_id`` is given and the task is another run's.
        """
        try:
            with self._write() as conn:
                created = writes.write_task(
                    conn, owner, workflow_id, task_id, fields, run_id=run_id
                )
        except ConflictError as error:
            raise self._reserve_for(error) from None
        logger.debug("task %d of %r %s", task_id, workflow_id, "created" if created else "updated")
        return created

    def update_task(
        self,
        owner: str,
        workflow_id: str,
        task_id: int,
        fields: Mapping[str, Any],
        run_id: str | None = None,
    ) -> None:
        """Update an existing task; ``NotFoundError`` if the workflow or task is unknown.

        :raises ConflictError: ``run_id`` is given and the task is another run's.
        """
        try:
            with self._write() as conn:
                writes.write_task(
                    conn, owner, workflow_id, task_id, fields, run_id=run_id, create=False
                )
        except ConflictError as error:
            raise self._reserve_for(error) from None

    def _reserve_for(self, error: ConflictError) -> ConflictError:
        """``error`` with free ids reserved for the refused run (see ``reserve_for_conflict``)."""
        with self._write() as conn:
            return writes.reserve_for_conflict(conn, error)

    def last_task_id(self, owner: str, workflow_id: str) -> int | None:
        """The highest task id stored for the workflow, or None (also for unknown ones)."""
        with self._read() as conn:
            value = conn.execute(
                select(func.max(tasks.c.task_id))
                .select_from(tasks.join(workflows, tasks.c.workflow_pk == workflows.c.pk))
                .where(workflows.c.owner == owner, workflows.c.workflow_id == workflow_id)
            ).scalar()
        return None if value is None else int(value)

    def next_task_id(self, owner: str, workflow_id: str) -> tuple[int, int | None]:
        """``(next free id, highest stored id or None)``: ids live reservations hold are
        not free."""
        with self._read() as conn:
            wpk = writes.workflow_pk(conn, owner, workflow_id)
            if wpk is None:
                return 1, None
            last = conn.execute(
                select(func.max(tasks.c.task_id)).where(tasks.c.workflow_pk == wpk)
            ).scalar()
            return writes.next_free_id(conn, wpk), None if last is None else int(last)

    def list_tasks(
        self,
        owner: str,
        workflow_id: str,
        *,
        limit: int,
        offset: int,
        run_id: str | None = None,
        status: str | None = None,
    ) -> Page:
        """The workflow's tasks ordered by id, optionally only those of one run and/or
        status; ``NotFoundError`` for an unknown workflow."""
        with self._read() as conn:
            wpk = reads.require_workflow_pk(conn, owner, workflow_id)
            conditions = [tasks.c.workflow_pk == wpk]
            if run_id is not None:
                conditions.append(tasks.c.run_id == run_id)
            if status is not None:
                conditions.append(tasks.c.status == status)
            total = conn.execute(
                select(func.count()).select_from(tasks).where(*conditions)
            ).scalar_one()
            rows = conn.execute(
                select(tasks)
                .where(*conditions)
                .order_by(tasks.c.task_id)
                .limit(limit)
                .offset(offset)
            ).all()
        return Page(rows=[dict(row._mapping) for row in rows], total=int(total))

    # -- batches -----------------------------------------------------------------

    def batch(self, items: Sequence[BatchWrite | Exception]) -> list[Any]:
        """Apply the writes in order, in one transaction; one answer (or error) per item.

        An item that is already an exception (a body that failed validation) is
        answered as it is. A write that raises ``NotFoundError``, ``ConflictError`` or
        ``DataError`` is rolled back alone (its savepoint) and answered with that
        error; any other database error rolls the whole batch back and propagates.
        Consecutive task writes are written in bulk (:mod:`dotflow_api.batch`), with
        the same answers and the same stored result.
        """
        answers: list[Any] = []
        with self._write() as conn:
            for group in groups(items):
                if isinstance(group, list):
                    answers.extend(write_segment(conn, group))
                else:
                    answers.append(apply_one(conn, group))
        return answers


def workflow_write(
    owner: str, workflow_id: str, fields: Mapping[str, Any], run_id: str | None
) -> BatchWrite:
    """A batch item: ``Store.upsert_workflow``; answers ``(workflow row, created)``."""

    def write(conn: Connection) -> tuple[dict[str, Any], bool]:
        created = writes.upsert_workflow(conn, owner, workflow_id, fields, run_id)
        return reads.fetch_workflow(conn, owner, workflow_id), created

    return write


def task_write(
    owner: str,
    workflow_id: str,
    task_id: int,
    fields: Mapping[str, Any],
    run_id: str | None,
    *,
    create: bool,
) -> BatchWrite:
    """A batch item: ``Store.upsert_task`` (``create``) or ``update_task``; answers
    True when the task was created."""
    return TaskWrite(owner, workflow_id, task_id, fields, run_id, create)
