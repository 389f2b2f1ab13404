"""Running tasks: attempts, retries with delay and backoff, timeouts, and groups in order."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from dotflow_core.engine.context import Context, utc_now
from dotflow_core.engine.events import Events
from dotflow_core.engine.steps import callable_name
from dotflow_core.engine.task import Task
from dotflow_core.errors import StepTimeoutError
from dotflow_core.hooks.records import TaskError, TaskRecord, TaskStatus
from dotflow_core.threads import DaemonCall

logger = logging.getLogger("dotflow.engine")

INTERRUPTED_MESSAGE = "the workflow was interrupted before this task ended"

# The statuses, read once: on Python 3.11 reading a member through its class
# (``TaskStatus.COMPLETED``) costs about 900 instructions, several times per task.
NOT_STARTED, IN_PROGRESS, RETRY, COMPLETED, FAILED = (
    TaskStatus.NOT_STARTED,
    TaskStatus.IN_PROGRESS,
    TaskStatus.RETRY,
    TaskStatus.COMPLETED,
    TaskStatus.FAILED,
)


class RunControl:
    """Shared by everything running one workflow: the stop signal and final-event bookkeeping.

    Once a task is given up on (:meth:`abandon`, e.g. on Ctrl-C while it
    runs in another thread), whatever its runner reports afterwards is
    dropped, so ``Failed`` stays its last event.
    """

    def __init__(self, *, run_callbacks: bool = True) -> None:
        """:param run_callbacks: call each task's callback when it ends; False in a parallel
        worker, whose parent calls it once it has reported the task's final event."""
        self.run_callbacks = run_callbacks
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._abandoned: set[int] = set()
        #: The process running the workflow (a parallel worker has its own control).
        self.pid = os.getpid()

    def report(self, task: Task, events: Events, record: TaskRecord | None = None) -> bool:
        """Emit ``update_task`` (with ``record`` when a worker took the snapshot).

        :returns: False when the task was abandoned and nothing was emitted.
        """
        if not self._abandoned and not events.listens("update_task"):
            return True
        with self._lock:
            if task.task_id in self._abandoned:
                return False
            if record is None:
                events.task_changed(task)
            else:
                events.task_record(record)
            return True

    def advance(
        self,
        task: Task,
        status: TaskStatus,
        events: Events,
        *,
        failure: TaskError | None = None,
        value: Any = None,
        clock: float = 0.0,
    ) -> bool:
        """Give a running task its next status and report it, unless it was abandoned.

        Records ``failure`` (an attempt's error); ``Retry`` counts a retry; a final
        status sets ``finished_at`` and ``duration`` (from the ``perf_counter``
        ``clock`` of its start), and ``Completed`` stores ``value`` as its context.

        :returns: False when the task was abandoned; nothing changed then.
        """
        with self._lock:
            if task.task_id in self._abandoned:
                return False
            if failure is not None:
                task.errors.append(failure)
            if status is RETRY:
                task.retry_count += 1
            elif status is COMPLETED:
                task.current_context = Context(value, task.task_id, task.workflow_id)
            if status is COMPLETED or status is FAILED:  # final (faster than is_final)
                task.finished_at = utc_now()
                task.duration = time.perf_counter() - clock
            task.status = status
            events.task_changed(task)
            return True

    def abandon(self, tasks: Sequence[Task], events: Events, reason: BaseException) -> None:
        """Mark running tasks ``Failed`` because the workflow stops without them."""
        with self._lock:
            for task in tasks:
                if task.status.is_final or task.status is NOT_STARTED:
                    continue
                self._abandoned.add(task.task_id)
                task.errors.append(
                    TaskError(
                        attempt=task.retry_count + 1,
                        type=type(reason).__name__,
                        message=str(reason) or INTERRUPTED_MESSAGE,
                        traceback="",
                    )
                )
                task.status = FAILED
                task.finished_at = utc_now()
                if task.started_at is not None:
                    task.duration = (task.finished_at - task.started_at).total_seconds()
                events.task_changed(task)


def run_group(
    tasks: Sequence[Task], events: Events, control: RunControl, *, keep_going: bool
) -> None:
    """Run tasks one after another, each receiving the previous one's context.

    Without ``keep_going`` the group stops at the first failed task; the rest
    stay ``Not started``.
    """
    previous = Context(workflow_id=tasks[0].workflow_id) if tasks else Context()
    for task in tasks:
        if control.stop.is_set():
            return
        run_task(task, previous, events, control)
        previous = task.current_context
        if task.status is FAILED and not keep_going:
            return


def leave_if_forked(owner: int) -> None:
    """End this process at once when it is a fork the engine did not make (``owner`` is not it).

    A step that calls ``os.fork()`` and returns in the child would otherwise run
    the rest of the workflow a second time there, and report it. The child ends
    with code 0, without running further tasks, hooks or exit handlers (its
    buffered output is flushed first).
    """
    if os.getpid() == owner:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a broken stream must not keep the child alive
            stream.flush()
    os._exit(0)


def run_task(task: Task, previous: Context, events: Events, control: RunControl) -> None:
    """Run one task to its end (``Completed`` or ``Failed``), retrying as its action says."""
    action = task.step
    task.previous_context = previous
    task.started_at = utc_now()
    clock = time.perf_counter()
    delay = action.retry_delay
    # A synchronous step taking no context and no timeout is called right here.
    called_here = action.plain and not action.timeout
    attempt = 0
    try:
        while True:
            attempt += 1
            if not control.advance(task, IN_PROGRESS, events):
                return  # abandoned while it waited to retry
            try:
                value = action.target() if called_here else _attempt(task, control.pid)
            except KeyboardInterrupt:
                leave_if_forked(control.pid)
                raise
            except BaseException as error:  # sys.exit() in a step fails the task, not the run
                leave_if_forked(control.pid)
                failure = TaskError.from_exception(error, attempt)
                if not _retried(task, failure, attempt, delay, clock, events, control):
                    return
                if action.backoff:
                    delay *= 2
            else:
                if os.getpid() != control.pid:  # leave_if_forked's test, without its call
                    leave_if_forked(control.pid)
                finish_task(task, COMPLETED, clock, events, control, value=value)
                return
    except BaseException as error:  # KeyboardInterrupt: record, report, re-raise
        failure = TaskError.from_exception(error, attempt)
        finish_task(task, FAILED, clock, events, control, failure=failure)
        raise


def _retried(
    task: Task,
    failure: TaskError,
    attempt: int,
    delay: float,
    clock: float,
    events: Events,
    control: RunControl,
) -> bool:
    """After a failed attempt: True once the pause before the next one is over; False
    when the task ended instead (no attempt left, the workflow stopping, abandoned)."""
    if attempt >= task.step.retry or control.stop.is_set():
        finish_task(task, FAILED, clock, events, control, failure=failure)
        return False
    logger.info(
        "task %s (%s) attempt %d failed (%s: %s); retrying in %.3g s",
        task.task_id, task.name, attempt, failure.type, failure.message, delay,
    )  # fmt: skip
    if not control.advance(task, RETRY, events, failure=failure):
        return False
    if control.stop.wait(delay):  # the workflow stops: no further attempt
        finish_task(task, FAILED, clock, events, control)
        return False
    return True


def _attempt(task: Task, owner: int) -> Any:
    action = task.step
    if not action.timeout:
        if action.plain:
            return action.target()
        return action.run(
            task.initial_context, task.previous_context, task.task_id, task.workflow_id
        )
    arguments = (task.initial_context, task.previous_context, task.task_id, task.workflow_id)

    def attempt_in_thread() -> Any:
        try:
            return action.run(*arguments)
        finally:
            leave_if_forked(owner)  # in a child forked here, this thread is all there is

    # A thread cannot be killed: an attempt that times out is left to end on its own.
    call = DaemonCall(attempt_in_thread, name=f"dotflow-task-{task.task_id}")
    if not call.wait(action.timeout):
        raise StepTimeoutError(
            f"step {action.name!r} did not finish within its timeout of {action.timeout:g} s"
        )
    return call.result()


def finish_task(
    task: Task,
    status: TaskStatus,
    clock: float,
    events: Events,
    control: RunControl,
    *,
    value: Any = None,
    failure: TaskError | None = None,
) -> None:
    """End the task with its final status, then log a failure and run its callback."""
    if not control.advance(task, status, events, failure=failure, value=value, clock=clock):
        return
    if status is FAILED:
        last = task.errors[-1] if task.errors else None
        logger.warning(
            "task %s (%s) failed after %d attempt(s): %s",
            task.task_id, task.name, len(task.errors),
            f"{last.type}: {last.message}" if last else "no error recorded",
        )  # fmt: skip
    if control.run_callbacks and task.callback is not None:  # most tasks have none
        call_callback(task)


def call_callback(task: Task) -> None:
    """Call ``task.callback(task=task)`` if it has one; an exception it raises is logged."""
    if task.callback is None:
        return
    try:
        task.callback(task=task)
    except Exception as error:
        logger.exception(
            "callback %s of task %s (%s) raised %s: %s",
            callable_name(task.callback),
            task.task_id, task.name, type(error).__name__, error,
        )  # fmt: skip
