"""Database tokens (``dotflow-api tokens create``) and dashboard sessions.

Both tables first shipped before the schema was under Alembic, created at start-up
when missing; a database that already has them (made by such a build) keeps them as
they are, so this revision only creates what is absent.

Revision ID: 0003_tokens_and_sessions
Revises: 0002_runs
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dotflow_api.models import UTCDateTime

revision: str = "0003_tokens_and_sessions"
down_revision: str | None = "0002_runs"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "dotflow_api_tokens" not in existing:
        op.create_table(
            "dotflow_api_tokens",
            sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("name", sa.String(64), nullable=False),
            sa.Column("digest", sa.String(64), nullable=False),
            sa.Column("created_at", UTCDateTime(), nullable=False),
            sa.Column("last_used_at", UTCDateTime(), nullable=True),
            sa.UniqueConstraint("name", name="uq_dotflow_api_tokens_name"),
            sa.UniqueConstraint("digest", name="uq_dotflow_api_tokens_digest"),
        )
    if "dotflow_dashboard_sessions" not in existing:
        op.create_table(
            "dotflow_dashboard_sessions",
            sa.Column("id_digest", sa.String(64), primary_key=True),
            sa.Column("owner", sa.String(64), nullable=False),
            sa.Column("created_at", UTCDateTime(), nullable=False),
            sa.Column("expires_at", UTCDateTime(), nullable=False),
        )
        op.create_index(
            "ix_dotflow_dashboard_sessions_owner", "dotflow_dashboard_sessions", ["owner"]
        )


def downgrade() -> None:
    op.drop_index("ix_dotflow_dashboard_sessions_owner", table_name="dotflow_dashboard_sessions")
    op.drop_table("dotflow_dashboard_sessions")
    op.drop_table("dotflow_api_tokens")
