"""Batches through the provider against a real HTTP server that offers them, and the
fallbacks when the endpoint refuses (404/405), is too small (413), fails (500) or
answers with something that is not one result per event."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dotflow_server_api import ServerAPI
from fake_api import TOKEN, Action, FakeAPI
from test_serverapi_delivery import events_of, expected_state, quick, run

OFFER = "max-events=1000, max-bytes=6000000"


@pytest.fixture
def batching() -> Iterator[FakeAPI]:
    with FakeAPI(token=TOKEN, prefix="/api/v1", batch=OFFER) as server:
        yield server


def _batches(server: FakeAPI) -> list[Any]:
    return [request for request in server.requests if request.path.endswith("/events")]


def _check_everything_delivered(server: FakeAPI, provider: ServerAPI, steps: int) -> Any:
    workflow = run(provider, [quick] * steps)
    assert server.delivered_state(workflow.workflow_id) == expected_state(workflow)
    stats = provider.stats()
    assert stats.delivered == events_of(workflow)
    assert stats.spooled == stats.dropped == 0
    return workflow


def test_a_run_goes_in_a_few_batches_with_the_state_single_requests_give(
    batching: FakeAPI, make_provider: Callable[..., ServerAPI]
) -> None:
    _check_everything_delivered(batching, make_provider(batching.url), 50)
    assert _batches(batching)
    assert len(batching.requests) <= 6, batching.lines()
    for request in _batches(batching):
        ops = [event["op"] for event in request.json["events"]]
        assert set(ops) <= {"create_workflow", "update_workflow", "create_task", "update_task"}


@pytest.mark.parametrize("status", [404, 405])
def test_a_server_that_refuses_the_endpoint_gets_single_requests(
    batching: FakeAPI, make_provider: Callable[..., ServerAPI], status: int
) -> None:
    batching.always(
        lambda request: Action(status=status) if request.path.endswith("/events") else None
    )
    _check_everything_delivered(batching, make_provider(batching.url), 20)
    assert len(_batches(batching)) == 1  # refused once, never tried again


def test_a_413_halves_the_batch_until_it_fits(
    batching: FakeAPI, make_provider: Callable[..., ServerAPI]
) -> None:
    def too_large(request: Any) -> Action | None:
        if request.path.endswith("/events") and len(request.json["events"]) > 5:
            return Action(status=413)
        return None

    batching.always(too_large)
    _check_everything_delivered(batching, make_provider(batching.url), 40)
    sizes = [len(request.json["events"]) for request in _batches(batching)]
    assert any(size > 5 for size in sizes) and any(1 < size <= 5 for size in sizes), sizes


def test_a_batch_that_fails_with_500_is_retried_and_delivered_once(
    batching: FakeAPI, make_provider: Callable[..., ServerAPI]
) -> None:
    batching.script(Action(status=500, match="/events"), Action(status=500, match="/events"))
    _check_everything_delivered(batching, make_provider(batching.url), 20)
    assert [request.status for request in _batches(batching)][:2] == [500, 500]


def test_an_answer_that_is_not_one_result_per_event_falls_back_to_single_requests(
    batching: FakeAPI, make_provider: Callable[..., ServerAPI]
) -> None:
    batching.script(Action(status=200, raw=b'{"results": []}', match="/events"))
    _check_everything_delivered(batching, make_provider(batching.url), 20)
    assert len(_batches(batching)) == 1


def _held_create(server: FakeAPI) -> None:
    """The workflow's create is answered after 1 s: the whole run is queued by then."""
    server.script(Action(delay=1.0, match=r"^POST /api/v1/workflows$"))


def test_a_new_workflows_final_status_goes_in_the_batch_of_its_last_tasks(
    batching: FakeAPI, make_provider: Callable[..., ServerAPI]
) -> None:
    _held_create(batching)
    workflow = _check_everything_delivered(batching, make_provider(batching.url), 20)
    lines = [request.line for request in batching.requests]
    events = f"POST /api/v1/workflows/{workflow.workflow_id}/events"
    assert lines == ["POST /api/v1/workflows", events], lines  # one round trip less
    last = _batches(batching)[-1].json["events"]
    assert [event["op"] for event in last].count("update_workflow") == 1
    assert last[-1]["op"] == "update_workflow" and last[-1]["body"]["status"] == "Completed"


def test_the_final_status_of_a_workflow_that_existed_goes_after_its_tasks_answers(
    batching: FakeAPI, make_provider: Callable[..., ServerAPI]
) -> None:
    provider = make_provider(batching.url)
    first = _check_everything_delivered(batching, provider, 3)
    batching.requests.clear()
    _held_create(batching)  # answered 200 now: another run may hold some of its tasks
    again = run(provider, [quick] * 20, workflow_id=first.workflow_id)
    stats = provider.stats()
    assert stats.delivered == events_of(first) + events_of(again)
    assert stats.spooled == stats.dropped == 0
    lines = [request.line for request in batching.requests]
    assert lines[-1] == f"PATCH /api/v1/workflows/{first.workflow_id}", lines
    batched_finals = [
        event
        for request in _batches(batching)
        for event in request.json["events"]
        if event["op"] == "update_workflow" and event["body"].get("status") == "Completed"
    ]
    assert batched_finals == []
