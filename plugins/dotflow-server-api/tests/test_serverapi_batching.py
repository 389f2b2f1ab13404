"""The batch helpers: the server's offer, refusals, a batch's body and its answer."""

from __future__ import annotations

import json

from dotflow_server_api.batching import (
    CLIENT_MAX_BYTES,
    CLIENT_MAX_EVENTS,
    BatchSupport,
    encode_batch,
    parse_offer,
    split_answer,
)
from dotflow_server_api.payloads import CREATE_TASK, Request
from dotflow_server_api.transport import Outcome, Result


def _task(task_id: int) -> Request:
    body = json.dumps({"id": task_id, "status": "Completed"}).encode()
    return Request(
        kind=CREATE_TASK,
        method="POST",
        path="/workflows/w%2F1/tasks",
        workflow_id="w/1",
        body=body,
        task_id=task_id,
    )


def test_the_offer_is_read_from_the_header_and_capped_by_the_client() -> None:
    assert parse_offer("max-events=50, max-bytes=6000000") == (50, 6_000_000)
    assert parse_offer("max-bytes=99999999999,max-events=5000") == (
        CLIENT_MAX_EVENTS,
        CLIENT_MAX_BYTES,
    )
    assert parse_offer("max-events=1") is None
    assert parse_offer("nonsense") is None
    assert parse_offer("max-events=-3, max-bytes=10") is None


def test_an_error_without_the_header_keeps_the_offer_and_a_2xx_without_it_withdraws_it() -> None:
    support = BatchSupport()
    support.learn(None, None)
    assert not support.known
    support.learn("max-events=10, max-bytes=1000", 200)
    assert support.known and support.offer == (10, 1000)
    support.learn(None, 502)
    assert support.offer == (10, 1000)
    support.learn(None, 200)
    assert support.offer is None


def test_a_413_halves_the_batch_and_a_refused_endpoint_stops_batching_for_good() -> None:
    support = BatchSupport()
    support.learn("max-events=100, max-bytes=8000", 200)
    assert support.refused(Result(outcome=Outcome.REJECTED, status=413), 40)
    assert support.offer == (20, 4000)
    support.learn("max-events=100, max-bytes=8000", 200)
    assert support.offer == (20, 4000)  # never grows back to a size that was refused
    assert not support.refused(Result(outcome=Outcome.REJECTED, status=409), 5)
    assert support.refused(Result(outcome=Outcome.REJECTED, status=405), 5)
    assert support.offer is None
    support.learn("max-events=100, max-bytes=8000", 200)
    assert support.offer is None


def test_a_batch_body_carries_each_single_body_verbatim_in_order() -> None:
    path, body = encode_batch([_task(1), _task(2)])
    assert path == "/workflows/w%2F1/events"
    assert json.loads(body) == {
        "events": [
            {"op": "create_task", "body": {"id": 1, "status": "Completed"}},
            {"op": "create_task", "body": {"id": 2, "status": "Completed"}},
        ]
    }


def test_an_answer_is_split_into_one_result_per_event() -> None:
    answer = {
        "results": [
            {"status": 201, "body": {"id": 1}},
            {"status": 409, "body": {"detail": "task 2 is another run's", "next_id": 7}},
            {"status": 422, "body": {"detail": "bad secret-token"}},
        ]
    }
    results = split_answer(
        json.dumps(answer).encode(), 3, lambda text: text.replace("secret-token", "***")
    )
    assert results is not None
    assert [result.outcome for result in results] == [
        Outcome.DELIVERED,
        Outcome.CONFLICT,
        Outcome.REJECTED,
    ]
    assert results[1].next_id == 7
    assert "secret-token" not in results[2].detail and "***" in results[2].detail


def test_an_answer_that_is_not_one_result_per_event_is_refused() -> None:
    two = json.dumps({"results": [{"status": 201, "body": {}}] * 2}).encode()
    assert split_answer(two, 3, str) is None
    assert split_answer(b"not json", 1, str) is None
    assert split_answer(b'{"results": [{"status": "201", "body": {}}]}', 1, str) is None
    assert split_answer(b'{"results": [{"status": 999, "body": {}}]}', 1, str) is None
