"""Delivery against a real HTTP server on 127.0.0.1: failures, recovery, order, bounds."""

from __future__ import annotations

import itertools
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import attrs
import pytest
from dotflow_server_api import ServerAPI
from dotflow_server_api.backoff import http_date, retry_delay
from dotflow_server_api.delivery import Delivery
from dotflow_server_api.delivery import health as health_module
from dotflow_server_api.delivery.limiter import INITIAL_LIMIT
from dotflow_server_api.payloads import create_task, create_workflow
from dotflow_server_api.provider import NEXT_ID_DEADLINE
from dotflow_server_api.settings import ApiSettings
from dotflow_server_api.transport import Transport
from fake_api import TOKEN, Action, FakeAPI, RecordedRequest
from serverapi_helpers import config_for, free_port

from dotflow_core import ConfigurationError, DotFlow, TaskStatus, WorkflowStatus, action
from dotflow_core.testing import sample_task_record, sample_workflow_record

FINAL = {"Completed", "Failed"}


@action
def quick(initial_context: Any) -> dict[str, int]:
    return {"n": 1}


@action
def brief(initial_context: Any) -> str:
    time.sleep(0.03)
    return "ok"


@action(retry=2, retry_delay=0)
def fails(initial_context: Any) -> None:
    raise ValueError("no")


def run(
    provider: ServerAPI,
    steps: list[Any],
    workflow_id: str | None = None,
    mode: str = "sequential",
) -> DotFlow:
    workflow = DotFlow(workflow_id=workflow_id, providers=[provider])
    for step in steps:
        workflow.task.add(step, group_name="default")
    workflow.start(mode=mode, keep_going=True)
    assert workflow.wait(30)
    return workflow


def events_of(workflow: DotFlow) -> int:
    """Hook events a run produces: creates, task updates (start, retries, end), start and end."""
    per_task = sum(3 + 2 * task.retry_count for task in workflow.result_task())
    return (0 if workflow.managed else 1) + per_task + 2


def expected_state(workflow: DotFlow) -> dict[str, Any]:
    return {
        "status": workflow.status.value,
        "tasks": {task.task_id: task.status.value for task in workflow.result_task()},
    }


def split(request: RecordedRequest) -> tuple[str, int | None]:
    """(workflow id, task id or None) of a request's path."""
    parts = [unquote(part) for part in request.path.split("/")]
    index = parts.index("workflows")
    rest = parts[index + 1 :]
    if not rest:
        return (request.json["id"], None)
    if len(rest) >= 2 and rest[1] == "tasks":
        task_id = int(rest[2]) if len(rest) > 2 else int(request.json["id"])
        return (rest[0], task_id)
    return (rest[0], None)


def assert_ordering(requests: list[RecordedRequest], workflow_id: str) -> None:
    """The ordering rules, checked on what the server saw (arrival and answer times)."""
    mine = [r for r in requests if split(r)[0] == workflow_id]
    ok = [r for r in mine if r.status is not None and 200 <= r.status < 300]
    created = [r for r in ok if r.method == "POST" and split(r)[1] is None]
    tasks = [r for r in mine if split(r)[1] is not None]
    if created:  # a task's request only after the workflow's create was answered
        assert all(t.at >= created[0].done_at for t in tasks)
    by_task: dict[int, list[RecordedRequest]] = {}
    for request in tasks:
        by_task.setdefault(split(request)[1], []).append(request)  # type: ignore[arg-type]
    for task_id, sequence in by_task.items():
        methods = [r.method for r in sequence if r.status and r.status < 300]
        assert methods and methods[0] == "POST", (task_id, methods)
        assert "POST" not in methods[1:], (task_id, methods)  # create once, then updates
        for earlier, later in itertools.pairwise(sequence):  # one in flight per task
            if earlier.done_at is not None:
                assert later.at >= earlier.done_at, (task_id, earlier.line, later.line)
    finals = [
        r for r in ok if r.method == "PATCH" and split(r)[1] is None and r.json["status"] in FINAL
    ]
    for final in finals:  # the final status after every task request ended
        assert all(t.done_at is None or final.at >= t.done_at for t in tasks)


def outbox_files(outbox_dir: Path) -> list[Path]:
    return sorted(outbox_dir.glob("*/*.jsonl*")) if outbox_dir.exists() else []


# -- the happy path and recoveries ------------------------------------------------


def test_everything_is_delivered_in_order(fake: FakeAPI, make_provider: Callable[..., ServerAPI]):
    provider = make_provider(fake.url)
    workflow = run(provider, [quick, fails, brief, quick])
    assert fake.delivered_state(workflow.workflow_id) == expected_state(workflow)
    assert_ordering(fake.requests, workflow.workflow_id)
    stats = provider.stats()
    assert stats.delivered == events_of(workflow)
    assert stats.spooled == stats.dropped == 0
    task = fake.tasks[(workflow.workflow_id, 2)]
    assert task["retry_count"] == 1 and len(task["errors"]) == 2
    assert fake.workflows[workflow.workflow_id]["completed_count"] == 3


def test_the_last_log_line_counts_what_was_delivered(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI], api_logs: pytest.LogCaptureFixture
) -> None:
    provider = make_provider(fake.url)
    workflow = run(provider, [quick, quick])
    provider.shutdown(5)
    last = [r for r in api_logs.records if r.name.startswith("dotflow.server.api")][-1]
    assert last.levelno == logging.INFO
    message = last.getMessage()
    delivered = events_of(workflow)
    assert message.startswith(f"dotflow-server-api: {delivered} event(s) delivered to {fake.url}")
    assert message.endswith(", 0 spooled, 0 dropped"), message


class EncodedWhere:
    """A context JSON cannot carry: records the thread that encodes it (as its repr)."""

    threads: list[str] = []

    def __repr__(self) -> str:
        EncodedWhere.threads.append(threading.current_thread().name)
        return "<encoded>"


@action
def opaque(initial_context: Any) -> EncodedWhere:
    return EncodedWhere()


def test_bodies_are_encoded_by_the_delivery_workers_once_per_value(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI]
) -> None:
    EncodedWhere.threads = []
    provider = make_provider(fake.url)
    workflow = DotFlow(providers=[provider])
    for _ in range(3):
        workflow.task.add(opaque)
    workflow.start()  # returns after the flush: everything was sent
    workflow_thread = threading.current_thread().name
    assert fake.tasks[(workflow.workflow_id, 3)]["current_context"] == "<encoded>"
    assert EncodedWhere.threads, "no context was encoded"
    assert workflow_thread not in EncodedWhere.threads
    assert all(name.startswith("dotflow-server-api") for name in EncodedWhere.threads)
    # Records share the step's value (no copy), so each of the 3 values is encoded once
    # however many bodies carry it (task 2's previous context is task 1's current one),
    # and never for events that were coalesced into a later one before sending.
    carried = sum(request.body.count(b"<encoded>") for request in fake.requests)
    assert len(EncodedWhere.threads) == 3
    assert carried > 3


def test_500s_then_recovery_deliver_every_event_once(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI], api_logs: pytest.LogCaptureFixture
) -> None:
    fake.script(*[Action(status=500)] * 3, Action(status=502, match="tasks"))
    provider = make_provider(fake.url)
    workflow = run(provider, [quick, brief, fails, quick, brief])
    assert fake.delivered_state(workflow.workflow_id) == expected_state(workflow)
    assert_ordering(fake.requests, workflow.workflow_id)
    successes = [(r.method, r.path, r.body) for r in fake.requests if r.status in (200, 201)]
    assert len(successes) == len(set(successes))  # nothing sent twice once accepted
    stats = provider.stats()
    assert stats.delivered == events_of(workflow)
    assert stats.dropped == stats.spooled == 0
    mine = [r for r in api_logs.records if r.name.startswith("dotflow.server.api")]
    warnings = [r.getMessage() for r in mine if r.levelno == logging.WARNING]
    recovered = [r.levelno for r in mine if "recovered" in r.getMessage()]
    # One outage (the 500s: nothing else was in flight): a WARNING as it starts, an INFO
    # as it ends. The 502 came while other task creates were in flight: backpressure,
    # retried without an outage.
    assert len(warnings) == 1 and "cannot deliver" in warnings[0] and "HTTP 500" in warnings[0]
    assert recovered == [logging.INFO]
    assert not [r for r in mine if "again" in r.getMessage()]
    assert any("HTTP 502" in r.getMessage() and "retry in" in r.getMessage() for r in mine)


def alternate_503(fake: FakeAPI) -> None:
    """Every other request answered 503: a flapping server."""
    counter = itertools.count()
    lock = threading.Lock()

    def rule(request: RecordedRequest) -> Action | None:
        with lock:
            return Action(status=503) if next(counter) % 2 == 0 else None

    fake.always(rule)


def test_a_flapping_server_logs_one_outage_warning(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI], api_logs: pytest.LogCaptureFixture
) -> None:
    alternate_503(fake)
    provider = make_provider(fake.url)
    workflow = run(provider, [quick] * 30)
    assert fake.delivered_state(workflow.workflow_id) == expected_state(workflow)
    mine = [r for r in api_logs.records if r.name.startswith("dotflow.server.api")]
    outages = [r for r in mine if "cannot deliver" in r.getMessage()]
    assert len(outages) >= 2  # the server did flap: several outages, one warning
    assert [r.levelno for r in outages].count(logging.WARNING) == 1
    assert [r.levelno for r in mine if "recovered" in r.getMessage()].count(logging.INFO) == 1


def test_an_outage_after_the_quiet_interval_warns_again_and_counts_the_short_ones(
    fake: FakeAPI,
    make_provider: Callable[..., ServerAPI],
    api_logs: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(health_module, "OUTAGE_LOG_INTERVAL", 0.5)
    alternate_503(fake)
    provider = make_provider(fake.url)
    run(provider, [quick] * 6)
    time.sleep(0.6)
    run(provider, [quick])
    warnings = [r.getMessage() for r in api_logs.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "short outage(s) since the last warning" in warnings[1]
    assert "short outage" not in warnings[0]


def test_a_failed_request_waits_one_backoff_draw(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI]
) -> None:
    """Full jitter: the retry waits the drawn delay, not the larger of two draws."""
    draws = iter([0.0, 5.0, 5.0, 5.0])
    fake.script(Action(status=503))
    provider = make_provider(fake.url, delay=lambda failures, header: next(draws))
    workflow = run(provider, [quick])
    provider.flush(workflow.workflow_id, timeout=3.0)
    assert fake.delivered_state(workflow.workflow_id) == expected_state(workflow)
    failed, retried = fake.requests[0], fake.requests[1]
    assert failed.status == 503 and retried.path == failed.path
    assert retried.at - failed.done_at < 1.0


def test_429_retry_after_is_honoured(fake: FakeAPI, make_provider: Callable[..., ServerAPI]):
    fake.script(Action(status=429, retry_after="1"))
    provider = make_provider(
        fake.url, delay=lambda n, header: retry_delay(n, header, rand=lambda: 0)
    )
    workflow = run(provider, [quick, quick])
    assert fake.delivered_state(workflow.workflow_id) == expected_state(workflow)
    limited, following = fake.requests[0], fake.requests[1]
    assert limited.status == 429
    assert 0.9 <= following.at - limited.done_at < 2.5


def test_the_default_retry_delay_honours_retry_after_in_seconds(
    fake: FakeAPI, outbox_dir: Path
) -> None:
    """No injected delay: the production wiring passes the header to the retry delay."""
    # A zero draw: the backoff alone would retry at once.
    refused_at, retried_at = first_retry(fake, outbox_dir, Action(status=503, retry_after="1"), 0.0)
    assert 0.9 <= retried_at - refused_at < 3.0


def test_the_default_retry_delay_honours_retry_after_as_an_http_date(
    fake: FakeAPI, outbox_dir: Path
) -> None:
    when = math.ceil(time.time() + 1.0)  # a whole second (HTTP-dates have no fraction) 1-2 s on
    when_monotonic = time.monotonic() + (when - time.time())
    header = http_date(datetime.fromtimestamp(when, timezone.utc))
    _, retried_at = first_retry(fake, outbox_dir, Action(status=503, retry_after=header), 0.0)
    assert when_monotonic - 0.05 <= retried_at < when_monotonic + 1.5


@pytest.mark.parametrize(("draw", "low", "high"), [(0.0, 0.0, 0.25), (1.0, 0.45, 1.5)])
def test_the_default_backoff_is_one_full_jitter_draw_below_half_a_second(
    fake: FakeAPI, outbox_dir: Path, draw: float, low: float, high: float
) -> None:
    """No injected delay and no Retry-After: the first retry waits ``0.5 s * draw``."""
    refused_at, retried_at = first_retry(fake, outbox_dir, Action(status=503), draw)
    assert low <= retried_at - refused_at < high


def first_retry(
    fake: FakeAPI, outbox_dir: Path, refusal: Action, draw: float
) -> tuple[float, float]:
    """When a refused workflow create was answered and when its retry came (monotonic)."""
    fake.script(refusal)
    delivery = Delivery(config_for(fake.url, outbox_dir), start_delay=0, rand=lambda: draw)
    record = sample_workflow_record()
    delivery.submit(create_workflow(record))
    delivery.flush(record.workflow_id, timeout=5)
    assert delivery.close(0).delivered == 1
    refused, retried = fake.requests[:2]
    assert refused.status == 503 and retried.status == 201
    assert refused.done_at is not None
    return refused.done_at, retried.at


def test_a_hard_disconnect_is_followed_by_a_resend(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI]
) -> None:
    fake.script(Action(disconnect=True, match="tasks"), Action(disconnect=True, match="PATCH"))
    provider = make_provider(fake.url)
    workflow = run(provider, [brief, brief, brief])
    assert fake.delivered_state(workflow.workflow_id) == expected_state(workflow)
    assert_ordering(fake.requests, workflow.workflow_id)
    assert sum(1 for r in fake.requests if r.status is None) == 2
    assert provider.stats().delivered == events_of(workflow)


# -- failures that end delivery -------------------------------------------------------


def test_a_rejected_token_logs_once_and_stops_sending(
    fake: FakeAPI,
    make_provider: Callable[..., ServerAPI],
    api_logs: pytest.LogCaptureFixture,
    outbox_dir: Path,
) -> None:
    provider = make_provider(fake.url, token="wrong-token")
    workflow = run(provider, [quick, quick, quick])
    assert workflow.status is WorkflowStatus.COMPLETED  # the run is not affected
    assert len(fake.requests) == 1 and fake.requests[0].status == 401
    errors = [r.getMessage() for r in api_logs.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "rejected the token" in errors[0]
    assert "wrong-token" not in api_logs.text
    stats = provider.stats()
    assert stats.dropped == events_of(workflow) and stats.spooled == 0
    assert outbox_files(outbox_dir) == []  # never replayed later under another token


def test_a_token_rejected_by_many_requests_at_once_is_logged_once(
    make_provider: Callable[..., ServerAPI], api_logs: pytest.LogCaptureFixture
) -> None:
    with FakeAPI(token=TOKEN, delay=0.1) as server:
        provider = make_provider(server.url, token="wrong-token")
        # A caller-supplied id: no workflow create first, so the task creates go together.
        workflow = run(provider, [quick] * 10, workflow_id="external-1")
        rejected = [request for request in server.requests if request.status == 401]
        assert server.max_in_flight > 1 and len(rejected) > 1
        errors = [r.getMessage() for r in api_logs.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "rejected the token" in errors[0]
        assert provider.stats().dropped == events_of(workflow)


@pytest.mark.parametrize("status", [401, 403])
def test_after_the_token_is_rejected_later_events_are_not_sent(
    fake: FakeAPI,
    make_provider: Callable[..., ServerAPI],
    api_logs: pytest.LogCaptureFixture,
    status: int,
) -> None:
    """The rejection is answered first; the events of the run that follow it are dropped."""
    fake.always(lambda r: Action(status=status))
    provider = make_provider(fake.url)
    workflow = sample_workflow_record()
    wid = workflow.workflow_id
    provider.create_workflow(workflow)
    assert fake.wait_for(lambda: [r.status for r in fake.requests] == [status])
    assert fake.wait_for(lambda: provider.delivery().pending() == 0)  # the answer was read
    for task_id in (1, 2, 3):
        provider.create_task(sample_task_record(wid, task_id))
    final = attrs.evolve(sample_workflow_record(WorkflowStatus.COMPLETED), workflow_id=wid)
    provider.update_workflow(final)
    provider.flush(wid, timeout=2.0)
    assert len(fake.requests) == 1  # nothing after the rejection reached the server
    errors = [r.getMessage() for r in api_logs.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "rejected the token" in errors[0]
    assert f"HTTP {status}" in errors[0]
    stats = provider.stats()
    assert stats.dropped == 5 and stats.spooled == 0  # the create and the four later events


def test_other_4xx_drop_the_event_and_log_once_per_endpoint(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI], api_logs: pytest.LogCaptureFixture
) -> None:
    fake.always(
        lambda r: Action(status=422, body={"detail": "x" * 500}) if r.method == "PATCH" else None
    )
    provider = make_provider(fake.url)
    workflow = run(provider, [brief, brief, brief])
    errors = [r.getMessage() for r in api_logs.records if r.levelno >= logging.ERROR]
    endpoints = ("PATCH /workflows/{workflow_id}", "PATCH /workflows/{workflow_id}/tasks/{task_id}")
    assert 1 <= len(errors) <= 2  # one line per endpoint and status, however many events
    for line in errors:
        assert "HTTP 422" in line and any(endpoint in line for endpoint in endpoints)
        assert "x" * 201 not in line
    stats = provider.stats()
    assert stats.dropped >= 1 and stats.delivered + stats.dropped == events_of(workflow)


def test_other_4xx_log_one_error_per_endpoint_and_status_with_a_snippet(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI], api_logs: pytest.LogCaptureFixture
) -> None:
    provider = make_provider(fake.url)
    workflow = sample_workflow_record()
    wid = workflow.workflow_id
    provider.create_workflow(workflow)
    for task_id in (1, 2, 3):
        provider.create_task(sample_task_record(wid, task_id))
    provider.flush(wid, timeout=5)
    assert [r.status for r in fake.requests] == [201] * 4

    def rule(request: RecordedRequest) -> Action | None:
        if request.method != "PATCH":
            return None
        if request.path.endswith("/tasks/1") or "/tasks/" not in request.path:
            return Action(status=422, body={"detail": "snippet-of-the-422"})
        return Action(status=404, body={"detail": "snippet-of-the-404"})  # tasks 2 and 3

    fake.always(rule)
    for task_id in (1, 2, 3):
        provider.update_task(sample_task_record(wid, task_id, TaskStatus.COMPLETED))
    final = attrs.evolve(sample_workflow_record(WorkflowStatus.COMPLETED), workflow_id=wid)
    provider.update_workflow(final)
    provider.flush(wid, timeout=5)
    assert sorted(r.status for r in fake.requests[4:]) == [404, 404, 422, 422]
    errors = [r.getMessage() for r in api_logs.records if r.levelno >= logging.ERROR]
    assert len(errors) == 3, errors
    task, workflow_patch = (
        "PATCH /workflows/{workflow_id}/tasks/{task_id}",
        "PATCH /workflows/{workflow_id}",
    )
    for endpoint, status in ((task, 422), (task, 404), (workflow_patch, 422)):
        (line,) = [e for e in errors if f"rejected {endpoint} with HTTP {status}" in e]
        assert f"snippet-of-the-{status}" in line, line
    assert provider.stats().dropped == 4


def test_connection_refused_ends_within_the_deadline_and_spools(
    make_provider: Callable[..., ServerAPI], api_logs: pytest.LogCaptureFixture, outbox_dir: Path
) -> None:
    provider = make_provider(f"http://127.0.0.1:{free_port()}", flush_timeout=1.0)
    started = time.monotonic()
    workflow = run(provider, [quick, quick])
    assert time.monotonic() - started < 2.0
    assert provider.stats().spooled == events_of(workflow)
    assert len(outbox_files(outbox_dir)) == 1
    warnings = [
        r.getMessage()
        for r in api_logs.records
        if r.levelno == logging.WARNING and r.name.startswith("dotflow.server.api")
    ]
    assert len(warnings) == 1  # one line as the outage starts, however many retries
    assert "ConnectionError" in warnings[0]


@pytest.mark.parametrize("server", ["up", "down"])
def test_a_workflow_id_with_undecodable_bytes_is_delivered_or_spooled(
    server: str, fake: FakeAPI, make_provider: Callable[..., ServerAPI], outbox_dir: Path
) -> None:
    # DotFlow refuses such an id (it is not text); records may still come from elsewhere.
    workflow_id = os.fsdecode(b"nightly-\xff")  # as os.environ gives WORKFLOW_ID
    url = fake.url if server == "up" else f"http://127.0.0.1:{free_port()}"
    provider = make_provider(url, flush_timeout=0.5)
    workflow = attrs.evolve(sample_workflow_record(), workflow_id=workflow_id)
    provider.create_workflow(workflow)
    provider.create_task(sample_task_record(workflow_id, 1))
    provider.update_task(sample_task_record(workflow_id, 1, TaskStatus.COMPLETED))
    provider.update_workflow(attrs.evolve(workflow, status=WorkflowStatus.COMPLETED))
    provider.flush(workflow_id, timeout=0.5)
    stats = provider.stats()
    assert stats.dropped == 0
    if server == "up":
        assert stats.delivered >= 3  # the task's create may carry its latest state
        assert "PATCH /api/v1/workflows/nightly-%FF" in fake.lines()
    else:
        assert stats.spooled >= 3
        assert len(outbox_files(outbox_dir)) == 1


def test_an_event_that_cannot_be_queued_is_counted_as_dropped_and_logged_once(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI], api_logs: pytest.LogCaptureFixture
) -> None:
    class Refusing(Delivery):
        def submit(self, request: Any) -> None:
            if request.task_id is not None:
                raise RuntimeError("cannot queue")
            super().submit(request)

    provider = ServerAPI(base_url=fake.url, token=TOKEN, delivery_factory=Refusing)
    try:
        workflow = run(provider, [quick, quick])
        stats = provider.stats()
    finally:
        provider.shutdown(timeout=0)
    task_events = events_of(workflow) - 3  # all but the workflow's create, start and end
    assert stats.dropped == task_events
    errors = [r.getMessage() for r in api_logs.records if r.levelno == logging.ERROR]
    assert len(errors) == 2  # create_task and update_task, once each
    assert all("counted as dropped" in line and "cannot queue" in line for line in errors)


def test_a_server_that_never_answers_cannot_hold_the_run(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI], outbox_dir: Path
) -> None:
    fake.always(lambda r: Action(hang=True))
    provider = make_provider(fake.url, flush_timeout=1.0)
    started = time.monotonic()
    workflow = run(provider, [quick, quick, quick])
    flushed = time.monotonic() - started
    assert 0.9 <= flushed < 2.0
    started = time.monotonic()
    provider.shutdown(timeout=None)
    assert time.monotonic() - started < 0.5  # everything was spooled by the flush
    assert len(outbox_files(outbox_dir)) == 1
    assert provider.stats().spooled == 0  # counted in the summary, reset by shutdown
    assert fake.lines() == ["POST /api/v1/workflows"]
    del workflow


# -- bounds and concurrency ------------------------------------------------------------


def test_a_full_queue_coalesces_then_drops_and_counts(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI], api_logs: pytest.LogCaptureFixture
) -> None:
    fake.always(lambda r: Action(hang=True))
    provider = make_provider(fake.url, max_queue=3, max_in_flight=1)
    workflow = sample_workflow_record()
    wid = workflow.workflow_id
    provider.create_workflow(workflow)
    assert fake.wait_for(lambda: len(fake.requests) == 1)  # the create is in flight
    for task_id in (1, 2, 3):
        provider.create_task(sample_task_record(wid, task_id))
    for task_id in (1, 2, 3):  # absorbed by the pending creates
        provider.update_task(sample_task_record(wid, task_id, TaskStatus.IN_PROGRESS))
        provider.update_task(sample_task_record(wid, task_id, TaskStatus.COMPLETED))
    # In progress: nothing pending can absorb it, so it is dropped; the final status is kept.
    provider.update_workflow(attrs.evolve(sample_workflow_record(), workflow_id=wid))
    final = sample_workflow_record(WorkflowStatus.COMPLETED)
    provider.update_workflow(attrs.evolve(final, workflow_id=wid))
    delivery = provider.delivery()
    assert delivery.stats.coalesced == 6
    assert delivery.stats.dropped == 1  # the intermediate workflow update
    assert delivery.pending() == 5  # create in flight, 3 task creates, the final status
    full = [r for r in api_logs.records if "queue is full" in r.getMessage()]
    assert len(full) == 1
    stats = delivery.close(0)
    assert (stats.spooled, stats.dropped) == (11, 1)
    summary = api_logs.records[-1]
    assert summary.levelno == logging.WARNING
    assert "11 spooled" in summary.getMessage() and "1 dropped" in summary.getMessage()


def test_requests_really_run_concurrently_and_keep_their_order(
    make_provider: Callable[..., ServerAPI],
) -> None:
    with FakeAPI(token=TOKEN, delay=0.15) as slow:
        provider = make_provider(slow.url, max_in_flight=4)
        workflow = run(provider, [brief] * 12)
        assert slow.max_in_flight == 4
        assert slow.delivered_state(workflow.workflow_id) == expected_state(workflow)
        assert_ordering(slow.requests, workflow.workflow_id)
        stats = provider.stats()
        assert stats.delivered == events_of(workflow) and stats.coalesced > 0


def test_requests_reuse_one_keep_alive_connection(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI]
) -> None:
    provider = make_provider(fake.url, max_in_flight=1)
    workflow = run(provider, [brief] * 3)
    assert fake.delivered_state(workflow.workflow_id) == expected_state(workflow)
    assert len(fake.requests) >= 5  # the workflow's create, 3 tasks, its final status
    assert len({request.client_port for request in fake.requests}) == 1


def test_concurrency_starts_small_and_grows_while_the_server_answers(
    make_provider: Callable[..., ServerAPI],
) -> None:
    with FakeAPI(token=TOKEN, delay=0.15) as slow:
        provider = make_provider(slow.url)  # the default max_in_flight
        workflow = run(provider, [quick] * 20)
        # The workflow's create, then its 20 task creates (each carrying its task's
        # latest state), INITIAL_LIMIT at first and more as answers come, then its
        # final status.
        assert INITIAL_LIMIT < slow.max_in_flight <= 20
        at_once = [r for r in slow.requests if r.at < slow.requests[1].at + 0.1]
        assert len(at_once) <= INITIAL_LIMIT + 1  # the first round: a few connections
        assert len(slow.requests) == 22
        assert slow.delivered_state(workflow.workflow_id) == expected_state(workflow)
        assert_ordering(slow.requests, workflow.workflow_id)


def delivery_workers() -> int:
    return sum(thread.name.startswith("dotflow-server-api-") for thread in threading.enumerate())


def no_delivery_workers_left(timeout: float = 10.0) -> bool:
    """Wait until the workers of closed deliveries (earlier tests) have left."""
    deadline = time.monotonic() + timeout
    while delivery_workers() and time.monotonic() < deadline:
        time.sleep(0.01)
    return delivery_workers() == 0


def test_the_other_workers_start_while_the_first_request_is_on_the_wire(
    outbox_dir: Path,
) -> None:
    # Starting a burst's threads before the transport exists would delay the first
    # request (the import of requests) by that many thread starts.
    assert no_delivery_workers_left()  # earlier tests' workers: counted apart from ours
    before = delivery_workers()
    workers_when_built: list[int] = []

    def transport(config: ApiSettings) -> Transport:
        workers_when_built.append(delivery_workers() - before)
        return Transport(config)

    with FakeAPI(token=TOKEN, delay=0.1) as server:
        server.script(Action(delay=0.4, match="^POST /workflows$"))
        config = config_for(server.url, outbox_dir)
        delivery = Delivery(config, transport_factory=transport, start_delay=0, initial_limit=16)
        workflow = sample_workflow_record()
        delivery.submit(create_workflow(workflow))
        for task_id in range(1, 11):
            delivery.submit(create_task(sample_task_record(workflow.workflow_id, task_id)))
        # One worker per queued request, all started while the create is in flight.
        assert server.wait_for(
            lambda: delivery_workers() - before == 11 and server.lines() == ["POST /workflows"]
        )
        assert server.in_flight == 1
        assert workers_when_built == [1]
        assert delivery.close(10).delivered == 11
        assert server.max_in_flight == 10  # then the ten task creates at once


def test_asking_for_the_next_task_id_starts_no_delivery_worker(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI]
) -> None:
    # The lookup builds the transport on the workflow's thread; delivery itself still
    # waits for the first event (and START_DELAY) before any worker runs.
    assert no_delivery_workers_left()
    provider = make_provider(fake.url)
    assert provider.get_next_task_id("resumed") == 1
    time.sleep(0.1)
    assert delivery_workers() == 0
    assert fake.lines() == ["GET /api/v1/workflows/resumed/tasks/next-id"]


def test_idle_workers_leave_and_new_ones_start_when_work_comes(
    make_provider: Callable[..., ServerAPI],
) -> None:
    before = delivery_workers()
    with FakeAPI(token=TOKEN, delay=0.2) as server:
        provider = make_provider(server.url, idle_retirement=0.2, initial_limit=32)
        first = run(provider, [quick] * 12)
        assert server.max_in_flight == 12  # twelve workers sent at once...
        assert server.wait_for(lambda: delivery_workers() <= before)  # ...then all left
        second = run(provider, [quick] * 3)
        for workflow in (first, second):
            assert server.delivered_state(workflow.workflow_id) == expected_state(workflow)


def test_after_an_outage_longer_than_idleness_delivery_widens_again(
    make_provider: Callable[..., ServerAPI],
) -> None:
    with FakeAPI(token=TOKEN, delay=0.1) as server:
        server.script(*[Action(status=503, delay=0.4, match="^POST /workflows$")] * 2)
        # The other workers, idle for 0.2 s while the one probe waits for its answer, leave.
        provider = make_provider(server.url, idle_retirement=0.2, initial_limit=32)
        workflow = run(provider, [quick] * 10)
        assert [request.status for request in server.requests[:3]] == [503, 503, 201]
        assert server.max_in_flight == 10  # one probe during the outage, then all tasks
        assert server.delivered_state(workflow.workflow_id) == expected_state(workflow)


def test_several_workflows_at_once_keep_their_own_order(
    make_provider: Callable[..., ServerAPI],
) -> None:
    with FakeAPI(token=TOKEN, delay=0.02) as server:
        provider = make_provider(server.url)
        workflows = [DotFlow(providers=[provider]) for _ in range(4)]
        for workflow in workflows:
            for _ in range(5):
                workflow.task.add(brief)
            workflow.start(mode="background")
        for workflow in workflows:
            assert workflow.wait(30)
            assert server.delivered_state(workflow.workflow_id) == expected_state(workflow)
            assert_ordering(server.requests, workflow.workflow_id)


@pytest.mark.parametrize("mode", ["background", "parallel"])
def test_every_mode_is_reported(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI], mode: str
) -> None:
    provider = make_provider(fake.url)
    workflow = run(provider, [quick, fails, quick], mode=mode)
    assert fake.delivered_state(workflow.workflow_id) == expected_state(workflow)
    assert_ordering(fake.requests, workflow.workflow_id)


# -- managed mode -------------------------------------------------------------------------


def test_a_resumed_workflow_continues_its_numbering(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run(make_provider(fake.url), [quick, quick, quick], workflow_id="nightly/etl 1")
    assert [task.task_id for task in first.result_task()] == [1, 2, 3]
    monkeypatch.setenv("WORKFLOW_ID", "nightly/etl 1")
    second = run(make_provider(fake.url), [quick, quick])
    assert second.workflow_id == "nightly/etl 1"
    assert [task.task_id for task in second.result_task()] == [4, 5]
    assert sorted(tid for (wid, tid) in fake.tasks if wid == "nightly/etl 1") == [1, 2, 3, 4, 5]
    assert not [r for r in fake.requests if r.line == "POST /api/v1/workflows"]
    assert "GET /api/v1/workflows/nightly%2Fetl%201/tasks/next-id" in fake.lines()


class RawServer:
    """A TCP server on 127.0.0.1 that reads a request, then hangs or trickles its answer."""

    ANSWER = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n"
        b'{"next_id": 5}'
    )

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests = 0
        self._stop = threading.Event()
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)
            self.requests += 1
            for byte in self.ANSWER if self.mode == "trickle" else b"":
                if self._stop.wait(0.3):
                    return
                connection.sendall(bytes([byte]))
            self._stop.wait(30)

    def close(self) -> None:
        self._stop.set()
        self._socket.close()


@pytest.mark.parametrize("mode", ["hang", "trickle"])
@pytest.mark.parametrize("strict", [False, True])
def test_the_next_id_lookup_is_bounded_whatever_the_server_does(
    mode: str,
    strict: bool,
    make_provider: Callable[..., ServerAPI],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Per-read timeouts do not bound a server that sends a byte every 0.3 s."""
    server = RawServer(mode)
    try:
        provider = make_provider(server.url, strict=strict)
        started = time.monotonic()
        if strict:
            with pytest.raises(ConfigurationError, match="SERVER_STRICT"):
                provider.get_next_task_id("nightly")
        else:
            assert provider.get_next_task_id("nightly") is None
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert elapsed < NEXT_ID_DEADLINE + 1.0, f"the lookup took {elapsed:.2f} s"
    assert server.requests == 1  # a slow first attempt leaves no time for a retry
    if not strict:
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "INITIAL_TASK_ID" in warnings[0]


def test_tasks_of_a_workflow_whose_create_was_rejected_are_still_tried(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI]
) -> None:
    fake.script(Action(status=422, match="POST /api/v1/workflows$"))
    provider = make_provider(fake.url)
    workflow = run(provider, [quick, quick])
    tasks = [r for r in fake.requests if "/tasks" in r.path]
    assert len(tasks) == 2 and all(r.status == 201 for r in tasks)
    assert provider.stats().dropped == 2  # the create and the start merged into it
    del workflow


def test_new_settings_start_a_new_queue_and_the_old_one_is_drained(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI], outbox_dir: Path
) -> None:
    from dotflow_core import Settings

    provider = ServerAPI(outbox_dir=outbox_dir)
    down = f"http://127.0.0.1:{free_port()}"
    provider.configure(
        Settings(config={}, environ={"SERVER_BASE_URL": down, "SERVER_USER_TOKEN": TOKEN})
    )
    provider.create_workflow(sample_workflow_record())
    first = provider.delivery()
    provider.configure(
        Settings(config={}, environ={"SERVER_BASE_URL": fake.url, "SERVER_USER_TOKEN": TOKEN})
    )
    assert provider.delivery() is not first
    provider.create_workflow(sample_workflow_record())
    provider.shutdown(1.0)
    assert len([r for r in fake.requests if r.line == "POST /api/v1/workflows"]) == 1
    assert len(list(outbox_dir.glob("*/*.jsonl"))) == 1  # the first queue was spooled
