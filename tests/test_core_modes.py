"""Execution modes, parallel groups, keep_going and interruption."""

from __future__ import annotations

import _thread
import itertools
import os
import threading
import time
from typing import Any

import pytest

from dotflow_core import (
    ConfigurationError,
    Context,
    DotFlow,
    TaskStatus,
    WorkflowStateError,
    WorkflowStatus,
    action,
)
from dotflow_core.testing import RecordingProvider

MODES = ["sequential", "background", "parallel"]


@action
def first() -> list[str]:
    return ["first"]


@action
def second(previous_context: Context) -> list[str]:
    return [*previous_context.storage, "second"]


@action
def boom() -> None:
    raise ValueError("boom")


@action
def whoami() -> int:
    return os.getpid()


@action
def unpicklable() -> Any:
    return threading.Lock()


@action
def crash() -> None:
    os._exit(3)


def build(recorder: RecordingProvider, *groups: tuple[str, list[Any]]) -> DotFlow:
    workflow = DotFlow(providers=[recorder])
    for group_name, steps in groups:
        workflow.task.add(steps, group_name=group_name)
    return workflow


def assert_contract_order(recorder: RecordingProvider, workflow: DotFlow) -> None:
    """Per task: create first, final status last; workflow end after every task's end."""
    names = recorder.names()
    final_workflow = len(names) - 1 - names[::-1].index("update_workflow")
    for task in workflow.result_task():
        events = recorder.task_events(task.task_id)
        assert events[0].status is TaskStatus.NOT_STARTED
        if task.status is not TaskStatus.NOT_STARTED:
            assert events[-1].status is task.status and task.status.is_final
            assert [e.status for e in events[1:-1]].count(TaskStatus.COMPLETED) == 0
    last_task_event = max(
        index for index, (hook, _) in enumerate(recorder.calls) if hook == "update_task"
    )
    assert last_task_event < final_workflow
    assert names[-1] == "flush"


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_runs_every_task_and_reports_in_the_parent(
    mode: str, recorder: RecordingProvider
) -> None:
    workflow = build(recorder, ("default", [first]), ("chain", [first, second]))
    workflow.start(mode=mode)
    assert workflow.wait(timeout=30)
    assert workflow.status is WorkflowStatus.COMPLETED
    assert workflow.result_storage() == [["first"], ["first"], ["first", "second"]]
    assert_contract_order(recorder, workflow)
    assert recorder.workflow_events()[-1].mode == mode


def test_background_mode_returns_at_once_and_can_be_waited_for(
    recorder: RecordingProvider,
) -> None:
    release = threading.Event()

    @action
    def gated() -> str:
        release.wait(10)
        return "released"

    workflow = build(recorder, ("default", [gated]))
    assert workflow.start(mode="background") is workflow
    assert not workflow.done and not workflow.wait(timeout=0.05)
    release.set()
    assert workflow.wait(timeout=10) and workflow.done
    assert workflow.result_storage() == ["released"]
    assert recorder.names()[-1] == "flush"


def test_groups_run_concurrently_in_sequential_mode(recorder: RecordingProvider) -> None:
    barrier = threading.Barrier(2, timeout=10)

    @action
    def meet() -> str:
        barrier.wait()  # both groups must be running at once, or this times out
        return "met"

    workflow = build(recorder, ("a", [meet, first]), ("b", [meet]))
    workflow.start()
    assert workflow.result_storage() == ["met", ["first"], "met"]


def test_parallel_mode_runs_tasks_in_worker_processes(recorder: RecordingProvider) -> None:
    workflow = build(recorder, ("default", [whoami, whoami]), ("g", [whoami, whoami]))
    workflow.start(mode="parallel")
    pids = workflow.result_storage()
    assert os.getpid() not in pids
    assert pids[0] != pids[1]  # default-group tasks each get a process
    assert pids[2] == pids[3]  # a named group runs in one process, in order
    assert_contract_order(recorder, workflow)


def test_parallel_mode_respects_max_workers(recorder: RecordingProvider) -> None:
    workflow = build(recorder, ("default", [whoami] * 4))
    workflow.start(mode="parallel", max_workers=1)
    assert workflow.status is WorkflowStatus.COMPLETED
    spans = [(t.started_at, t.finished_at) for t in workflow.result_task()]
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start


def test_an_unpicklable_result_crosses_processes_as_its_repr(recorder: RecordingProvider) -> None:
    workflow = build(recorder, ("default", [unpicklable]))
    workflow.start(mode="parallel")
    (value,) = workflow.result_storage()
    assert workflow.result_task()[0].status is TaskStatus.COMPLETED
    assert isinstance(value, str) and "lock" in value


def test_a_worker_process_that_dies_fails_its_task(recorder: RecordingProvider) -> None:
    workflow = build(recorder, ("default", [crash, first]))
    workflow.start(mode="parallel")
    crashed, fine = workflow.result_task()
    assert crashed.status is TaskStatus.FAILED and fine.status is TaskStatus.COMPLETED
    assert crashed.errors[-1].type == "ChildProcessError"
    assert "exited with code 3" in crashed.errors[-1].message
    assert recorder.task_events(crashed.task_id)[-1].status is TaskStatus.FAILED
    assert workflow.status is WorkflowStatus.FAILED


@pytest.mark.parametrize("mode", MODES)
def test_without_keep_going_a_group_stops_at_its_first_failure(
    mode: str, recorder: RecordingProvider
) -> None:
    workflow = build(recorder, ("g", [first, boom, second]), ("h", [first]))
    workflow.start(mode=mode)
    workflow.wait(timeout=30)
    assert [task.status for task in workflow.result_task()] == [
        TaskStatus.COMPLETED,
        TaskStatus.FAILED,
        TaskStatus.NOT_STARTED,
        TaskStatus.COMPLETED,
    ]
    assert [e.status for e in recorder.task_events(3)] == [TaskStatus.NOT_STARTED]
    assert workflow.status is WorkflowStatus.FAILED


@pytest.mark.parametrize("mode", MODES)
def test_keep_going_runs_the_rest_of_the_group(mode: str, recorder: RecordingProvider) -> None:
    workflow = build(recorder, ("g", [first, boom, second]))
    workflow.start(mode=mode, keep_going=True)
    workflow.wait(timeout=30)
    statuses = [task.status for task in workflow.result_task()]
    assert statuses == [TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.FAILED]
    # the task after a failure gets the failed task's (empty) context
    assert "NoneType" in workflow.result_task()[2].errors[0].message
    assert workflow.status is WorkflowStatus.FAILED


def test_an_interrupted_run_reports_failed_flushes_and_re_raises(
    recorder: RecordingProvider,
) -> None:
    @action
    def interrupted() -> None:
        raise KeyboardInterrupt

    workflow = build(recorder, ("default", [first, interrupted, second]))
    with pytest.raises(KeyboardInterrupt):
        workflow.start()
    assert [t.status for t in workflow.result_task()] == [
        TaskStatus.COMPLETED,
        TaskStatus.FAILED,
        TaskStatus.NOT_STARTED,
    ]
    assert recorder.task_events(2)[-1].errors[-1].type == "KeyboardInterrupt"
    assert recorder.workflow_events()[-1].status is WorkflowStatus.FAILED
    assert recorder.names()[-1] == "flush"


def test_an_interrupt_while_groups_run_fails_the_running_tasks_once(
    recorder: RecordingProvider,
) -> None:
    started = threading.Event()

    @action
    def long_running() -> str:
        started.set()
        time.sleep(1.0)
        return "late"

    @action
    def interrupt_when_started() -> str:
        started.wait(10)
        _thread.interrupt_main()  # what Ctrl-C does: KeyboardInterrupt in the main thread
        return "interrupted the main thread"

    workflow = build(recorder, ("a", [long_running]), ("b", [interrupt_when_started]))
    with pytest.raises(KeyboardInterrupt):
        workflow.start()
    time.sleep(1.2)  # let the abandoned step finish: its late result must not be reported
    events = recorder.task_events(1)
    assert [e.status for e in events][-1] is TaskStatus.FAILED
    assert [e.status for e in events].count(TaskStatus.COMPLETED) == 0


def test_a_workflow_runs_once(recorder: RecordingProvider) -> None:
    workflow = build(recorder, ("default", [first]))
    workflow.start()
    with pytest.raises(WorkflowStateError, match="already started"):
        workflow.start()


def test_an_unknown_mode_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError, match="mode='turbo': expected one of sequential"):
        DotFlow(providers=[]).start(mode="turbo")


def test_dotflow_sequential_group_mode_points_to_parallel() -> None:
    with pytest.raises(ConfigurationError) as caught:
        DotFlow(providers=[]).start(mode="sequential_group")
    assert "use parallel, with group_name= on the tasks" in str(caught.value)


@pytest.mark.parametrize("value", ["no", "", None, 2, 2.5])
def test_keep_going_must_be_a_boolean(value: Any) -> None:
    with pytest.raises(ConfigurationError, match=rf"keep_going={value!r}: expected True or False"):
        DotFlow(providers=[]).start(keep_going=value)


@pytest.mark.parametrize("value", [1, 0])
def test_keep_going_takes_one_and_zero_as_booleans(value: int) -> None:
    workflow = DotFlow(providers=[])
    workflow.task.add([boom, first])
    workflow.start(keep_going=value)
    assert workflow.result_task()[1].status is (
        TaskStatus.COMPLETED if value else TaskStatus.NOT_STARTED
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("steps", "called"), [([first], "on_success"), ([boom], "on_failure")])
def test_on_success_or_on_failure_gets_the_tasks_after_the_final_status(
    recorder: RecordingProvider, mode: str, steps: list[Any], called: str
) -> None:
    calls: list[tuple[str, list[TaskStatus], list[str]]] = []

    def callback(name: str) -> Any:
        def record(tasks: list[Any]) -> None:
            calls.append((name, [task.status for task in tasks], recorder.names()))

        return record

    workflow = DotFlow(providers=[recorder])
    workflow.task.add(steps)
    workflow.start(mode=mode, on_success=callback("on_success"), on_failure=callback("on_failure"))
    workflow.wait()
    assert len(calls) == 1
    name, statuses, hooks_before = calls[0]
    assert name == called
    assert statuses == [workflow.result_task()[0].status]
    assert hooks_before[-2:] == ["update_workflow", "flush"]  # the run was reported first


class Gate:
    """A step that says it has started, then waits until the test opens the gate."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.opened = threading.Event()

        @action
        def held() -> str:
            self.started.set()
            self.opened.wait(10)
            return "late"

        self.step = held


def test_a_refused_second_start_keeps_the_first_runs_callbacks() -> None:
    called: list[str] = []
    gate = Gate()
    workflow = DotFlow(providers=[])
    workflow.task.add(gate.step)
    workflow.start(mode="background", on_success=lambda tasks: called.append("first"))
    assert gate.started.wait(10)
    with pytest.raises(WorkflowStateError):
        workflow.start(on_success=lambda tasks: called.append("second"))
    gate.opened.set()
    workflow.wait()
    assert called == ["first"]


def test_on_failure_runs_for_a_cancelled_run_before_wait_returns() -> None:
    called: list[WorkflowStatus | None] = []
    gate = Gate()
    workflow = DotFlow(providers=[])
    workflow.task.add(gate.step)
    workflow.start(mode="background", on_failure=lambda tasks: called.append(workflow.status))
    assert gate.started.wait(10)
    assert workflow.cancel(reason=TimeoutError("stopped by the caller"))
    assert called == [WorkflowStatus.FAILED]  # cancel() returns after the callback
    assert workflow.result_task()[0].errors[-1].type == "TimeoutError"
    gate.opened.set()
    workflow.wait()
    assert called == [WorkflowStatus.FAILED]


def test_a_raising_outcome_callback_is_logged_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(tasks: list[Any]) -> None:
        raise RuntimeError("callback bug")

    workflow = DotFlow(providers=[]).start(on_failure=print, on_success=broken)
    assert workflow.status is WorkflowStatus.COMPLETED
    assert any(
        message.startswith("on_success callback ")
        and message.endswith("raised RuntimeError: callback bug")
        for message in (record.getMessage() for record in caplog.records)
    )


def test_a_callback_that_is_not_callable_is_refused_before_the_run() -> None:
    workflow = DotFlow(providers=[])
    with pytest.raises(ConfigurationError, match="on_failure='log': expected a callable"):
        workflow.start(on_failure="log")
    assert not workflow.done


def test_a_workflow_without_tasks_completes(recorder: RecordingProvider) -> None:
    workflow = DotFlow(providers=[recorder]).start()
    assert workflow.status is WorkflowStatus.COMPLETED
    assert workflow.result()["tasks"] == []


def test_result_is_json_safe(recorder: RecordingProvider) -> None:
    import json

    workflow = build(recorder, ("default", [first, unpicklable, boom]))
    workflow.start(keep_going=True)
    result = json.loads(json.dumps(workflow.result(), allow_nan=False))
    assert result["status"] == "Failed" and result["workflow_id"] == workflow.workflow_id
    assert [task["status"] for task in result["tasks"]] == ["Completed", "Completed", "Failed"]
    assert result["tasks"][1]["current_context"].startswith("<unlocked _thread.lock")
    assert result["tasks"][2]["errors"][0]["type"] == "ValueError"


def test_cancel_ends_a_background_run_as_an_interrupt_would(recorder: RecordingProvider) -> None:
    gate = Gate()
    workflow = build(recorder, ("default", [first, gate.step, second]))
    assert not workflow.cancel()  # not running yet
    workflow.start(mode="background")
    assert gate.started.wait(10)
    assert workflow.cancel() and workflow.done
    assert [t.status for t in workflow.result_task()] == [
        TaskStatus.COMPLETED,
        TaskStatus.FAILED,
        TaskStatus.NOT_STARTED,
    ]
    assert workflow.status is WorkflowStatus.FAILED
    gate.opened.set()
    time.sleep(0.3)  # the step's late result is dropped: Failed stays the last event
    assert recorder.task_events(2)[-1].status is TaskStatus.FAILED
    assert recorder.task_events(3)[-1].status is TaskStatus.NOT_STARTED
    assert recorder.names()[-2:] == ["update_workflow", "flush"]
    assert recorder.names().count("update_workflow") == 2
    assert not workflow.cancel()  # already ended


def test_parallel_mode_starts_the_longest_group_first(recorder: RecordingProvider) -> None:
    # A named group is the run's critical path: started after every independent task,
    # it would run alone at the end while the other workers idle.
    workflow = build(recorder, ("default", [whoami, whoami, whoami]), ("chain", [first, second]))
    workflow.start(mode="parallel", max_workers=1)
    started = [
        record.task_id
        for record in recorder.task_events()
        if record.status is TaskStatus.IN_PROGRESS
    ]
    assert started == [4, 5, 1, 2, 3]
    assert workflow.result_storage()[-1] == ["first", "second"]
