"""Request body gatekeeping: the size limit (413) and the default JSON content type.

A declared ``Content-Length`` over the limit is rejected at once. Otherwise the body
is read here, counting bytes as they arrive (this covers chunked bodies, which have no
length), and only handed to the application once it is complete and within the limit.
Buffering the whole body first also means a request whose body is cut off never
reaches a handler, so it cannot cause a partial write.

Before a 413 the body is still read, and thrown away, up to ``DRAIN_MAX_BYTES`` and
``DRAIN_TIMEOUT`` seconds: a client that writes its whole body before it reads the
answer (Python's ``urllib``, most simple clients) would otherwise get a connection
reset instead of the 413, because closing a socket with unread data resets it.

A body sent without a ``Content-Type`` header is taken to be JSON (some minimal
clients omit it). That is safe here: every write needs a bearer token in a header,
which a cross-site form post cannot add.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("dotflow_api.limits")

#: Default largest request body accepted, in bytes.
DEFAULT_MAX_BODY_BYTES: Final = 6_000_000
#: Most bytes of a too-large body read (and dropped) before answering 413.
DRAIN_MAX_BYTES: Final = 64 * 1024 * 1024
#: Most seconds spent reading a too-large body before answering 413.
DRAIN_TIMEOUT: Final = 10.0


class BodyLimitMiddleware:
    """Answers 413 for request bodies larger than ``max_body_bytes``."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        if max_body_bytes < 0:
            raise ValueError("max_body_bytes must not be negative")
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == -1:
            await _send_error(send, 400, "invalid Content-Length header")
            return
        if declared is not None and declared > self.max_body_bytes:
            if not _has_header(scope, b"expect"):  # 100-continue: it sends nothing yet
                await _drain(receive, already=0, more=True)
            await self._too_large(scope, send)
            return

        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        if body and not _has_header(scope, b"content-type"):
            scope = dict(scope)
            scope["headers"] = [*scope.get("headers", ()), (b"content-type", b"application/json")]
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body; None when it was too large (413 sent) or the client left."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None  # The client went away; there is nobody to answer.
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _drain(receive, already=size, more=message.get("more_body", False))
                await self._too_large(scope, send)
                return None
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        logger.warning(
            "rejected %s %s: body over %d bytes",
            scope.get("method"),
            scope.get("path"),
            self.max_body_bytes,
        )
        await _send_error(
            send, 413, f"request body is larger than the limit of {self.max_body_bytes} bytes"
        )


async def _drain(receive: Receive, *, already: int, more: bool) -> None:
    """Read and drop the rest of a body, within ``DRAIN_MAX_BYTES`` and ``DRAIN_TIMEOUT``."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    read = already
    while more and read <= DRAIN_MAX_BYTES:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            message = await asyncio.wait_for(receive(), timeout=remaining)
        except asyncio.TimeoutError:
            return
        if message["type"] == "http.disconnect":
            return
        read += len(message.get("body", b""))
        more = bool(message.get("more_body", False))


def _content_length(scope: Scope) -> int | None:
    """The declared body length; ``None`` if absent, ``-1`` if malformed."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return -1
            return length if length >= 0 else -1
    return None


def _has_header(scope: Scope, name: bytes) -> bool:
    return any(key == name for key, _ in scope.get("headers", ()))


async def _send_error(send: Send, status: int, detail: str) -> None:
    body = ('{"detail":"' + detail + '"}').encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
