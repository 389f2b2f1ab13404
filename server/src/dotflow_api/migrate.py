"""Bringing a database's schema up to date with Alembic, at server start-up.

* An empty database gets every migration, from ``0001_initial``.
* A database dotflow-api 0.1.0 created (its tables, no ``alembic_version``) is stamped
  ``0001_initial`` (exactly its schema), then upgraded in place: no row is lost.
* An up-to-date database is left as it is.

Several server processes may start at once on one database: the whole upgrade is one
transaction, serialised by the database (SQLite: the write lock ``BEGIN IMMEDIATE``
takes; PostgreSQL: a transaction-scoped advisory lock), so exactly one of them
migrates and the others find the schema current.
"""

from __future__ import annotations

import logging
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

logger = logging.getLogger("dotflow_api.migrate")

#: The revision whose schema dotflow-api 0.1.0 created without Alembic.
BASE_REVISION: Final = "0001_initial"
#: A table every version of the schema has.
_SENTINEL_TABLE: Final = "dotflow_workflows"
#: Key of the PostgreSQL advisory lock held while migrating ("dotflow" in ASCII).
_PG_LOCK_KEY: Final = 0x646F74666C6F77


def alembic_config(connection: Connection | None = None) -> Config:
    """The Alembic configuration of the server's migrations (no ``alembic.ini`` needed)."""
    config = Config()
    config.set_main_option("script_location", "dotflow_api:migrations")
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision: the schema this version of the server needs."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: not under Alembic, e.g. empty or 0.1.0)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` (default: the newest), in one transaction."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        config = alembic_config(conn)
        before = MigrationContext.configure(conn).get_current_revision()
        if before is None and inspect(conn).has_table(_SENTINEL_TABLE):
            logger.info("database created by dotflow-api 0.1.0; stamping %s", BASE_REVISION)
            command.stamp(config, BASE_REVISION)
            before = BASE_REVISION
        command.upgrade(config, revision)
        after = MigrationContext.configure(conn).get_current_revision()
    if before is None:
        logger.debug("database schema created at %s", after)
    elif after != before:
        logger.info("database schema upgraded from %s to %s", before, after)
