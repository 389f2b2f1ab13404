"""A parallel worker's records on their way to the parent: each value crosses once.

A worker reports every change of its tasks as a pickled :class:`TaskRecord`.
Sent as they are, the records would carry the same values again and again: a
task's ``initial_context`` (which the parent already holds: it built the
task) in each of its records, and in a named group a task's result once as
its ``current_context`` and again as the next task's ``previous_context``, in
each of that task's records. So the worker sends a context value in full only
the first time, and afterwards a :class:`HeldByParent` reference, which the
parent resolves to the very object it already received (so its providers see
one object, as in the other modes).

Both ends of one pipe keep the same table: a key is the task and field a value
was first sent as (``HeldByParent``); the pipe keeps the messages in order, so
the parent always has a value before any reference to it.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from typing import Any, Final

import attrs

from dotflow_core.engine.task import Task
from dotflow_core.hooks.records import TaskRecord
from dotflow_core.serialize import capped_repr

CONTEXT_FIELDS: Final = ("initial_context", "previous_context", "current_context")
#: Values smaller than any reference to them: always sent as they are.
_SMALL_TYPES: Final = frozenset({type(None), bool, int, float})


@attrs.frozen
class HeldByParent:
    """In a relayed record, in place of a value the parent already holds.

    ``task_id`` and ``field`` name the record field the value was first sent
    (or, for an ``initial_context``, given) as.
    """

    task_id: int
    field: str


class WorkerRelay:
    """The worker's end: pickles records, each context value in full the first time only."""

    def __init__(self, tasks: Iterable[Task]) -> None:
        #: id of a value sent (or held by the parent from the start) -> the value, its key.
        #: Holding the value keeps its id from being reused while the entry lives.
        self._sent: dict[int, tuple[Any, HeldByParent]] = {}
        #: key -> id of the value it stands for, so a key sent again forgets the old value.
        self._keys: dict[HeldByParent, int] = {}
        for task in tasks:  # the parent built these tasks: it holds their initial values
            self._remember(task.initial, HeldByParent(task.task_id, "initial_context"))

    def encode(self, record: TaskRecord) -> bytes:
        """The record pickled, with references in place of the values already sent."""
        changes: dict[str, Any] = {}
        for field in CONTEXT_FIELDS:
            value = getattr(record, field)
            held = self._sent.get(id(value))
            if held is not None and held[0] is value:
                changes[field] = held[1]
            else:
                self._remember(value, HeldByParent(record.task_id, field))
        return pickled(attrs.evolve(record, **changes) if changes else record)

    def _remember(self, value: Any, key: HeldByParent) -> None:
        replaced = self._keys.pop(key, None)
        if replaced is not None:
            self._sent.pop(replaced, None)
        if type(value) not in _SMALL_TYPES:
            self._sent[id(value)] = (value, key)
            self._keys[key] = id(value)


class ParentRelay:
    """The parent's end of one worker's pipe: unpickles records and resolves references."""

    def __init__(self, tasks: Iterable[Task]) -> None:
        self._held: dict[HeldByParent, Any] = {
            HeldByParent(task.task_id, "initial_context"): task.initial for task in tasks
        }

    def decode(self, data: bytes) -> TaskRecord:
        """The record a worker sent, every context the object the parent holds for it."""
        record: TaskRecord = pickle.loads(data)
        changes: dict[str, Any] = {}
        for field in CONTEXT_FIELDS:
            value = getattr(record, field)
            if isinstance(value, HeldByParent):
                changes[field] = self._held[value]
            else:
                self._held[HeldByParent(record.task_id, field)] = value
        return attrs.evolve(record, **changes) if changes else record


def pickled(record: TaskRecord) -> bytes:
    """The pickled record; contexts that do not pickle travel as their ``repr``."""
    try:
        return pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        changes: dict[str, Any] = {}
        for field in CONTEXT_FIELDS:
            value = getattr(record, field)
            try:
                pickle.dumps(value)
            except Exception:
                changes[field] = capped_repr(value)
        return pickle.dumps(attrs.evolve(record, **changes), protocol=pickle.HIGHEST_PROTOCOL)
