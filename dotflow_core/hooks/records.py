"""The records passed to hooks: frozen snapshots of a workflow or a task.

A record is taken at the moment of the event it reports and is frozen: its
fields (status, counts, times, errors) never change afterwards, so a provider
that queues it and sends it later still sends the state of that moment.

The snapshot rule for data: the contexts a task record carries
(``initial_context``, ``previous_context``, ``current_context``) are the very
values the workflow holds, shared by reference and never copied, so an event
costs the same whatever the size of the data. The engine never mutates a
step's value. A provider must not mutate one either; one that keeps a value
past the hook call and needs it as it was at that moment (a step of a later
task may change a mutable value it received) takes its own bounded copy,
e.g. ``dotflow_core.plugin.to_json_safe(value, max_bytes=cap)``, never a copy
proportional to the data.

Records are slotted, as attrs makes them by default. The engine builds its
task records through :class:`UnsealedTaskRecord` (several per task), everyone
else with the constructor.
"""

from __future__ import annotations

import enum
import traceback as traceback_module
from datetime import datetime
from typing import Any, Final, TypeGuard

import attrs

#: The id of the first task of a workflow that has no earlier tasks.
INITIAL_TASK_ID: Final = 1
#: The largest task id (2**53: exact in a JSON number, a double): a provider's next
#: task id above it is treated as a bug, not a number to use.
MAX_TASK_ID: Final = 2**53


def is_strict_int(value: object, minimum: int, maximum: int | None = None) -> TypeGuard[int]:
    """True for an ``int`` (not a ``bool``) from ``minimum`` to ``maximum`` (no upper bound: None).

    The one check behind every integer setting and id of the core, so that
    ``True``, ``1.0`` and ``"1"`` are refused the same way everywhere.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        return False
    return maximum is None or value <= maximum


class TaskStatus(str, enum.Enum):
    """The status of a task; the values are the strings dotflow uses."""

    NOT_STARTED = "Not started"
    IN_PROGRESS = "In progress"
    COMPLETED = "Completed"
    RETRY = "Retry"
    FAILED = "Failed"

    def __str__(self) -> str:
        return self.value

    @property
    def is_final(self) -> bool:
        """True for the statuses a task ends in (``Completed``, ``Failed``)."""
        return self in _FINAL_TASK_STATUSES


_FINAL_TASK_STATUSES: Final = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED})


class WorkflowStatus(str, enum.Enum):
    """The status of a workflow as a whole."""

    IN_PROGRESS = "In progress"
    COMPLETED = "Completed"
    FAILED = "Failed"

    def __str__(self) -> str:
        return self.value


@attrs.frozen(kw_only=True)
class TaskError:
    """One failed attempt of a task."""

    #: The attempt that failed, counting from 1.
    attempt: int
    #: The exception's class name, e.g. ``"ValueError"``.
    type: str
    #: ``str()`` of the exception.
    message: str
    #: The formatted traceback of the exception.
    traceback: str

    @classmethod
    def from_exception(cls, error: BaseException, attempt: int) -> TaskError:
        return cls(
            attempt=attempt,
            type=type(error).__name__,
            message=str(error),
            traceback="".join(traceback_module.format_exception(error)),
        )


@attrs.frozen(kw_only=True)
class WorkflowRecord:
    """A workflow at the moment of a ``create_workflow`` or ``update_workflow`` event."""

    #: The workflow id: generated (a UUID string) or supplied by the caller.
    workflow_id: str
    status: WorkflowStatus
    #: This run of the workflow: a UUID string, new for every ``DotFlow`` (one ``start()``),
    #: so two runs that share a supplied ``workflow_id`` stay apart. ``None`` only in
    #: records built by hand, outside the engine.
    run_id: str | None = None
    #: A label for people: ``DotFlow(name=...)``, ``dotflow start --name``, else the host name.
    name: str | None = None
    #: The execution mode once the workflow starts: sequential, background or parallel.
    mode: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: Seconds from start to finish, once finished.
    duration: float | None = None
    #: Tasks added so far.
    task_count: int = 0
    #: Tasks that ended ``Completed`` / ``Failed`` (final counts once finished).
    completed_count: int = 0
    failed_count: int = 0


@attrs.frozen(kw_only=True)
class TaskRecord:
    """A task at the moment of a ``create_task`` or ``update_task`` event.

    Frozen; its three context fields are the workflow's values themselves,
    shared by reference (see the module's snapshot rule): a provider reads them
    and never mutates them.
    """

    workflow_id: str
    #: The task's number inside its workflow, from ``INITIAL_TASK_ID`` or the provider's next id.
    task_id: int
    #: The step's qualified name, e.g. ``"flow.extract"``.
    name: str
    status: TaskStatus
    #: The run that created the task (the ``run_id`` of its workflow's records).
    run_id: str | None = None
    group_name: str = "default"
    #: Attempts that failed and were retried so far.
    retry_count: int = 0
    #: Seconds the task ran, once finished.
    duration: float | None = None
    #: One entry per failed attempt, oldest first.
    errors: tuple[TaskError, ...] = ()
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: The value given to ``task.add(initial_context=...)``.
    initial_context: Any = None
    #: The value the previous task of the group returned.
    previous_context: Any = None
    #: The value this task returned (``None`` until it completes).
    current_context: Any = None


class UnsealedTaskRecord(TaskRecord):
    """The engine's way to build a :class:`TaskRecord`: the same slots, assignment allowed.

    Several records per task: attrs's frozen ``__init__`` sets each field
    through ``object.__setattr__``, five times what a plain assignment to a
    slot costs. So the engine (``Task.snapshot``) makes an instance of this
    class (``object.__new__``), assigns every field, then seals it with
    ``record.__class__ = TaskRecord`` (allowed between two classes of the same
    layout): from then on it is an ordinary frozen ``TaskRecord``, equal to
    what the constructor makes. Nothing is checked: for values the engine made
    itself. Anyone else uses the constructor.
    """

    __slots__ = ()
    # Both, so that the class gets CPython's own attribute setter, not the frozen one.
    __setattr__ = object.__setattr__
    __delattr__ = object.__delattr__
