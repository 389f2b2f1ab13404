"""Database tables: one row per (owner, workflow), per run of a workflow and per task.

``owner`` is the SHA-256 hex digest of the bearer token that wrote the row, never the
token itself. Every query filters on it, which is what keeps tokens apart. Tasks hang
off their workflow's surrogate key ``workflows.pk``; since that key stands for exactly
one ``(owner, workflow_id)``, the unique constraint on ``(workflow_pk, task_id)`` is the
unique constraint on ``(owner, workflow_id, task_id)``.

A run (``dotflow_runs``) is one ``start()`` of a workflow, named by the ``run_id`` the
runner sends; tasks carry the ``run_id`` of the run that created them (``NULL`` for
tasks written by clients that send none, and for rows of databases older than runs).
A run may hold a reservation of task ids (``reserved_first_id`` to
``reserved_last_id``) so that runs that start together number their tasks apart.

The schema is versioned by Alembic (``dotflow_api/migrations``); a change here needs a
migration.

Only portable column types are used, so the same schema works on SQLite, PostgreSQL
and any other database SQLAlchemy supports. On SQLite the client's JSON (errors and
contexts) is stored as JSON text (``JSONValue``) so that values round-trip exactly.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

#: Longest workflow id accepted; keeps the unique index portable (e.g. to MySQL).
WORKFLOW_ID_MAX_LENGTH = 255
#: Length of a SHA-256 hex digest, the owner key.
OWNER_KEY_LENGTH = 64
#: Longest run id accepted (runners send a UUID, 36 characters).
RUN_ID_MAX_LENGTH = 64


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime stored as UTC and always read back timezone-aware (UTC).

    SQLite has no timezone support and would silently drop the offset, so values are
    converted to UTC before they are written and tagged as UTC when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class JSONValue(TypeDecorator[Any]):
    """Any JSON value, read back exactly as written (``None`` is SQL NULL).

    Elsewhere this is the database's JSON type. On SQLite, a column declared ``JSON``
    has NUMERIC affinity, which rewrites a top-level number (``1.0`` read back as
    ``1``, ``-0.0`` as ``0``, ``12345678901234567890`` as ``1.2345678901234567e+19``).
    So new tables declare the column ``TEXT``, values are written as JSON text, and a
    top-level number is written as a BLOB of that text, which no column affinity
    converts, so tables created by earlier versions (declared ``JSON``) are exact too.
    Their old rows still read: JSON text is parsed, and a number that affinity already
    converted is returned as it is.
    """

    impl = JSON(none_as_null=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Text())
        return dialect.type_descriptor(JSON(none_as_null=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name != "sqlite" or value is None:
            return value
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return text.encode("utf-8")
        return text

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name != "sqlite" or value is None:
            return value
        if isinstance(value, bytes):
            return json.loads(value.decode("utf-8"))
        if isinstance(value, str):
            return json.loads(value)
        return value  # a number an earlier version's NUMERIC column already converted


class Base(DeclarativeBase):
    """The declarative base of the server's tables."""


class Workflow(Base):
    """A workflow as last reported by its runner, scoped to one owner."""

    __tablename__ = "dotflow_workflows"
    __table_args__ = (
        UniqueConstraint("owner", "workflow_id", name="uq_dotflow_workflows_owner_id"),
        Index("ix_dotflow_workflows_owner_pk", "owner", "pk"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(OWNER_KEY_LENGTH), nullable=False)
    workflow_id: Mapped[str] = mapped_column(String(WORKFLOW_ID_MAX_LENGTH), nullable=False)
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    name: Mapped[str | None] = mapped_column(Text, nullable=True)
    mode: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    duration: Mapped[float | None] = mapped_column(Float, nullable=True)
    task_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    completed_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    failed_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    #: When the server first saw this workflow (server clock); orders the listing.
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    #: When the server last changed this row (server clock).
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class Task(Base):
    """A task of a workflow as last reported by its runner."""

    __tablename__ = "dotflow_tasks"
    __table_args__ = (
        UniqueConstraint("workflow_pk", "task_id", name="uq_dotflow_tasks_workflow_task"),
        Index("ix_dotflow_tasks_workflow_run", "workflow_pk", "run_id"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workflow_pk: Mapped[int] = mapped_column(
        Integer, ForeignKey("dotflow_workflows.pk", ondelete="CASCADE"), nullable=False
    )
    task_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    group_name: Mapped[str] = mapped_column(Text, nullable=False, default="default")
    retry_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    duration: Mapped[float | None] = mapped_column(Float, nullable=True)
    errors: Mapped[Any] = mapped_column(JSONValue, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    current_context: Mapped[Any] = mapped_column(JSONValue, nullable=True)
    previous_context: Mapped[Any] = mapped_column(JSONValue, nullable=True)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    #: The run that created the task; NULL when the client sent no run id.
    run_id: Mapped[str | None] = mapped_column(String(RUN_ID_MAX_LENGTH), nullable=True)


class Run(Base):
    """One run of a workflow (one ``start()``), as last reported by its runner."""

    __tablename__ = "dotflow_runs"
    __table_args__ = (
        UniqueConstraint("workflow_pk", "run_id", name="uq_dotflow_runs_workflow_run"),
        Index("ix_dotflow_runs_workflow_pk", "workflow_pk", "pk"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workflow_pk: Mapped[int] = mapped_column(
        Integer, ForeignKey("dotflow_workflows.pk", ondelete="CASCADE"), nullable=False
    )
    run_id: Mapped[str] = mapped_column(String(RUN_ID_MAX_LENGTH), nullable=False)
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    name: Mapped[str | None] = mapped_column(Text, nullable=True)
    mode: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    duration: Mapped[float | None] = mapped_column(Float, nullable=True)
    task_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    completed_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    failed_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    #: The task ids reserved for this run (both NULL when it reserved none).
    reserved_first_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    reserved_last_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


#: Longest name of a token created with ``dotflow-api tokens create``.
TOKEN_NAME_MAX_LENGTH = 64


class ApiToken(Base):
    """A token created with ``dotflow-api tokens create``: only its SHA-256 is stored.

    ``digest`` is the token's owner key (the same SHA-256 hex digest an environment or
    file token gets), so a database token is a tenant exactly like a configured one.
    """

    __tablename__ = "dotflow_api_tokens"
    __table_args__ = (
        UniqueConstraint("name", name="uq_dotflow_api_tokens_name"),
        UniqueConstraint("digest", name="uq_dotflow_api_tokens_digest"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(TOKEN_NAME_MAX_LENGTH), nullable=False)
    digest: Mapped[str] = mapped_column(String(OWNER_KEY_LENGTH), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    #: Last time a request carried the token (updated at most once a minute).
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DashboardSession(Base):
    """A signed-in dashboard session; the cookie holds a random id, this row its SHA-256.

    ``owner`` is the owner key of the token used to sign in; the session is honoured
    only while that token is still accepted (configured or not revoked).
    """

    __tablename__ = "dotflow_dashboard_sessions"
    __table_args__ = (Index("ix_dotflow_dashboard_sessions_owner", "owner"),)

    id_digest: Mapped[str] = mapped_column(String(OWNER_KEY_LENGTH), primary_key=True)
    owner: Mapped[str] = mapped_column(String(OWNER_KEY_LENGTH), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
