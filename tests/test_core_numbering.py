"""Task numbering: INITIAL_TASK_ID, generated ids, external ids and get_next_task_id."""

from __future__ import annotations

import logging
import os
import uuid

import pytest

from dotflow_core import (
    INITIAL_TASK_ID,
    ConfigurationError,
    DotFlow,
    TaskBuilder,
    action,
    hookimpl,
)
from dotflow_core.testing import RecordingProvider


@action
def step() -> str:
    return "done"


def test_initial_task_id_is_one() -> None:
    assert INITIAL_TASK_ID == 1


def test_task_builder_numbers_from_the_given_id() -> None:
    builder = TaskBuilder(workflow_id="wf", initial_task_id=41)
    builder.add([step, step]).add(step)
    assert [task.task_id for task in builder.queue] == [41, 42, 43]
    assert {task.workflow_id for task in builder.queue} == {"wf"}


def test_task_builder_defaults_to_initial_task_id_and_a_generated_workflow_id() -> None:
    builder = TaskBuilder()
    builder.add(step)
    assert builder.queue[0].task_id == INITIAL_TASK_ID
    uuid.UUID(builder.workflow_id)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "1", True])
def test_task_builder_rejects_a_bad_initial_task_id(bad: object) -> None:
    with pytest.raises(ConfigurationError, match=r"initial_task_id=.*int >= 1"):
        TaskBuilder(initial_task_id=bad)  # type: ignore[arg-type]


def test_generated_id_fires_create_workflow_and_never_asks_for_the_next_id(
    recorder: RecordingProvider,
) -> None:
    recorder.next_task_id = 99
    workflow = DotFlow(providers=[recorder])
    workflow.task.add([step, step])
    uuid.UUID(workflow.workflow_id)
    assert not workflow.managed
    assert "get_next_task_id" not in recorder.names()
    assert recorder.names()[:2] == ["configure", "create_workflow"]
    assert [task.task_id for task in workflow.result_task()] == [1, 2]


def test_external_id_asks_once_and_numbers_from_the_answer(recorder: RecordingProvider) -> None:
    recorder.next_task_id = 4
    workflow = DotFlow(workflow_id="nightly-etl", providers=[recorder])
    workflow.task.add([step, step, step])
    workflow.start()
    assert workflow.managed
    assert recorder.names().count("get_next_task_id") == 1
    assert ("get_next_task_id", "nightly-etl") in recorder.calls
    assert "create_workflow" not in recorder.names()
    assert [task.task_id for task in workflow.result_task()] == [4, 5, 6]


def test_external_id_without_an_answer_numbers_from_initial_task_id(
    recorder: RecordingProvider,
) -> None:
    workflow = DotFlow(workflow_id="ext", providers=[recorder])
    workflow.task.add(step)
    assert workflow.result_task()[0].task_id == INITIAL_TASK_ID


def test_external_id_with_no_provider_numbers_from_initial_task_id() -> None:
    workflow = DotFlow(workflow_id="ext", providers=[])
    workflow.task.add(step)
    assert workflow.result_task()[0].task_id == INITIAL_TASK_ID


def test_workflow_id_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, recorder: RecordingProvider
) -> None:
    monkeypatch.setenv("WORKFLOW_ID", "from-env")
    recorder.next_task_id = 10
    workflow = DotFlow(providers=[recorder])
    workflow.task.add(step)
    assert workflow.workflow_id == "from-env"
    assert workflow.result_task()[0].task_id == 10


@pytest.mark.parametrize("answer", ["7", 0, -3, 1.0, True, 2**60])
def test_an_unusable_next_id_warns_and_falls_back(
    answer: object, caplog: pytest.LogCaptureFixture
) -> None:
    class Odd:
        @hookimpl
        def get_next_task_id(self, workflow_id: str) -> object:
            return answer

    with caplog.at_level(logging.WARNING, logger="dotflow"):
        workflow = DotFlow(workflow_id="ext", providers=[Odd()])
    workflow.task.add(step)
    assert workflow.result_task()[0].task_id == INITIAL_TASK_ID
    assert "numbering starts at 1" in caplog.text


def test_first_answer_wins_and_trylast_answers_last() -> None:
    class Fallback:
        @hookimpl(trylast=True)
        def get_next_task_id(self, workflow_id: str) -> int:
            return INITIAL_TASK_ID

    workflow = DotFlow(workflow_id="ext", providers=[Fallback(), RecordingProvider(next_task_id=8)])
    workflow.task.add(step)
    assert workflow.result_task()[0].task_id == 8


def test_a_configuration_error_from_get_next_task_id_stops_the_run() -> None:
    class Strict:
        @hookimpl
        def get_next_task_id(self, workflow_id: str) -> int:
            raise ConfigurationError("SERVER_STRICT: next id unavailable")

    with pytest.raises(ConfigurationError, match="next id unavailable"):
        DotFlow(workflow_id="ext", providers=[Strict()])


@pytest.mark.parametrize("bad", ["", "   ", 42])
def test_a_bad_workflow_id_is_a_configuration_error(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="workflow_id="):
        DotFlow(workflow_id=bad, providers=[])  # type: ignore[arg-type]


def test_a_workflow_id_that_is_not_utf8_text_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKFLOW_ID", os.fsdecode(b"nightly-\xff"))
    with pytest.raises(ConfigurationError) as caught:
        DotFlow(providers=[])
    assert str(caught.value).startswith(
        "WORKFLOW_ID='nightly-\\udcff': holds bytes that are not UTF-8 text"
    )


def test_every_run_gets_its_own_run_id_carried_by_every_record(
    recorder: RecordingProvider,
) -> None:
    runs = []
    for _ in range(2):
        workflow = DotFlow(workflow_id="nightly-etl", providers=[recorder])
        workflow.task.add([step, step])
        workflow.start(mode="parallel")
        runs.append(workflow.run_id)
    assert len(set(runs)) == 2
    for run_id in runs:
        uuid.UUID(run_id)
    assert recorder.asked_run_ids == runs
    records = recorder.workflow_events() + recorder.task_events()
    assert {record.run_id for record in records} == set(runs)
    assert [task.run_id for task in workflow.result_task()] == [runs[1], runs[1]]
    assert workflow.result()["run_id"] == runs[1]


def test_a_get_next_task_id_without_run_id_in_its_signature_still_answers() -> None:
    class Legacy:
        @hookimpl
        def get_next_task_id(self, workflow_id: str) -> int:
            return 7

    class Current:
        seen: list[tuple[str, str]] = []

        @hookimpl(trylast=True)
        def get_next_task_id(self, workflow_id: str, run_id: str) -> int:
            self.seen.append((workflow_id, run_id))
            return 3

    current = Current()
    workflow = DotFlow(workflow_id="ext", providers=[current, Legacy()])
    workflow.task.add(step)
    assert workflow.result_task()[0].task_id == 7
    assert current.seen == []  # the legacy answer came first (last registered first)
    workflow = DotFlow(workflow_id="ext", providers=[current])
    workflow.task.add(step)
    assert workflow.result_task()[0].task_id == 3
    assert current.seen == [("ext", workflow.run_id)]
