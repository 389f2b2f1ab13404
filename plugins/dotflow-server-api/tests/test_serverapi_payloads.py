"""Record -> request: exact paths, allow-listed fields, JSON safety, the 5 MB cap."""

from __future__ import annotations

import json
import os
from typing import Any

import attrs
import pytest
from dotflow_server_api import contexts, payloads

from dotflow_core import TaskError, TaskStatus, WorkflowStatus
from dotflow_core.testing import sample_task_record, sample_workflow_record

TASK_FIELDS = {
    "id",
    "name",
    "status",
    "group_name",
    "retry_count",
    "duration",
    "errors",
    "started_at",
    "finished_at",
    "current_context",
    "previous_context",
    "run_id",
}
WORKFLOW_FIELDS = {
    "status",
    "name",
    "mode",
    "created_at",
    "started_at",
    "finished_at",
    "duration",
    "task_count",
    "completed_count",
    "failed_count",
    "run_id",
}


def body(request: payloads.Request) -> Any:
    return json.loads(request.body)


def test_path_segments_are_percent_encoded() -> None:
    assert payloads.segment("a/b c") == "a%2Fb%20c"
    assert (payloads.segment("."), payloads.segment("..")) == ("%2E", "%2E%2E")
    assert payloads.segment("v1.2...") == "v1.2..."
    assert payloads.task_path("a/b c", 3) == "/workflows/a%2Fb%20c/tasks/3"
    assert payloads.next_id_path("x?y#z") == "/workflows/x%3Fy%23z/tasks/next-id"


def test_ids_holding_lone_surrogates_still_make_a_path() -> None:
    """A WORKFLOW_ID with bytes that are not UTF-8 reaches Python as surrogate escapes."""
    undecodable = os.fsdecode(b"run-\xff")
    assert payloads.workflow_path(undecodable) == "/workflows/run-%FF"
    assert payloads.segment("a\ud800b") == "a%ED%A0%80b"


def test_bodies_name_the_run_that_reports_and_omit_it_when_there_is_none() -> None:
    workflow, task = sample_workflow_record(), sample_task_record("wf-1")
    assert body(payloads.create_workflow(workflow))["run_id"] == workflow.run_id
    assert body(payloads.update_task(task))["run_id"] == task.run_id
    assert workflow.run_id and task.run_id
    bare = attrs.evolve(workflow, run_id=None)
    assert "run_id" not in body(payloads.update_workflow(bare))
    assert "run_id" not in body(payloads.create_task(attrs.evolve(task, run_id=None)))


def test_create_workflow() -> None:
    record = attrs.evolve(sample_workflow_record(), workflow_id="a/b c")
    request = payloads.create_workflow(record)
    assert (request.method, request.path) == ("POST", "/workflows")
    data = body(request)
    assert set(data) == {"id"} | WORKFLOW_FIELDS
    assert data["id"] == "a/b c"
    assert data["status"] == "In progress"
    assert data["created_at"] == record.created_at.isoformat()
    assert data["finished_at"] is None
    assert not request.final


@pytest.mark.parametrize("status", list(WorkflowStatus))
def test_update_workflow(status: WorkflowStatus) -> None:
    record = attrs.evolve(sample_workflow_record(status), workflow_id="a/b c")
    request = payloads.update_workflow(record)
    assert (request.method, request.path) == ("PATCH", "/workflows/a%2Fb%20c")
    data = body(request)
    assert set(data) == WORKFLOW_FIELDS
    assert data["status"] == status.value
    assert data["task_count"] == 2
    assert request.final is (status is not WorkflowStatus.IN_PROGRESS)


def test_create_and_update_task_carry_the_same_fields() -> None:
    record = sample_task_record("a/b c", task_id=7, status=TaskStatus.COMPLETED)
    create = payloads.create_task(record)
    update = payloads.update_task(record)
    assert (create.method, create.path) == ("POST", "/workflows/a%2Fb%20c/tasks")
    assert (update.method, update.path) == ("PATCH", "/workflows/a%2Fb%20c/tasks/7")
    assert body(create) == body(update)
    data = body(update)
    assert set(data) == TASK_FIELDS  # an allow-list: no initial_context, created_at, workflow_id
    assert data["id"] == 7
    assert data["status"] == "Completed"
    assert data["current_context"] == {"loaded": 3}
    assert data["errors"] == [
        {"attempt": 1, "type": "ValueError", "message": "boom", "traceback": "Traceback..."}
    ]
    assert data["started_at"] == record.started_at.isoformat()
    assert update.last and not create.last


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


class Hostile:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


def test_values_json_cannot_carry_become_a_capped_repr() -> None:
    record = attrs.evolve(
        sample_task_record("w", status=TaskStatus.COMPLETED),
        current_context={"obj": Opaque(), "bad": Hostile(), "nan": float("nan"), 1: b"x" * 5000},
        previous_context=Opaque(),
    )
    data = body(payloads.update_task(record))
    assert data["current_context"]["obj"] == "<Opaque thing>"
    assert data["current_context"]["bad"].startswith("<unrepresentable Hostile")
    assert data["current_context"]["nan"] == "nan"
    assert len(data["current_context"]["1"]) <= 2000
    assert data["previous_context"] == "<Opaque thing>"


def test_lone_surrogates_still_encode() -> None:
    record = attrs.evolve(sample_task_record("w"), current_context="bad \ud800 text")
    assert json.loads(payloads.update_task(record).body)["current_context"] == "bad \ud800 text"


def test_a_50_mb_context_is_a_preview_and_the_small_one_stays_whole() -> None:
    """Each context is capped on its own: 50 MB next to 7 bytes keeps the 7 bytes."""
    huge = {"blob": "x" * 50_000_000, "rows": list(range(300_000))}
    record = attrs.evolve(
        sample_task_record("w", status=TaskStatus.COMPLETED),
        previous_context=huge,
        current_context={"n": 1},
    )
    request = payloads.update_task(record)
    assert len(request.body) <= payloads.MAX_BODY_BYTES
    data = body(request)
    assert data["current_context"] == {"n": 1}
    previous = data["previous_context"]  # both keys kept, each value a preview
    blob, rows = previous["blob"], previous["rows"]
    assert (blob["truncated"], blob["type"], blob["length"]) == (True, "str", 50_000_000)
    assert blob["preview"] and set(blob["preview"]) == {"x"}
    assert (rows["truncated"], rows["type"], rows["length"]) == (True, "list", 300_000)
    assert rows["preview"] == list(range(len(rows["preview"])))
    assert data["status"] == "Completed"


def test_a_list_of_many_rows_keeps_its_first_rows_type_and_length() -> None:
    rows = [{"i": i} for i in range(400_000)]
    record = attrs.evolve(sample_task_record("w"), current_context=rows)
    data = body(payloads.update_task(record))
    marker = data["current_context"]
    assert (marker["truncated"], marker["type"], marker["length"]) == (True, "list", 400_000)
    assert marker["preview"] == rows[: len(marker["preview"])] and len(marker["preview"]) > 100


def test_a_context_up_to_its_cap_is_sent_whole() -> None:
    cap = contexts.CONTEXT_MAX_BYTES
    record = sample_task_record("w", status=TaskStatus.COMPLETED)
    fits = payloads.update_task(attrs.evolve(record, current_context="y" * (cap - 2)))
    assert body(fits)["current_context"] == "y" * (cap - 2)  # a string of n "y" is n + 2 bytes
    over = body(payloads.update_task(attrs.evolve(record, current_context="y" * (cap - 1))))
    assert over["current_context"]["truncated"] is True
    assert over["current_context"]["length"] == cap - 1


def test_contexts_share_what_huge_errors_leave_and_the_body_stays_under_the_cap() -> None:
    errors = tuple(
        TaskError(attempt=n, type="E", message="m" * 19_000, traceback="t" * 19_000)
        for n in range(1, 120)
    )  # about 4.5 MB of error texts, none long enough to be cut
    record = attrs.evolve(
        sample_task_record("w", status=TaskStatus.FAILED),
        errors=errors,
        current_context="small",
        previous_context="z" * 3_000_000,
    )
    request = payloads.update_task(record)
    assert len(request.body) <= payloads.MAX_BODY_BYTES
    data = body(request)
    assert len(data["errors"]) == 119 and data["errors"][0]["message"] == "m" * 19_000
    assert data["current_context"] == "small"
    assert data["previous_context"]["truncated"] is True


def test_the_body_cap_holds_for_any_limit() -> None:
    record = attrs.evolve(
        sample_task_record("w", status=TaskStatus.COMPLETED),
        current_context=[{"k": "v" * 50}] * 1000,
        previous_context={"a": list(range(10_000)), "b": "é" * 10_000},
    )
    for limit in (600, 1_000, 5_000, 20_000, 100_000):
        data = payloads.task_body(record, limit=limit)
        assert len(data) <= limit, limit
        json.loads(data)


def test_a_context_shared_by_many_bodies_is_encoded_once() -> None:
    """In progress, Completed and the next task's previous_context: one walk of the value."""
    encoder = contexts.ContextEncoder()
    rows = [{"i": i} for i in range(50_000)]
    first = attrs.evolve(sample_task_record("w", 1, TaskStatus.COMPLETED), current_context=rows)
    second = [
        attrs.evolve(sample_task_record("w", 2, status), previous_context=rows, current_context=7)
        for status in (TaskStatus.IN_PROGRESS, TaskStatus.COMPLETED)
    ]
    bodies = [payloads.update_task(record, contexts=encoder).body for record in [first, *second]]
    assert encoder.encodings == 1
    assert body_of(bodies[0])["current_context"] == body_of(bodies[2])["previous_context"]
    encoder.forget("w")
    assert len(encoder) == 0
    assert payloads.update_task(first, contexts=encoder).body
    assert encoder.encodings == 2  # forgotten with its workflow: encoded anew


def body_of(data: bytes) -> Any:
    return json.loads(data)


def test_huge_error_texts_are_cut_when_contexts_are_not_enough() -> None:
    error = TaskError(attempt=1, type="E", message="m" * 3_000_000, traceback="t" * 3_000_000)
    record = attrs.evolve(sample_task_record("w", status=TaskStatus.FAILED), errors=(error,))
    request = payloads.update_task(record)
    assert len(request.body) <= payloads.MAX_BODY_BYTES
    assert body(request)["errors"][0]["message"].endswith("...")


def test_errors_too_many_for_the_cap_keep_the_first_and_the_latest_and_say_what_was_omitted() -> (
    None
):
    errors = tuple(
        TaskError(attempt=n, type="ValueError", message="m" * 30_000, traceback="t" * 30_000)
        for n in range(1, 201)
    )  # 200 attempts: about 8 MB even with each text cut to 20,000 characters
    record = attrs.evolve(
        sample_task_record("w", status=TaskStatus.FAILED), errors=errors, current_context="kept"
    )
    request = payloads.update_task(record)
    assert len(request.body) <= payloads.MAX_BODY_BYTES
    data = body(request)
    kept = data["errors"]
    assert kept[0]["attempt"] == 1 and kept[-1]["attempt"] == 200
    marker = kept[1]
    assert marker["type"] == payloads.ERRORS_OMITTED
    omitted = kept[2]["attempt"] - 2
    assert marker["attempt"] == 2 and omitted > 0
    assert (
        f"{omitted} failed attempt(s) omitted, from attempt 2 to {kept[2]['attempt'] - 1}"
        in (marker["message"])
    )
    assert [error["attempt"] for error in kept[2:]] == list(range(kept[2]["attempt"], 201))
    assert data["current_context"] == "kept" and data["status"] == "Failed"


def test_the_body_cap_holds_for_any_limit_with_many_errors() -> None:
    errors = tuple(
        TaskError(attempt=n, type="E", message="m" * 500, traceback="") for n in range(1, 60)
    )
    record = attrs.evolve(sample_task_record("w", status=TaskStatus.FAILED), errors=errors)
    for limit in (2_000, 5_000, 20_000, 100_000):
        data = payloads.task_body(record, limit=limit)
        assert len(data) <= limit, limit
        assert json.loads(data)["errors"][-1]["attempt"] == 59


def test_serialisation_never_raises() -> None:
    record = sample_task_record("w", task_id=4)
    broken: Any = type("BrokenRecord", (), {})()
    for field in attrs.fields(type(record)):
        setattr(broken, field.name, getattr(record, field.name))
    broken.errors = [object()]  # not TaskErrors: attribute access fails while building
    request = payloads.update_task(broken)
    data = body(request)
    assert data["id"] == 4
    assert data["current_context"]["truncated"] is True


def test_a_workflow_update_merged_into_its_create_keeps_the_id() -> None:
    record = attrs.evolve(sample_workflow_record(), workflow_id="w/1")
    merged = payloads.as_create_workflow(payloads.update_workflow(record))
    assert (merged.method, merged.path, merged.kind) == ("POST", "/workflows", "create_workflow")
    assert body(merged)["id"] == "w/1"
    task = payloads.as_create_task(payloads.update_task(sample_task_record("w/1", 2)))
    assert (task.method, task.path) == ("POST", "/workflows/w%2F1/tasks")


class CountedRepr:
    """A context JSON cannot carry; counts how often it is encoded (as its repr)."""

    encoded = 0

    def __repr__(self) -> str:
        CountedRepr.encoded += 1
        return "<counted>"


def test_a_body_is_encoded_when_first_read_and_only_once() -> None:
    CountedRepr.encoded = 0
    record = attrs.evolve(sample_task_record("w"), current_context=CountedRepr())
    request = payloads.update_task(record)
    assert CountedRepr.encoded == 0
    assert "body not built yet" in repr(request)
    assert json.loads(request.body)["current_context"] == "<counted>"
    assert json.loads(request.body)["current_context"] == "<counted>"
    assert CountedRepr.encoded == 1
    assert json.loads(payloads.as_create_task(request).body)["current_context"] == "<counted>"
    assert CountedRepr.encoded == 1  # the merged create shares the encoded body


def test_a_request_needs_exactly_one_of_body_and_build() -> None:
    with pytest.raises(TypeError):
        payloads.Request(kind=payloads.UPDATE_TASK, method="PATCH", path="/x", workflow_id="w")
    with pytest.raises(TypeError):
        payloads.Request(
            kind=payloads.UPDATE_TASK,
            method="PATCH",
            path="/x",
            workflow_id="w",
            body=b"{}",
            build=lambda: b"{}",
        )


def test_a_body_builder_that_raises_still_gives_a_body() -> None:
    def broken() -> bytes:
        raise MemoryError("out of memory while encoding")

    request = payloads.Request(
        kind=payloads.UPDATE_TASK,
        method="PATCH",
        path="/x",
        workflow_id="w",
        task_id=3,
        build=broken,
    )
    data = json.loads(request.body)
    assert data["id"] == 3
    assert data["current_context"]["truncated"] is True
    assert "MemoryError" in data["current_context"]["error"]


@pytest.fixture
def encode_fails_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first body encoded raises MemoryError; later ones encode as usual."""
    real_encode = contexts.encode
    calls = 0

    def encode(value: Any) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise MemoryError("out of memory while encoding")
        return real_encode(value)

    monkeypatch.setattr(payloads, "encode", encode)
    monkeypatch.setattr(contexts, "encode", encode)


@pytest.mark.usefixtures("encode_fails_once")
@pytest.mark.parametrize("build", [payloads.create_task, payloads.update_task])
def test_a_task_body_that_cannot_be_encoded_still_carries_id_name_and_status(build: Any) -> None:
    record = sample_task_record("w", task_id=5, status=TaskStatus.COMPLETED)
    data = json.loads(build(record).body)
    assert (data["id"], data["name"], data["status"]) == (5, record.name, "Completed")
    assert "MemoryError" in data["current_context"]["error"]


@pytest.mark.usefixtures("encode_fails_once")
@pytest.mark.parametrize("build", [payloads.create_workflow, payloads.update_workflow])
def test_a_workflow_body_that_cannot_be_encoded_still_carries_its_status(build: Any) -> None:
    record = sample_workflow_record(status=WorkflowStatus.COMPLETED)
    data = json.loads(build(record).body)
    assert data["status"] == "Completed"
    assert "MemoryError" in data["error"]["error"]
