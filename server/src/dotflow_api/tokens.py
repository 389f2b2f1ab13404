"""Tokens kept in the database (``dotflow-api tokens create|list|revoke``).

A created token is printed once and never stored: the database keeps its SHA-256 hex
digest, which is also its owner key, so a database token scopes data exactly like a
token from ``DOTFLOW_API_TOKENS`` or ``--tokens-file``. A request's token is looked up
by its digest (an indexed equality on a hash, so timing reveals nothing about any
stored token). Revoking deletes the row and the token's dashboard sessions: the next
request with it gets 401, in every server process sharing the database.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from dotflow_api.db import READ_ONLY
from dotflow_api.models import TOKEN_NAME_MAX_LENGTH, ApiToken, DashboardSession, utcnow

logger = logging.getLogger("dotflow_api.tokens")

_tokens = ApiToken.__table__
_sessions = DashboardSession.__table__

#: What every created token starts with, so a leaked one is recognisable in a scan.
TOKEN_PREFIX: Final = "dfa_"
#: Random bytes in a created token (256 bits).
TOKEN_BYTES: Final = 32
#: ``last_used_at`` is written at most this often per token, not on every request.
LAST_USED_RESOLUTION: Final = timedelta(minutes=1)
_NAME: Final = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{TOKEN_NAME_MAX_LENGTH - 1}}}")
NAME_RULE: Final = (
    f"1 to {TOKEN_NAME_MAX_LENGTH} letters, digits, '.', '_' or '-', "
    "starting with a letter or digit, e.g. ci-runner"
)


class TokenNameError(ValueError):
    """A token name that is malformed, taken, or unknown."""


@dataclass(frozen=True)
class TokenInfo:
    """What ``tokens list`` shows about a token: never the token itself."""

    name: str
    created_at: datetime
    last_used_at: datetime | None


def check_name(name: str) -> str:
    """``name`` if it is a valid token name, else ``TokenNameError`` saying what is."""
    if not _NAME.fullmatch(name):
        raise TokenNameError(f"invalid token name {name!r}: expected {NAME_RULE}")
    return name


def new_token() -> str:
    """A fresh random token: the prefix and 256 random bits, URL-safe base64."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


class TokenStore:
    """The database's tokens: create, list, revoke, and look a request's token up."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._read_engine = engine.execution_options(**{READ_ONLY: True})

    def create(self, name: str) -> str:
        """Store a new token under ``name`` and return it (the only time it is seen)."""
        check_name(name)
        token = new_token()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(_tokens).values(
                        name=name, digest=owner_key_bytes(token.encode()), created_at=utcnow()
                    )
                )
        except IntegrityError:
            raise TokenNameError(
                f"a token named {name!r} exists already; revoke it first "
                f"(dotflow-api tokens revoke {name}) or choose another name"
            ) from None
        logger.info("created token %r", name)
        return token

    def list_tokens(self) -> list[TokenInfo]:
        """Every stored token's name and dates, by name."""
        with self._read_engine.begin() as conn:
            rows = conn.execute(
                select(_tokens.c.name, _tokens.c.created_at, _tokens.c.last_used_at).order_by(
                    _tokens.c.name
                )
            ).all()
        return [TokenInfo(row.name, row.created_at, row.last_used_at) for row in rows]

    def count(self) -> int:
        """How many tokens are stored."""
        with self._read_engine.begin() as conn:
            return int(conn.execute(select(func.count()).select_from(_tokens)).scalar_one())

    def revoke(self, name: str) -> None:
        """Delete the token ``name`` and its dashboard sessions; ``TokenNameError`` if unknown."""
        with self.engine.begin() as conn:
            digest = conn.execute(select(_tokens.c.digest).where(_tokens.c.name == name)).scalar()
            if digest is None:
                known = conn.execute(select(_tokens.c.name).order_by(_tokens.c.name)).scalars()
                names = ", ".join(known) or "none"
                raise TokenNameError(f"no token named {name!r}; stored tokens: {names}")
            conn.execute(delete(_tokens).where(_tokens.c.name == name))
            conn.execute(delete(_sessions).where(_sessions.c.owner == digest))
        logger.info("revoked token %r", name)

    def owner_for(self, token: bytes) -> str | None:
        """The owner key of a stored token given as raw bytes, else None; records the use."""
        digest = owner_key_bytes(token)
        now = utcnow()
        with self._read_engine.begin() as conn:
            row = conn.execute(
                select(_tokens.c.pk, _tokens.c.last_used_at).where(_tokens.c.digest == digest)
            ).first()
        if row is None:
            return None
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
            with self.engine.begin() as conn:
                conn.execute(update(_tokens).where(_tokens.c.pk == row.pk).values(last_used_at=now))
        return digest

    def has_owner(self, owner: str) -> bool:
        """True while a stored token has this owner key (not revoked)."""
        with self._read_engine.begin() as conn:
            found = conn.execute(select(_tokens.c.pk).where(_tokens.c.digest == owner)).first()
        return found is not None


def owner_key_bytes(token: bytes) -> str:
    """The owner key of a token given as the raw bytes a request carried."""
    return hashlib.sha256(token).hexdigest()
