"""Schema migrations: a database made by dotflow-api 0.1.0 is upgraded in place.

``fixtures/schema-0.1.0.sqlite3`` was written through the API by dotflow-api 0.1.0
(before Alembic); ``fixtures/schema-0.1.0.postgresql.sql`` is the DDL 0.1.0 ran on
PostgreSQL. Both are upgraded by a real ``dotflow-api serve`` start-up, then read
back over HTTP: every value is still there, and the new features work on them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from api_helpers import TOKEN_A, TOKEN_B, task_body
from dotflow_api.db import create_db_engine, create_schema
from dotflow_api.migrate import current_revision, head_revision
from dotflow_api.models import Base
from dotflow_api.process import ServerProcess
from sqlalchemy import Engine, text

pytestmark = [pytest.mark.slow, pytest.mark.both_backends]

FIXTURES = Path(__file__).with_name("fixtures")
AUTH_A = {"Authorization": f"Bearer {TOKEN_A}"}
AUTH_B = {"Authorization": f"Bearer {TOKEN_B}"}
OLD_TABLES = ("dotflow_workflows", "dotflow_tasks")
RUN = "33333333-3333-4333-8333-333333333333"


def _copy_rows(source: Engine, target: Engine) -> None:
    """Copy the 0.1.0 rows, column for column as stored (JSON text, datetimes)."""
    with source.connect() as src, target.begin() as dst:
        for table in OLD_TABLES:
            rows = src.execute(text(f"SELECT * FROM {table}")).mappings().all()
            for row in rows:
                values = dict(row)
                for name in ("errors", "current_context", "previous_context"):
                    if name in values and isinstance(values[name], bytes):
                        values[name] = values[name].decode()  # a 0.1.0 number BLOB
                columns = ", ".join(values)
                marks = ", ".join(f"CAST(:{name} AS {_pg_type(table, name)})" for name in values)
                dst.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({marks})"), values)
        for table in OLD_TABLES:
            dst.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'pk'), MAX(pk)) FROM {table}"
                )
            )


def _pg_type(table: str, column: str) -> str:
    if column in ("errors", "current_context", "previous_context"):
        return "JSON"
    if column.endswith("_at"):
        return "TIMESTAMP WITH TIME ZONE"
    if column in ("duration",):
        return "FLOAT"
    if column in (
        "pk",
        "workflow_pk",
        "task_count",
        "completed_count",
        "failed_count",
        "retry_count",
    ):
        return "INTEGER"
    if column == "task_id":
        return "BIGINT"
    return "TEXT"


@pytest.fixture
def old_database(database_url: str, tmp_path: Path) -> str:
    """A database exactly as dotflow-api 0.1.0 left it, on the test's backend."""
    if database_url.startswith("sqlite"):
        path = tmp_path / "old.sqlite3"
        shutil.copy(FIXTURES / "schema-0.1.0.sqlite3", path)
        return f"sqlite:///{path}"
    engine = create_db_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "DROP TABLE IF EXISTS alembic_version, dotflow_runs, dotflow_tasks, "
            "dotflow_workflows CASCADE"
        )
        conn.exec_driver_sql((FIXTURES / "schema-0.1.0.postgresql.sql").read_text())
    source = create_db_engine(f"sqlite:///{FIXTURES / 'schema-0.1.0.sqlite3'}")
    _copy_rows(source, engine)
    source.dispose()
    engine.dispose()
    return database_url


def test_a_0_1_0_database_is_upgraded_in_place_with_nothing_lost(
    old_database: str, tmp_path: Path
) -> None:
    engine = create_db_engine(old_database)
    assert current_revision(engine) is None
    with ServerProcess.start(old_database, [TOKEN_A, TOKEN_B], workdir=tmp_path) as server:
        base = server.base_url
        workflow = requests.get(f"{base}/workflows/nightly-etl", headers=AUTH_A, timeout=30).json()
        assert {k: workflow[k] for k in ("status", "name", "mode", "duration", "task_count")} == {
            "status": "Failed",
            "name": "ci-host",
            "mode": "sequential",
            "duration": 3.0,
            "task_count": 3,
        }
        assert workflow["created_at"] == "2026-12-01T01:00:00+00:00"
        assert workflow["stored_task_count"] == 3 and workflow["latest_run_id"] is None
        tasks = requests.get(f"{base}/workflows/nightly-etl/tasks", headers=AUTH_A, timeout=30)
        items = tasks.json()["items"]
        assert [(t["id"], t["status"], t["run_id"]) for t in items] == [
            (1, "Completed", None),
            (2, "Completed", None),
            (3, "Failed", None),
        ]
        assert items[0]["current_context"] == {"rows": [1, 2.0, 1], "nested": {"x": None}}
        assert items[1]["previous_context"] == 1.0
        assert items[2]["errors"][0]["message"] == "boom" and items[2]["retry_count"] == 1
        other = requests.get(f"{base}/workflows/a%2Fb%20c/tasks", headers=AUTH_B, timeout=30)
        assert other.json()["items"][0]["current_context"] == "text \u2713"
        # the new features work on the old rows: a run may not overwrite them
        clash = requests.post(
            f"{base}/workflows/nightly-etl/tasks",
            json=task_body(3, run_id=RUN),
            headers=AUTH_A,
            timeout=30,
        )
        assert clash.status_code == 409 and clash.json()["next_id"] == 4  # 4-103: RUN's now
        reserved = requests.post(
            f"{base}/workflows/nightly-etl/runs/another-run/reserve",
            json={"count": 2},
            headers=AUTH_A,
            timeout=30,
        ).json()
        assert (reserved["first_id"], reserved["last_id"]) == (104, 105)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_the_migrations_build_exactly_the_models_schema(database_url: str) -> None:
    engine = create_db_engine(database_url)
    create_schema(engine)
    create_schema(engine)  # idempotent
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_an_upgraded_0_1_0_database_matches_the_models_too(old_database: str) -> None:
    engine = create_db_engine(old_database)
    create_schema(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()
