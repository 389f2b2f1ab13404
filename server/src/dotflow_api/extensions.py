"""The ``Dotflow-Batch`` response header: how clients learn of the batch endpoint.

Every answer (errors and 401s included) carries it, so a client knows from its first
request, without an extra round trip, that it may send a workflow's events in batches
to ``POST /workflows/{workflow_id}/events``, and how large one may be::

    Dotflow-Batch: max-events=1000, max-bytes=6000000

A server without the header (the seed contract) takes single requests only.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dotflow_api.schemas import MAX_BATCH_EVENTS

#: The header's name, as clients look it up (case-insensitive).
BATCH_HEADER: Final = "Dotflow-Batch"


def batch_header_value(max_body_bytes: int) -> str:
    return f"max-events={MAX_BATCH_EVENTS}, max-bytes={max_body_bytes}"


class ExtensionsHeaderMiddleware:
    """Adds ``Dotflow-Batch`` to every HTTP answer (the outermost middleware)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.header = (BATCH_HEADER.lower().encode(), batch_header_value(max_body_bytes).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_header)
