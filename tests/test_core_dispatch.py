"""The event hooks' direct callers behave as pluggy's: order, arguments, isolation, fallbacks."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import attrs
import pytest

from dotflow_core import DotFlow, ProviderManager, TaskRecord, WorkflowRecord, action, hookimpl
from dotflow_core.testing import RecordingProvider, sample_task_record

CALLS: list[tuple[str, Any]] = []


class Named:
    """A provider that notes its name and argument for every task event."""

    def __init__(self, name: str) -> None:
        self.name = name

    @hookimpl
    def create_task(self, task: TaskRecord) -> None:
        CALLS.append((self.name, task))

    @hookimpl
    def update_task(self, task: TaskRecord) -> None:
        CALLS.append((self.name, task))


class First(Named):
    @hookimpl(tryfirst=True)
    def update_task(self, task: TaskRecord) -> None:
        CALLS.append((self.name, task))


class Last(Named):
    @hookimpl(trylast=True)
    def update_task(self, task: TaskRecord) -> None:
        CALLS.append((self.name, task))


class NoArgument:
    """Asks for none of the hook's arguments: called with none."""

    @hookimpl
    def update_task(self) -> None:
        CALLS.append(("no-argument", None))


class Raising:
    @hookimpl
    def update_task(self, task: TaskRecord) -> None:
        CALLS.append(("raising", task))
        raise RuntimeError("provider bug")


class Interrupting:
    @hookimpl
    def update_task(self, task: TaskRecord) -> None:
        CALLS.append(("interrupting", task))
        raise KeyboardInterrupt


class Wrapping:
    @hookimpl(wrapper=True)
    def update_task(self, task: TaskRecord) -> Generator[None, Any, Any]:
        CALLS.append(("wrapper-before", task))
        result = yield
        CALLS.append(("wrapper-after", task))
        return result


@pytest.fixture(autouse=True)
def clear_calls() -> None:
    CALLS.clear()


def manager_of(*providers: object) -> ProviderManager:
    manager = ProviderManager(shutdown_at_exit=False)
    for provider in providers:
        manager.add(provider)
    return manager


def both_paths(manager: ProviderManager, record: TaskRecord) -> tuple[list[Any], list[Any]]:
    """What the providers saw from the direct caller, and from pluggy's own call."""
    manager.event_callers["update_task"](record)
    direct = list(CALLS)
    CALLS.clear()
    manager.hook.update_task(task=record)
    through_pluggy = list(CALLS)
    CALLS.clear()
    return direct, through_pluggy


def test_the_direct_caller_calls_in_pluggys_order_with_the_same_arguments() -> None:
    manager = manager_of(
        Last("last"), Named("a"), First("first"), NoArgument(), Named("b"), Last("last-2")
    )
    record = sample_task_record("wf")
    direct, through_pluggy = both_paths(manager, record)
    assert direct == through_pluggy
    assert [name for name, _ in direct] == ["first", "b", "no-argument", "a", "last", "last-2"]
    assert all(argument is record for name, argument in direct if name != "no-argument")


def test_an_exception_is_isolated_the_same_way_on_both_paths() -> None:
    manager = manager_of(Named("a"), Raising(), Named("b"))
    record = sample_task_record("wf")
    direct, through_pluggy = both_paths(manager, record)
    assert direct == through_pluggy
    assert [name for name, _ in direct] == ["b", "raising", "a"]
    assert [(f.provider, f.hook, type(f.error)) for f in manager.failures] == [
        ("Raising", "update_task", RuntimeError),
        ("Raising", "update_task", RuntimeError),
    ]


def test_a_keyboard_interrupt_stops_the_call_the_same_way_on_both_paths() -> None:
    manager = manager_of(Named("a"), Interrupting(), Named("b"))
    record = sample_task_record("wf")
    with pytest.raises(KeyboardInterrupt):
        manager.event_callers["update_task"](record)
    direct = list(CALLS)
    CALLS.clear()
    with pytest.raises(KeyboardInterrupt):
        manager.hook.update_task(task=record)
    assert direct == CALLS
    assert [name for name, _ in direct] == ["b", "interrupting"]  # "a" never called


def test_a_wrapper_sends_its_hook_through_pluggy() -> None:
    manager = manager_of(Named("a"), Wrapping())
    record = sample_task_record("wf")
    direct, through_pluggy = both_paths(manager, record)
    assert direct == through_pluggy
    assert [name for name, _ in direct] == ["wrapper-before", "a", "wrapper-after"]
    # The other hooks keep their direct caller: the wrapper is on update_task only.
    CALLS.clear()
    manager.event_callers["create_task"](record)
    assert [name for name, _ in CALLS] == ["a"] and CALLS[0][1] is record


def test_the_callers_are_rebuilt_as_providers_are_added() -> None:
    manager = ProviderManager(shutdown_at_exit=False)
    assert manager.event_callers == {}
    manager.add(Named("a"))
    assert set(manager.event_callers) == {"create_task", "update_task"}
    manager.add(Named("b"))
    manager.event_callers["update_task"](sample_task_record("wf"))
    assert [name for name, _ in CALLS] == ["b", "a"]


def test_tracing_sends_every_event_through_pluggy(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOTFLOW_TRACE_HOOKS", "1")
    manager = manager_of(Named("a"))
    manager.event_callers["update_task"](sample_task_record("wf"))
    assert "dotflow-trace update_task(" in capsys.readouterr().err
    assert [name for name, _ in CALLS] == ["a"]


@action
def step() -> list[int]:
    return [1]


def test_the_engines_records_equal_records_built_by_the_constructor(
    recorder: RecordingProvider,
) -> None:
    """The engine's records are the frozen classes themselves, every field set as the
    checked constructor would store it."""
    workflow = DotFlow(providers=[recorder])
    workflow.task.add(step, initial_context={"a": 1})
    workflow.start()
    records: list[Any] = [*recorder.task_events(), *recorder.workflow_events()]
    assert records
    for record in records:
        kind = type(record)
        assert kind in (TaskRecord, WorkflowRecord)
        assert kind(**attrs.asdict(record, recurse=False)) == record
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            record.workflow_id = "other"


@action(retry=2, retry_delay=0)
def fails_once(previous_context: Any) -> dict[str, int]:
    if not ATTEMPTS:
        ATTEMPTS.append(1)
        raise ValueError("first attempt")
    return {"seen": len(previous_context.storage)}


ATTEMPTS: list[int] = []


def test_every_field_of_an_engine_record_holds_its_own_value(
    recorder: RecordingProvider,
) -> None:
    """Each field of a task record the engine built carries that field's value (none swapped)."""
    ATTEMPTS.clear()
    workflow = DotFlow(providers=[recorder])
    workflow.task.add(step, group_name="g")
    workflow.task.add(fails_once, initial_context="init", group_name="g")
    workflow.start()
    first, second = workflow.result_task()
    record = recorder.task_events(2)[-1]
    assert (record.workflow_id, record.run_id) == (workflow.workflow_id, workflow.run_id)
    assert (record.task_id, record.name) == (2, f"{__name__}.fails_once")
    assert (record.status, record.group_name, record.retry_count) == ("Completed", "g", 1)
    assert [error.message for error in record.errors] == ["first attempt"]
    assert record.created_at <= record.started_at  # type: ignore[operator]
    assert record.started_at < record.finished_at  # type: ignore[operator]
    assert record.duration == second.duration and record.finished_at == second.finished_at
    assert record.initial_context == "init"
    assert record.previous_context is first.current_context.storage
    assert record.current_context == {"seen": 1}


def test_a_provider_added_to_a_workflows_manager_hears_the_later_events(
    recorder: RecordingProvider,
) -> None:
    workflow = DotFlow(providers=[])
    workflow.task.add(step)
    workflow.providers.add(recorder)
    workflow.task.add(step)
    workflow.start()
    assert [record.task_id for record in recorder.task_events()] == [2, 1, 1, 2, 2]
    assert [record.status.value for record in recorder.task_events(1)] == [
        "In progress",
        "Completed",
    ]
