"""Who is looking at the dashboard: the session cookie, sign-in and sign-out.

The cookie (``dotflow_session``) is ``HttpOnly`` (no script reads it), ``SameSite=Strict``
(no other site's page sends it, so no cross-site request acts as the user), ``Path`` the
server's root, ``Secure`` when served over HTTPS, and holds only a random session id:
see :mod:`dotflow_api.sessions`.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote, urlsplit

from fastapi import Request, Response

from dotflow_api.auth import Authenticator
from dotflow_api.sessions import COOKIE_NAME, SESSION_LIFETIME, SessionStore

#: Where the sign-in page lives, below the server's root path.
LOGIN_PATH: Final = "/ui/login"


class SignInRequired(Exception):
    """The request has no live session: answer with the sign-in page's address."""

    def __init__(self, next_path: str) -> None:
        super().__init__("sign in required")
        self.next_path = next_path


def root(request: Request) -> str:
    """The server's root path (non-empty behind a proxy that serves it under a prefix)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def sessions(request: Request) -> SessionStore:
    return request.app.state.sessions  # type: ignore[no-any-return]


def authenticator(request: Request) -> Authenticator:
    return request.app.state.authenticator  # type: ignore[no-any-return]


def viewer(request: Request) -> str:
    """The owner key of the signed-in user; ``SignInRequired`` without a live session.

    A session outlives neither its expiry nor its token: a token removed from the
    configuration or revoked signs its sessions out.
    """
    session_id = request.cookies.get(COOKIE_NAME, "")
    owner = sessions(request).owner_for(session_id)
    if owner is None or not authenticator(request).accepts_owner(owner):
        raise SignInRequired(_here(request))
    return owner


def _here(request: Request) -> str:
    raw = request.scope.get("raw_path") or request.url.path.encode()
    path = raw.decode("latin-1").split("?", 1)[0]
    query = request.url.query
    return path + (f"?{query}" if query else "")


def login_url(request: Request, next_path: str | None = None) -> str:
    """The sign-in page's address, coming back to ``next_path`` afterwards."""
    url = root(request) + LOGIN_PATH
    if next_path and next_path != root(request) + "/":
        url += "?next=" + quote(next_path, safe="")
    return url


def safe_next(request: Request, next_path: str | None) -> str:
    """``next_path`` if it is a path on this server, else the dashboard's home page."""
    home = root(request) + "/"
    if not next_path or not next_path.startswith(home) or "\\" in next_path:
        return home
    parts = urlsplit(next_path)
    if parts.scheme or parts.netloc or next_path.startswith("//"):
        return home
    return next_path


def set_session_cookie(request: Request, response: Response, session_id: str) -> None:
    response.set_cookie(
        COOKIE_NAME,
        session_id,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        path=root(request) + "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE_NAME,
        path=root(request) + "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def same_origin(request: Request) -> bool:
    """False for a form posted from another origin (its ``Origin`` names another host)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host
