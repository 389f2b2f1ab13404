"""Execution modes: where the groups of a workflow run.

Tasks are grouped by ``group_name``; groups run concurrently and the tasks
of a group run in order, each receiving the previous one's context.

- ``sequential``: in the calling thread (one thread per group when there are several);
- ``background``: the same, in a background thread, so ``start()`` returns at once;
- ``parallel``: in worker processes: every task of the ``default`` group in a
  process of its own, every named group in one process, at most
  ``max_workers`` processes at a time. Workers report each event to the parent
  through a pipe, so the parent's providers see the whole run.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import sys
import threading
import warnings
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from dotflow_core.engine.events import Events, PipeEvents
from dotflow_core.engine.runner import RunControl, run_group
from dotflow_core.engine.task import DEFAULT_GROUP, Task
from dotflow_core.errors import ConfigurationError
from dotflow_core.hooks.records import TaskStatus

logger = logging.getLogger("dotflow.engine")

SEQUENTIAL = "sequential"
BACKGROUND = "background"
PARALLEL = "parallel"
MODES = (SEQUENTIAL, BACKGROUND, PARALLEL)

#: Blocking waits wake up this often, so that Ctrl-C reaches the main thread promptly
#: even when the signal was delivered to another thread.
_SIGNAL_CHECK_INTERVAL = 0.1


def check_mode(mode: object) -> str:
    if mode not in MODES:
        raise ConfigurationError(f"mode={mode!r}: expected one of {', '.join(MODES)}")
    return str(mode)


def default_max_workers() -> int:
    return min(32, (os.cpu_count() or 1) + 4)


def groups_of(tasks: Sequence[Task]) -> list[list[Task]]:
    """The tasks split by ``group_name``, in order of each group's first task."""
    groups: dict[str, list[Task]] = {}
    for task in tasks:
        groups.setdefault(task.group_name, []).append(task)
    return list(groups.values())


def execute(
    mode: str,
    tasks: Sequence[Task],
    events: Events,
    control: RunControl,
    *,
    keep_going: bool,
    max_workers: int | None = None,
) -> None:
    """Run every task in the given mode; returns when all have ended (or raises on Ctrl-C)."""
    if mode == PARALLEL:
        _run_in_processes(tasks, events, control, keep_going, max_workers or default_max_workers())
    else:
        _run_in_threads(groups_of(tasks), events, control, keep_going)


def _run_in_threads(
    groups: list[list[Task]], events: Events, control: RunControl, keep_going: bool
) -> None:
    if len(groups) <= 1:
        for group in groups:
            run_group(group, events, control, keep_going=keep_going)
        return
    errors: list[BaseException] = []

    def run(group: list[Task]) -> None:
        try:
            run_group(group, events, control, keep_going=keep_going)
        except BaseException as error:
            errors.append(error)
            control.stop.set()

    threads = [
        threading.Thread(target=run, args=(group,), name=f"dotflow-group-{group[0].group_name}")
        for group in groups
    ]
    try:
        for thread in threads:
            thread.daemon = True  # so that Ctrl-C is not held up by a step that never returns
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(_SIGNAL_CHECK_INTERVAL)
    except BaseException as error:
        control.stop.set()
        control.abandon([task for group in groups for task in group], events, error)
        raise
    if errors:
        raise errors[0]


def _process_context() -> multiprocessing.context.BaseContext:
    # fork keeps steps defined anywhere (closures, __main__) runnable and starts fast;
    # macOS and Windows lack a safe fork and use spawn (steps must be importable there).
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _units(tasks: Sequence[Task]) -> list[list[Task]]:
    units: list[list[Task]] = []
    named: dict[str, list[Task]] = {}
    for task in tasks:
        if task.group_name == DEFAULT_GROUP:
            units.append([task])
        elif task.group_name in named:
            named[task.group_name].append(task)
        else:
            named[task.group_name] = [task]
            units.append(named[task.group_name])
    return units


def _worker_main(tasks: list[Task], keep_going: bool, connection: Connection) -> None:
    try:
        run_group(tasks, PipeEvents(connection), RunControl(), keep_going=keep_going)
    except KeyboardInterrupt:
        pass  # already reported as Failed; the parent decides what happens next
    finally:
        connection.close()


class _Worker:
    def __init__(self, process: Any, connection: Connection, tasks: list[Task]) -> None:
        self.process = process
        self.connection = connection
        self.tasks = tasks


def _run_in_processes(
    tasks: Sequence[Task],
    events: Events,
    control: RunControl,
    keep_going: bool,
    max_workers: int,
) -> None:
    context = _process_context()
    by_id = {task.task_id: task for task in tasks}
    waiting = deque(_units(tasks))
    running: dict[Any, _Worker] = {}  # keyed by connection and by process sentinel

    def start_next() -> None:
        unit = waiting.popleft()
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_worker_main,
            args=(unit, keep_going, sender),
            name=f"dotflow-worker-{unit[0].task_id}",
            daemon=True,
        )
        with warnings.catch_warnings():
            # Python 3.12+ warns that fork() in a threaded process may deadlock the
            # child; our workers touch no lock of the parent's threads (providers stay here).
            warnings.simplefilter("ignore", DeprecationWarning)
            process.start()
        sender.close()
        worker = _Worker(process, receiver, unit)
        running[receiver] = running[process.sentinel] = worker

    def receive(worker: _Worker) -> bool:
        """Apply one message; False once the pipe is closed."""
        try:
            record = pickle.loads(worker.connection.recv_bytes())
        except (EOFError, OSError):
            return False
        task = by_id[record.task_id]
        task.apply(record)
        control.report(task, events, record)
        return True

    def retire(worker: _Worker) -> None:
        while worker.connection.poll() and receive(worker):
            pass
        worker.process.join()
        worker.connection.close()
        running.pop(worker.connection, None)
        running.pop(worker.process.sentinel, None)
        cut_short = [
            task
            for task in worker.tasks
            if not task.status.is_final and task.status is not TaskStatus.NOT_STARTED
        ]
        if cut_short:
            reason = ChildProcessError(
                f"worker process exited with code {worker.process.exitcode} "
                f"before task {cut_short[0].task_id} ended"
            )
            control.abandon(cut_short, events, reason)

    try:
        while waiting or running:
            while waiting and len(running) // 2 < max_workers:
                start_next()
            for ready in wait(list(running), timeout=_SIGNAL_CHECK_INTERVAL):
                worker = running.get(ready)
                if worker is None:
                    continue
                if ready is worker.connection:
                    if not receive(worker):
                        retire(worker)
                else:
                    retire(worker)
    except BaseException as error:
        control.stop.set()
        for worker in {id(w): w for w in running.values()}.values():
            worker.process.join(timeout=1.0)
            while worker.connection.poll() and receive(worker):
                pass
            if worker.process.is_alive():
                worker.process.terminate()
        control.abandon(list(tasks), events, error)
        raise
