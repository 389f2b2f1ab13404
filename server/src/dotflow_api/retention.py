"""Retention: deleting the runs (and their tasks) nothing has changed for a while.

``dotflow-api prune --older-than 30d`` calls :func:`prune`. A run is old when the server
last changed it (``updated_at``, the server's clock, not the runner's) before the
cutoff; its tasks go with it. Tasks sent without a run id go by their own
``updated_at``, and a workflow goes once nothing of it is left and it is old too.
Rows are deleted in batches, one transaction each, so a large prune never holds a long
lock and an interrupted one keeps what it did.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import Engine, delete, exists, select, tuple_

from dotflow_api.models import Run, Task, Workflow

logger = logging.getLogger("dotflow_api.retention")

_runs = Run.__table__
_tasks = Task.__table__
_workflows = Workflow.__table__

#: Rows deleted per transaction by default.
DEFAULT_BATCH_SIZE: Final = 1000
#: The longest age accepted (about a hundred years), in days.
MAX_AGE_DAYS: Final = 36_500
_AGE: Final = re.compile(r"([0-9]{1,9})([dhm])")
_UNITS: Final = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}
AGE_HINT: Final = (
    "expected a whole number above 0 followed by d (days), h (hours) or m (minutes), "
    "e.g. 30d, 12h or 90m"
)


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m`` as a timedelta; ``ValueError`` naming ``text`` otherwise."""
    match = _AGE.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not an age: {AGE_HINT}")
    age = int(match.group(1)) * _UNITS[match.group(2)]
    if age > timedelta(days=MAX_AGE_DAYS):
        raise ValueError(f"{text!r} is longer than {MAX_AGE_DAYS}d, the longest age accepted")
    return age


@dataclass(frozen=True)
class Pruned:
    """What a prune deleted."""

    runs: int
    tasks: int
    workflows: int


def prune(engine: Engine, cutoff: datetime, *, batch_size: int = DEFAULT_BATCH_SIZE) -> Pruned:
    """Delete the runs last changed before ``cutoff`` with their tasks, then the old tasks
    sent without a run, then the old workflows left empty; ``batch_size`` rows a
    transaction."""
    runs = tasks = 0
    while True:
        deleted_runs, deleted_tasks = _prune_runs(engine, cutoff, batch_size)
        runs, tasks = runs + deleted_runs, tasks + deleted_tasks
        if deleted_runs < batch_size:
            break
    tasks += _in_batches(
        engine, _tasks, _tasks.c.run_id.is_(None) & (_tasks.c.updated_at < cutoff), batch_size
    )
    empty = (
        (_workflows.c.updated_at < cutoff)
        & ~exists().where(_runs.c.workflow_pk == _workflows.c.pk)
        & ~exists().where(_tasks.c.workflow_pk == _workflows.c.pk)
    )
    workflows = _in_batches(engine, _workflows, empty, batch_size)
    logger.info("pruned %d run(s), %d task(s), %d workflow(s)", runs, tasks, workflows)
    return Pruned(runs=runs, tasks=tasks, workflows=workflows)


def _prune_runs(engine: Engine, cutoff: datetime, batch_size: int) -> tuple[int, int]:
    """One batch of old runs and their tasks, in one transaction: how many of each."""
    with engine.begin() as conn:
        rows = conn.execute(
            select(_runs.c.pk, _runs.c.workflow_pk, _runs.c.run_id)
            .where(_runs.c.updated_at < cutoff)
            .order_by(_runs.c.pk)
            .limit(batch_size)
        ).all()
        if not rows:
            return 0, 0
        pairs = [(row.workflow_pk, row.run_id) for row in rows]
        tasks = conn.execute(
            delete(_tasks).where(tuple_(_tasks.c.workflow_pk, _tasks.c.run_id).in_(pairs))
        ).rowcount
        conn.execute(delete(_runs).where(_runs.c.pk.in_([row.pk for row in rows])))
    return len(rows), int(tasks or 0)


def _in_batches(engine: Engine, table: Any, condition: Any, batch_size: int) -> int:
    """Delete the rows of ``table`` matching ``condition``, ``batch_size`` a transaction."""
    total = 0
    while True:
        with engine.begin() as conn:
            keys = conn.execute(
                select(table.c.pk).where(condition).order_by(table.c.pk).limit(batch_size)
            ).scalars()
            batch = list(keys)
            if batch:
                conn.execute(delete(table).where(table.c.pk.in_(batch)))
        total += len(batch)
        if len(batch) < batch_size:
            return total
