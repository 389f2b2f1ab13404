"""Runs: one row per run of a workflow, and the run that created each task.

Additive only: existing workflows and tasks keep every value; their tasks get a NULL
``run_id`` (written before runs existed).

Revision ID: 0002_runs
Revises: 0001_initial
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dotflow_api.models import UTCDateTime

revision: str = "0002_runs"
down_revision: str | None = "0001_initial"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "dotflow_runs",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "workflow_pk",
            sa.Integer(),
            sa.ForeignKey("dotflow_workflows.pk", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("run_id", sa.String(64), nullable=False),
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
        sa.Column("reserved_first_id", sa.BigInteger(), nullable=True),
        sa.Column("reserved_last_id", sa.BigInteger(), nullable=True),
        sa.Column("registered_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("workflow_pk", "run_id", name="uq_dotflow_runs_workflow_run"),
    )
    op.create_index("ix_dotflow_runs_workflow_pk", "dotflow_runs", ["workflow_pk", "pk"])
    with op.batch_alter_table("dotflow_tasks") as batch:
        batch.add_column(sa.Column("run_id", sa.String(64), nullable=True))
    op.create_index("ix_dotflow_tasks_workflow_run", "dotflow_tasks", ["workflow_pk", "run_id"])


def downgrade() -> None:
    op.drop_index("ix_dotflow_tasks_workflow_run", table_name="dotflow_tasks")
    with op.batch_alter_table("dotflow_tasks") as batch:
        batch.drop_column("run_id")
    op.drop_index("ix_dotflow_runs_workflow_pk", table_name="dotflow_runs")
    op.drop_table("dotflow_runs")
