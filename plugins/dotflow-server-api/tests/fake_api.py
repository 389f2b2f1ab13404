"""A fake dotflow API server on 127.0.0.1 for tests: real HTTP, scriptable failures.

It implements the wire contract (idempotent creates and updates, next-id),
records every request in arrival order, and lets a test script what the next
matching requests get: a status (with ``Retry-After``), a delay, a hang (the
request is read and never answered) or a hard disconnect. It also measures
how many requests were in flight at once.

    with FakeAPI(token="t0ken") as api:
        api.script(Action(status=500), Action(status=500))   # next two requests fail
        ... ServerAPI(base_url=api.url, token="t0ken") ...
        api.requests  # RecordedRequest list
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import attrs

#: The token the tests' providers and fake servers agree on.
TOKEN = "test-token"


@attrs.define
class Action:
    """What one scripted request gets.

    ``status`` None means "answer normally". ``match`` (a regex on ``"METHOD
    /raw/path"``) limits which requests consume the action.
    """

    status: int | None = None
    body: Any = None
    retry_after: str | None = None
    delay: float = 0.0
    hang: bool = False
    disconnect: bool = False
    match: str | None = None
    headers: dict[str, str] = attrs.field(factory=dict)
    #: Sent as the body as it is (with ``status``, default 200) instead of JSON.
    raw: bytes | None = None


@attrs.define
class RecordedRequest:
    method: str
    #: The raw (percent-encoded) path below the server root.
    path: str
    headers: dict[str, str]
    body: bytes
    #: Monotonic time the request arrived.
    at: float
    #: Status answered (None: hung or disconnected).
    status: int | None = None
    #: Monotonic time the answer was sent (None: hung or disconnected).
    done_at: float | None = None
    #: The client's port: requests with the same one came on the same connection.
    client_port: int = 0

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def line(self) -> str:
        return f"{self.method} {self.path}"


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5; a burst of new connections would
    # overflow it and stall a client for a SYN retransmission (1 s).
    request_queue_size = 128


class FakeAPI:
    """A threaded HTTP server with the dotflow API's behaviour and scriptable failures.

    :param token: the token it accepts (others get 401); None accepts any.
    :param prefix: the path prefix the API lives under (e.g. ``/api/v1``).
    :param delay: seconds added to every answer.
    :param batch: the ``Dotflow-Batch`` header to send on every answer (it then takes
        batches at ``POST /workflows/{id}/events``); None: single requests only.
    """

    def __init__(
        self,
        token: str | None = "test-token",
        prefix: str = "",
        delay: float = 0.0,
        batch: str | None = None,
    ):
        self.token = token
        self.batch = batch
        self.prefix = prefix.rstrip("/")
        self.delay = delay
        self.requests: list[RecordedRequest] = []
        self.workflows: dict[str, dict[str, Any]] = {}
        self.tasks: dict[tuple[str, int], dict[str, Any]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.release = threading.Event()
        self._actions: deque[Action] = deque()
        self._default: Callable[[RecordedRequest], Action | None] | None = None
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- lifecycle ---------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def start(self) -> FakeAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting -------------------------------------------------------------

    def script(self, *actions: Action) -> None:
        """Queue actions; each matching request consumes the first that matches it."""
        with self._lock:
            self._actions.extend(actions)

    def always(self, rule: Callable[[RecordedRequest], Action | None] | None) -> None:
        """Apply ``rule`` to every request not handled by a scripted action."""
        with self._lock:
            self._default = rule

    def _pick(self, request: RecordedRequest) -> Action | None:
        with self._lock:
            for action in self._actions:
                if action.match is None or re.search(action.match, request.line):
                    self._actions.remove(action)
                    return action
            return self._default(request) if self._default else None

    # -- reading back ----------------------------------------------------------

    def lines(self) -> list[str]:
        with self._lock:
            return [request.line for request in self.requests]

    def delivered_state(self, workflow_id: str) -> dict[str, Any] | None:
        with self._lock:
            workflow = self.workflows.get(workflow_id)
            tasks = {
                tid: body["status"] for (wid, tid), body in self.tasks.items() if wid == workflow_id
            }
        if workflow is None and not tasks:
            return None
        return {"status": workflow.get("status") if workflow else None, "tasks": tasks}

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    # -- the API ---------------------------------------------------------------

    def _apply(self, request: RecordedRequest) -> tuple[int, Any]:
        path = request.path
        if not path.startswith(self.prefix + "/"):
            return 404, {"detail": "not found"}
        segments = [unquote(part) for part in path[len(self.prefix) + 1 :].split("/")]
        body = request.json if request.body else None
        with self._lock:
            if self.batch and request.method == "POST" and segments[2:] == ["events"]:
                return 200, {
                    "results": [self._event(segments[1], event) for event in body["events"]]
                }
            return self._route(request.method, segments, body)

    _OPS: dict[str, tuple[str, str]] = {
        "create_workflow": ("POST", ""),
        "update_workflow": ("PATCH", "/{workflow_id}"),
        "create_task": ("POST", "/{workflow_id}/tasks"),
        "update_task": ("PATCH", "/{workflow_id}/tasks/{task_id}"),
    }

    def _event(self, workflow_id: str, event: dict[str, Any]) -> dict[str, Any]:
        """One event of a batch, answered as its single request would be (lock held)."""
        method, template = self._OPS[event["op"]]
        path = template.format(workflow_id=workflow_id, task_id=event["body"].get("id"))
        status, payload = self._route(method, ["workflows", *path.split("/")[1:]], event["body"])
        return {"status": status, "body": payload}

    def _route(self, method: str, segments: list[str], body: Any) -> tuple[int, Any]:
        match method, segments:
            case "POST", ["workflows"]:
                existed = body["id"] in self.workflows
                self.workflows.setdefault(body["id"], {}).update(body)
                return 200 if existed else 201, {"id": body["id"]}
            case "PATCH", ["workflows", workflow_id]:
                self.workflows.setdefault(workflow_id, {"id": workflow_id}).update(body)
                return 200, {"id": workflow_id}
            case "POST", ["workflows", workflow_id, "tasks"]:
                self.tasks.setdefault((workflow_id, body["id"]), {}).update(body)
                return 201, {"workflow_id": workflow_id, "id": body["id"]}
            case "PATCH", ["workflows", workflow_id, "tasks", task_id]:
                self.tasks.setdefault((workflow_id, int(task_id)), {}).update(body)
                return 200, {"workflow_id": workflow_id, "id": int(task_id)}
            case "GET", ["workflows", workflow_id, "tasks", "next-id"]:
                ids = [tid for (wid, tid) in self.tasks if wid == workflow_id]
                last = max(ids) if ids else None
                return 200, {"next_id": (last or 0) + 1, "last_id": last}
        return 404, {"detail": "not found"}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall between header and body

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = RecordedRequest(
                    method=self.command,
                    path=self.path,
                    headers=dict(self.headers.items()),
                    body=body,
                    at=time.monotonic(),
                    client_port=self.client_address[1],
                )
                with api._lock:
                    api.requests.append(request)
                    api.in_flight += 1
                    api.max_in_flight = max(api.max_in_flight, api.in_flight)
                try:
                    self._answer(request)
                finally:
                    with api._lock:
                        api.in_flight -= 1

            def _answer(self, request: RecordedRequest) -> None:
                action = api._pick(request) or Action()
                pause = api.delay + action.delay
                if pause:
                    time.sleep(pause)
                if action.hang:
                    api.release.wait(120)
                    self.close_connection = True
                    return
                if action.disconnect:
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                expected = f"Bearer {api.token}"
                if api.token is not None and request.headers.get("Authorization") != expected:
                    status, payload = 401, {"detail": "invalid token"}
                elif action.raw is not None:
                    status, payload = action.status or 200, None
                elif action.status is not None:
                    status, payload = action.status, action.body or {"detail": "scripted"}
                else:
                    try:
                        status, payload = api._apply(request)
                    except Exception as error:  # a malformed body: answer like a server would
                        status, payload = 422, {"detail": f"{type(error).__name__}: {error}"}
                request.status = status
                # Stamped before the answer leaves: a request the client sends because of
                # this answer can only arrive later (stamped after, another thread could
                # record that request's arrival first, and the ordering checks would flake).
                request.done_at = time.monotonic()
                data = action.raw if action.raw is not None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if api.batch:
                    self.send_header("Dotflow-Batch", api.batch)
                self.send_header("Content-Length", str(len(data)))
                if action.retry_after is not None:
                    self.send_header("Retry-After", action.retry_after)
                for name, value in action.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        return Handler
