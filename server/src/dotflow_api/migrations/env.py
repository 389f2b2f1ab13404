"""Alembic environment: migrations run on the connection ``dotflow_api.migrate`` passes in.

Offline (SQL script) mode is not supported: the server migrates its own database at
start-up, inside one transaction.
"""

from __future__ import annotations

from alembic import context

from dotflow_api.models import Base

if context.is_offline_mode():
    raise RuntimeError("dotflow-api migrations run online only (dotflow_api.migrate)")

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
