"""Parallel mode on a ``concurrent.futures`` executor: the lifecycle stays in the driver.

``start(mode="parallel", executor=...)`` hands every *attempt* of a task to
the executor (a process or thread pool, ``distributed.Client(...).get_executor()``,
anything with ``submit``) and keeps everything else here, in the process that
started the workflow: ``In progress`` when an attempt is submitted, ``Retry``
(after ``retry_delay``, doubled with ``backoff``) when it failed and another
follows, ``Completed``/``Failed`` at the end, each reported to the driver's
providers. The ``default`` group's tasks are independent; a named group's
tasks run in order, each submitted when the one before it has ended, with its
value.

The longest work goes first: an attempt's priority is the number of tasks left
in its chain (itself included), so a named group's next task jumps the queue of
independent ones instead of waiting behind all of them (the chain is the run's
critical path). Dask takes the priority with each submission (through its
client, in batches: :mod:`.dask_batches`, and :data:`GATHER_WINDOW`); process and
thread pools queue in submission order, so the driver keeps at most one attempt
more than their workers in flight and submits the highest priority first.

Timeouts are the driver's: an attempt past its ``timeout`` fails with
``StepTimeoutError`` and its future is cancelled. The clock starts when the
future reports running (process and thread pools); Dask's futures do not
report it, so there it starts on submission. A running attempt cannot always be
stopped: see docs/guide.md, "Running on a cluster".
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from dotflow_core.engine.context import Context, utc_now
from dotflow_core.engine.dask_batches import CANCELLED, DaskBatches, is_dask
from dotflow_core.engine.events import Events
from dotflow_core.engine.modes import SIGNAL_CHECK_INTERVAL
from dotflow_core.engine.remote import (
    CLOUDPICKLE,
    PICKLE,
    UNSENDABLE_VALUE,
    Outcome,
    describe_type,
    dumps,
    loads_value,
    run_attempt,
    step_for_transport,
)
from dotflow_core.engine.runner import RunControl, finish_task
from dotflow_core.engine.task import DEFAULT_GROUP, Task
from dotflow_core.errors import StepTimeoutError
from dotflow_core.hooks.records import TaskError, TaskStatus

logger = logging.getLogger("dotflow.engine")

#: On Dask, the values of attempts that end within this many seconds of each other are
#: fetched in one gather, unless a chain's next task waits for one of them or nothing
#: else is in flight: one request per value would cost the scheduler, and the worker
#: busy with its next task, more than the task's own scheduling.
GATHER_WINDOW = 0.05


def serializer_for(executor: object) -> str | None:
    """How values cross: not at all in a thread pool, cloudpickle on Dask, else pickle."""
    if isinstance(executor, ThreadPoolExecutor):
        return None
    return CLOUDPICKLE if is_dask(executor) else PICKLE


def bound_for(executor: object) -> int | None:
    """Attempts in flight that keep a pool's workers busy (None: no bound, see the module)."""
    if isinstance(executor, (ThreadPoolExecutor, ProcessPoolExecutor)):
        workers = getattr(executor, "_max_workers", None)  # both pools keep it there
        if isinstance(workers, int) and workers > 0:
            return workers + 1
    return None


def chains_of(tasks: Sequence[Task]) -> list[list[Task]]:
    """What runs independently: each task of the ``default`` group, each named group."""
    chains: list[list[Task]] = []
    named: dict[str, list[Task]] = {}
    for task in tasks:
        if task.group_name == DEFAULT_GROUP:
            chains.append([task])
        elif task.group_name not in named:
            named[task.group_name] = [task]
            chains.append(named[task.group_name])
        else:
            named[task.group_name].append(task)
    return chains


class _TaskRun:
    """One task on its way through the executor: its chain, attempts and clocks."""

    def __init__(self, chain: list[Task], index: int) -> None:
        self.chain = chain
        self.index = index
        self.task = chain[index]
        self.attempt = 0
        self.delay = self.task.step.retry_delay
        self.clock = time.perf_counter()
        self.transported: Any = None
        self.future: Future[Outcome] | None = None
        self.submitted = 0.0
        self.running_since: float | None = None
        #: The tasks left in the chain, this one included: the longest work goes first.
        self.priority = len(chain) - index


class ExecutorRun:
    """Runs the tasks of one workflow on an executor; see the module docstring.

    :param max_in_flight: most attempts submitted and not ended at a time (None: one more
        than a process or thread pool's workers; no limit on other executors, which queue them).
    """

    def __init__(
        self,
        executor: Any,
        tasks: Sequence[Task],
        events: Events,
        control: RunControl,
        *,
        keep_going: bool,
        max_in_flight: int | None = None,
    ) -> None:
        self.executor = executor
        self.tasks = tasks
        self.events = events
        self.control = control
        self.keep_going = keep_going
        self.max_in_flight = max_in_flight if max_in_flight is not None else bound_for(executor)
        self.serializer = serializer_for(executor)
        self.dask = is_dask(executor)
        #: Dask's own executor: attempts submitted, and values fetched, in batches.
        self.batches = DaskBatches.of(executor)
        # Pools mark a future running when a worker takes it; Dask's never do.
        self.reports_running = isinstance(executor, (ThreadPoolExecutor, ProcessPoolExecutor))
        self.ended: queue.SimpleQueue[Future[Outcome]] = queue.SimpleQueue()
        self.in_flight: dict[Future[Outcome], _TaskRun] = {}
        #: Attempts to submit, highest priority first (then in the order they became ready).
        self.ready: list[tuple[int, int, _TaskRun]] = []
        self.retries: list[tuple[float, int, _TaskRun]] = []
        #: Attempts ended and not yet fetched, and since when (Dask, see GATHER_WINDOW).
        self.held: list[tuple[Future[Outcome], _TaskRun]] = []
        self.held_since: float | None = None
        self._order = itertools.count()

    def run(self) -> None:
        """Returns when every task has ended; on Ctrl-C cancels, reports and re-raises."""
        try:
            for chain in chains_of(self.tasks):
                self._begin(chain, 0, Context(workflow_id=chain[0].workflow_id))
            while self.in_flight or self.ready or self.retries or self.held:
                if self.control.stop.is_set():  # cancelled: its tasks were reported Failed
                    self._cancel_in_flight()
                    return
                self._submit_ready()
                self._wait_for_events()
        except BaseException as error:
            self.control.stop.set()
            self._cancel_in_flight()
            self.control.abandon(list(self.tasks), self.events, error)
            raise

    def _cancel_in_flight(self) -> None:
        # A queued attempt never runs; a running one's result is dropped.
        if self.batches is not None:
            self.batches.cancel(list(self.in_flight))
        else:
            for future in self.in_flight:
                future.cancel()
        self.in_flight.clear()

    # -- a task's lifecycle -------------------------------------------------------------

    def _begin(self, chain: list[Task], index: int, previous: Context) -> None:
        if self.control.stop.is_set():
            return
        run = _TaskRun(chain, index)
        run.task.previous_context = previous
        run.task.started_at = utc_now()
        run.clock = time.perf_counter()
        self._make_ready(run)

    def _make_ready(self, run: _TaskRun) -> None:
        heapq.heappush(self.ready, (-run.priority, next(self._order), run))

    def _submit_ready(self) -> None:
        prepared: list[tuple[_TaskRun, Any]] = []
        while self.ready and (
            self.max_in_flight is None or len(self.in_flight) + len(prepared) < self.max_in_flight
        ):
            run = heapq.heappop(self.ready)[2]
            payload = self._prepare(run)
            if payload is not None:
                prepared.append((run, payload))
        if self.batches is not None and prepared:
            self._submit_batch(prepared, self.batches)
        else:
            for run, payload in prepared:
                self._submit_one(run, payload)

    def _prepare(self, run: _TaskRun) -> Any:
        """Report the attempt ``In progress`` and pack it; None when it goes no further."""
        run.attempt += 1
        if not self.control.advance(run.task, TaskStatus.IN_PROGRESS, self.events):
            return None
        try:
            return self._payload(run)
        except _Unsendable as problem:
            self._end(run, TaskStatus.FAILED, failure=problem.error(run.attempt))
            return None

    def _submit_one(self, run: _TaskRun, payload: Any) -> None:
        try:
            future = self._submitter(run)(run_attempt, payload, run.attempt, self.serializer)
        except Exception as error:  # shut down or broken: no later attempt would fare better
            self._end(run, TaskStatus.FAILED, failure=TaskError.from_exception(error, run.attempt))
            return
        self._track(run, future)

    def _submit_batch(self, prepared: list[tuple[_TaskRun, Any]], batches: DaskBatches) -> None:
        attempts = [(_dask_key(run), run.priority, data, run.attempt) for run, data in prepared]
        try:
            futures = batches.submit(attempts, self.serializer)
        except Exception as error:  # shut down or broken: no later attempt would fare better
            for run, _ in prepared:
                failure = TaskError.from_exception(error, run.attempt)
                self._end(run, TaskStatus.FAILED, failure=failure)
            return
        for (run, _), future in zip(prepared, futures, strict=True):
            self._track(run, future)

    def _track(self, run: _TaskRun, future: Any) -> None:
        run.future = future
        run.submitted = time.monotonic()
        run.running_since = None
        self.in_flight[future] = run
        future.add_done_callback(self.ended.put)

    def _submitter(self, run: _TaskRun) -> Callable[..., Future[Outcome]]:
        if not self.dask:
            return self.executor.submit
        key = _dask_key(run)

        def submit(function: Callable[..., Any], *args: Any) -> Future[Outcome]:
            future: Future[Outcome] = self.executor.submit(
                function, *args, key=key, pure=False, priority=run.priority
            )
            return future

        return submit

    def _payload(self, run: _TaskRun) -> Any:
        task = run.task
        if run.transported is None:
            run.transported = (
                task.step
                if self.serializer is None
                else step_for_transport(task.step, self.serializer)
            )
        parts = (run.transported, task.initial_context, task.previous_context)
        payload = (*parts, task.task_id, task.workflow_id)
        if self.serializer is None:
            return payload
        try:
            return dumps(payload, self.serializer)
        except Exception as error:
            raise _Unsendable.find(task, parts, self.serializer, error) from None

    def _wait_for_events(self) -> None:
        now = time.monotonic()
        wake = now + SIGNAL_CHECK_INTERVAL
        if self.retries:
            wake = min(wake, self.retries[0][0])
        for deadline in self._deadlines():
            wake = min(wake, deadline)
        if self.held_since is not None:
            wake = min(wake, self.held_since + GATHER_WINDOW)
        ended: list[Future[Outcome]] = []
        try:
            ended.append(self.ended.get(timeout=max(0.0, wake - now)))
            while True:
                ended.append(self.ended.get_nowait())
        except queue.Empty:
            pass
        # An attempt cancelled after its timeout, or by an interrupt, is no longer in flight.
        self.held += [(f, run) for f in ended if (run := self.in_flight.pop(f, None))]
        if self.held and self.held_since is None:
            self.held_since = time.monotonic()
        if self.held and self._fetch_now():
            held, self.held, self.held_since = self.held, [], None
            for (_, run), result in zip(held, self._resolve([f for f, _ in held]), strict=True):
                self._attempt_ended(run, result)
        self._retry_due()
        self._time_out_overdue()

    def _fetch_now(self) -> bool:
        """Whether to fetch the ended attempts' values now (see :data:`GATHER_WINDOW`)."""
        if self.batches is None or not self.in_flight:
            return True
        if any(run.index + 1 < len(run.chain) for _, run in self.held):
            return True  # a chain's next task waits for this value
        assert self.held_since is not None
        return time.monotonic() >= self.held_since + GATHER_WINDOW

    def _resolve(self, futures: list[Future[Outcome]]) -> list[Outcome | BaseException]:
        """What each ended attempt brought back, or the executor's error."""
        if self.batches is not None:
            return self.batches.resolve(futures)
        return [_resolve_one(future) for future in futures]

    def _attempt_ended(self, run: _TaskRun, result: Outcome | BaseException) -> None:
        if isinstance(result, BaseException):  # the executor's: a worker died, a broken pool
            self._attempt_failed(run, TaskError.from_exception(result, run.attempt))
            return
        if result.failure is not None:
            self._attempt_failed(run, result.failure)
            return
        try:
            value = loads_value(result, self.serializer)
        except Exception as error:
            failure = TaskError(
                attempt=run.attempt,
                type=UNSENDABLE_VALUE,
                message=(
                    f"the value of step {run.task.name!r} cannot be loaded in the driver "
                    f"({type(error).__name__}: {error}); install the modules it needs here too"
                ),
                traceback="",
            )
            self._attempt_failed(run, failure)
            return
        self._end(run, TaskStatus.COMPLETED, value=value)

    def _attempt_failed(self, run: _TaskRun, failure: TaskError) -> None:
        action = run.task.step
        if run.attempt >= action.retry or self.control.stop.is_set():
            self._end(run, TaskStatus.FAILED, failure=failure)
            return
        logger.info(
            "task %s (%s) attempt %d failed (%s: %s); retrying in %.3g s",
            run.task.task_id, run.task.name, run.attempt, failure.type, failure.message,
            run.delay,
        )  # fmt: skip
        if not self.control.advance(run.task, TaskStatus.RETRY, self.events, failure=failure):
            return
        heapq.heappush(self.retries, (time.monotonic() + run.delay, next(self._order), run))
        if action.backoff:
            run.delay *= 2

    def _retry_due(self) -> None:
        now = time.monotonic()
        while self.retries and self.retries[0][0] <= now:
            _, _, run = heapq.heappop(self.retries)
            if self.control.stop.is_set():  # the workflow stops: no further attempt
                self._end(run, TaskStatus.FAILED)
            else:
                self._make_ready(run)

    def _deadlines(self) -> list[float]:
        """When each timed attempt in flight runs out (its clock started, see the module)."""
        deadlines = []
        for future, run in self.in_flight.items():
            if not run.task.step.timeout:
                continue
            if run.running_since is None and self.reports_running and future.running():
                run.running_since = time.monotonic()
            deadlines.append(_deadline(run, self.reports_running))
        return deadlines

    def _time_out_overdue(self) -> None:
        now = time.monotonic()
        overdue = [
            (future, run)
            for future, run in self.in_flight.items()
            if run.task.step.timeout and _deadline(run, self.reports_running) <= now
        ]
        for future, run in overdue:
            del self.in_flight[future]
            future.cancel()  # a running attempt may go on; its result is dropped
            action = run.task.step
            error = StepTimeoutError(
                f"step {action.name!r} did not finish within its timeout of {action.timeout:g} s"
            )
            self._attempt_failed(run, TaskError.from_exception(error, run.attempt))

    def _end(
        self,
        run: _TaskRun,
        status: TaskStatus,
        *,
        value: Any = None,
        failure: TaskError | None = None,
    ) -> None:
        task = run.task
        finish_task(
            task, status, run.clock, self.events, self.control, value=value, failure=failure
        )
        following = run.index + 1
        if following < len(run.chain) and (status is TaskStatus.COMPLETED or self.keep_going):
            self._begin(run.chain, following, task.current_context)


def _dask_key(run: _TaskRun) -> str:
    """A key of its own for every attempt: Dask would otherwise hash the arguments
    (costly for big contexts) and hand a retry the failed attempt's result."""
    return f"{run.task.name}-task{run.task.task_id}-{run.attempt}-{uuid.uuid4().hex[:8]}"


def _resolve_one(future: Future[Outcome]) -> Outcome | BaseException:
    if future.cancelled():
        return RuntimeError(CANCELLED)
    error = future.exception()
    return error if error is not None else future.result()


def _deadline(run: _TaskRun, reports_running: bool) -> float:
    if run.running_since is not None:
        return run.running_since + run.task.step.timeout
    return float("inf") if reports_running else run.submitted + run.task.step.timeout


class _Unsendable(Exception):
    """A task's step or contexts cannot be pickled for the executor."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def error(self, attempt: int) -> TaskError:
        return TaskError(attempt=attempt, type=UNSENDABLE_VALUE, message=self.message, traceback="")

    @classmethod
    def find(
        cls, task: Task, parts: tuple[Any, Context, Context], serializer: str, error: Exception
    ) -> _Unsendable:
        """Name the part that does not pickle: the step, or which context (and its type)."""
        _, initial, previous = parts
        for label, value in (
            ("initial_context", initial.storage),
            ("previous_context", previous.storage),
        ):
            try:
                dumps(value, serializer)
            except Exception as own_error:
                return cls(
                    f"the {label} of task {task.task_id} (step {task.name!r}) is a "
                    f"{describe_type(value)} that cannot be sent to the executor "
                    f"({type(own_error).__name__}: {own_error})"
                )
        where = "a module the workers can import"
        return cls(
            f"step {task.name!r} cannot be sent to the executor ({type(error).__name__}: "
            f"{error}); define it at the top level of {where}"
        )


def run_on_executor(
    executor: Any,
    tasks: Sequence[Task],
    events: Events,
    control: RunControl,
    keep_going: bool,
    max_in_flight: int | None = None,
) -> None:
    """Run every task on ``executor`` (see the module docstring); returns when all have ended.

    :param executor: an executor, or a spec string (:mod:`.executor_specs`): the executor
        it names is created for this run and closed after it.
    """
    if isinstance(executor, str):
        from dotflow_core.engine.executor_specs import OwnedExecutor, parse_executor_spec

        with OwnedExecutor.open(parse_executor_spec(executor, "executor")) as owned:
            run_on_executor(owned.executor, tasks, events, control, keep_going, max_in_flight)
        return
    ExecutorRun(
        executor, tasks, events, control, keep_going=keep_going, max_in_flight=max_in_flight
    ).run()


__all__ = ["ExecutorRun", "chains_of", "is_dask", "run_on_executor", "serializer_for"]
