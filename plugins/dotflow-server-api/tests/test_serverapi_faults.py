"""Real faults against servers that are not the project's own (stdlib ``ThreadingHTTPServer``).

Each case is one the issue measured: a short blip of 500s or 429s before
exit, a small server (listen backlog 5) that a burst of connections overflows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from dotflow_server_api import ServerAPI
from dotflow_server_api.delivery import Delivery
from dotflow_server_api.settings import ApiSettings
from fake_api import TOKEN
from stdlib_server import StdlibServer, listen_overflows

from dotflow_core import DotFlow, action

#: Runs of each blip: a timing-dependent failure shows in a few of them.
BLIP_RUNS = int(os.environ.get("DOTFLOW_BLIP_RUNS", "8"))


@action
def step(initial_context: Any) -> dict[str, int]:
    return {"n": 1}


def default_provider(url: str, outbox_dir: Path, **settings: Any) -> ServerAPI:
    """The provider as users get it: the real backoff, the real clock."""

    def delivery(config: ApiSettings) -> Delivery:
        return Delivery(config)

    return ServerAPI(
        base_url=url, token=TOKEN, outbox_dir=outbox_dir, delivery_factory=delivery, **settings
    )


def run_and_exit(provider: ServerAPI, tasks: int) -> DotFlow:
    """A workflow, then the process's exit (the provider's shutdown, its own deadline)."""
    workflow = DotFlow(providers=[provider])
    for _ in range(tasks):
        workflow.task.add(step)
    workflow.start()
    provider.shutdown(None)
    return workflow


def expected(workflow: DotFlow) -> dict[str, Any]:
    return {
        "status": workflow.status.value if workflow.status else None,
        "tasks": {task.task_id: task.status.value for task in workflow.result_task()},
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "script",
    [pytest.param((500,) * 5, id="5x500"), pytest.param((429,) * 3, id="3x429-no-retry-after")],
)
def test_a_short_blip_before_exit_is_delivered_before_exit_every_time(
    script: tuple[int, ...], outbox_dir: Path
) -> None:
    # The backoff waits are clamped to the time left, so the last attempts still go
    # out (and are answered) before the deadline: nothing is left for the outbox.
    outcomes = []
    for _ in range(BLIP_RUNS):
        with StdlibServer(script=script) as server:
            provider = default_provider(server.url, outbox_dir, flush_timeout=2.0)
            workflow = run_and_exit(provider, tasks=3)
            stats_spooled = _spooled(outbox_dir)
            outcomes.append(server.delivered(workflow.workflow_id) == expected(workflow))
            assert stats_spooled == 0, f"run {len(outcomes)}: events were left for the outbox"
    assert outcomes == [True] * BLIP_RUNS


def _spooled(outbox_dir: Path) -> int:
    return sum(
        1
        for path in outbox_dir.glob("*/*.jsonl*")
        for line in path.read_text().splitlines()
        if '"ack"' not in line
    )


@pytest.mark.slow
def test_a_retry_after_beyond_the_deadline_is_honoured_and_the_events_kept(
    outbox_dir: Path,
) -> None:
    with StdlibServer(script=(503,) * 100, retry_after="30") as server:
        provider = default_provider(server.url, outbox_dir, flush_timeout=1.0)
        workflow = run_and_exit(provider, tasks=1)
        assert len(server.requests) == 1  # asked to wait 30 s: not asked again before exit
        assert server.delivered(workflow.workflow_id)["status"] is None
    assert _spooled(outbox_dir) >= 1


@pytest.mark.slow
def test_a_small_server_is_never_overflowed_after_the_first_burst(outbox_dir: Path) -> None:
    # Python's ThreadingHTTPServer, listen backlog 5, a connection per request,
    # 20 ms per request: delivery starts with a few connections and grows while
    # the answers come back, and the server sees no connection break.
    if listen_overflows() < 0:
        pytest.skip("/proc/net/netstat cannot be read: the listen queue cannot be watched")
    with StdlibServer(delay=0.02, backlog=5) as server:
        provider = default_provider(server.url, outbox_dir)
        overflows = listen_overflows()
        workflow = run_and_exit(provider, tasks=20)
        # The kernel's counter covers every listener on this machine: another
        # program overflowing its own backlog at this moment would show here too.
        assert listen_overflows() == overflows, "the backlog overflowed (SYNs dropped)"
        assert server.delivered(workflow.workflow_id) == expected(workflow)
        assert server.broken == [], f"connections broke: {server.broken}"
        statuses = [request.status for request in server.requests]
        assert all(status is not None and status < 300 for status in statuses), statuses
        assert len(server.requests) == 22  # one create, 20 task creates, the final status
    assert _spooled(outbox_dir) == 0
