"""Opening the database: engine options per backend and schema creation.

SQLite needs care to take concurrent writers (several server threads and several
server processes on one file):

* WAL journal, so readers never block the writer and the writer never blocks readers;
* a busy timeout, so a writer waits for the lock instead of failing at once;
* ``BEGIN IMMEDIATE`` for write transactions: a deferred transaction that reads and
  then writes can fail with "database is locked" *without* waiting when another
  writer committed in between; taking the write lock up front makes writers queue.
  Read-only transactions use a plain deferred ``BEGIN`` (see ``READ_ONLY``).

Other backends (e.g. PostgreSQL) use their defaults; the store resolves insert races
with savepoints, which works everywhere.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Final

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

logger = logging.getLogger("dotflow_api.db")

#: Execution option that marks a connection's transactions as read-only (SQLite: deferred).
READ_ONLY: Final = "dotflow_read_only"
#: Seconds a SQLite writer waits for the lock before giving up.
SQLITE_BUSY_TIMEOUT_SECONDS: Final = 30.0


class DatabaseURLError(ValueError):
    """The database URL cannot be parsed or names no installed driver."""


#: What a valid database URL looks like, for error messages.
URL_EXAMPLES: Final = (
    "e.g. sqlite:///dotflow-api.sqlite3 or postgresql+psycopg://user:PASSWORD@host/db"
)
URL_HINT: Final = f"expected dialect[+driver]://..., {URL_EXAMPLES}"


def parse_url(url: str) -> URL:
    """Parse a SQLAlchemy database URL, raising ``DatabaseURLError`` when it is invalid."""
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise DatabaseURLError(f"invalid database URL {safe_url(url)!r}: {URL_HINT}") from exc


#: A query parameter whose value is masked: ``password``, ``sslpassword``, ``passwd``...
_SECRET_QUERY = re.compile(r"([?&;][^=&;#]*(?:pass|pwd|secret|token)[^=&;#]*=)[^&;#]*", re.I)


def safe_url(url: str | URL) -> str:
    """The URL with any password masked (userinfo and password-like query parameters),
    for messages and logs."""
    if isinstance(url, URL):
        return _mask_query(url.render_as_string(hide_password=True))
    # The query first: a masked value can no longer hold an "@" taken to end userinfo.
    masked = _mask_query(url)
    try:
        return _mask_query(make_url(masked).render_as_string(hide_password=True))
    except (ArgumentError, ValueError):
        return _mask_userinfo(masked)


def _mask_query(url: str) -> str:
    return _SECRET_QUERY.sub(r"\1***", url)


def _mask_userinfo(url: str) -> str:
    """Mask the password of a URL SQLAlchemy cannot parse (best effort, never leaks)."""
    if "@" not in url:
        return url
    userinfo_end = url.rindex("@")
    start = url.find("://")
    start = 0 if start == -1 or start > userinfo_end else start + 3
    user = url[start:userinfo_end].split(":", 1)[0]
    return f"{url[:start]}{user}:***{url[userinfo_end:]}"


def is_in_memory(url: str | URL) -> bool:
    """True for a SQLite URL naming no file (``sqlite://``, ``sqlite:///``, ``:memory:``)."""
    parsed = parse_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() != "sqlite":
        return False
    return parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory"


def create_db_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """Create an engine for ``url`` with the per-backend settings described above."""
    parsed = parse_url(url) if isinstance(url, str) else url
    kwargs: dict[str, Any] = {"echo": echo}
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite:
        kwargs["connect_args"] = {
            "check_same_thread": False,
            "timeout": SQLITE_BUSY_TIMEOUT_SECONDS,
        }
        if is_in_memory(parsed):
            # One shared in-memory database for every thread (tests, ``openapi``).
            kwargs["poolclass"] = StaticPool
        else:
            # A connection for each of the server's worker threads (anyio's default is
            # 40): SQLite connections are cheap, and waiting for one only adds latency.
            kwargs["pool_size"] = 8
            kwargs["max_overflow"] = 32
    else:
        kwargs["pool_pre_ping"] = True
    try:
        is_async = getattr(parsed.get_dialect(), "is_async", False)
        if not is_async:
            engine = create_engine(parsed, **kwargs)
    except ArgumentError as exc:  # e.g. an unknown dialect
        raise DatabaseURLError(
            f"cannot use database URL {safe_url(parsed)!r}: {exc}; {URL_HINT}"
        ) from exc
    except ImportError as exc:
        raise DatabaseURLError(f"cannot use database URL {safe_url(parsed)!r}: {exc}") from exc
    except (ValueError, TypeError) as exc:
        # The dialect converting a query parameter (``?timeout=abc``).
        raise DatabaseURLError(
            f"cannot use database URL {safe_url(parsed)!r}: bad query parameter value ({exc})"
        ) from exc
    if is_async:
        raise DatabaseURLError(
            f"cannot use database URL {safe_url(parsed)!r}: {parsed.drivername!r} is an "
            f"asyncio driver; use a synchronous one, {URL_EXAMPLES}"
        )
    if is_sqlite:
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    """Install the pragmas and the explicit ``BEGIN`` handling on a SQLite engine."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_schema(engine: Engine) -> None:
    """Bring the schema up to date with the migrations (idempotent, safe for several
    processes starting at once; see :mod:`dotflow_api.migrate`)."""
    from dotflow_api.migrate import upgrade

    upgrade(engine)
    logger.debug("schema ready on %s", safe_url(engine.url))
