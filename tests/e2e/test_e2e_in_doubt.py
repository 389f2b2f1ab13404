"""A create the server stored but whose answer was lost is never stored twice.

A proxy in front of the reference server forwards a task's create, lets the server
store it, and answers 504 (as nginx does when the server was too slow): for all the
runner knows, the create may or may not be stored. While it waits to send it again,
another task of the same run gets a 409 (its id is another run's). Moving the run's
tasks to free ids must leave the create in doubt where it is: sent again under its
id, it is the same write; moved, it would be stored a second time under a new id.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from dotflow_api.process import ServerProcess

from .conftest import STEPS, Api, Runner

pytestmark = [pytest.mark.slow, pytest.mark.both_backends]

#: Headers not forwarded either way (hop by hop, recomputed, or the batch offer: the
#: runner then sends single requests, one per task).
_DROPPED = {"connection", "content-length", "transfer-encoding", "host", "dotflow-batch"}


class LosingProxy:
    """Forwards to ``upstream``. Once armed: the first create of task ``lost_id`` is
    stored by the server but answered 504 (or, with ``hang``, never answered); creates
    of task ``held_id`` wait until it was; creates of ``refused`` ids and id
    reservations are answered 502 without reaching the server."""

    def __init__(
        self,
        upstream: str,
        *,
        lost_id: int,
        held_id: int | None = None,
        refused: frozenset[int] = frozenset(),
        hang: bool = False,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.lost_id, self.held_id, self.refused, self.hang = lost_id, held_id, refused, hang
        self.release = threading.Event()
        #: Set by the test once the scenario starts (before, requests just go through).
        self.armed = threading.Event()
        self.lost = threading.Event()
        self.session = requests.Session()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                armed = proxy.armed.is_set()
                task_id = _created_task(self.command, self.path, body) if armed else None
                if task_id == proxy.held_id:
                    proxy.lost.wait(10)
                if armed and (task_id in proxy.refused or self.path.endswith("/reserve")):
                    self._empty(502)
                    return
                try:
                    upstream = proxy.session.request(
                        self.command,
                        proxy.upstream + self.path,
                        data=body,
                        headers={
                            k: v for k, v in self.headers.items() if k.lower() not in _DROPPED
                        },
                        timeout=30,
                    )
                except requests.ConnectionError:  # the server is down: as nginx answers
                    self._empty(502)
                    return
                if task_id == proxy.lost_id and not proxy.lost.is_set():
                    assert upstream.status_code == 201, upstream.text
                    proxy.lost.set()
                    if proxy.hang:  # stored; the runner gives up waiting at its deadline
                        proxy.release.wait(60)
                        self.close_connection = True
                        return
                    # Stored, but the runner hears what nginx says when it gave up waiting.
                    self._empty(504)
                    return
                self.send_response(upstream.status_code)
                for key, value in upstream.headers.items():
                    if key.lower() not in _DROPPED:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(upstream.content)))
                self.end_headers()
                self.wfile.write(upstream.content)

            def _empty(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                self.wfile.flush()

            do_GET = do_POST = do_PATCH = _any

        return Handler

    def __enter__(self) -> LosingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _created_task(method: str, path: str, body: bytes) -> int | None:
    if method != "POST" or not path.endswith("/tasks"):
        return None
    task_id = json.loads(body).get("id")
    return task_id if isinstance(task_id, int) else None


@pytest.fixture
def losing(server: ServerProcess) -> Iterator[LosingProxy]:
    # Task 2 is free on the server (stored, answer lost); task 1 is the earlier run's (409).
    with LosingProxy(server.base_url, lost_id=2, held_id=1) as proxy:
        yield proxy


def test_a_create_whose_answer_was_lost_is_not_stored_again_under_a_new_id(
    runner: Runner, api: Api, server: ServerProcess, losing: LosingProxy, tmp_path: Path
) -> None:
    through = Runner(server, tmp_path / "through", base_url=losing.url)
    server.stop()
    offline = through.run(STEPS, WORKFLOW_ID="doubt")  # 502s: numbered from 1, all spooled
    assert offline.returncode == 0, offline.stderr
    assert through.outbox_files()
    server.run()
    earlier = runner.run(("e2eflow.extract",), WORKFLOW_ID="doubt")
    assert earlier.returncode == 0, earlier.stderr
    assert [task["id"] for task in api.tasks("doubt")] == [1]

    losing.armed.set()
    flush = through.flush()
    assert flush.returncode == 0, flush.stderr
    assert losing.lost.is_set(), "the proxy never lost an answer: the scenario did not happen"

    tasks = api.tasks("doubt")
    stored = Counter((task["run_id"], task["name"]) for task in tasks)
    assert all(count == 1 for count in stored.values()), (stored, flush.stderr)
    assert len(tasks) == 4, tasks  # the earlier run's task, and this run's three
    assert [task["status"] for task in tasks] == ["Completed"] * 4
    ours = [task for task in tasks if task["run_id"] != tasks[0]["run_id"]]
    assert {task["name"] for task in ours} == set(STEPS)
    assert 2 in {task["id"] for task in ours}  # the create in doubt kept its id
    assert through.outbox_files() == []


def test_a_create_in_flight_when_the_run_ended_is_replayed_without_a_second_copy(
    runner: Runner, api: Api, server: ServerProcess, tmp_path: Path
) -> None:
    earlier = runner.run(("e2eflow.extract",), WORKFLOW_ID="spooled-doubt")
    assert earlier.returncode == 0, earlier.stderr
    # The run cannot reserve ids (it numbers from 1); its create of task 2 is stored but
    # never answered, the others fail: at its flush deadline, all of it is spooled.
    with LosingProxy(server.base_url, lost_id=2, refused=frozenset({1, 3}), hang=True) as proxy:
        through = Runner(server, tmp_path / "through", base_url=proxy.url)
        proxy.armed.set()
        offline = through.run(STEPS, WORKFLOW_ID="spooled-doubt")
        assert offline.returncode == 0, offline.stderr
        assert proxy.lost.is_set(), offline.stderr
        assert through.outbox_files()
        proxy.armed.clear()
        proxy.release.set()
        # One request at a time: task 1 meets the earlier run's (409) while the create of
        # task 2 waits its turn, and the run's waiting tasks move.
        flush = through.flush(SERVER_MAX_IN_FLIGHT="1")
        assert flush.returncode == 0, flush.stderr

    tasks = api.tasks("spooled-doubt")
    stored = Counter((task["run_id"], task["name"]) for task in tasks)
    assert all(count == 1 for count in stored.values()), (stored, flush.stderr)
    assert len(tasks) == 4 and [task["status"] for task in tasks] == ["Completed"] * 4, tasks
    ours = [task for task in tasks if task["run_id"] != tasks[0]["run_id"]]
    assert {task["name"] for task in ours} == set(STEPS)
    assert through.outbox_files() == []
