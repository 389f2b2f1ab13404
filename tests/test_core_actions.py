"""Steps: @action on functions and classes, contexts, retries, backoff, timeouts, callbacks."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

import pytest

from dotflow_core import (
    Action,
    Context,
    DotFlow,
    InvalidStepError,
    StepTimeoutError,
    TaskStatus,
    WorkflowStatus,
    action,
)
from dotflow_core.engine import runner
from dotflow_core.engine import workflow as workflow_module
from dotflow_core.testing import RecordingProvider


@action
def add_one(initial_context: Context) -> int:
    return initial_context.storage + 1


@action
def double(previous_context: Context) -> int:
    return previous_context.storage * 2


@action
def both(initial_context: Context, previous_context: Context) -> tuple[Any, Any]:
    return initial_context.storage, previous_context.storage


@action
def takes_kwargs(**contexts: Context) -> list[str]:
    return sorted(contexts)


@action
async def async_step(initial_context: Context) -> str:
    await asyncio.sleep(0)
    return f"async {initial_context.storage}"


@action
class Pipeline:
    """Runs its @action methods in definition order, not alphabetical."""

    def __init__(self, initial_context: Context) -> None:
        self.base = initial_context.storage

    @action
    def zeta_extract(self) -> list[int]:
        return [self.base, self.base + 1]

    def helper(self) -> None:  # not an action: never run
        raise AssertionError("helper must not run")

    @action
    def alpha_transform(self, previous_context: Context) -> list[int]:
        return [value * 10 for value in previous_context.storage]

    @action
    async def load(self, previous_context: Context) -> int:
        return sum(previous_context.storage)


@action
class Plain:
    """An @action class without @action methods: the instance is the value."""

    def __init__(self) -> None:
        self.ready = True


def run(*steps: Any, initial_context: Any = None, **start: Any) -> DotFlow:
    workflow = DotFlow(providers=[])
    workflow.task.add(list(steps), initial_context=initial_context)
    workflow.start(**start)
    return workflow


def test_calling_an_action_calls_the_function_unchanged() -> None:
    assert isinstance(add_one, Action)
    assert add_one(Context(1)) == 2
    assert add_one.__name__ == "add_one" and add_one.__doc__ is None
    assert add_one.name == f"{__name__}.add_one"


def test_steps_receive_the_contexts_their_signature_names() -> None:
    workflow = run(add_one, double, both, takes_kwargs, initial_context=1)
    assert workflow.result_storage() == [2, 4, (1, 4), ["initial_context", "previous_context"]]
    contexts = workflow.result_context()
    assert contexts[1].task_id == 2 and contexts[1].workflow_id == workflow.workflow_id


def test_async_steps_run_to_completion() -> None:
    assert run(async_step, initial_context="ok").result_storage() == ["async ok"]


def test_async_steps_work_inside_a_running_event_loop() -> None:
    async def main() -> list[Any]:
        return run(async_step, initial_context="in loop").result_storage()

    assert asyncio.run(main()) == ["async in loop"]


def test_an_action_class_runs_its_action_methods_in_definition_order() -> None:
    workflow = run(Pipeline, initial_context=1)
    contexts = workflow.result_storage()[0]
    assert [context.storage for context in contexts] == [[1, 2], [10, 20], 30]
    assert all(context.task_id == 1 for context in contexts)


def test_action_methods_of_base_classes_run_first_and_overrides_keep_their_place() -> None:
    @action
    class Child(Pipeline):
        @action
        def zeta_extract(self) -> list[int]:  # overrides, keeps the first slot
            return [5]

        @action
        def report(self, previous_context: Context) -> str:
            return f"loaded {previous_context.storage}"

    contexts = run(Child, initial_context=0).result_storage()[0]
    assert [context.storage for context in contexts] == [[5], [50], 50, "loaded 50"]


def test_an_action_class_without_action_methods_returns_its_instance() -> None:
    (instance,) = run(Plain).result_storage()
    assert isinstance(instance, Plain.target) and instance.ready


def test_a_failing_action_method_fails_the_task_with_its_error() -> None:
    @action
    class Failing:
        @action
        def first(self) -> int:
            return 1

        @action
        def second(self) -> None:
            raise LookupError("second method broke")

    workflow = run(Failing)
    task = workflow.result_task()[0]
    assert task.status is TaskStatus.FAILED
    assert (task.errors[0].type, task.errors[0].message) == ("LookupError", "second method broke")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"retry": -1}, "retry must be an int >= 0"),
        ({"retry": 2.5}, "retry must be an int >= 0"),
        ({"timeout": -1}, "timeout must be a number of seconds >= 0"),
        ({"retry_delay": "1"}, "retry_delay must be a number of seconds >= 0"),
        ({"backoff": "yes"}, "backoff must be True or False"),
    ],
)
def test_bad_action_options_are_rejected_at_decoration(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        action(**options)(lambda: None)


class RecordingWaits(runner.RunControl):
    """A RunControl whose retry waits are recorded instead of slept."""

    waits: list[float] = []

    def __init__(self) -> None:
        super().__init__()
        waits = self.waits

        class Stop(threading.Event):
            def wait(self, timeout: float | None = None) -> bool:
                waits.append(timeout or 0.0)
                return False

        self.stop = Stop()


@pytest.fixture
def recorded_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    RecordingWaits.waits = []
    monkeypatch.setattr(workflow_module, "RunControl", RecordingWaits)
    return RecordingWaits.waits


def test_retry_means_attempts_in_all_with_backoff_doubling_the_delay(
    recorded_waits: list[float],
) -> None:
    attempts: list[int] = []

    @action(retry=4, retry_delay=0.5, backoff=True)
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 4:
            raise ConnectionError("try again")
        return "finally"

    recorder = RecordingProvider()
    workflow = DotFlow(providers=[recorder])
    workflow.task.add(flaky)
    workflow.start()
    task = workflow.result_task()[0]
    assert task.status is TaskStatus.COMPLETED and task.current_context.storage == "finally"
    assert task.retry_count == 3 and len(task.errors) == 3
    assert recorded_waits == [0.5, 1.0, 2.0]
    assert [r.status.value for r in recorder.task_events(1)][-3:] == [
        "Retry",
        "In progress",
        "Completed",
    ]


def test_without_backoff_the_delay_stays_the_same(recorded_waits: list[float]) -> None:
    @action(retry=3, retry_delay=2)
    def never() -> None:
        raise ValueError("no")

    task = run(never).result_task()[0]
    assert task.status is TaskStatus.FAILED and task.retry_count == 2
    assert recorded_waits == [2, 2]


def test_a_timeout_fails_the_attempt_and_is_retried() -> None:
    calls: list[float] = []

    @action(retry=2, timeout=0.2, retry_delay=0)
    def slow_then_fast() -> str:
        calls.append(time.perf_counter())
        if len(calls) == 1:
            time.sleep(1.0)
        return "fast"

    task = run(slow_then_fast).result_task()[0]
    assert task.status is TaskStatus.COMPLETED and task.current_context.storage == "fast"
    assert task.errors[0].type == StepTimeoutError.__name__
    assert "within its timeout of 0.2 s" in task.errors[0].message


def test_a_timed_step_that_keeps_timing_out_fails() -> None:
    @action(timeout=0.05)
    def stuck() -> None:
        time.sleep(0.5)

    task = run(stuck).result_task()[0]
    assert task.status is TaskStatus.FAILED and task.errors[0].type == "StepTimeoutError"


def test_callbacks_receive_the_finished_task() -> None:
    seen: list[tuple[int, TaskStatus]] = []

    def callback(task: Any) -> None:
        seen.append((task.task_id, task.status))

    workflow = DotFlow(providers=[])
    workflow.task.add([add_one, double], callback=callback, initial_context=1)
    workflow.start()
    assert seen == [(1, TaskStatus.COMPLETED), (2, TaskStatus.COMPLETED)]


def test_a_raising_callback_is_logged_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def callback(task: Any) -> None:
        raise RuntimeError("callback bug")

    workflow = DotFlow(providers=[])
    workflow.task.add(add_one, callback=callback, initial_context=1)
    workflow.start()
    assert workflow.result_task()[0].status is TaskStatus.COMPLETED
    messages = [record.getMessage() for record in caplog.records]
    assert any(
        "callback test_a_raising_callback_is_logged_and_changes_nothing.<locals>.callback of "
        "task 1 ("
        in message
        and message.endswith("raised RuntimeError: callback bug")
        for message in messages
    ), messages


@pytest.mark.parametrize("mode", ["sequential", "background"])
def test_a_step_calling_sys_exit_fails_its_task_and_the_run_goes_on(mode: str) -> None:
    @action
    def leaves() -> None:
        sys.exit(0)

    workflow = DotFlow(providers=[])
    workflow.task.add([leaves, add_one], initial_context=1)
    workflow.start(mode=mode, keep_going=True)
    workflow.wait()
    first, second = workflow.result_task()
    assert first.status is TaskStatus.FAILED and first.errors[-1].type == "SystemExit"
    assert second.status is TaskStatus.COMPLETED
    assert workflow.status is WorkflowStatus.FAILED


def test_steps_and_callbacks_can_be_given_as_dotted_paths() -> None:
    workflow = DotFlow(providers=[])
    workflow.task.add(f"{__name__}.add_one", callback="builtins.print", initial_context=1)
    workflow.task.add(f"{__name__}:Pipeline")
    assert [task.step for task in workflow.result_task()] == [add_one, Pipeline]
    # An @action method is run by its class; alone it would lack self.
    with pytest.raises(InvalidStepError, match="is a method of class Pipeline"):
        workflow.task.add(f"{__name__}.Pipeline.zeta_extract")


def plain_function() -> None: ...


@pytest.mark.parametrize(
    "step, message",
    [
        (plain_function, "is not marked with @action"),
        (f"{__name__}.plain_function", "is not marked with @action"),
        ("no_such_module_xyz.step", "no module named 'no_such_module_xyz'"),
        (f"{__name__}.missing", f"module '{__name__}' has no attribute 'missing'"),
        ("extract", "is not an import path"),
        ("a..b", "is not an import path"),
        ("a:b.", "is not an import path"),
    ],
)
def test_bad_steps_are_named_in_a_one_line_error(step: Any, message: str) -> None:
    workflow = DotFlow(providers=[])
    with pytest.raises(InvalidStepError, match=message) as caught:
        workflow.task.add([add_one, step])
    assert "\n" not in str(caught.value)
    assert workflow.task.count() == 0  # validated before anything was added


def test_a_module_that_raises_on_import_is_reported_with_the_cause(tmp_path: Any) -> None:
    (tmp_path / "explodes_on_import.py").write_text("import no_such_dependency_xyz\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(InvalidStepError, match="importing 'explodes_on_import' failed"):
            DotFlow(providers=[]).task.add("explodes_on_import.step")
    finally:
        sys.path.remove(str(tmp_path))


def test_group_name_must_be_a_non_empty_string() -> None:
    from dotflow_core import ConfigurationError

    with pytest.raises(ConfigurationError, match="group_name="):
        DotFlow(providers=[]).task.add(add_one, group_name=" ")
