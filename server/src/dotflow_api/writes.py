"""The writes of the store, each on a connection inside the caller's transaction.

Writes are upserts built from portable statements: UPDATE first; if no row matched,
INSERT inside a savepoint; if that INSERT loses a race with a concurrent request
(unique constraint violated), roll back the savepoint and UPDATE the row the other
request created. Retried requests and concurrent runners therefore never create
duplicates, on any backend.

A write that names its run (``run_id``) never changes what another run wrote: a task
stored by another run, or inside the ids another live run reserved, is refused with
:class:`ConflictError` carrying the next free id. Such writes first lock their
workflow's row (``SELECT ... FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE`` already
serialises writers), so that checking an id and taking it is atomic, and so is a
reservation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Final

from sqlalchemy import Connection, and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from dotflow_api.models import Run, Task, Workflow, utcnow

logger = logging.getLogger("dotflow_api.store")

workflows = Workflow.__table__
tasks = Task.__table__
runs = Run.__table__

#: Workflow (and run) columns a runner may write (besides the ids).
WORKFLOW_FIELDS: Final = (
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
#: What the workflow row takes over from its latest run.
SYNCED_FIELDS: Final = tuple(name for name in WORKFLOW_FIELDS if name != "created_at")
#: Task columns a runner may write (besides the id).
TASK_FIELDS: Final = (
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
#: Status given to a workflow or run registered implicitly (by a task, a reservation).
IMPLICIT_STATUS: Final = "In progress"
#: Statuses a run ends in: its reservation no longer holds ids.
FINAL_STATUSES: Final = ("Completed", "Failed")
#: How long an unfinished run's reservation holds after the run last reported anything
#: (a runner that died never reports its end).
RESERVATION_LEASE: Final = timedelta(hours=24)
#: The largest task id (2**53), as in the wire contract.
MAX_TASK_ID: Final = 2**53


class NotFoundError(LookupError):
    """The workflow, run or task does not exist for this owner."""


#: Task ids reserved for a run whose write was refused (409): the run's tasks move to
#: ids of its own, so that runs racing for the same free ids do not collide again.
CONFLICT_RESERVE: Final = 100


class ConflictError(Exception):
    """The write would change a task of another run; ``next_id`` is the next free id.

    ``refused`` names what was refused, as ``(owner, workflow id, run id)``, when a
    run's write was: see :func:`reserve_for_conflict`.
    """

    def __init__(
        self, message: str, next_id: int | None, refused: tuple[str, str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.next_id = next_id
        self.refused = refused


def reserve_for_conflict(conn: Connection, error: ConflictError) -> ConflictError:
    """The answer to a run's refused write: the next free ids, reserved for that run.

    Called in a transaction of its own (the refused write's was rolled back). The
    run's earlier reservation, if any, is replaced: its stored tasks keep their ids.
    A workflow with fewer than :data:`CONFLICT_RESERVE` ids left answers as before.
    """
    if error.refused is None or error.next_id is None:
        return error
    owner, workflow_id, run_id = error.refused
    try:
        first = reserve(conn, owner, workflow_id, run_id, CONFLICT_RESERVE, replace=True)
    except ConflictError:
        return error
    return reserved_conflict(error, first)


def reserved_conflict(error: ConflictError, first: int) -> ConflictError:
    """``error`` once :data:`CONFLICT_RESERVE` ids from ``first`` are reserved for the run."""
    message = str(error).rsplit(";", 1)[0]
    return ConflictError(
        f"{message}; this run's tasks must take free ids: {first}-{first + CONFLICT_RESERVE - 1} "
        "are reserved for it",
        first,
    )


def conflict_error(
    refused: tuple[str, str, str], task_id: int, reason: str, next_id: int
) -> ConflictError:
    """The refusal of ``refused``'s write of ``task_id`` (``reason``: one of
    :data:`STORED_BY_ANOTHER_RUN`, :data:`RESERVED_BY_ANOTHER_RUN`)."""
    return ConflictError(
        f"task {task_id} of workflow {refused[1]!r} {reason}; this run's tasks must take "
        f"free ids, from {next_id}",
        next_id if next_id <= MAX_TASK_ID else None,
        refused,
    )


#: Why a run's task write is refused.
STORED_BY_ANOTHER_RUN: Final = "was stored by another run"
RESERVED_BY_ANOTHER_RUN: Final = "is reserved by another run"


def task_not_found(task_id: int, workflow_id: str) -> NotFoundError:
    return NotFoundError(f"task {task_id} of workflow {workflow_id!r} not found")


def workflow_not_found(workflow_id: str) -> NotFoundError:
    return NotFoundError(f"workflow {workflow_id!r} not found")


def workflow_pk(
    conn: Connection, owner: str, workflow_id: str, *, lock: bool = False
) -> int | None:
    query = select(workflows.c.pk).where(
        workflows.c.owner == owner, workflows.c.workflow_id == workflow_id
    )
    return conn.execute(query.with_for_update() if lock else query).scalar()


def ensure_workflow(conn: Connection, owner: str, workflow_id: str, *, lock: bool = False) -> int:
    """The workflow's primary key, registering the workflow first if it is unknown."""
    pk = workflow_pk(conn, owner, workflow_id, lock=lock)
    if pk is not None:
        return pk
    now = utcnow()
    try:
        with conn.begin_nested():
            conn.execute(
                insert(workflows).values(
                    owner=owner,
                    workflow_id=workflow_id,
                    status=IMPLICIT_STATUS,
                    registered_at=now,
                    updated_at=now,
                )
            )
        logger.info("registered workflow %r implicitly", workflow_id)
    except IntegrityError:
        logger.debug("workflow %r registered concurrently", workflow_id)
    pk = workflow_pk(conn, owner, workflow_id, lock=lock)
    if pk is None:  # pragma: no cover - only if the row vanished between statements
        raise NotFoundError(f"workflow {workflow_id!r} not found")
    return pk


def ensure_run(conn: Connection, wpk: int, run_id: str, values: Mapping[str, Any]) -> bool:
    """Create or update run ``run_id`` of workflow ``wpk`` with ``values``; True if created.

    The workflow row then takes over the run's state when it is the latest run.
    """
    created = upsert(
        conn,
        update_stmt=update(runs).where(runs.c.workflow_pk == wpk, runs.c.run_id == run_id),
        insert_values={"workflow_pk": wpk, "run_id": run_id, "status": IMPLICIT_STATUS, **values},
        update_values=dict(values),
    )
    if not created and not values:
        return False  # nothing the workflow row shows has changed
    latest = conn.execute(
        select(runs).where(runs.c.workflow_pk == wpk).order_by(runs.c.pk.desc()).limit(1)
    ).first()
    if latest is not None and latest.run_id == run_id:
        synced = {name: getattr(latest, name) for name in SYNCED_FIELDS}
        if synced["name"] is None:
            del synced["name"]
        conn.execute(
            update(workflows).where(workflows.c.pk == wpk).values(**synced, updated_at=utcnow())
        )
    return created


def upsert_workflow(
    conn: Connection,
    owner: str,
    workflow_id: str,
    fields: Mapping[str, Any],
    run_id: str | None = None,
) -> bool:
    """Create or update a workflow (and its run ``run_id``); True if the workflow was new."""
    values = {name: fields[name] for name in WORKFLOW_FIELDS if name in fields}
    created = upsert(
        conn,
        update_stmt=update(workflows).where(
            workflows.c.owner == owner, workflows.c.workflow_id == workflow_id
        ),
        insert_values={
            "owner": owner,
            "workflow_id": workflow_id,
            "status": IMPLICIT_STATUS,
            **values,
        },
        update_values={} if run_id is not None else values,
    )
    if run_id is not None:
        wpk = ensure_workflow(conn, owner, workflow_id, lock=True)
        ensure_run(conn, wpk, run_id, values)
    if created:
        logger.info("registered workflow %r", workflow_id)
    return created


def next_free_id(conn: Connection, wpk: int, *, exclude_run: str | None = None) -> int:
    """1 + the highest id stored or held by a live reservation (of runs but ``exclude_run``)."""
    stored = conn.execute(select(func.max(tasks.c.task_id)).where(tasks.c.workflow_pk == wpk))
    highest = stored.scalar() or 0
    reserved = conn.execute(
        select(func.max(runs.c.reserved_last_id)).where(
            runs.c.workflow_pk == wpk, _live_reservation(exclude_run)
        )
    ).scalar()
    return int(max(highest, reserved or 0)) + 1


def _live_reservation(exclude_run: str | None) -> Any:
    condition = and_(
        runs.c.reserved_last_id.is_not(None),
        runs.c.status.not_in(FINAL_STATUSES),
        runs.c.updated_at >= utcnow() - RESERVATION_LEASE,
    )
    if exclude_run is not None:
        condition = and_(condition, runs.c.run_id != exclude_run)
    return condition


def reserve(
    conn: Connection,
    owner: str,
    workflow_id: str,
    run_id: str,
    count: int,
    *,
    replace: bool = False,
) -> int:
    """Reserve ``count`` consecutive free ids for the run; returns the first one.

    With ``replace``, the run's own earlier reservation does not count as taken.
    """
    wpk = ensure_workflow(conn, owner, workflow_id, lock=True)
    first = next_free_id(conn, wpk, exclude_run=run_id if replace else None)
    last = first + count - 1
    if last > MAX_TASK_ID:
        raise ConflictError(
            f"workflow {workflow_id!r} has fewer than {count} task ids left "
            f"(the largest is {MAX_TASK_ID} = 2**53); report further tasks under a new "
            "workflow id",
            None,
        )
    ensure_run(conn, wpk, run_id, {})
    conn.execute(
        update(runs)
        .where(runs.c.workflow_pk == wpk, runs.c.run_id == run_id)
        .values(reserved_first_id=first, reserved_last_id=last, updated_at=utcnow())
    )
    logger.debug("reserved tasks %d-%d of %r for run %s", first, last, workflow_id, run_id)
    return first


def write_task(
    conn: Connection,
    owner: str,
    workflow_id: str,
    task_id: int,
    fields: Mapping[str, Any],
    *,
    run_id: str | None = None,
    create: bool = True,
) -> bool:
    """Create (``create``) or update a task; True if it was created.

    Without ``run_id`` any stored task of that id is updated, as clients that send no
    run expect. With it, only a task of that run is, see :class:`ConflictError`.
    :raises NotFoundError: ``create`` is False and there is no such task.
    """
    values = {name: fields[name] for name in TASK_FIELDS if name in fields}
    if run_id is None:
        return _write_task_without_run(conn, owner, workflow_id, task_id, values, create)
    wpk = ensure_workflow(conn, owner, workflow_id, lock=True)
    ensure_run(conn, wpk, run_id, {})
    row = conn.execute(
        select(tasks.c.run_id).where(tasks.c.workflow_pk == wpk, tasks.c.task_id == task_id)
    ).first()
    if row is not None and row.run_id != run_id:
        raise _conflict(conn, wpk, (owner, workflow_id, run_id), task_id, STORED_BY_ANOTHER_RUN)
    if row is not None:
        _update_task(conn, wpk, task_id, values)
        return False
    if _reserved_by_another_run(conn, wpk, task_id, run_id):
        raise _conflict(conn, wpk, (owner, workflow_id, run_id), task_id, RESERVED_BY_ANOTHER_RUN)
    if not create:
        raise task_not_found(task_id, workflow_id)
    now = utcnow()
    conn.execute(
        insert(tasks).values(
            workflow_pk=wpk,
            task_id=task_id,
            run_id=run_id,
            **values,
            registered_at=now,
            updated_at=now,
        )
    )
    return True


def _write_task_without_run(
    conn: Connection,
    owner: str,
    workflow_id: str,
    task_id: int,
    values: dict[str, Any],
    create: bool,
) -> bool:
    if not create:
        wpk = workflow_pk(conn, owner, workflow_id)
        if wpk is None:
            raise workflow_not_found(workflow_id)
        if not _update_task(conn, wpk, task_id, values):
            raise task_not_found(task_id, workflow_id)
        return False
    wpk = ensure_workflow(conn, owner, workflow_id)
    return upsert(
        conn,
        update_stmt=update(tasks).where(tasks.c.workflow_pk == wpk, tasks.c.task_id == task_id),
        insert_values={"workflow_pk": wpk, "task_id": task_id, **values},
        update_values=values,
    )


def _update_task(conn: Connection, wpk: int, task_id: int, values: Mapping[str, Any]) -> bool:
    result = conn.execute(
        update(tasks)
        .where(tasks.c.workflow_pk == wpk, tasks.c.task_id == task_id)
        .values(**values, updated_at=utcnow())
    )
    return bool(result.rowcount)


def _reserved_by_another_run(conn: Connection, wpk: int, task_id: int, run_id: str) -> bool:
    holder = conn.execute(
        select(runs.c.pk)
        .where(
            runs.c.workflow_pk == wpk,
            _live_reservation(run_id),
            runs.c.reserved_first_id <= task_id,
            runs.c.reserved_last_id >= task_id,
        )
        .limit(1)
    ).first()
    return holder is not None


def _conflict(
    conn: Connection, wpk: int, refused: tuple[str, str, str], task_id: int, reason: str
) -> ConflictError:
    return conflict_error(refused, task_id, reason, next_free_id(conn, wpk))


def upsert(
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
