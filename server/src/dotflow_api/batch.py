"""The writes of :meth:`Store.batch <dotflow_api.store.Store.batch>`: event by event, and
runs of consecutive task events in bulk.

Event by event (:func:`apply_one`), each write runs in a savepoint of its own, so that
a refused event leaves the others applied. That costs about seven statements per
event. A run of consecutive task events of one workflow (a *segment*) goes through
:func:`write_segment` instead, which answers exactly as the events one by one would:

1. the workflow is looked up (locked, as single run-scoped writes do) once, the
   stored tasks of the segment's ids and the workflow's live reservations are read
   once;
2. the events are decided in memory, in order; the longest prefix of events that
   each write (no 409, no 404) is merged into one row per task and written with one
   bulk INSERT and one bulk UPDATE per set of columns, in one savepoint;
3. an event that would be refused, and the refused events right after it, go event by
   event (so the 409's ``next_id`` and the ids reserved for the refused run are
   exactly those of a single request); then the rest is decided again.

A bulk write the database refuses (``DataError``, or ``IntegrityError`` from a
concurrent insert) is rolled back and its events go event by event, so that a bad
value answers 422 for its own event only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Final

from sqlalchemy import Connection, bindparam, insert, or_, select, update
from sqlalchemy.exc import DataError, IntegrityError

from dotflow_api import writes
from dotflow_api.models import utcnow
from dotflow_api.writes import (
    FINAL_STATUSES,
    RESERVATION_LEASE,
    TASK_FIELDS,
    ConflictError,
    NotFoundError,
    runs,
    tasks,
)

logger = logging.getLogger("dotflow_api.store")

#: One write of a batch: called with the batch's connection, returns its answer.
BatchWrite = Callable[[Connection], Any]
#: Task ids per ``IN (...)`` query.
ID_CHUNK: Final = 500


@dataclass(frozen=True)
class TaskWrite:
    """A batch item: ``Store.upsert_task`` (``create``) or ``update_task``; answers True
    when the task was created. Its fields let a segment of them be written in bulk."""

    owner: str
    workflow_id: str
    task_id: int
    fields: Mapping[str, Any]
    run_id: str | None
    create: bool

    def __call__(self, conn: Connection) -> bool:
        return writes.write_task(
            conn,
            self.owner,
            self.workflow_id,
            self.task_id,
            self.fields,
            run_id=self.run_id,
            create=self.create,
        )

    def values(self) -> dict[str, Any]:
        """The task columns the event sets."""
        return {name: self.fields[name] for name in TASK_FIELDS if name in self.fields}


def apply_one(conn: Connection, item: BatchWrite | Exception) -> Any:
    """One item in a savepoint of its own: its answer, or the error that refused it.

    ``NotFoundError``, ``ConflictError`` (answered with ids reserved for the refused
    run) and ``DataError`` roll the item back alone; other errors propagate.
    """
    if isinstance(item, Exception):
        return item
    savepoint = conn.begin_nested()
    try:
        answer = item(conn)
    except (NotFoundError, ConflictError, DataError) as error:
        savepoint.rollback()
        if isinstance(error, ConflictError):
            return writes.reserve_for_conflict(conn, error)
        return error
    savepoint.commit()
    return answer


def groups(
    items: Iterable[BatchWrite | Exception],
) -> Iterator[BatchWrite | Exception | list[TaskWrite]]:
    """The items in order, with each run of consecutive task writes of one workflow
    (and owner) gathered into a list."""
    segment: list[TaskWrite] = []
    for item in items:
        if isinstance(item, TaskWrite) and (
            not segment
            or (segment[0].owner, segment[0].workflow_id) == (item.owner, item.workflow_id)
        ):
            segment.append(item)
            continue
        if segment:
            yield segment
            segment = []
        if isinstance(item, TaskWrite):
            segment.append(item)
        else:
            yield item
    if segment:
        yield segment


def write_segment(conn: Connection, segment: Sequence[TaskWrite]) -> list[Any]:
    """The answers of the segment's events, written as :func:`apply_one` would."""
    answers: list[Any] = []
    while len(answers) < len(segment):
        rest = segment[len(answers) :]
        written = _write_prefix(conn, rest)
        if written is None:  # the database refused a value: event by event
            answers.extend(apply_one(conn, item) for item in rest)
            break
        answers.extend(written)
        # The refused event, and those refused right after it, one by one.
        for item in segment[len(answers) :]:
            answer = apply_one(conn, item)
            answers.append(answer)
            if not isinstance(answer, Exception):
                break
    return answers


@dataclass
class _Plan:
    """What the events that write (a prefix of the segment) leave: rows to insert or
    update, the runs they touch in order, one answer per event."""

    wpk: int
    answers: list[bool] = field(default_factory=list)
    created: dict[int, dict[str, Any]] = field(default_factory=dict)
    changed: dict[int, dict[str, Any]] = field(default_factory=dict)
    touched: dict[str, None] = field(default_factory=dict)  # ordered set of run ids


@dataclass(frozen=True)
class _Reservation:
    run_id: str
    first: int
    last: int
    updated_at: datetime


def _write_prefix(conn: Connection, segment: Sequence[TaskWrite]) -> list[bool] | None:
    """Write the longest prefix of events that each write; their answers ([] when the
    first is refused: nothing is written), or None when the database refused the
    bulk write (rolled back)."""
    savepoint = conn.begin_nested()
    try:
        plan = _plan(conn, segment)
        if plan.answers:
            _apply(conn, plan)
    except (DataError, IntegrityError) as error:
        savepoint.rollback()
        logger.debug("bulk write of %d task events refused (%s)", len(segment), type(error))
        return None
    if plan.answers:
        savepoint.commit()
        logger.debug(
            "wrote %d task events in bulk: %d tasks new, %d updated",
            len(plan.answers),
            len(plan.created),
            len(plan.changed),
        )
    else:
        savepoint.rollback()  # e.g. the workflow registered for nothing
    return plan.answers


def _plan(conn: Connection, segment: Sequence[TaskWrite]) -> _Plan:
    """Decide the events in order, as ``writes.write_task`` would, up to the first
    that would be refused."""
    first = segment[0]
    lock = any(item.run_id is not None for item in segment)
    plan = _Plan(wpk=writes.ensure_workflow(conn, first.owner, first.workflow_id, lock=lock))
    owners = _stored_runs(conn, plan.wpk, {item.task_id for item in segment})
    run_ids = {item.run_id for item in segment if item.run_id is not None}
    cutoff = utcnow() - RESERVATION_LEASE
    reservations = _reservations(conn, plan.wpk, run_ids, cutoff) if run_ids else []
    for item in segment:
        answer = _decide(item, owners, plan.touched, reservations, cutoff)
        if answer is None:
            break
        plan.answers.append(answer)
        _merge(plan, item, owners)
        if item.run_id is not None:
            plan.touched[item.run_id] = None
    return plan


def _decide(
    item: TaskWrite,
    owners: Mapping[int, str | None],
    touched: Mapping[str, None],
    reservations: Sequence[_Reservation],
    cutoff: datetime,
) -> bool | None:
    """True (the task is created), False (updated), or None (the event is refused)."""
    exists = item.task_id in owners
    if item.run_id is None:  # as ``writes._write_task_without_run``
        return None if not exists and not item.create else not exists
    if exists:
        return False if owners[item.task_id] == item.run_id else None
    if not item.create or _reserved(item, touched, reservations, cutoff):
        return None
    return True


def _reserved(
    item: TaskWrite,
    touched: Mapping[str, None],
    reservations: Sequence[_Reservation],
    cutoff: datetime,
) -> bool:
    """As ``writes._reserved_by_another_run``: a run this segment already wrote for is
    touched (its lease renewed) by then."""
    return any(
        held.run_id != item.run_id
        and held.first <= item.task_id <= held.last
        and (held.updated_at >= cutoff or held.run_id in touched)
        for held in reservations
    )


def _merge(plan: _Plan, item: TaskWrite, owners: dict[int, str | None]) -> None:
    """Fold the event into its task's row: later events' fields override."""
    values = item.values()
    row = plan.created.get(item.task_id)
    if row is not None:
        row.update(values)
    elif item.task_id in owners:
        plan.changed.setdefault(item.task_id, {}).update(values)
    else:
        plan.created[item.task_id] = {**_TASK_DEFAULTS, **values, "run_id": item.run_id}
        owners[item.task_id] = item.run_id


def _apply(conn: Connection, plan: _Plan) -> None:
    for run_id in plan.touched:
        writes.ensure_run(conn, plan.wpk, run_id, {})
    now = utcnow()
    if plan.created:
        stamps = {"workflow_pk": plan.wpk, "registered_at": now, "updated_at": now}
        rows = [{**row, **stamps, "task_id": task_id} for task_id, row in plan.created.items()]
        conn.execute(_INSERT, rows)
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for task_id, values in plan.changed.items():
        params = {f"v_{name}": value for name, value in values.items()}
        params.update(k_wpk=plan.wpk, k_task=task_id, v_updated_at=now)
        columns = tuple(name for name in TASK_FIELDS if name in values)
        by_columns.setdefault(columns, []).append(params)
    for columns, params_list in by_columns.items():
        conn.execute(_update_statement(columns), params_list)


def _stored_runs(conn: Connection, wpk: int, task_ids: set[int]) -> dict[int, str | None]:
    """The run id of each stored task among ``task_ids``."""
    ordered = sorted(task_ids)
    owners: dict[int, str | None] = {}
    for start in range(0, len(ordered), ID_CHUNK):
        chunk = ordered[start : start + ID_CHUNK]
        result = conn.execute(_STORED, {"wpk": wpk, "ids": chunk})
        owners.update((int(task_id), run_id) for task_id, run_id in result)
    return owners


def _reservations(
    conn: Connection, wpk: int, run_ids: set[str], cutoff: datetime
) -> list[_Reservation]:
    """The unfinished runs' reservations that hold (renewed after ``cutoff``), or will
    once this segment renews their lease (runs in ``run_ids``)."""
    result = conn.execute(_RESERVATIONS, {"wpk": wpk, "cutoff": cutoff, "runs": sorted(run_ids)})
    return [
        _Reservation(run_id, int(first), int(last), updated_at)
        for run_id, first, last, updated_at in result
        if first is not None
    ]


def _column_default(name: str) -> Any:
    default = tasks.c[name].default
    return default.arg if default is not None and default.is_scalar else None


#: What an INSERT that omits a task column stores there.
_TASK_DEFAULTS: Final = {name: _column_default(name) for name in TASK_FIELDS}
_INSERT: Final = insert(tasks)
_STORED: Final = select(tasks.c.task_id, tasks.c.run_id).where(
    tasks.c.workflow_pk == bindparam("wpk"),
    tasks.c.task_id.in_(bindparam("ids", expanding=True)),
)
_RESERVATIONS: Final = select(
    runs.c.run_id, runs.c.reserved_first_id, runs.c.reserved_last_id, runs.c.updated_at
).where(
    runs.c.workflow_pk == bindparam("wpk"),
    runs.c.reserved_last_id.is_not(None),
    runs.c.status.not_in(FINAL_STATUSES),
    or_(
        runs.c.updated_at >= bindparam("cutoff", type_=runs.c.updated_at.type),
        runs.c.run_id.in_(bindparam("runs", expanding=True)),
    ),
)


@lru_cache(maxsize=64)
def _update_statement(columns: tuple[str, ...]) -> Any:
    """UPDATE of ``columns`` (and ``updated_at``) of one task, for executemany."""
    return (
        update(tasks)
        .where(tasks.c.workflow_pk == bindparam("k_wpk"), tasks.c.task_id == bindparam("k_task"))
        .values({name: bindparam(f"v_{name}") for name in (*columns, "updated_at")})
    )
