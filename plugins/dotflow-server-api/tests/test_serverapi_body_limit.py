"""A destination that accepts less than the client's 5 MB cap (a proxy's limit): HTTP 413
lowers the task body limit, the refused event goes again cut to it, later bodies are
built within it, and nothing is dropped."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
from dotflow_server_api import ServerAPI, payloads
from dotflow_server_api.body_limit import FLOOR_BYTES, BodyLimit
from fake_api import TOKEN, Action, FakeAPI
from test_serverapi_delivery import events_of, expected_state, run

from dotflow_core import action
from dotflow_core.plugin import TaskError, TaskStatus
from dotflow_core.testing import sample_task_record

PROXY_LIMIT = 300_000
OFFER = "max-events=1000, max-bytes=6000000"


@action
def big(initial_context: Any) -> str:
    return "x" * 900_000  # within the 1 MB context cap: sent whole, over the limit


@action
def small(initial_context: Any) -> int:
    return 7


def test_a_413_halves_the_limit_from_the_refused_size_down_to_a_floor() -> None:
    limit = BodyLimit()
    assert not limit.lowered
    assert limit.refused(1_200_000) == 600_000 and limit.lowered
    assert limit.refused(900_000) == 600_000  # built before the limit was lowered
    assert limit.refused(600_000) == 300_000
    assert limit.refused(2 * FLOOR_BYTES - 2) is None  # half of it is under the floor
    assert limit.bytes == 300_000


def test_a_fitted_body_keeps_every_field_and_cuts_contexts_and_errors_to_the_limit() -> None:
    errors = tuple(
        TaskError(attempt=n, type="E", message="m" * 5_000, traceback="t") for n in range(1, 40)
    )
    record = attrs.evolve(
        sample_task_record("w", 3, TaskStatus.FAILED),
        errors=errors,
        current_context=[{"i": i} for i in range(100_000)],
        previous_context="small",
    )
    request = payloads.update_task(record)
    assert len(request.body) > 100_000
    cut = payloads.fitted(request, 50_000)
    assert (cut.method, cut.path, cut.task_id, cut.kind) == (
        request.method,
        request.path,
        request.task_id,
        request.kind,
    )
    assert len(cut.body) <= 50_000
    whole, data = json.loads(request.body), json.loads(cut.body)
    for field in ("id", "name", "status", "group_name", "retry_count", "started_at"):
        assert data[field] == whole[field], field
    assert data["previous_context"] == "small"
    assert data["current_context"]["truncated"] is True
    assert data["current_context"]["length"] == 100_000
    assert data["errors"][-1]["attempt"] == 39
    assert data["errors"][1]["type"] == payloads.ERRORS_OMITTED


def _limited(server: FakeAPI) -> FakeAPI:
    server.always(
        lambda request: (
            Action(status=413, raw=b"<html>413 Request Entity Too Large</html>")
            if len(request.body) > PROXY_LIMIT
            else None
        )
    )
    return server


@pytest.fixture(params=["single", "batch"])
def limited(request: pytest.FixtureRequest) -> Iterator[FakeAPI]:
    batch = OFFER if request.param == "batch" else None
    with FakeAPI(token=TOKEN, prefix="/api/v1", batch=batch) as server:
        yield _limited(server)


def test_a_proxy_with_a_smaller_limit_gets_every_task_cut_to_fit_and_nothing_is_dropped(
    limited: FakeAPI,
    make_provider: Callable[..., ServerAPI],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One request at a time: how many bodies were built before the limit was learned
    # (and are refused too) then does not depend on the machine's speed.
    provider = make_provider(limited.url, max_in_flight=1)
    with caplog.at_level(logging.DEBUG, logger="dotflow.server.api"):
        workflow = run(provider, [small, big, small, big, small])
    assert limited.delivered_state(workflow.workflow_id) == expected_state(workflow)
    stats = provider.stats()
    assert (stats.delivered, stats.spooled, stats.dropped) == (events_of(workflow), 0, 0)

    stored = limited.tasks[(workflow.workflow_id, 2)]
    assert stored["current_context"]["truncated"] is True
    assert stored["current_context"]["type"] == "str"
    assert limited.tasks[(workflow.workflow_id, 1)]["current_context"] == 7
    taken = [r for r in limited.requests if r.status is not None and r.status < 300]
    assert max(len(r.body) for r in taken) <= PROXY_LIMIT
    refused = [r for r in limited.requests if r.status == 413]
    sizes = [len(r.body) for r in refused]
    # Learned, not per task: halving from the first refused body down to the proxy's
    # limit, once; the second big task is built within what was learned.
    halvings = math.ceil(math.log2(sizes[0] / PROXY_LIMIT))
    assert 1 <= len(refused) <= halvings, sizes
    assert sizes == sorted(sizes, reverse=True), sizes

    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "HTTP 413" in message and "client_max_body_size" in message
    assert TOKEN not in message


def test_a_413_to_a_body_already_at_the_floor_is_dropped_with_one_error(
    make_provider: Callable[..., ServerAPI], caplog: pytest.LogCaptureFixture
) -> None:
    with FakeAPI(token=TOKEN, prefix="/api/v1") as server:
        server.always(lambda request: Action(status=413) if "/tasks" in request.path else None)
        provider = make_provider(server.url)
        with caplog.at_level(logging.WARNING, logger="dotflow.server.api"):
            run(provider, [small])
    stats = provider.stats()
    assert stats.dropped > 0 and stats.spooled == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "HTTP 413" in errors[0], [r.getMessage() for r in caplog.records]
