"""Alembic migrations of the server's schema (applied at start-up by ``dotflow_api.migrate``)."""
