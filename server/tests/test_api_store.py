"""The store under concurrency: many threads writing the same rows, and insert races."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from dotflow_api.auth import owner_key
from dotflow_api.db import create_db_engine, create_schema
from dotflow_api.models import Task, Workflow
from dotflow_api.store import NotFoundError, Store
from sqlalchemy import event, func, select

pytestmark = pytest.mark.both_backends

OWNER = owner_key("t")


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    engine = create_db_engine(database_url)
    create_schema(engine)
    yield Store(engine)
    engine.dispose()


@pytest.mark.sqlite_only
def test_sqlite_runs_in_wal_mode(store: Store) -> None:
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


def test_concurrent_upserts_of_the_same_task_make_one_row(store: Store) -> None:
    def write(index: int) -> bool:
        return store.upsert_task(OWNER, "wf", 1, {"name": "n", "status": "Completed"})

    with ThreadPoolExecutor(max_workers=8) as pool:
        created = list(pool.map(write, range(40)))
    assert created.count(True) == 1
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Task)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(Workflow)).scalar() == 1


def test_concurrent_distinct_tasks_are_all_kept(store: Store) -> None:
    def write(task_id: int) -> bool:
        return store.upsert_task(OWNER, "wf", task_id, {"name": "n", "status": "Completed"})

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(write, range(1, 101)))
    assert store.last_task_id(OWNER, "wf") == 100
    page = store.list_tasks(OWNER, "wf", limit=1000, offset=0)
    assert [row["task_id"] for row in page.rows] == list(range(1, 101))


def test_lost_insert_race_becomes_an_update(store: Store) -> None:
    """Simulate the race: another request inserts the row between our UPDATE and INSERT."""
    store.upsert_task(OWNER, "wf", 1, {"name": "first", "status": "Not started"})
    engine = store.engine
    fired = threading.Event()

    # Make the first UPDATE match nothing, as if the row did not exist yet.
    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def hide_row(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if not fired.is_set() and statement.lstrip().upper().startswith("UPDATE DOTFLOW_TASKS"):
            fired.set()
            statement = statement + " AND 1 = 0"
        return statement, parameters

    try:
        created = store.upsert_task(OWNER, "wf", 1, {"name": "second", "status": "Completed"})
    finally:
        event.remove(engine, "before_cursor_execute", hide_row)
    assert fired.is_set()
    assert created is False
    rows = store.list_tasks(OWNER, "wf", limit=10, offset=0).rows
    assert [(row["name"], row["status"]) for row in rows] == [("second", "Completed")]


def test_lost_workflow_insert_race_becomes_an_update(store: Store) -> None:
    store.upsert_workflow(OWNER, "wf", {"status": "In progress", "name": "first"})
    engine = store.engine
    fired = threading.Event()

    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def hide_row(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if not fired.is_set() and statement.lstrip().upper().startswith("UPDATE DOTFLOW_WORKFLOWS"):
            fired.set()
            statement = statement + " AND 1 = 0"
        return statement, parameters

    try:
        row, created = store.upsert_workflow(OWNER, "wf", {"status": "Completed"})
    finally:
        event.remove(engine, "before_cursor_execute", hide_row)
    assert fired.is_set()
    assert created is False
    assert row["status"] == "Completed" and row["name"] == "first"
    assert store.list_workflows(OWNER, limit=10, offset=0).total == 1


def test_update_task_of_unknown_rows_raises(store: Store) -> None:
    with pytest.raises(NotFoundError):
        store.update_task(OWNER, "nope", 1, {"status": "Completed"})
    store.upsert_task(OWNER, "wf", 1, {"name": "n", "status": "Completed"})
    with pytest.raises(NotFoundError):
        store.update_task(OWNER, "wf", 2, {"status": "Completed"})


def test_failed_request_writes_nothing(store: Store) -> None:
    """A failure after the workflow was registered rolls the registration back too."""
    with pytest.raises(Exception):  # noqa: B017 - any database error will do
        store.upsert_task(OWNER, "wf", 1, {"name": None, "status": "Completed"})
    with pytest.raises(NotFoundError):
        store.get_workflow(OWNER, "wf")
