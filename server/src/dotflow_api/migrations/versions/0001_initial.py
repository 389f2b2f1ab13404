"""The schema of dotflow-api 0.1.0: workflows and their tasks.

Databases that 0.1.0 created (before Alembic) hold exactly these tables; start-up
stamps them with this revision and upgrades them from here.

Revision ID: 0001_initial
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dotflow_api.models import JSONValue, UTCDateTime

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "dotflow_workflows",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("workflow_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("mode", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("task_count", sa.Integer(), nullable=False),
        sa.Column("completed_count", sa.Integer(), nullable=False),
        sa.Column("failed_count", sa.Integer(), nullable=False),
        sa.Column("registered_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("owner", "workflow_id", name="uq_dotflow_workflows_owner_id"),
    )
    op.create_index("ix_dotflow_workflows_owner_pk", "dotflow_workflows", ["owner", "pk"])
    op.create_table(
        "dotflow_tasks",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "workflow_pk",
            sa.Integer(),
            sa.ForeignKey("dotflow_workflows.pk", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("group_name", sa.Text(), nullable=False),
        sa.Column("retry_count", sa.Integer(), nullable=False),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("errors", JSONValue(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("current_context", JSONValue(), nullable=True),
        sa.Column("previous_context", JSONValue(), nullable=True),
        sa.Column("registered_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("workflow_pk", "task_id", name="uq_dotflow_tasks_workflow_task"),
    )


def downgrade() -> None:
    op.drop_table("dotflow_tasks")
    op.drop_index("ix_dotflow_workflows_owner_pk", table_name="dotflow_workflows")
    op.drop_table("dotflow_workflows")
