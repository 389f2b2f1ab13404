"""Bearer-token authentication and the owner key that scopes every row.

The server keeps only SHA-256 digests of the configured tokens. A request's token is
hashed and compared with ``hmac.compare_digest`` against *every* configured digest
(no early exit), so timing reveals neither which token nor how much of it matched.
The digest is also the request's owner key: data written with one token is invisible
to every other token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Final, Protocol

import anyio.to_thread
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("dotflow_api.auth")

#: The environment variable holding comma-separated tokens.
TOKENS_ENV: Final = "DOTFLOW_API_TOKENS"
#: Paths served without a token: liveness and the API documentation.
PUBLIC_PATHS: Final = frozenset(
    {
        "/healthz",
        "/api/v1/healthz",
        "/docs",
        "/docs/oauth2-redirect",
        "/openapi.json",
        "/favicon.ico",
    }
)
#: Path prefixes served without a bearer token: the docs' assets, and the dashboard,
#: which authenticates with its own session cookie.
PUBLIC_PREFIXES: Final = ("/docs/", "/ui/")
#: The dashboard's home page (the workflows list), also without a bearer token.
DASHBOARD_HOME: Final = "/"
#: Where the authentication middleware leaves the owner key in the ASGI scope.
OWNER_SCOPE_KEY: Final = "dotflow_api.owner"


class TokenConfigError(ValueError):
    """The tokens could not be loaded (e.g. an unreadable tokens file)."""


def owner_key(token: str) -> str:
    """The owner key of a token: its SHA-256 hex digest (the raw token is never stored)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenSet:
    """The accepted tokens, held only as SHA-256 digests (safe to log or repr)."""

    __slots__ = ("_digests",)

    def __init__(self, tokens: Iterable[str]) -> None:
        digests = {hashlib.sha256(token.encode("utf-8")).digest() for token in tokens if token}
        self._digests: tuple[bytes, ...] = tuple(sorted(digests))

    def __len__(self) -> int:
        return len(self._digests)

    def has_owner(self, owner: str) -> bool:
        """True if ``owner`` is the owner key of one of these tokens (constant time)."""
        try:
            candidate = bytes.fromhex(owner)
        except ValueError:
            return False
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(candidate, digest)
        return matched

    def __repr__(self) -> str:
        return f"TokenSet(<{len(self._digests)} tokens>)"

    def owner_for(self, token: str) -> str | None:
        """The owner key for ``token`` if it is accepted, else ``None`` (constant time)."""
        return self._owner_for_bytes(token.encode("utf-8", "surrogatepass"))

    def _owner_for_bytes(self, token: bytes) -> str | None:
        candidate = hashlib.sha256(token).digest()
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(candidate, digest)
        return candidate.hex() if matched else None

    def owner_for_header(self, authorization: str | None) -> str | None:
        """The owner key for an ``Authorization`` header value, or ``None``."""
        token = bearer_bytes(authorization)
        return self._owner_for_bytes(token) if token else None


def bearer_bytes(authorization: str | None) -> bytes | None:
    """The raw token of a ``Bearer`` ``Authorization`` header value, else ``None``."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    # Header values arrive decoded as latin-1: encoding back gives the raw bytes,
    # which are the UTF-8 bytes of the token the client sent.
    return token.encode("latin-1", "replace") if token else None


class StoredTokens(Protocol):
    """Tokens kept in the database (:class:`dotflow_api.tokens.TokenStore`)."""

    def owner_for(self, token: bytes) -> str | None: ...

    def has_owner(self, owner: str) -> bool: ...


class Authenticator:
    """Every accepted token: the configured ones (memory), then the stored ones (database)."""

    __slots__ = ("configured", "stored")

    def __init__(self, configured: TokenSet, stored: StoredTokens | None = None) -> None:
        self.configured = configured
        self.stored = stored

    def __repr__(self) -> str:
        return f"Authenticator({self.configured!r}, stored={self.stored is not None})"

    def owner_for_token(self, token: bytes) -> str | None:
        """The owner key of a raw token if accepted, else ``None`` (may hit the database)."""
        owner = self.configured._owner_for_bytes(token)
        if owner is None and self.stored is not None:
            owner = self.stored.owner_for(token)
        return owner

    async def owner_for_header(self, authorization: str | None) -> str | None:
        """The owner key of an ``Authorization`` header; a database lookup runs in a thread."""
        token = bearer_bytes(authorization)
        if not token:
            return None
        owner = self.configured._owner_for_bytes(token)
        if owner is None and self.stored is not None:
            owner = await anyio.to_thread.run_sync(self.stored.owner_for, token)
        return owner

    def accepts_owner(self, owner: str) -> bool:
        """True while some accepted token has this owner key (a dashboard session's check)."""
        if self.configured.has_owner(owner):
            return True
        return self.stored is not None and self.stored.has_owner(owner)


def parse_token_lines(text: str) -> list[str]:
    """Tokens from a tokens file: one per line, blank lines and ``#`` comments ignored."""
    tokens: list[str] = []
    for line in text.splitlines():
        token = line.strip()
        if token and not token.startswith("#"):
            tokens.append(token)
    return tokens


def parse_token_env(value: str | None) -> list[str]:
    """Tokens from the comma-separated environment variable."""
    if not value:
        return []
    return [token.strip() for token in value.split(",") if token.strip()]


def load_tokens(tokens_file: Path | None = None, env: dict[str, str] | None = None) -> TokenSet:
    """All configured tokens: ``DOTFLOW_API_TOKENS`` plus the tokens file, if given."""
    environ = os.environ if env is None else env
    tokens = parse_token_env(environ.get(TOKENS_ENV))
    for number, token in enumerate(tokens, 1):
        try:
            token.encode("utf-8")
        except UnicodeEncodeError:
            raise TokenConfigError(
                f"{TOKENS_ENV}: token #{number} is not valid UTF-8; "
                "tokens must be UTF-8 text (e.g. ASCII letters and digits)"
            ) from None
    if tokens_file is not None:
        try:
            text = tokens_file.read_text(encoding="utf-8-sig")  # a BOM is not part of a token
        except (OSError, UnicodeDecodeError) as exc:
            if isinstance(exc, UnicodeDecodeError):  # its text would show a token's byte
                reason = f"not valid UTF-8 (byte offset {exc.start}); tokens must be UTF-8 text"
            else:
                reason = exc.strerror or str(exc)
            raise TokenConfigError(f"cannot read tokens file '{tokens_file}': {reason}") from None
        tokens.extend(parse_token_lines(text))
    return TokenSet(tokens)


class AuthMiddleware:
    """Rejects requests without a valid bearer token before anything reads the body.

    Doing this in middleware means an unauthenticated caller always gets 401, even for
    a malformed or oversized body or an unknown path, and learns nothing else.
    """

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(_route_path(scope)):
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        owner = await self.authenticator.owner_for_header(authorization)
        if owner is None:
            await _send_unauthorized(send)
            return
        scope[OWNER_SCOPE_KEY] = owner
        await self.app(scope, receive, send)


def is_public(path: str) -> bool:
    """True for a path served without a bearer token (docs, health, the dashboard)."""
    return path in PUBLIC_PATHS or path == DASHBOARD_HOME or path.startswith(PUBLIC_PREFIXES)


def _route_path(scope: Scope) -> str:
    path: str = scope.get("path", "")
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        return path[len(root_path) :] or "/"
    return path


async def _send_unauthorized(send: Send) -> None:
    body = b'{"detail":"missing or invalid bearer token"}'
    await send(
        {
            "type": "http.response.start",
            "status": status.HTTP_401_UNAUTHORIZED,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"www-authenticate", b"Bearer"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


#: Declares the bearer scheme in the OpenAPI document; the check itself is below.
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    description="A token configured on the server (DOTFLOW_API_TOKENS or --tokens-file).",
)


def current_owner(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> str:
    """FastAPI dependency: the owner key of the authenticated caller (401 otherwise)."""
    owner = request.scope.get(OWNER_SCOPE_KEY)
    if owner is None:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return str(owner)


Owner = Annotated[str, Depends(current_owner)]
