"""What ``dotflow start`` shows on stderr: progress, library logs, errors and the summary.

Two formats: ``text`` (one short line per event, for people) and ``json``
(one JSON object per line, for machines). Every JSON object has an
``event`` key and a ``time`` key (ISO 8601, UTC); the other keys are fixed
per event kind, so a consumer can rely on them being present (``null`` when
unknown):

- ``workflow_started``: workflow_id, mode, task_count, providers, provider_source
- ``task_started`` / ``task_retry`` / ``task_completed`` / ``task_failed``:
  workflow_id, task_id, name, group, status, attempt, duration, error
  (``{"type", "message"}`` of the last failed attempt, or null)
- ``summary`` (always last): workflow_id, status, interrupted, mode, providers,
  provider_source, task_count, completed, failed, not_run, unfinished (still running
  when the command was interrupted in background mode), duration, exit_code,
  failed_tasks (``[{"task_id", "name", "error"}]``, error the first line of the last
  failed attempt's ``Type: message``, or null), links (where the providers say the run
  can be seen, e.g. a dashboard page; often empty)
- ``log``: level, logger, message (library log records)
- ``error``: message, exit_code (a usage or configuration error; nothing ran)
"""

from __future__ import annotations

import json
import logging
import sys
import textwrap
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, TextIO

from dotflow_core.cli._common import PROG, error_line
from dotflow_core.hooks.markers import hookimpl
from dotflow_core.hooks.records import (
    TaskError,
    TaskRecord,
    TaskStatus,
    WorkflowRecord,
    WorkflowStatus,
)
from dotflow_core.messages import one_line

TEXT = "text"
JSON = "json"

_TASK_EVENTS = {
    TaskStatus.IN_PROGRESS: "task_started",
    TaskStatus.RETRY: "task_retry",
    TaskStatus.COMPLETED: "task_completed",
    TaskStatus.FAILED: "task_failed",
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class Output:
    """Writes the CLI's lines to one stream (stderr), whole lines at a time, from any thread."""

    def __init__(
        self,
        log_format: str = TEXT,
        *,
        quiet: bool = False,
        tracebacks: bool = False,
        stream: TextIO | None = None,
    ):
        self.format = log_format
        self.quiet = quiet
        #: Show a failed task's traceback (``dotflow start -v``).
        self.tracebacks = tracebacks
        self._stream = stream
        self._lock = threading.Lock()

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def write_line(self, line: str) -> None:
        with self._lock:
            self.stream.write(line if line.endswith("\n") else line + "\n")
            self.stream.flush()

    def emit(self, event: str, **fields: Any) -> None:
        """One JSON object: ``event``, ``time``, then ``fields`` in the given order."""
        self.write_line(json.dumps({"event": event, "time": _now(), **fields}, default=str))

    def error(self, message: str, exit_code: int) -> None:
        """A usage or configuration error: ``dotflow: error: <message>``, or an ``error`` event."""
        if self.format == JSON:
            self.emit("error", message=one_line(message), exit_code=exit_code)
        else:
            self.write_line(error_line(message))

    def workflow_started(
        self, record: WorkflowRecord, providers: tuple[str, ...], source: str, described: str
    ) -> None:
        if self.quiet:
            return
        if self.format == JSON:
            self.emit(
                "workflow_started",
                workflow_id=record.workflow_id,
                mode=record.mode,
                task_count=record.task_count,
                providers=list(providers),
                provider_source=source,
            )
        else:
            tasks = f"{record.task_count} task{'s' if record.task_count != 1 else ''}"
            self.write_line(
                f"{PROG}: workflow {record.workflow_id} started: {tasks}, "
                f"mode {record.mode}, providers: {described}"
            )

    def task_changed(self, task: TaskRecord) -> None:
        event = _TASK_EVENTS.get(task.status)
        if self.quiet or event is None:
            return
        last = task.errors[-1] if task.errors else None
        attempt = task.retry_count + 1
        shown = self._shown_traceback(task)
        if self.format == JSON:
            error = None if last is None else {"type": last.type, "message": last.message}
            if error is not None and shown:
                error["traceback"] = shown
            self.emit(
                event,
                workflow_id=task.workflow_id,
                task_id=task.task_id,
                name=task.name,
                group=task.group_name,
                status=task.status.value,
                attempt=attempt,
                duration=task.duration,
                error=error,
            )
            return
        head = f"{PROG}: task {task.task_id} {task.name}"
        if task.status is TaskStatus.IN_PROGRESS:
            detail = "In progress" + (f" (attempt {attempt})" if attempt > 1 else "")
        elif task.status is TaskStatus.RETRY:
            detail = f"Retry: attempt {attempt - 1} failed with {_describe(last)}"
        elif task.status is TaskStatus.COMPLETED:
            detail = f"Completed in {_seconds(task.duration)}"
        else:
            attempts = len(task.errors)
            cause = f": {_describe(last)}" if last else ""
            detail = (
                f"Failed in {_seconds(task.duration)} after {attempts} "
                f"attempt{'s' if attempts != 1 else ''}{cause}"
            )
        if shown:
            detail += "\n" + textwrap.indent(shown.rstrip(), "    ")
        self.write_line(f"{head}: {detail}")

    def _shown_traceback(self, task: TaskRecord) -> str | None:
        """A failed task's last traceback, when tracebacks are asked for (``-v``)."""
        if not (self.tracebacks and task.status is TaskStatus.FAILED and task.errors):
            return None
        return task.errors[-1].traceback or None

    def summary(
        self,
        *,
        workflow_id: str,
        status: WorkflowStatus | None,
        interrupted: bool,
        mode: str,
        providers: tuple[str, ...],
        source: str,
        described: str,
        statuses: list[TaskStatus],
        duration: float | None,
        exit_code: int,
        failures: Sequence[tuple[int, str, TaskError | None]] = (),
        links: list[str] | None = None,
    ) -> None:
        """The last line: workflow, outcome, task counts, providers and total time; then
        one line per link to the run (``dotflow: see the run at URL``), if any.

        Before it (text), or in it (JSON), each failed task: id, name and the first line
        of its last error, shown even with ``-q``.
        """
        failed_tasks = [
            {"task_id": task_id, "name": name, "error": _first_line(error)}
            for task_id, name, error in failures
        ]
        completed = statuses.count(TaskStatus.COMPLETED)
        failed = statuses.count(TaskStatus.FAILED)
        not_run = statuses.count(TaskStatus.NOT_STARTED)
        unfinished = len(statuses) - completed - failed - not_run
        if self.format == JSON:
            self.emit(
                "summary",
                workflow_id=workflow_id,
                status=status.value if status else None,
                interrupted=interrupted,
                mode=mode,
                providers=list(providers),
                provider_source=source,
                task_count=len(statuses),
                completed=completed,
                failed=failed,
                not_run=not_run,
                unfinished=unfinished,
                duration=duration,
                exit_code=exit_code,
                failed_tasks=failed_tasks,
                links=list(links or ()),
            )
            return
        for task in failed_tasks:
            cause = f": {task['error']}" if task["error"] else ""
            self.write_line(f"{PROG}: failed: task {task['task_id']} {task['name']}{cause}")
        outcome = "interrupted" if interrupted else (status.value if status else "ended")
        still = f", {unfinished} unfinished" if unfinished else ""
        self.write_line(
            f"{PROG}: workflow {workflow_id} {outcome} in {_seconds(duration)}: "
            f"{completed} completed, {failed} failed, {not_run} not run{still} "
            f"of {len(statuses)} task{'s' if len(statuses) != 1 else ''}; providers: {described}"
        )
        for link in links or ():
            self.write_line(f"{PROG}: see the run at {link}")


def _first_line(error: TaskError | None) -> str | None:
    """``Type: first line of the message`` of an error, or None."""
    if error is None:
        return None
    lines = error.message.strip().splitlines()
    return f"{error.type}: {lines[0].strip()}" if lines else error.type


def _describe(error: TaskError | None) -> str:
    if error is None:
        return "an error"
    message = one_line(error.message)
    return f"{error.type}: {message}" if message else error.type


def _seconds(value: float | None) -> str:
    if value is None:
        return "? s"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


class ProgressReporter:
    """An in-process plugin that turns ``update_task`` / ``update_workflow`` into progress.

    Registered on the run's provider manager next to the real providers, so
    it sees exactly what they see, worker processes included (parallel mode).
    """

    def __init__(self, output: Output, providers: tuple[str, ...], source: str, described: str):
        self._output = output
        self._providers = providers
        self._source = source
        self._described = described

    @hookimpl
    def update_workflow(self, workflow: WorkflowRecord) -> None:
        if workflow.status is WorkflowStatus.IN_PROGRESS:
            self._output.workflow_started(workflow, self._providers, self._source, self._described)

    @hookimpl
    def update_task(self, task: TaskRecord) -> None:
        self._output.task_changed(task)


class _TextFormatter(logging.Formatter):
    """``dotflow: warning: <message>``; the traceback only when verbose."""

    def __init__(self, with_traceback: bool) -> None:
        super().__init__()
        self._with_traceback = with_traceback

    def format(self, record: logging.LogRecord) -> str:
        line = f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"
        if self._with_traceback and record.exc_info:
            line += "\n" + self.formatException(record.exc_info).rstrip()
        return line


class _JsonFormatter(logging.Formatter):
    def __init__(self, with_traceback: bool) -> None:
        super().__init__()
        self._with_traceback = with_traceback

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "event": "log",
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._with_traceback and record.exc_info:
            document["traceback"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


class _OutputHandler(logging.Handler):
    """Sends log records through :class:`Output`, so they never interleave with progress."""

    def __init__(self, output: Output) -> None:
        super().__init__()
        self._output = output

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._output.write_line(self.format(record))
        except Exception:
            self.handleError(record)


def route_library_logs(output: Output, verbosity: int) -> None:
    """Show the ``dotflow.*`` loggers on stderr through one handler.

    WARNING and up by default, INFO with ``-v``, DEBUG with ``-vv``. The
    engine's own task-failure warnings are left out below ``-vv``: the
    progress lines already show failed tasks.
    """
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = _OutputHandler(output)
    formatter = _JsonFormatter if output.format == JSON else _TextFormatter
    handler.setFormatter(formatter(with_traceback=verbosity > 0))
    handler._dotflow_cli = True  # type: ignore[attr-defined]
    library = logging.getLogger("dotflow")
    for old in [h for h in library.handlers if getattr(h, "_dotflow_cli", False)]:
        library.removeHandler(old)
    library.addHandler(handler)
    library.setLevel(level)
    library.propagate = False  # a step that configures the root logger must not double our lines
    logging.getLogger("dotflow.engine").setLevel(logging.ERROR if verbosity < 2 else logging.DEBUG)
