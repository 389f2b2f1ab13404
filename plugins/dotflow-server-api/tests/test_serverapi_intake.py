"""The intake: a run's first requests wait in a list until the delivery exists."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from dotflow_server_api import ServerAPI, payloads
from dotflow_server_api.intake import START_DELAY, Intake
from fake_api import TOKEN, Action, FakeAPI

from dotflow_core import Settings
from dotflow_core.testing import sample_task_record, sample_workflow_record


def request(task_id: int) -> payloads.Request:
    return payloads.create_task(sample_task_record("wf", task_id))


def test_held_requests_come_back_in_order_with_the_time_since_the_first() -> None:
    started = threading.Event()
    intake = Intake(started.set, delay=60)
    assert intake.hold(request(1)) and intake.hold(request(2))
    assert intake.holding
    time.sleep(0.05)
    held, elapsed = intake.take()
    assert [r.task_id for r in held] == [1, 2]
    assert 0.05 <= elapsed < 30
    assert not intake.open and not intake.holding
    assert not intake.hold(request(3)), "a closed intake sends its caller to the delivery"
    assert not started.wait(0.2), "the starter thread ends once the requests were taken"


def test_the_starter_thread_builds_the_delivery_after_the_delay() -> None:
    started = threading.Event()
    intake = Intake(started.set, delay=0.05)
    assert not started.is_set()
    began = time.monotonic()
    intake.hold(request(1))
    assert started.wait(10)
    assert time.monotonic() - began >= 0.05
    assert intake.holding, "the requests stay until the delivery takes them"


def test_nothing_starts_before_the_first_request_nor_after_close() -> None:
    started = threading.Event()
    intake = Intake(started.set, delay=0.01)
    assert not started.wait(0.1)
    intake.hold(request(1))
    intake.close()
    assert not started.wait(0.2)
    assert [r.task_id for r in intake.take()[0]] == [1], "close keeps what is held"


def test_a_provider_delivers_held_requests_in_order_and_on_time(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI]
) -> None:
    provider = make_provider(fake.url)
    workflow = sample_workflow_record()
    began = time.monotonic()
    provider.create_workflow(workflow)
    for task_id in (1, 2, 3):
        provider.create_task(sample_task_record(workflow.workflow_id, task_id))
    if time.monotonic() - began < START_DELAY * 0.9:  # (a loaded machine may be later)
        assert not fake.requests, "nothing is sent before START_DELAY"
    assert fake.wait_for(lambda: len(fake.requests) >= 4)
    assert time.monotonic() - began >= START_DELAY
    assert [line.split()[0] for line in fake.lines()[:1]] == ["POST"]
    assert fake.lines()[0].endswith("/workflows"), "the workflow's create goes first"
    assert provider.stats().delivered == 4


def test_a_flush_sends_held_requests_at_once(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI]
) -> None:
    provider = make_provider(fake.url)
    workflow = sample_workflow_record()
    provider.create_workflow(workflow)
    provider.create_task(sample_task_record(workflow.workflow_id, 1))
    provider.flush(workflow.workflow_id, 5)
    assert provider.stats().delivered == 2
    assert len(fake.requests) == 2


def test_held_requests_survive_a_change_of_settings_and_go_where_they_were_sent(
    fake: FakeAPI, outbox_dir: Path
) -> None:
    def settings(url: str) -> Settings:
        environ = {"SERVER_BASE_URL": url, "SERVER_USER_TOKEN": TOKEN}
        return Settings(config={}, environ=environ)

    with FakeAPI(token=TOKEN) as other:
        provider = ServerAPI(outbox_dir=outbox_dir)
        provider.configure(settings(fake.url))
        provider.create_workflow(sample_workflow_record())
        provider.configure(settings(other.url))
        provider.create_workflow(sample_workflow_record())
        provider.shutdown(5)
        assert len(fake.requests) == 1 and len(other.requests) == 1


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_forked_while_requests_are_held_does_not_send_them(
    make_provider: Callable[..., ServerAPI],
) -> None:
    with FakeAPI(token=TOKEN) as fake:
        fake.always(lambda r: Action(delay=0.0))
        provider = make_provider(fake.url)
        workflow = sample_workflow_record()
        provider.create_workflow(workflow)
        provider.create_task(sample_task_record(workflow.workflow_id, 1))
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                stats = provider.stats()  # builds the child's own delivery
                provider.shutdown(2)
                code = 0 if stats.delivered == 0 and stats.requests == 0 else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        provider.shutdown(5)
        assert len(fake.requests) == 2, "the parent's two, once each"


def test_the_workflows_thread_does_not_import_the_delivery_machinery(tmp_path: Path) -> None:
    """What a short run pays before its tasks: the intake, not the delivery package."""
    with FakeAPI(token=TOKEN) as fake:
        script = textwrap.dedent(
            f"""
            import sys
            from dotflow_core import DotFlow, action
            from dotflow_server_api import ServerAPI

            seen = []

            @action
            def step(initial_context):
                seen.append("dotflow_server_api.delivery" in sys.modules)

            provider = ServerAPI(
                base_url={fake.url!r}, token={TOKEN!r}, outbox_dir={str(tmp_path)!r}
            )
            provider._intake._delay = 60  # no starter thread within the run, whatever the load
            workflow = DotFlow(providers=[provider])
            for _ in range(3):
                workflow.task.add(step)
            workflow.start()
            stats = provider.stats()
            print(seen, stats.delivered, stats.spooled, stats.dropped)
            """
        )
        finished = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
        assert finished.returncode == 0, finished.stderr
        seen, delivered, spooled, dropped = finished.stdout.rsplit(maxsplit=3)
        assert seen == "[False, False, False]"
        assert int(delivered) >= 5 and (spooled, dropped) == ("0", "0")
        assert len(fake.requests) >= 5
