"""A server that is not the project's own: Python's ``http.server.ThreadingHTTPServer``.

As a new user would write one: listen backlog 5 (socketserver's default), one
thread per connection, HTTP/1.0 by default (a connection per request). It
answers every request of the wire contract after ``delay`` seconds, after the
first ``failures`` statuses of ``script``, and counts from the server side
what a client cannot see: connections accepted and connections that broke
(reset, or closed before a request was read).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Recorded:
    """One request as the server read it."""

    def __init__(self, method: str, path: str, body: Any, authorization: str | None) -> None:
        self.method = method
        self.path = path
        self.body = body
        self.authorization = authorization
        self.at = time.monotonic()
        #: The status answered (None until answered).
        self.status: int | None = None


class StdlibServer:
    """``ThreadingHTTPServer`` on 127.0.0.1 with a scripted start (see the module)."""

    def __init__(
        self,
        *,
        delay: float = 0.0,
        script: tuple[int, ...] = (),
        backlog: int = 5,
        protocol: str = "HTTP/1.0",
        prefix: str = "",
        retry_after: str | None = None,
        port: int = 0,
    ) -> None:
        self.delay = delay
        self.retry_after = retry_after
        self.prefix = prefix
        self._script = list(script)
        self._lock = threading.Lock()
        self.requests: list[Recorded] = []
        self.connections = 0
        #: Connections that broke: reset by the peer, or closed before any request line.
        self.broken: list[tuple[float, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = protocol

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server.connections += 1

            def handle(self) -> None:
                try:
                    super().handle()
                except (ConnectionResetError, BrokenPipeError) as error:
                    with server._lock:
                        server.broken.append((time.monotonic(), type(error).__name__))

            def _answer(self) -> None:
                server._answer(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

        class Server(ThreadingHTTPServer):
            request_queue_size = backlog
            daemon_threads = True
            block_on_close = False

        self._server = Server(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.prefix}"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> StdlibServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        recorded = Recorded(
            handler.command, handler.path, body, handler.headers.get("Authorization")
        )
        with self._lock:
            self.requests.append(recorded)
            scripted = self._script.pop(0) if self._script else None
        if self.delay:
            time.sleep(self.delay)
        path = handler.path
        if scripted is not None:
            status, answer = scripted, {"detail": "scripted"}
        elif not path.startswith(self.prefix + "/workflows"):
            status, answer = 404, {"detail": "Not Found"}
        elif path.endswith("/next-id"):
            status, answer = 200, {"next_id": 1, "last_id": None}
        else:
            status, answer = (201 if handler.command == "POST" else 200), {"ok": True}
        data = json.dumps(answer).encode()
        recorded.status = status
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        if scripted is not None and self.retry_after is not None:
            handler.send_header("Retry-After", self.retry_after)
        handler.end_headers()
        handler.wfile.write(data)

    # -- what the server saw ---------------------------------------------------

    def delivered(self, workflow_id: str) -> dict[str, Any]:
        """The workflow's last status and each task's, from the requests it answered 2xx."""
        status: str | None = None
        tasks: dict[int, str] = {}
        with self._lock:
            requests = list(self.requests)
        for request in requests:
            if request.status is None or not 200 <= request.status < 300:
                continue
            body = request.body if isinstance(request.body, dict) else {}
            path = request.path.removeprefix(self.prefix)
            if path == "/workflows" and body.get("id") == workflow_id:
                status = body.get("status", status)
            elif path.startswith(f"/workflows/{workflow_id}/tasks"):
                if "status" in body and "id" in body:
                    tasks[int(body["id"])] = body["status"]
            elif path == f"/workflows/{workflow_id}" and "status" in body:
                status = body["status"]
        return {"status": status, "tasks": tasks}


def listen_overflows() -> int:
    """The kernel's count of connections a full listen queue dropped (this network namespace).

    The server side of "the client overflowed the backlog": Linux drops the
    handshake (the client stalls a second, then retransmits) without the
    server process ever seeing the connection. None where it cannot be read.
    """
    try:
        with open("/proc/net/netstat", encoding="ascii") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return -1
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            counters = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(counters.get("ListenOverflows", -1))
    return -1


@contextmanager
def listener() -> Iterator[StdlibServer]:
    """Another loopback port, recording whatever reaches it (a place a token must never go)."""
    with StdlibServer(protocol="HTTP/1.1") as server:
        yield server
