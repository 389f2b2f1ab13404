"""The snapshot rule: records are frozen, and the contexts they carry are the values themselves.

An event costs the same whatever the data: no record copies a step's value,
so a provider receives the very object the step returned (``is``), in every
mode. In the parallel mode a worker's value crosses the process boundary once.
"""

from __future__ import annotations

import pickle
import threading
from multiprocessing.connection import Connection
from typing import Any

import attrs
import pytest

from dotflow_core import DotFlow, TaskStatus, action
from dotflow_core.testing import RecordingProvider


class Tracked:
    """A value that counts every copy and pickle made of it (the counts live on the class)."""

    copies = 0
    pickles = 0

    def __init__(self, payload: list[int]) -> None:
        self.payload = payload

    def __copy__(self) -> Tracked:
        Tracked.copies += 1
        return Tracked(self.payload)

    def __deepcopy__(self, memo: dict[int, Any]) -> Tracked:
        Tracked.copies += 1
        return Tracked(list(self.payload))

    def __reduce__(self) -> tuple[Any, ...]:
        Tracked.pickles += 1
        return (Tracked, (self.payload,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tracked) and other.payload == self.payload

    __hash__ = None  # type: ignore[assignment]


RETURNED = Tracked(list(range(1000)))
GIVEN = Tracked([7])


@pytest.fixture(autouse=True)
def reset_counts() -> None:
    Tracked.copies = Tracked.pickles = 0


@action
def returns_tracked() -> Tracked:
    return RETURNED


@action
def reads_previous(previous_context: Any) -> int:
    return len(previous_context.storage.payload)


def test_a_provider_receives_the_very_values_of_the_workflow(
    recorder: RecordingProvider,
) -> None:
    workflow = DotFlow(providers=[recorder])
    workflow.task.add(returns_tracked, initial_context=GIVEN)
    workflow.task.add(reads_previous)
    workflow.start()
    first, second = recorder.task_events(1), recorder.task_events(2)
    assert first[-1].status is TaskStatus.COMPLETED
    assert first[-1].current_context is RETURNED
    assert all(record.initial_context is GIVEN for record in first)
    assert all(record.previous_context is RETURNED for record in second[1:])
    assert second[-1].current_context == 1000
    assert (Tracked.copies, Tracked.pickles) == (0, 0)


@pytest.mark.parametrize("mode", ["sequential", "background"])
def test_no_event_copies_or_pickles_a_value_in_the_workflows_process(
    recorder: RecordingProvider, mode: str
) -> None:
    workflow = DotFlow(providers=[recorder, RecordingProvider()])
    workflow.task.add([returns_tracked, reads_previous], initial_context=GIVEN)
    workflow.start(mode=mode)
    workflow.wait()
    assert len(recorder.task_events()) == 6
    assert (Tracked.copies, Tracked.pickles) == (0, 0)


def test_a_record_is_frozen_context_fields_included(recorder: RecordingProvider) -> None:
    workflow = DotFlow(providers=[recorder])
    workflow.task.add(returns_tracked)
    workflow.start()
    record = recorder.task_events(1)[-1]
    for field in ("current_context", "previous_context", "initial_context", "status"):
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(record, field, None)
    assert record.current_context is RETURNED


def replace_context(task: Any) -> None:
    task.current_context = ["replaced"]


def test_a_callback_assigning_a_context_still_works(recorder: RecordingProvider) -> None:
    """The task takes the callback's value; the record of the moment keeps the step's."""
    workflow = DotFlow(providers=[recorder])
    workflow.task.add(returns_tracked, callback=replace_context)
    workflow.task.add(reads_list)
    workflow.start()
    assert recorder.task_events(1)[-1].current_context is RETURNED
    replaced = workflow.result_storage()[0]
    assert replaced == ["replaced"]
    assert recorder.task_events(2)[-1].previous_context is replaced
    assert workflow.result_storage()[1] == 1


@action
def reads_list(previous_context: Any) -> int:
    return len(previous_context.storage)


def test_result_storage_and_result_are_unchanged() -> None:
    workflow = DotFlow()
    workflow.task.add([returns_tracked, reads_previous])
    workflow.start()
    assert workflow.result_storage()[0] is RETURNED
    assert workflow.result_storage()[1] == 1000
    assert [context.storage for context in workflow.result_context()] == [RETURNED, 1000]
    tasks = workflow.result()["tasks"]
    assert [task["status"] for task in tasks] == ["Completed", "Completed"]
    assert tasks[1]["current_context"] == 1000


BIG = [{"i": i} for i in range(20_000)]
BIG_INITIAL = "x" * 200_000


@action
def returns_big() -> list[dict[str, int]]:
    return BIG


@action(retry=2, retry_delay=0)
def counts_previous_after_one_failure(previous_context: Any, initial_context: Any) -> int:
    marker = initial_context.storage
    if not getattr(counts_previous_after_one_failure, marker, False):
        setattr(counts_previous_after_one_failure, marker, True)  # this worker's first attempt
        raise RuntimeError("first attempt fails")
    return len(previous_context.storage)


@pytest.fixture
def bytes_received(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every message the workflow's thread (this one) reads from a pipe.

    Other threads are left out: a process pool left by another test reads its own pipes.
    """
    sizes: list[int] = []
    receive = Connection.recv_bytes
    workflow_thread = threading.current_thread()

    def counting(self: Connection, maxlength: int | None = None) -> bytes:
        data = receive(self, maxlength)
        if threading.current_thread() is workflow_thread:
            sizes.append(len(data))
        return data

    monkeypatch.setattr(Connection, "recv_bytes", counting)
    return sizes


def test_a_workers_values_cross_to_the_parent_once(
    recorder: RecordingProvider, bytes_received: list[int]
) -> None:
    """A named group: task 1's result is task 2's previous context, in each of its records."""
    workflow = DotFlow(providers=[recorder])
    workflow.task.add(returns_big, initial_context=BIG_INITIAL, group_name="g")
    workflow.task.add(counts_previous_after_one_failure, initial_context="m", group_name="g")
    workflow.start(mode="parallel")
    first, second = recorder.task_events(1), recorder.task_events(2)
    assert [record.status for record in second[1:]] == [
        TaskStatus.IN_PROGRESS,
        TaskStatus.RETRY,
        TaskStatus.IN_PROGRESS,
        TaskStatus.COMPLETED,
    ]
    assert second[-1].current_context == len(BIG)
    # Equal to what the step returned, and one object in the parent, as in the other modes.
    result = first[-1].current_context
    assert result == BIG and result is not BIG  # it crossed from the worker
    assert all(record.previous_context is result for record in second[1:])
    assert workflow.result_storage()[0] is result
    assert all(record.initial_context is BIG_INITIAL for record in first)
    value_bytes = len(pickle.dumps(BIG, protocol=pickle.HIGHEST_PROTOCOL))
    # Sent in full every time, task 1's value would cross 5 times and the initial one twice.
    assert value_bytes < sum(bytes_received) < value_bytes + 10_000
    assert len(bytes_received) == 6  # one message per change of a task, as before


def test_a_worker_value_that_does_not_pickle_still_travels_as_its_repr(
    recorder: RecordingProvider,
) -> None:
    workflow = DotFlow(providers=[recorder])
    workflow.task.add(returns_unpicklable, group_name="g")
    workflow.task.add(reads_previous_repr, group_name="g")
    workflow.start(mode="parallel")
    first, second = recorder.task_events(1), recorder.task_events(2)
    assert first[-1].status is TaskStatus.COMPLETED
    assert isinstance(first[-1].current_context, str) and "lambda" in first[-1].current_context
    assert all(record.previous_context is first[-1].current_context for record in second[1:])
    assert second[-1].current_context is True


@action
def returns_unpicklable() -> Any:
    return lambda: None


@action
def reads_previous_repr(previous_context: Any) -> bool:
    return callable(previous_context.storage)
