"""The writes of :meth:`Store.batch <dotflow_api.store.Store.batch>`: event by event, and
runs of consecutive task events in bulk.

Event by event (:func:`apply_one`), each write runs in a savepoint of its own, so that
a refused event leaves the others applied. That costs seven to fifteen statements per
event. A run of consecutive task events of one workflow (a *segment*) goes through
:func:`write_segment` instead, which answers and stores exactly what the events one by
one would:

1. the workflow is looked up (locked, as single run-scoped writes do) once; the
   stored tasks of the segment's ids, the highest stored id and the runs that hold
   ids (or write in the segment) are read once;
2. the events are decided in memory, in order, as :func:`writes.write_task` and
   :func:`writes.reserve_for_conflict` would: a 409 with the same ``next_id`` and
   the same ids reserved for the refused run, a 404, or a write;
3. the writes are merged into one row per task and written with one bulk INSERT and
   one bulk UPDATE per set of columns, the runs touched and the reservations made in
   the events' order, all in one savepoint.

A bulk write the database refuses (``DataError``, or ``IntegrityError`` from a
concurrent insert) is rolled back and the segment goes event by event, so that a bad
value answers 422 for its own event only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Final

from sqlalchemy import Connection, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import DataError, IntegrityError

from dotflow_api import writes
from dotflow_api.models import utcnow
from dotflow_api.writes import (
    CONFLICT_RESERVE,
    FINAL_STATUSES,
    MAX_TASK_ID,
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
    savepoint = conn.begin_nested()
    try:
        plan = _plan(conn, segment)
        if plan.writes_anything():
            _apply(conn, plan)
    except (DataError, IntegrityError) as error:
        savepoint.rollback()
        logger.debug("bulk write of %d task events refused (%s)", len(segment), type(error))
        return [apply_one(conn, item) for item in segment]
    if plan.writes_anything():
        savepoint.commit()
        logger.debug(
            "wrote %d task events in bulk: %d tasks new, %d updated, %d runs reserved ids",
            len(plan.answers),
            len(plan.created),
            len(plan.changed),
            len(plan.reserved),
        )
    else:
        savepoint.rollback()  # e.g. a workflow registered for nothing
    return plan.answers


@dataclass
class _Run:
    """What the segment knows of a run: its reservation, whether it holds."""

    final: bool = False
    first: int | None = None
    last: int | None = None
    #: None for a run the segment creates; its lease is renewed once it is touched.
    updated_at: datetime | None = None
    touched: bool = False

    def holds(self, cutoff: datetime, *, touched: bool = False) -> bool:
        """As ``writes._live_reservation``."""
        if self.last is None or self.final:
            return False
        if touched or self.touched:
            return True
        return self.updated_at is not None and self.updated_at >= cutoff


@dataclass
class _Plan:
    """The segment decided: one answer per event, and what the writes leave."""

    owner: str
    workflow_id: str
    wpk: int
    #: The workflow existed before the segment, or a task of it created it.
    workflow_known: bool
    #: The run id of every stored task of the segment's ids, and of those it creates.
    owners: dict[int, str | None]
    #: The highest task id stored (0: none).
    highest: int
    runs: dict[str, _Run]
    cutoff: datetime
    answers: list[Any] = field(default_factory=list)
    created: dict[int, dict[str, Any]] = field(default_factory=dict)
    changed: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: Runs touched (created, or their lease renewed), in order.
    touched: dict[str, None] = field(default_factory=dict)
    #: Runs given new reservations (the last one each), by conflicts.
    reserved: dict[str, tuple[int, int]] = field(default_factory=dict)

    def writes_anything(self) -> bool:
        return bool(self.touched or self.created or self.changed)

    def touch(self, run_id: str) -> _Run:
        run = self.runs.setdefault(run_id, _Run())
        run.touched = True
        self.touched[run_id] = None
        return run

    def next_free_id(self, *, exclude: str | None = None, touching: str | None = None) -> int:
        """As ``writes.next_free_id``, with run ``touching`` touched (its lease renewed)."""
        held = [
            run.last
            for run_id, run in self.runs.items()
            if run_id != exclude and run.holds(self.cutoff, touched=run_id == touching)
        ]
        return max(self.highest, *held) + 1 if held else self.highest + 1

    def reserved_by_another(self, task_id: int, run_id: str) -> bool:
        """As ``writes._reserved_by_another_run``."""
        return any(
            other != run_id
            and run.first is not None
            and run.last is not None
            and run.first <= task_id <= run.last
            and run.holds(self.cutoff)
            for other, run in self.runs.items()
        )


def _plan(conn: Connection, segment: Sequence[TaskWrite]) -> _Plan:
    """Decide the events in order, as ``writes.write_task`` would."""
    first = segment[0]
    lock = any(item.run_id is not None for item in segment)
    wpk = writes.workflow_pk(conn, first.owner, first.workflow_id, lock=lock)
    known = wpk is not None
    if wpk is None:
        wpk = writes.ensure_workflow(conn, first.owner, first.workflow_id, lock=lock)
    run_ids = {item.run_id for item in segment if item.run_id is not None}
    cutoff = utcnow() - RESERVATION_LEASE
    plan = _Plan(
        owner=first.owner,
        workflow_id=first.workflow_id,
        wpk=wpk,
        workflow_known=known,
        owners=_stored_runs(conn, wpk, {item.task_id for item in segment}) if known else {},
        highest=int(conn.execute(_HIGHEST, {"wpk": wpk}).scalar() or 0) if known else 0,
        runs=_runs(conn, wpk, run_ids, cutoff) if known and run_ids else {},
        cutoff=cutoff,
    )
    for item in segment:
        if item.run_id is None:
            plan.answers.append(_decide_without_run(plan, item))
        else:
            plan.answers.append(_decide_with_run(plan, item, item.run_id))
    return plan


def _decide_with_run(plan: _Plan, item: TaskWrite, run_id: str) -> Any:
    """True (created), False (updated) or the error, as ``writes.write_task``."""
    task_id = item.task_id
    if task_id in plan.owners:
        if plan.owners[task_id] != run_id:
            return _conflict(plan, item, run_id, writes.STORED_BY_ANOTHER_RUN)
        plan.touch(run_id)
        _merge(plan, item)
        return False
    if plan.reserved_by_another(task_id, run_id):
        return _conflict(plan, item, run_id, writes.RESERVED_BY_ANOTHER_RUN)
    if not item.create:
        return writes.task_not_found(task_id, plan.workflow_id)
    plan.touch(run_id)
    _merge(plan, item)
    return True


def _decide_without_run(plan: _Plan, item: TaskWrite) -> Any:
    """As ``writes._write_task_without_run``: any stored task of that id is updated."""
    if item.task_id in plan.owners:
        _merge(plan, item)
        return False
    if item.create:
        _merge(plan, item)
        return True
    if not plan.workflow_known:
        return writes.workflow_not_found(plan.workflow_id)
    return writes.task_not_found(item.task_id, plan.workflow_id)


def _conflict(plan: _Plan, item: TaskWrite, run_id: str, reason: str) -> ConflictError:
    """As ``writes._conflict`` then ``writes.reserve_for_conflict``: the refused run
    gets the next free ids, unless too few are left."""
    refused = (plan.owner, plan.workflow_id, run_id)
    next_id = plan.next_free_id(touching=run_id)  # the write touched its run first
    error = writes.conflict_error(refused, item.task_id, reason, next_id)
    if error.next_id is None:
        return error
    first = plan.next_free_id(exclude=run_id)
    last = first + CONFLICT_RESERVE - 1
    if last > MAX_TASK_ID:
        return error
    run = plan.touch(run_id)
    run.first, run.last = first, last
    plan.reserved[run_id] = (first, last)
    return writes.reserved_conflict(error, first)


def _merge(plan: _Plan, item: TaskWrite) -> None:
    """Fold a write into its task's row: later events' fields override."""
    values = item.values()
    row = plan.created.get(item.task_id)
    if row is not None:
        row.update(values)
    elif item.task_id in plan.owners:
        plan.changed.setdefault(item.task_id, {}).update(values)
    else:
        plan.created[item.task_id] = {**_TASK_DEFAULTS, **values, "run_id": item.run_id}
        plan.owners[item.task_id] = item.run_id
        plan.highest = max(plan.highest, item.task_id)
        plan.workflow_known = True


def _apply(conn: Connection, plan: _Plan) -> None:
    for run_id in plan.touched:
        writes.ensure_run(conn, plan.wpk, run_id, {})
    now = utcnow()
    if plan.reserved:
        reservations = [
            {"k_wpk": plan.wpk, "k_run": run_id, "v_first": first, "v_last": last, "v_at": now}
            for run_id, (first, last) in plan.reserved.items()
        ]
        conn.execute(_RESERVE, reservations)
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


def _runs(conn: Connection, wpk: int, run_ids: set[str], cutoff: datetime) -> dict[str, _Run]:
    """The runs whose reservation holds (renewed after ``cutoff``), and the runs
    ``run_ids`` (the segment's: it may renew their lease)."""
    result = conn.execute(_RUNS, {"wpk": wpk, "cutoff": cutoff, "runs": sorted(run_ids)})
    return {
        run_id: _Run(
            final=status in FINAL_STATUSES,
            first=None if first is None else int(first),
            last=None if last is None else int(last),
            updated_at=updated_at,
        )
        for run_id, status, first, last, updated_at in result
    }


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
_HIGHEST: Final = select(func.max(tasks.c.task_id)).where(tasks.c.workflow_pk == bindparam("wpk"))
_RUNS: Final = select(
    runs.c.run_id,
    runs.c.status,
    runs.c.reserved_first_id,
    runs.c.reserved_last_id,
    runs.c.updated_at,
).where(
    runs.c.workflow_pk == bindparam("wpk"),
    or_(
        runs.c.run_id.in_(bindparam("runs", expanding=True)),
        and_(
            runs.c.reserved_last_id.is_not(None),
            runs.c.status.not_in(FINAL_STATUSES),
            runs.c.updated_at >= bindparam("cutoff", type_=runs.c.updated_at.type),
        ),
    ),
)
_RESERVE: Final = (
    update(runs)
    .where(runs.c.workflow_pk == bindparam("k_wpk"), runs.c.run_id == bindparam("k_run"))
    .values(
        reserved_first_id=bindparam("v_first"),
        reserved_last_id=bindparam("v_last"),
        updated_at=bindparam("v_at"),
    )
)


@lru_cache(maxsize=64)
def _update_statement(columns: tuple[str, ...]) -> Any:
    """UPDATE of ``columns`` (and ``updated_at``) of one task, for executemany."""
    return (
        update(tasks)
        .where(tasks.c.workflow_pk == bindparam("k_wpk"), tasks.c.task_id == bindparam("k_task"))
        .values({name: bindparam(f"v_{name}") for name in (*columns, "updated_at")})
    )
