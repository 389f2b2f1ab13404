"""``serve --timing-log PATH``: one JSON line per HTTP request, for load measurements.

Each line, appended when the answer has been sent::

    {"start": 1764800000.123456, "seconds": 0.004211, "status": 201, "method": "POST",
     "path": "/workflows/nightly/tasks"}

``start`` is the Unix time the request reached the application, ``seconds`` how long
the application took until the last byte of its answer was handed to the server
(time spent queued in the kernel or in uvicorn before that is not included), and
``path`` the request's path as sent (percent-encoded; no query string, no headers, so
no token). The file is opened in append mode and every line is written with one
``write``, so the processes of ``serve --workers N`` can share one file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class TimingLogMiddleware:
    """Times every HTTP request and appends its line to ``path`` (the outermost layer)."""

    def __init__(self, app: ASGIApp, path: Path) -> None:
        self.app = app
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, began = time.time(), time.perf_counter()
        answered = 0

        async def send_noting_status(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            line = {
                "start": round(start, 6),
                "seconds": round(time.perf_counter() - began, 6),
                "status": answered,
                "method": scope["method"],
                "path": scope.get("raw_path", b"").decode("latin-1") or scope["path"],
            }
            os.write(self.fd, (json.dumps(line) + "\n").encode())
