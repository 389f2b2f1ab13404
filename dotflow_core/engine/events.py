"""Where the engine's events go: the hooks of a provider manager.

A worker process of the parallel mode sends them to its parent instead
(:class:`dotflow_core.engine.processes.PipeEvents`).

Building a record costs a snapshot (no data is copied, but it is still work),
so no record is built for a hook that no active provider implements. Each
hook is called through the manager's ``event_callers`` (see
:mod:`dotflow_core.dispatch`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dotflow_core.hooks.records import TaskRecord, WorkflowRecord

if TYPE_CHECKING:
    from dotflow_core.engine.task import Task
    from dotflow_core.manager import ProviderManager


class Events:
    """Reports engine events to the providers of a manager (``None``: to nobody)."""

    def __init__(self, manager: ProviderManager | None) -> None:
        self.manager = manager
        # The manager's own dict, updated in place as providers are added.
        self._callers: dict[str, Any] = {} if manager is None else manager.event_callers

    @classmethod
    def silent(cls) -> Events:
        return cls(None)

    def listens(self, hook_name: str) -> bool:
        """True when some active provider implements ``hook_name``."""
        return self.manager is not None and hook_name in self.manager.listening

    def workflow_created(self, record: WorkflowRecord) -> None:
        if caller := self._callers.get("create_workflow"):
            caller(record)

    def workflow_changed(self, record: WorkflowRecord) -> None:
        if caller := self._callers.get("update_workflow"):
            caller(record)

    def task_created(self, task: Task) -> None:
        if caller := self._callers.get("create_task"):
            caller(task.snapshot())

    def task_changed(self, task: Task) -> None:
        if caller := self._callers.get("update_task"):
            caller(task.snapshot())

    def task_record(self, record: TaskRecord) -> None:
        """Report a snapshot that was taken elsewhere (by a worker process)."""
        if caller := self._callers.get("update_task"):
            caller(record)
