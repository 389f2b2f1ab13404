"""Parallel mode on concurrent.futures executors: a real Dask LocalCluster and process pools.

The session shares one LocalCluster (2 worker processes) and one process pool;
tests that break an executor make their own.
"""

from __future__ import annotations

import _thread
import itertools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import executor_steps as steps
import pytest

from dotflow_core import ConfigurationError, DotFlow, TaskStatus, WorkflowStatus
from dotflow_core.engine.executor_specs import (
    DASK_INSTALL,
    EXECUTOR_ENV,
    check_available,
    configured_executor,
    parse_executor_spec,
)
from dotflow_core.settings import Settings
from dotflow_core.testing import RecordingProvider

EXECUTORS = ["processes", "dask"]


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> Any:
    """The session's process pool, or an executor on the session's Dask cluster."""
    if request.param == "processes":
        return request.getfixturevalue("process_pool")
    return request.getfixturevalue("dask_client").get_executor()


def run(
    executor: Any, recorder: RecordingProvider, build: Callable[[DotFlow], None], **options: Any
) -> DotFlow:
    workflow = DotFlow(providers=[recorder])
    build(workflow)
    workflow.start(mode="parallel", executor=executor, **options)
    return workflow


def statuses(recorder: RecordingProvider, task_id: int) -> list[str]:
    return [record.status.value for record in recorder.task_events(task_id)]


def test_results_contexts_and_group_order(executor: Any, recorder: RecordingProvider) -> None:
    def build(workflow: DotFlow) -> None:
        workflow.task.add([steps.echo, steps.echo], initial_context={"rows": 2})
        workflow.task.add([steps.first, steps.second, steps.echo], group_name="chain")

    workflow = run(executor, recorder, build)

    assert workflow.status is WorkflowStatus.COMPLETED
    independent_a, independent_b, head, middle, tail = workflow.result_storage()
    for value in (independent_a, independent_b):  # the default group: independent tasks
        assert value["initial"] == {"rows": 2} and value["previous"] is None
        assert value["pid"] != os.getpid()  # ran in a worker process
    assert (head, middle) == (["first"], ["first", "second"])
    assert tail["previous"] == ["first", "second"] and tail["previous_task"] == 4
    chain = workflow.result_task()[2:]
    for before, after in itertools.pairwise(chain):
        assert before.finished_at <= after.started_at  # a named group runs in order
    assert workflow.result_context()[3].task_id == 4
    assert recorder.names()[-1] == "flush"


def test_retries_report_their_events_in_the_driver(
    executor: Any, recorder: RecordingProvider, tmp_path: Path
) -> None:
    counter = tmp_path / "attempts"
    workflow = run(
        executor, recorder, lambda w: w.task.add(steps.flaky, initial_context=str(counter))
    )

    (task,) = workflow.result_task()
    assert task.status is TaskStatus.COMPLETED and task.current_context.storage == 3
    assert statuses(recorder, 1) == [
        "Not started", "In progress", "Retry", "In progress", "Retry", "In progress", "Completed",
    ]  # fmt: skip
    assert task.retry_count == 2
    assert [(e.attempt, e.type) for e in task.errors] == [
        (1, "ConnectionError"),
        (2, "ConnectionError"),
    ]
    assert "attempt 1 failed on purpose" in task.errors[0].message
    assert "executor_steps.py" in task.errors[0].traceback  # the worker's traceback


def test_an_attempt_past_its_timeout_fails_and_the_run_goes_on(
    executor: Any, recorder: RecordingProvider
) -> None:
    workflow = run(executor, recorder, lambda w: w.task.add([steps.sleeps_past_its_timeout]))

    (task,) = workflow.result_task()
    assert task.status is TaskStatus.FAILED
    assert task.errors[-1].type == "StepTimeoutError"
    assert "within its timeout of 0.5 s" in task.errors[-1].message
    assert statuses(recorder, 1)[-1] == "Failed"
    assert workflow.status is WorkflowStatus.FAILED


def test_a_raising_step_fails_its_task_and_stops_its_group(
    executor: Any, recorder: RecordingProvider
) -> None:
    def build(workflow: DotFlow) -> None:
        workflow.task.add([steps.first, steps.boom, steps.second], group_name="g")
        workflow.task.add(steps.first)

    workflow = run(executor, recorder, build)

    assert [t.status for t in workflow.result_task()] == [
        TaskStatus.COMPLETED,
        TaskStatus.FAILED,
        TaskStatus.NOT_STARTED,
        TaskStatus.COMPLETED,
    ]
    error = workflow.result_task()[1].errors[-1]
    assert (error.type, error.message) == ("ValueError", "boom on purpose")


def test_keep_going_hands_the_failed_tasks_empty_context_on(
    executor: Any, recorder: RecordingProvider
) -> None:
    workflow = run(
        executor,
        recorder,
        lambda w: w.task.add([steps.boom, steps.echo], group_name="g"),
        keep_going=True,
    )
    assert workflow.result_task()[1].status is TaskStatus.COMPLETED
    assert workflow.result_storage()[1]["previous"] is None


def test_an_unpicklable_value_fails_its_task_naming_the_step_and_the_type(
    executor: Any, recorder: RecordingProvider
) -> None:
    workflow = run(executor, recorder, lambda w: w.task.add([steps.lock, steps.first]))

    unsendable, fine = workflow.result_task()
    assert fine.status is TaskStatus.COMPLETED
    assert unsendable.status is TaskStatus.FAILED
    error = unsendable.errors[-1]
    assert error.type == "UnsendableValueError"
    assert "step 'executor_steps.lock' returned a _thread.lock" in error.message
    assert "cannot be sent back to the driver" in error.message


def test_an_unpicklable_initial_context_fails_before_it_is_sent(
    executor: Any, recorder: RecordingProvider
) -> None:
    workflow = run(
        executor, recorder, lambda w: w.task.add(steps.echo, initial_context=threading.Lock())
    )
    (task,) = workflow.result_task()
    assert task.status is TaskStatus.FAILED
    assert task.errors[-1].message.startswith(
        "the initial_context of task 1 (step 'executor_steps.echo') is a _thread.lock"
    )


def test_a_worker_killed_mid_task_fails_the_task_and_the_run_ends(
    recorder: RecordingProvider,
) -> None:
    with ProcessPoolExecutor(max_workers=1) as pool:  # a dead worker breaks a pool for good
        workflow = run(pool, recorder, lambda w: w.task.add(steps.killed))
    (task,) = workflow.result_task()
    assert task.status is TaskStatus.FAILED
    assert task.errors[-1].type == "BrokenProcessPool"
    assert workflow.status is WorkflowStatus.FAILED and recorder.names()[-1] == "flush"


def test_a_dask_worker_killed_mid_task_fails_the_task_and_the_run_ends(
    dask_client: Any, recorder: RecordingProvider
) -> None:
    workflow = run(
        dask_client.get_executor(), recorder, lambda w: w.task.add([steps.killed, steps.first])
    )
    killed, fine = workflow.result_task()
    assert killed.status is TaskStatus.FAILED and killed.errors[-1].type == "KilledWorker"
    assert fine.status is TaskStatus.COMPLETED  # the nanny restarted the worker
    assert recorder.task_events(1)[-1].status is TaskStatus.FAILED
    assert workflow.status is WorkflowStatus.FAILED


def test_ctrl_c_cancels_reports_the_running_task_failed_and_flushes(
    executor: Any, recorder: RecordingProvider, tmp_path: Path
) -> None:
    def interrupt_once_started() -> None:
        deadline = time.monotonic() + 30
        while not (tmp_path / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        _thread.interrupt_main()  # what Ctrl-C does: KeyboardInterrupt in the main thread

    def build(workflow: DotFlow) -> None:
        workflow.task.add([steps.held, steps.first], initial_context=str(tmp_path), group_name="g")

    interrupter = threading.Thread(target=interrupt_once_started)
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run(executor, recorder, build)
    finally:
        interrupter.join()
        (tmp_path / "release").write_text("")  # frees the shared worker
    assert statuses(recorder, 1)[-1] == "Failed"
    assert recorder.task_events(1)[-1].errors[-1].type == "KeyboardInterrupt"
    assert statuses(recorder, 2) == ["Not started"]
    assert recorder.workflow_events()[-1].status is WorkflowStatus.FAILED
    assert recorder.names()[-2:] == ["update_workflow", "flush"]
    time.sleep(0.3)  # the released attempt's late result must not be reported
    assert statuses(recorder, 1)[-1] == "Failed"


def comparable(recorder: RecordingProvider, task_id: int) -> list[tuple[Any, ...]]:
    """A task's events without what differs from run to run (times, pids, tracebacks)."""
    return [
        (
            hook,
            record.status,
            record.retry_count,
            tuple((e.attempt, e.type, e.message) for e in record.errors),
            record.previous_context,
            record.current_context,
            record.started_at is None,
            record.finished_at is None,
        )
        for hook, record in recorder.calls
        if hook in ("create_task", "update_task") and record.task_id == task_id
    ]


@pytest.mark.parametrize("kind", [*EXECUTORS, "threads"])
def test_providers_receive_the_same_events_as_in_sequential_mode(
    request: pytest.FixtureRequest, kind: str, tmp_path: Path
) -> None:
    def build(workflow: DotFlow, counter: Path) -> DotFlow:
        workflow.task.add([steps.first, steps.second, steps.boom, steps.second], group_name="g")
        workflow.task.add(steps.flaky, initial_context=str(counter))
        workflow.task.add([steps.first, steps.second], group_name="chain")
        return workflow

    sequential = RecordingProvider()
    build(DotFlow(providers=[sequential]), tmp_path / "sequential").start()

    if kind == "threads":
        pool: Any = ThreadPoolExecutor(max_workers=2)
    elif kind == "processes":
        pool = request.getfixturevalue("process_pool")
    else:
        pool = request.getfixturevalue("dask_client").get_executor()
    on_executor = RecordingProvider()
    workflow = build(DotFlow(providers=[on_executor]), tmp_path / "executor")
    workflow.start(mode="parallel", executor=pool)

    for task in workflow.result_task():
        assert comparable(on_executor, task.task_id) == comparable(sequential, task.task_id)
    for recorder in (sequential, on_executor):
        names = recorder.names()
        assert names[:2] == ["configure", "create_workflow"]
        assert names[-2:] == ["update_workflow", "flush"]

    def outcome(recorder: RecordingProvider) -> list[tuple[Any, ...]]:
        return [(w.status, w.completed_count, w.failed_count) for w in recorder.workflow_events()]

    assert outcome(on_executor) == outcome(sequential)
    assert [t.status for t in workflow.result_task()].count(TaskStatus.NOT_STARTED) == 1


class _CountingPool(ThreadPoolExecutor):
    """A one-thread pool that counts the attempts handed to it and not yet ended."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.outstanding = 0
        self.most_outstanding = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.outstanding += 1
            self.most_outstanding = max(self.most_outstanding, self.outstanding)
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._ended)
        return future

    def _ended(self, _future: Any) -> None:
        with self._lock:
            self.outstanding -= 1


def test_a_named_group_goes_first_and_a_pool_holds_one_attempt_more_than_its_workers() -> None:
    # The chain is the run's critical path: queued behind every independent task it
    # would run alone at the end, on one worker, while the others idle.
    recorder = RecordingProvider()
    workflow = DotFlow(providers=[recorder])
    workflow.task.add([steps.echo] * 6)
    workflow.task.add([steps.first, steps.second], group_name="chain")
    with _CountingPool() as pool:
        workflow.start(mode="parallel", executor=pool)
    started = [
        record.task_id
        for record in recorder.task_events()
        if record.status is TaskStatus.IN_PROGRESS
    ]
    assert started[0] == 7  # the chain's first task, added after the six independent ones
    assert pool.most_outstanding == 2  # one worker, one attempt queued behind it
    assert workflow.result_storage()[-1] == ["first", "second"]


def test_dask_receives_the_tasks_left_in_a_chain_as_each_attempts_priority(
    dask_client: Any,
) -> None:
    seen: list[int] = []

    class Spy:
        __module__ = "distributed.spy"  # told apart as Dask's executor by its module

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            seen.append(kwargs["priority"])
            return self.inner.submit(fn, *args, **kwargs)

    workflow = DotFlow(providers=[])
    workflow.task.add(steps.echo)
    workflow.task.add([steps.first, steps.second], group_name="chain")
    workflow.start(mode="parallel", executor=Spy(dask_client.get_executor()))
    assert sorted(seen) == [1, 1, 2]  # the independent task and the chain's last, its first
    assert workflow.result_storage()[-1] == ["first", "second"]


def test_attempts_ready_together_go_to_dask_in_one_map_per_priority(
    dask_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, int]] = []
    original = dask_client.map

    def spy(function: Callable[..., Any], *iterables: Any, **options: Any) -> Any:
        calls.append((options["priority"], len(options["key"])))
        return original(function, *iterables, **options)

    monkeypatch.setattr(dask_client, "map", spy)
    recorder = RecordingProvider()
    workflow = DotFlow(providers=[recorder])
    workflow.task.add([steps.echo] * 3, initial_context={"rows": 1})
    workflow.task.add([steps.first, steps.second], group_name="chain")
    workflow.start(mode="parallel", executor=dask_client.get_executor())
    # At the start: the three independent tasks (1 left each) and the chain's first (2 left);
    # then the chain's second, once the first has ended.
    assert calls == [(2, 1), (1, 3), (1, 1)]
    values = workflow.result_storage()
    assert [value["initial"] for value in values[:3]] == [{"rows": 1}] * 3
    assert values[3:] == [["first"], ["first", "second"]]
    for task in workflow.result_task():
        assert statuses(recorder, task.task_id) == ["Not started", "In progress", "Completed"]


def test_executor_is_for_parallel_mode_and_must_have_submit() -> None:
    with pytest.raises(ConfigurationError, match=r"mode='parallel' only, not mode='sequential'"):
        DotFlow(providers=[]).start(executor=ThreadPoolExecutor())
    with pytest.raises(ConfigurationError, match=r"executor=42: expected a concurrent.futures"):
        DotFlow(providers=[]).start(mode="parallel", executor=42)
    with pytest.raises(ConfigurationError, match=r"executor='turbo': expected dask://HOST:PORT"):
        DotFlow(providers=[]).start(mode="parallel", executor="turbo")


def test_a_spec_string_makes_an_executor_for_the_run(recorder: RecordingProvider) -> None:
    workflow = run("threads:2", recorder, lambda w: w.task.add([steps.first, steps.lock]))
    assert workflow.status is WorkflowStatus.COMPLETED  # threads share memory: nothing pickled
    assert type(workflow.result_storage()[1]).__name__ == "lock"


@pytest.mark.parametrize(
    ("text", "kind", "address", "workers"),
    [
        ("dask://scheduler.internal:8786", "dask-remote", "tcp://scheduler.internal:8786", None),
        ("dask", "dask", None, None),
        ("dask:3", "dask", None, 3),
        (" processes:4 ", "processes", None, 4),
        ("threads", "threads", None, None),
    ],
)
def test_specs_parse(text: str, kind: str, address: str | None, workers: int | None) -> None:
    spec = parse_executor_spec(text, "--executor")
    assert (spec.kind, spec.address, spec.workers) == (kind, address, workers)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dask://host", "expected dask://HOST:PORT with a port from 1 to 65535"),
        ("dask://:8786", "expected dask://HOST:PORT"),
        ("dask://host:99999", "expected dask://HOST:PORT"),
        ("processes:0", "the worker count after ':' must be an integer >= 1, e.g. processes:4"),
        ("threads:", "must be an integer >= 1"),
        ("spark://host:7077", "expected dask://HOST:PORT, dask[:WORKERS], processes[:WORKERS]"),
        ("", "expected dask://HOST:PORT"),
    ],
)
def test_bad_specs_say_what_is_valid(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_executor_spec(text, "--executor")
    assert str(caught.value).startswith(f"--executor={text!r}: ")
    assert message in str(caught.value)


def test_the_flag_beats_the_environment_which_beats_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "dotflow.toml"
    config.write_text('executor = "threads:3"\n')
    from_file = Settings.load(tmp_path, environ={})
    assert configured_executor(from_file).text == "threads:3"
    with_env = Settings.load(tmp_path, environ={EXECUTOR_ENV: "processes"})
    assert configured_executor(with_env).text == "processes"
    assert configured_executor(with_env, "dask").text == "dask"
    assert configured_executor(Settings(config={}, environ={})) is None
    config.write_text("executor = 3\n")
    with pytest.raises(ConfigurationError, match=rf"executor of {config}=3: expected dask://"):
        configured_executor(Settings.load(tmp_path, environ={}))


def test_dask_without_distributed_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # find_spec then finds nothing
    with pytest.raises(ConfigurationError) as caught:
        check_available(parse_executor_spec("dask://127.0.0.1:8786", EXECUTOR_ENV))
    assert str(caught.value) == (
        f"DOTFLOW_EXECUTOR='dask://127.0.0.1:8786' needs Dask, which is not installed: "
        f"{DASK_INSTALL}"
    )
    check_available(parse_executor_spec("processes", EXECUTOR_ENV))  # no Dask needed
