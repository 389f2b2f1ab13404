"""The ``Dotflow-Dashboard`` header: where a run can be seen, on every API answer.

Its value is a URI template (RFC 6570, simple expansion) of the dashboard page showing
a run, ``http://HOST/ui/workflows/{workflow_id}/runs/{run_id}``: a client fills in the
percent-encoded ids of its run and needs to know nothing else about the dashboard's
layout. The
host is the one the request addressed (or ``--public-url`` when the server sits behind
a proxy that rewrites it).
"""

from __future__ import annotations

from typing import Final

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER: Final = "Dotflow-Dashboard"
#: The page showing a run, below the server's root, as a URI template.
RUN_PAGE_TEMPLATE: Final = "/ui/workflows/{workflow_id}/runs/{run_id}"
_SKIP_PREFIXES: Final = ("/ui/", "/docs")


class DashboardLinkMiddleware:
    """Adds the ``Dotflow-Dashboard`` header to the API's answers (not the pages')."""

    def __init__(self, app: ASGIApp, public_url: str | None = None) -> None:
        self.app = app
        self.public_url = public_url.rstrip("/") if public_url else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path == "/" or path.startswith(_SKIP_PREFIXES):
            await self.app(scope, receive, send)
            return
        value = (self._base(scope) + RUN_PAGE_TEMPLATE).encode("latin-1", "replace")

        async def send_with_link(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"dotflow-dashboard", value)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_link)

    def _base(self, scope: Scope) -> str:
        if self.public_url:
            return self.public_url
        host = Headers(scope=scope).get("host")
        if not host:
            server = scope.get("server") or ("127.0.0.1", 80)
            host = f"{server[0]}:{server[1]}"
        return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}".rstrip("/")
