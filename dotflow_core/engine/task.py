"""Tasks: a step bound to a workflow, its number and its state as it runs."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import attrs

from dotflow_core.engine.action import Action
from dotflow_core.engine.context import Context, utc_now
from dotflow_core.engine.events import Events
from dotflow_core.engine.steps import resolve_callback, resolve_step
from dotflow_core.errors import ConfigurationError, WorkflowStateError
from dotflow_core.hooks.records import (
    INITIAL_TASK_ID,
    MAX_TASK_ID,
    TaskError,
    TaskRecord,
    TaskStatus,
    UnsealedTaskRecord,
    is_strict_int,
)
from dotflow_core.serialize import record_to_dict

DEFAULT_GROUP = "default"

_new = object.__new__


@attrs.define(eq=False)
class Task:
    """One step of a workflow and everything that happened to it.

    The engine changes a task as it runs; hooks receive frozen snapshots of it
    (:meth:`snapshot`), never the task itself.
    """

    task_id: int
    workflow_id: str
    step: Action = attrs.field(repr=False)
    #: The run that created the task (``None`` for a task built outside a workflow).
    run_id: str | None = attrs.field(default=None, kw_only=True)
    callback: Callable[..., Any] | None = attrs.field(default=None, repr=False)
    group_name: str = DEFAULT_GROUP
    #: The value given to ``task.add(initial_context=...)``.
    initial: Any = attrs.field(default=None, repr=False)
    _previous: Context | None = attrs.field(default=None, repr=False, alias="previous_context")
    _current: Context | None = attrs.field(default=None, repr=False, alias="current_context")
    status: TaskStatus = TaskStatus.NOT_STARTED
    retry_count: int = 0
    duration: float | None = None
    errors: list[TaskError] = attrs.field(factory=list, repr=False)
    created_at: datetime = attrs.field(factory=utc_now, repr=False)
    started_at: datetime | None = attrs.field(default=None, repr=False)
    finished_at: datetime | None = attrs.field(default=None, repr=False)

    @property
    def name(self) -> str:
        """The step's qualified name."""
        step: Action = self.step  # (type checkers read self.step through Action.__get__)
        return step.name

    @property
    def initial_context(self) -> Context:
        """The value given to ``task.add(initial_context=...)``, as a context."""
        return Context(self.initial, self.task_id, self.workflow_id)

    @property
    def previous_context(self) -> Context:
        """What the previous task of the group returned (empty before the task starts)."""
        return self._previous or Context(None, None, self.workflow_id)

    @previous_context.setter
    def previous_context(self, value: Any) -> None:
        self._previous = (
            value if isinstance(value, Context) else Context(value, self.task_id, self.workflow_id)
        )

    @property
    def current_context(self) -> Context:
        """What this task returned (empty until it completes)."""
        return self._current or Context(None, self.task_id, self.workflow_id)

    @current_context.setter
    def current_context(self, value: Any) -> None:
        """Any value: a plain one is wrapped in a :class:`Context` of this task, as dotflow does."""
        self._current = (
            value if isinstance(value, Context) else Context(value, self.task_id, self.workflow_id)
        )

    def snapshot(self) -> TaskRecord:
        """A frozen record of the task as it is now.

        The contexts are the task's values themselves, shared by reference, never
        copied: an event costs the same whatever the data (see
        :mod:`dotflow_core.hooks.records`).
        """
        record: Any = _new(UnsealedTaskRecord)  # filled, then sealed: see UnsealedTaskRecord
        record.workflow_id = self.workflow_id
        record.task_id = self.task_id
        record.name = self.step.name
        record.status = self.status
        record.run_id = self.run_id
        record.group_name = self.group_name
        record.retry_count = self.retry_count
        record.duration = self.duration
        record.errors = tuple(self.errors) if self.errors else ()
        record.created_at = self.created_at
        record.started_at = self.started_at
        record.finished_at = self.finished_at
        record.initial_context = self.initial
        record.previous_context = self._previous.storage if self._previous else None
        record.current_context = self._current.storage if self._current else None
        record.__class__ = TaskRecord
        sealed: TaskRecord = record
        return sealed

    def apply(self, record: TaskRecord) -> None:
        """Take over the state a worker process reported for this task."""
        self.status = record.status
        self.retry_count = record.retry_count
        self.duration = record.duration
        self.errors = list(record.errors)
        self.started_at = record.started_at
        self.finished_at = record.finished_at
        self.previous_context = Context(record.previous_context, self.task_id, self.workflow_id)
        self.current_context = Context(record.current_context, self.task_id, self.workflow_id)

    def result(self) -> dict[str, Any]:
        """The task as a JSON-safe dict (the fields of :class:`TaskRecord`)."""
        return record_to_dict(self.snapshot())


class TaskBuilder:
    """The tasks of one workflow, numbered in the order they are added.

    :param workflow_id: the workflow the tasks belong to (generated when omitted).
    :param initial_task_id: the id of the first task added (``INITIAL_TASK_ID`` by default).
    :param events: where ``create_task`` events go; ``None`` reports nothing.
    :param run_id: the run the tasks belong to (their records carry it).
    """

    def __init__(
        self,
        workflow_id: str | None = None,
        initial_task_id: int = INITIAL_TASK_ID,
        events: Events | None = None,
        *,
        run_id: str | None = None,
    ) -> None:
        if not is_strict_int(initial_task_id, INITIAL_TASK_ID, MAX_TASK_ID):
            raise ConfigurationError(
                f"initial_task_id={initial_task_id!r}: must be an int >= {INITIAL_TASK_ID} "
                f"(and at most 2**53)"
            )
        self.workflow_id = workflow_id or str(uuid.uuid4())
        self.initial_task_id = initial_task_id
        self.run_id = run_id
        self.queue: list[Task] = []
        self._events = events or Events.silent()
        #: The id the next task added gets: ids are never reused, even after :meth:`clear`.
        self._next_id = initial_task_id
        self._started = False

    def add(
        self,
        step: Action | Callable[..., Any] | str | list[Any],
        callback: Callable[..., Any] | str | None = None,
        initial_context: Any = None,
        group_name: str = DEFAULT_GROUP,
    ) -> TaskBuilder:
        """Add a step (or a list of steps, in order) as new tasks; fires ``create_task`` for each.

        :param step: an ``@action`` function or class, a ``"module.func"`` path, or a list of them.
        :param callback: called as ``callback(task=task)`` after the task ends.
        :param initial_context: the value the step receives as ``initial_context.storage``.
        :param group_name: tasks of different groups run concurrently; in order within a group.
        :raises InvalidStepError: a step cannot be imported or lacks ``@action``.
        """
        if not isinstance(group_name, str) or not group_name.strip():
            raise ConfigurationError(f"group_name={group_name!r}: must be a non-empty string")
        if isinstance(step, Action):
            actions = [step]
        else:  # validate every step before adding any
            steps = step if isinstance(step, (list, tuple)) else [step]
            actions = [resolve_step(item) for item in steps]
        resolved_callback = None if callback is None else resolve_callback(callback)
        initial = (
            initial_context.storage if isinstance(initial_context, Context) else initial_context
        )
        for item in actions:
            task_id = self._next_id
            self._next_id += 1
            task = Task(  # positional, in field order: keywords would cost a sixth of it
                task_id,
                self.workflow_id,
                item,
                resolved_callback,
                group_name,
                initial,
                run_id=self.run_id,
            )
            self.queue.append(task)
            self._events.task_created(task)
        return self

    def count(self) -> int:
        return len(self.queue)

    def clear(self) -> None:
        """Remove every task added so far, as dotflow's ``clear()``; the workflow runs none of them.

        Tasks added afterwards continue the numbering (their ids are not reused:
        providers were told of the removed ones through ``create_task``, and keep
        them as ``Not started``).

        :raises WorkflowStateError: the workflow has started (its tasks are running or ran).
        """
        if self._started:
            raise WorkflowStateError(
                f"workflow {self.workflow_id} has started; its tasks cannot be cleared"
            )
        self.queue.clear()

    def __len__(self) -> int:
        return len(self.queue)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.queue)
