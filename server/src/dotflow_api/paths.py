"""Path parameters that may contain any character, ``/`` included.

Clients percent-encode path parameters, so workflow id ``a/b c`` arrives as
``/workflows/a%2Fb%20c/tasks``. ASGI servers put the *decoded* path in
``scope["path"]`` (``/workflows/a/b c/tasks``), where the encoded ``/`` can no longer
be told from a separator and the route would not match. So:

* ``RawPathMiddleware`` routes on the path as sent: it replaces ``scope["path"]`` with
  ``scope["raw_path"]`` (still percent-encoded; any raw non-ASCII bytes are encoded);
* ``DecodedPathRoute`` percent-decodes each path parameter after the route matched,
  so handlers see the real id. Bytes that are not UTF-8 become lone surrogates
  (``surrogateescape``), never U+FFFD, so distinct ids stay distinct; the workflow id
  parameter rejects them (422).

Literal path segments (``workflows``, ``tasks``, ``next-id``) are plain ASCII, so
matching them on the encoded path changes nothing else.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote_from_bytes, unquote

from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

#: Bytes left as they are when re-encoding a raw path (RFC 3986 path characters and %).
_PATH_SAFE = "/%!$&'()*+,;=:@-._~"


class RawPathMiddleware:
    """Makes routing see the percent-encoded path (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path = scope.get("raw_path")
        if scope["type"] == "http" and raw_path:
            raw_path = raw_path.split(b"?", 1)[0]
            encoded = quote_from_bytes(raw_path, safe=_PATH_SAFE)
            root_path: str = scope.get("root_path", "")
            if root_path and not encoded.startswith(root_path):
                encoded = root_path + encoded
            scope = dict(scope)
            scope["path"] = encoded
        await self.app(scope, receive, send)


class DecodedPathRoute(APIRoute):
    """An ``APIRoute`` whose string path parameters are percent-decoded after matching."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE and "path_params" in child_scope:
            params: dict[str, Any] = dict(child_scope["path_params"])
            for name, value in params.items():
                if isinstance(value, str):
                    params[name] = unquote(value, errors="surrogateescape")
            child_scope = {**child_scope, "path_params": params}
        return match, child_scope
