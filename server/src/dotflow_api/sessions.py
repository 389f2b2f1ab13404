"""Dashboard sign-in sessions, kept server-side in the database.

The browser's cookie holds a random 256-bit session id and nothing else: no token,
no owner key. The database keeps the id's SHA-256, the owner key of the token that
signed in, and an expiry. A session is honoured only while it has not expired and its
token is still accepted, so removing a token from the configuration or revoking it
ends its sessions too. Several server processes on one database share the sessions.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import timedelta
from typing import Final

from sqlalchemy import Engine, delete, insert, select

from dotflow_api.db import READ_ONLY
from dotflow_api.models import DashboardSession, utcnow

logger = logging.getLogger("dotflow_api.sessions")

_sessions = DashboardSession.__table__

#: The cookie's name.
COOKIE_NAME: Final = "dotflow_session"
#: How long a session lasts after signing in (absolute, not sliding).
SESSION_LIFETIME: Final = timedelta(hours=12)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


class SessionStore:
    """Create, resolve and end dashboard sessions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._read_engine = engine.execution_options(**{READ_ONLY: True})

    def create(self, owner: str) -> str:
        """Open a session for ``owner``; returns the id to put in the cookie."""
        session_id = secrets.token_urlsafe(32)
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(delete(_sessions).where(_sessions.c.expires_at < now))
            conn.execute(
                insert(_sessions).values(
                    id_digest=_digest(session_id),
                    owner=owner,
                    created_at=now,
                    expires_at=now + SESSION_LIFETIME,
                )
            )
        logger.debug("dashboard session opened")
        return session_id

    def owner_for(self, session_id: str) -> str | None:
        """The owner key of a live session, or None (unknown or expired)."""
        if not session_id:
            return None
        with self._read_engine.begin() as conn:
            row = conn.execute(
                select(_sessions.c.owner, _sessions.c.expires_at).where(
                    _sessions.c.id_digest == _digest(session_id)
                )
            ).first()
        if row is None or row.expires_at <= utcnow():
            return None
        return str(row.owner)

    def end(self, session_id: str) -> None:
        """Sign out: forget the session (unknown ids are ignored)."""
        with self.engine.begin() as conn:
            conn.execute(delete(_sessions).where(_sessions.c.id_digest == _digest(session_id)))
