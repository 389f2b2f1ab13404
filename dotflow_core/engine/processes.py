"""The parallel mode: tasks run in worker processes that report back through pipes.

Every task of the ``default`` group runs in a process of its own and every
named group in one process, at most ``max_workers`` at a time, the longest
group first (it is the run's critical path: started last, it would run alone
at the end while the other workers idle). A worker sends
each task change to the parent as a pickled record, each value in it crossing
once (:mod:`.relay`); the parent applies it and reports it to its providers, so
they see the whole run. Imported only when a
workflow starts in this mode (``multiprocessing`` and ``pickle`` are not free
to import).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait
from typing import Any

from dotflow_core.engine.events import Events
from dotflow_core.engine.modes import SIGNAL_CHECK_INTERVAL
from dotflow_core.engine.relay import ParentRelay, WorkerRelay
from dotflow_core.engine.runner import RunControl, call_callback, run_group
from dotflow_core.engine.task import DEFAULT_GROUP, Task
from dotflow_core.hooks.records import TaskStatus


class PipeEvents(Events):
    """A worker process's events: every task change goes to the parent through a pipe."""

    def __init__(self, connection: Connection, relay: WorkerRelay) -> None:
        super().__init__(None)
        self._connection = connection
        self._relay = relay

    def listens(self, hook_name: str) -> bool:
        return hook_name == "update_task"

    def task_changed(self, task: Task) -> None:
        self._connection.send_bytes(self._relay.encode(task.snapshot()))


#: Seconds the workers of an interrupted run get, all together, to end on their own.
WORKER_GRACE = 1.0


#: Held over moments a Ctrl-C or SIGTERM must not cut in two (see below).
_INTERRUPTS = frozenset({signal.SIGINT, signal.SIGTERM})
_CAN_MASK = hasattr(signal, "pthread_sigmask")


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM over a step that must not be cut in two.

    Reading, applying and reporting a worker's message: raised in between, the
    interruption would lose it (a running task then looked never started, and was
    not reported Failed). Starting a worker: see ``start_next``. On the main thread
    only, where Python runs signal handlers; elsewhere nothing can land here.
    """
    if not _CAN_MASK or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _process_context() -> (
    multiprocessing.context.ForkContext | multiprocessing.context.SpawnContext
):
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


#: How often a worker without ``PR_SET_PDEATHSIG`` checks that its parent still lives.
PARENT_CHECK_INTERVAL = 0.5
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, looked up once in the parent; None where there is none.

    Resolved before the first fork, so that a worker does not import ``ctypes``
    and open libc again (2.5 ms of CPU per task, a third of a no-op task's cost).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


def _exit_with_parent(parent: int, prctl: Callable[..., int] | None) -> None:
    """End this worker as soon as the process that started it is gone, even by SIGKILL.

    Nobody would read its events any more, and a worker left running holds its
    resources (and its step's side effects) for nothing. On Linux the kernel does
    it (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); elsewhere a daemon thread watches
    the parent's pid.
    """
    if prctl is not None and prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
        if os.getppid() != parent:  # the parent died before the call
            os._exit(1)
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_INTERVAL)
        os._exit(1)

    threading.Thread(target=watch, name="dotflow-parent-watch", daemon=True).start()


def _worker_main(
    tasks: list[Task],
    keep_going: bool,
    connection: Connection,
    parent: int,
    prctl: Callable[..., int] | None,
) -> None:
    _exit_with_parent(parent, prctl)
    if _CAN_MASK:  # the parent held them while it forked; the mask is inherited
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _INTERRUPTS)
    try:
        # Callbacks run in the parent, after it has reported the task's end: their output
        # then follows the task's progress line, and they see the parent's task.
        control = RunControl(run_callbacks=False)
        events = PipeEvents(connection, WorkerRelay(tasks))
        run_group(tasks, events, control, keep_going=keep_going)
    except KeyboardInterrupt:
        pass  # already reported as Failed; the parent decides what happens next
    finally:
        connection.close()


class _Worker:
    def __init__(self, process: Any, connection: Connection, tasks: list[Task]) -> None:
        self.process = process
        self.connection = connection
        self.tasks = tasks
        self.relay = ParentRelay(tasks)


def run_in_processes(
    tasks: Sequence[Task],
    events: Events,
    control: RunControl,
    keep_going: bool,
    max_workers: int,
) -> None:
    """Run ``tasks`` in worker processes, at most ``max_workers`` at a time (see the module)."""
    _ProcessRun(tasks, events, control, keep_going).run(max_workers)


class _ProcessRun:
    """One parallel run: the units still waiting, the workers running, their messages."""

    def __init__(
        self, tasks: Sequence[Task], events: Events, control: RunControl, keep_going: bool
    ) -> None:
        self.tasks = tasks
        self.events = events
        self.control = control
        self.keep_going = keep_going
        self.context = _process_context()
        self.by_id = {task.task_id: task for task in tasks}
        # The longest unit first; the sort is stable, so ties keep their order.
        self.waiting = deque(sorted(_units(tasks), key=len, reverse=True))
        #: Keyed by connection and by process sentinel.
        self.running: dict[Any, _Worker] = {}

    def run(self, max_workers: int) -> None:
        try:
            while self.waiting or self.running:
                while self.waiting and len(self.running) // 2 < max_workers:
                    self.start_next()
                for ready in wait(list(self.running), timeout=SIGNAL_CHECK_INTERVAL):
                    self.handle(ready)
        except BaseException as error:
            self.interrupted(error)
            raise

    def start_next(self) -> None:
        unit = self.waiting.popleft()
        receiver, sender = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_worker_main,
            args=(unit, self.keep_going, sender, os.getpid(), _prctl()),
            name=f"dotflow-worker-{unit[0].task_id}",
            daemon=True,
        )
        # Held: raised inside fork()'s callbacks, an interrupt is printed and swallowed
        # (the run then never stops); raised before the worker is registered, the
        # worker would never be terminated.
        with _interrupts_deferred(), warnings.catch_warnings():
            # Python 3.12+ warns that fork() in a threaded process may deadlock the
            # child; our workers touch no lock of the parent's threads (providers stay here).
            warnings.simplefilter("ignore", DeprecationWarning)
            process.start()
            sender.close()
            worker = _Worker(process, receiver, unit)
            self.running[receiver] = self.running[process.sentinel] = worker

    def handle(self, ready: Any) -> None:
        """``ready`` (a worker's connection or sentinel) has something to read, or ended."""
        worker = self.running.get(ready)
        if worker is None:
            return
        if ready is not worker.connection or not self.receive(worker):
            self.retire(worker)

    def receive(self, worker: _Worker) -> bool:
        """Apply one message (and run the task's callback once it ended); False once closed."""
        with _interrupts_deferred():
            try:
                record = worker.relay.decode(worker.connection.recv_bytes())
            except (EOFError, OSError):
                return False
            task = self.by_id[record.task_id]
            task.apply(record)
            reported = self.control.report(task, self.events, record)
        if reported and record.status.is_final:
            call_callback(task)
        return True

    def drain(self, worker: _Worker) -> None:
        """Apply every message the worker sent that is still unread."""
        while worker.connection.poll() and self.receive(worker):
            pass

    def retire(self, worker: _Worker) -> None:
        self.drain(worker)
        worker.process.join()
        worker.connection.close()
        self.running.pop(worker.connection, None)
        self.running.pop(worker.process.sentinel, None)
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
            self.control.abandon(cut_short, self.events, reason)

    def interrupted(self, error: BaseException) -> None:
        """Stop every worker: one grace period for all, then terminate; report the rest."""
        self.control.stop.set()
        # One grace period for all workers (a SIGTERM reaches only this process: they
        # do not stop on their own), then whatever still runs is terminated.
        deadline = time.monotonic() + WORKER_GRACE
        for worker in {id(w): w for w in self.running.values()}.values():
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            self.drain(worker)
            if worker.process.is_alive():
                worker.process.terminate()
        self.control.abandon(list(self.tasks), self.events, error)
