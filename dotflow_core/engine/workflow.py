"""DotFlow: a workflow, its tasks, its providers and its run."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from dotflow_core.engine.context import Context, utc_now
from dotflow_core.engine.events import Events
from dotflow_core.engine.execution import execute
from dotflow_core.engine.modes import BACKGROUND, PARALLEL, SEQUENTIAL, check_mode
from dotflow_core.engine.runner import RunControl
from dotflow_core.engine.steps import callable_name
from dotflow_core.engine.task import Task, TaskBuilder
from dotflow_core.errors import ConfigurationError, WorkflowStateError
from dotflow_core.hooks.records import (
    INITIAL_TASK_ID,
    TaskStatus,
    WorkflowRecord,
    WorkflowStatus,
    is_strict_int,
)
from dotflow_core.manager import ProviderManager
from dotflow_core.serialize import record_to_dict

logger = logging.getLogger("dotflow.engine")

#: The environment variable that supplies an external workflow id (managed mode).
WORKFLOW_ID_ENV = "WORKFLOW_ID"


#: The manager ``DotFlow(providers=None)`` uses instead of the environment's, when set.
_handed_down: ContextVar[ProviderManager | None] = ContextVar("dotflow_providers", default=None)


@contextmanager
def providers_for_new_workflows(manager: ProviderManager) -> Iterator[None]:
    """Within this block, ``DotFlow()`` without ``providers`` uses ``manager``.

    How ``dotflow start --workflow module:factory`` runs the factory's workflow with
    the command's providers (``--provider``, the selection rules, its progress).
    """
    token = _handed_down.set(manager)
    try:
        yield
    finally:
        _handed_down.reset(token)


def providers_manager(
    providers: ProviderManager | Sequence[str | object] | None,
) -> ProviderManager:
    """The manager for ``DotFlow(providers=...)``.

    A :class:`ProviderManager`: used as it is (the engine only calls its hooks);
    ``None``: :meth:`ProviderManager.from_environment`; a list: those names
    (installed providers) and/or plugin objects; ``[]``: none.
    """
    if isinstance(providers, ProviderManager):
        return providers
    if providers is None:
        handed_down = _handed_down.get()
        return handed_down if handed_down is not None else ProviderManager.from_environment()
    if isinstance(providers, (str, bytes)):
        raise ConfigurationError(
            f"providers={providers!r}: pass a list, e.g. providers=[{providers!r}]"
        )
    return ProviderManager.from_providers(providers)


def host_name() -> str:
    """The machine's name, as dotflow names a workflow by default (``local`` when unknown)."""
    try:
        return socket.gethostname() or "local"
    except OSError:
        return "local"


def check_workflow_id(value: object, origin: str) -> str:
    """A caller-supplied workflow id, stripped.

    :param origin: how the caller gave it (``workflow_id``, ``WORKFLOW_ID``, a CLI flag),
        for the error message.
    :raises ConfigurationError: it is blank, not a string, or holds bytes that are not
        UTF-8 text (an environment variable's, escaped).
    """
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(
            f"{origin}={value!r}: must be a non-empty string (or unset, for a new id)"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError(
            f"{origin}={value!r}: holds bytes that are not UTF-8 text; providers and "
            f"servers store ids as text: use letters, digits and punctuation"
        ) from None
    return value.strip()


def check_executor(executor: object, mode: str) -> None:
    """``start(executor=...)``: an object with ``submit``, or a valid spec; parallel mode only.

    :raises ConfigurationError: otherwise (naming what would be valid).
    """
    if mode != PARALLEL:
        raise ConfigurationError(
            f"executor= runs tasks in mode='parallel' only, not mode={mode!r}; "
            f"use start(mode='parallel', executor=...)"
        )
    if isinstance(executor, str):
        from dotflow_core.engine.executor_specs import check_available, parse_executor_spec

        check_available(parse_executor_spec(executor, "executor"))
    elif not callable(getattr(executor, "submit", None)):
        raise ConfigurationError(
            f"executor={executor!r}: expected a concurrent.futures.Executor (such as "
            f"ProcessPoolExecutor() or distributed.Client(...).get_executor()) or a spec "
            f"such as 'dask://HOST:PORT', 'dask', 'processes', 'threads'"
        )


class DotFlow:
    """A workflow: add tasks with ``workflow.task.add(step=...)``, run them with ``start()``.

    :param workflow_id: an id supplied by the caller (managed mode): no
        ``create_workflow`` fires and numbering continues from the providers'
        ``get_next_task_id``. Defaults to ``$WORKFLOW_ID``; when that is unset
        too, a UUID is generated and ``create_workflow`` fires.
    :param providers: see :func:`providers_manager`.
    :param name: a label for people, passed to providers; the host name by default,
        as in dotflow.
    :raises ConfigurationError: bad id, unknown or failing provider, rejected settings.
    """

    def __init__(
        self,
        workflow_id: str | None = None,
        providers: ProviderManager | Sequence[str | object] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        if workflow_id is not None:
            supplied: str | None = check_workflow_id(workflow_id, "workflow_id")
        elif os.environ.get(WORKFLOW_ID_ENV):
            supplied = check_workflow_id(os.environ[WORKFLOW_ID_ENV], WORKFLOW_ID_ENV)
        else:
            supplied = None
        if name is not None and not isinstance(name, str):
            raise ConfigurationError(f"name={name!r}: expected a string (default: the host name)")
        self.providers = providers_manager(providers)
        self._events = Events(self.providers)
        #: True when the caller supplied the id (managed mode).
        self.managed = supplied is not None
        self.workflow_id: str = supplied or str(uuid.uuid4())
        #: This run (one ``DotFlow``, one ``start()``): a UUID every record carries.
        self.run_id: str = str(uuid.uuid4())
        self.name: str = name or host_name()  # dotflow's "name or hostname()"
        self.mode: str | None = None
        self.status: WorkflowStatus | None = None
        self.created_at: datetime = utc_now()
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.duration: float | None = None
        self._done = threading.Event()
        self._started = False
        self._outcome_callbacks: tuple[Callable[..., Any] | None, Callable[..., Any] | None] = (
            None,
            None,
        )
        self._control = RunControl()
        self._clock = 0.0
        self._finish_lock = threading.Lock()
        first_task_id = (
            self.providers.next_task_id(self.workflow_id, self.run_id)
            if self.managed
            else INITIAL_TASK_ID
        )
        self.task = TaskBuilder(self.workflow_id, first_task_id, self._events, run_id=self.run_id)
        if not self.managed:
            self.status = WorkflowStatus.IN_PROGRESS
            self._events.workflow_created(self.snapshot())

    def start(
        self,
        mode: str = SEQUENTIAL,
        keep_going: bool = False,
        *,
        max_workers: int | None = None,
        executor: Any = None,
        on_success: Callable[..., Any] | None = None,
        on_failure: Callable[..., Any] | None = None,
    ) -> DotFlow:
        """Run the tasks; returns when they have ended, or at once in ``background`` mode.

        :param mode: ``sequential``, ``background`` or ``parallel`` (see :mod:`.execution`).
        :param keep_going: go on with a group's next tasks after one fails.
        :param max_workers: most worker processes at a time in ``parallel`` mode (with
            ``executor``: most attempts submitted to it at a time; default one more than a
            process or thread pool's workers, no limit on other executors).
        :param executor: ``parallel`` mode only: run the attempts on this
            ``concurrent.futures`` executor (a process or thread pool,
            ``distributed.Client(...).get_executor()``), or on the one a spec such as
            ``"dask://HOST:PORT"`` names (see :mod:`.executor_specs`), created for the run.
        :param on_success: called as ``on_success(tasks=[...])`` when the workflow has
            completed (after its final ``update_workflow`` and ``flush``, before
            :meth:`wait` returns), as in dotflow.
        :param on_failure: the same when it has failed, interrupted or cancelled included.
        :raises WorkflowStateError: the workflow was started before.
        """
        mode = check_mode(mode)
        if isinstance(keep_going, str) or keep_going not in (True, False):  # 0/1 pass, "no" not
            raise ConfigurationError(f"keep_going={keep_going!r}: expected True or False")
        keep_going = bool(keep_going)
        if max_workers is not None and not is_strict_int(max_workers, 1):
            raise ConfigurationError(f"max_workers={max_workers!r}: must be an int >= 1")
        if executor is not None:
            check_executor(executor, mode)
        for name, callback in (("on_success", on_success), ("on_failure", on_failure)):
            if callback is not None and not callable(callback):
                raise ConfigurationError(
                    f"{name}={callback!r}: expected a callable, called as {name}(tasks=[...])"
                )
        if self._started:
            raise WorkflowStateError(
                f"workflow {self.workflow_id} was already started; "
                "create a new DotFlow to run again"
            )
        self._started = True
        self.task._started = True
        self._outcome_callbacks = (on_success, on_failure)
        self.mode = mode
        if mode == BACKGROUND:
            threading.Thread(
                target=self._run_in_background,
                args=(keep_going, max_workers, executor),
                name=f"dotflow-workflow-{self.workflow_id}",
            ).start()
        else:
            self._run(keep_going, max_workers, executor)
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run has ended (providers flushed); False if ``timeout`` ran out first."""
        if not self._started:
            raise WorkflowStateError(f"workflow {self.workflow_id} was not started")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.is_set():
            remaining = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if remaining <= 0:
                return False
            self._done.wait(remaining)  # short slices keep Ctrl-C responsive
        return True

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self, *, reason: BaseException | None = None) -> bool:
        """End a running workflow now, as Ctrl-C would: running tasks and the workflow fail.

        Meant for runs that ``start()`` does not block on (background mode): no
        further task starts, the running ones are reported ``Failed`` (a step
        still executing cannot be stopped; what it returns later is dropped),
        the final ``update_workflow`` fires and providers are flushed.

        :param reason: the error the running tasks fail with (default ``KeyboardInterrupt``).
        :returns: False when the workflow was not running.
        """
        if not self._started or self._done.is_set():
            return False
        self._control.stop.set()
        self._control.abandon(self.task.queue, self._events, reason or KeyboardInterrupt())
        self._finish(interrupted=True)
        return True

    def _run_in_background(
        self, keep_going: bool, max_workers: int | None, executor: Any = None
    ) -> None:
        try:
            self._run(keep_going, max_workers, executor)
        except BaseException:
            logger.exception("background workflow %s stopped", self.workflow_id)

    def _run(self, keep_going: bool, max_workers: int | None, executor: Any = None) -> None:
        self.status = WorkflowStatus.IN_PROGRESS
        self.started_at = utc_now()
        self._clock = time.perf_counter()
        self._events.workflow_changed(self.snapshot())
        try:
            execute(
                self.mode or SEQUENTIAL,
                self.task.queue,
                self._events,
                self._control,
                keep_going=keep_going,
                max_workers=max_workers,
                executor=executor,
            )
        except BaseException:
            self._finish(interrupted=True)
            raise
        self._finish(interrupted=self._control.stop.is_set())

    def _call_outcome_callback(self) -> None:
        on_success, on_failure = self._outcome_callbacks
        if self.status is WorkflowStatus.COMPLETED:
            name, callback = "on_success", on_success
        else:
            name, callback = "on_failure", on_failure
        if callback is None:
            return
        try:
            callback(tasks=self.result_task())
        except Exception as error:
            logger.exception(
                "%s callback %s of workflow %s raised %s: %s",
                name,
                callable_name(callback),
                self.workflow_id, type(error).__name__, error,
            )  # fmt: skip

    def _finish(self, *, interrupted: bool) -> None:
        """Fire the final ``update_workflow`` and flush the providers, once per run."""
        with self._finish_lock:
            if self._done.is_set():
                return
            try:
                failed_status = TaskStatus.FAILED  # read once, not once per task
                failed = interrupted or any(t.status is failed_status for t in self.task.queue)
                self.status = WorkflowStatus.FAILED if failed else WorkflowStatus.COMPLETED
                self.finished_at = utc_now()
                self.duration = time.perf_counter() - self._clock
                self._events.workflow_changed(self.snapshot())
                self.providers.flush(self.workflow_id, timeout=None)
                self._call_outcome_callback()
            finally:
                self._done.set()

    def snapshot(self) -> WorkflowRecord:
        """A frozen record of the workflow as it is now."""
        statuses = [task.status for task in self.task.queue]
        return WorkflowRecord(
            workflow_id=self.workflow_id,
            status=self.status or WorkflowStatus.IN_PROGRESS,
            run_id=self.run_id,
            name=self.name,
            mode=self.mode,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            duration=self.duration,
            task_count=len(statuses),
            completed_count=statuses.count(TaskStatus.COMPLETED),
            failed_count=statuses.count(TaskStatus.FAILED),
        )

    def result_task(self) -> list[Task]:
        """The tasks, in id order."""
        return list(self.task.queue)

    def result_context(self) -> list[Context]:
        """Each task's ``current_context``."""
        return [task.current_context for task in self.task.queue]

    def result_storage(self) -> list[Any]:
        """Each task's returned value."""
        return [task.current_context.storage for task in self.task.queue]

    def result(self) -> dict[str, Any]:
        """The workflow and its tasks as a JSON-safe dict."""
        summary = record_to_dict(self.snapshot())
        summary["tasks"] = [task.result() for task in self.task.queue]
        return summary

    def __repr__(self) -> str:
        status = self.status.value if self.status else "not started"
        return f"<DotFlow {self.workflow_id} {status} tasks={len(self.task.queue)}>"
