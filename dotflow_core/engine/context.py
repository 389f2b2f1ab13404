"""Context: the value a step returns, with where and when it was produced."""

from __future__ import annotations

import functools
import time as time_module
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

#: The current time, timezone-aware in UTC (the only kind of timestamp dotflow-core keeps).
#: A partial, not a function: a third cheaper, and the engine takes three per task.
utc_now: Callable[[], datetime] = functools.partial(datetime.now, timezone.utc)


class Context:
    """A step's value (``storage``) plus the task and workflow that produced it.

    Steps receive their inputs as contexts (``initial_context``,
    ``previous_context``) and read ``.storage``; what a step returns becomes
    the ``storage`` of its task's ``current_context``. Wrapping a context in a
    context unwraps it, so ``Context(storage=other).storage is other.storage``.
    """

    __slots__ = ("_created", "storage", "task_id", "workflow_id")

    def __init__(
        self, storage: Any = None, task_id: int | None = None, workflow_id: str | None = None
    ) -> None:
        if isinstance(storage, Context):
            self.storage: Any = storage.storage
            self.task_id: int | None = storage.task_id if task_id is None else task_id
            self.workflow_id: str | None = (
                storage.workflow_id if workflow_id is None else workflow_id
            )
            self._created: float = storage._created
            return
        self.storage = storage
        self.task_id = task_id
        self.workflow_id = workflow_id
        self._created = time_module.time()

    @property
    def time(self) -> datetime:
        """When the value was produced (UTC)."""
        return datetime.fromtimestamp(self._created, timezone.utc)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Context):
            return NotImplemented
        return (self.storage, self.task_id, self.workflow_id) == (
            other.storage,
            other.task_id,
            other.workflow_id,
        )

    __hash__ = None  # type: ignore[assignment]

    def __json_safe__(self) -> Any:
        """What :func:`dotflow_core.serialize.to_json_safe` converts in a context's place."""
        return self.storage

    def __repr__(self) -> str:
        return (
            f"Context(storage={self.storage!r}, task_id={self.task_id!r}, "
            f"workflow_id={self.workflow_id!r})"
        )
