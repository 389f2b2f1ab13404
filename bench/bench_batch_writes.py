"""Batch endpoint write cost: milliseconds per event of ``POST /workflows/{id}/events``.

Each round sends one batch of ``--events`` task events (default 1,000: a
``create_task`` then an ``update_task`` to Completed per task, bodies as the
``api`` provider sends them, one run) to a fresh workflow, through the reference
server's FastAPI app in this process (``TestClient``: no sockets, so the figure is
the server's own cost: validation, the store, the answer). Backends: SQLite (a file)
and PostgreSQL (a private cluster via ``dotflow_api.pgcluster``; "skipped: reason"
when it cannot start). The figure is the median over ``--rounds`` rounds, after one
warm-up batch. Target: at most 0.3 ms per event on SQLite.

A second line per backend ("with 409s") is a batch as a fleet sharing one workflow id
sends it: run A holds ids 1-100, run B 101-200, and A reports 200 tasks (create, In
progress, Completed: 600 events) from id 1, so its 300 events on ids 101-200 are
answered 409 (and A is given other ids). No target; it shows what refused events cost.

Usage: python bench/bench_batch_writes.py [--rounds 7] [--events 1000]
       [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _options import at_least, some_of

warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient`")

from dotflow_api.app import create_app  # noqa: E402
from dotflow_api.auth import TokenSet  # noqa: E402
from dotflow_api.db import create_db_engine, create_schema  # noqa: E402
from dotflow_api.pgcluster import PostgresCluster, PostgresUnavailable  # noqa: E402
from dotflow_api.store import Store  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

TARGET_MS = 0.3
TOKEN = "bench-batch-writes-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def task_body(task_id: int, run_id: str, *, done: bool) -> dict[str, Any]:
    """A task body as the api provider sends it (every field, contexts encoded)."""
    return {
        "id": task_id,
        "name": f"pipeline.step_{task_id}",
        "status": "Completed" if done else "Not started",
        "group_name": "default",
        "retry_count": 0,
        "duration": 0.0125 if done else None,
        "errors": [],
        "started_at": "2026-12-04T12:00:00.000001+00:00" if done else None,
        "finished_at": "2026-12-04T12:00:00.012601+00:00" if done else None,
        "current_context": {"rows": task_id, "ok": True} if done else None,
        "previous_context": None,
        "run_id": run_id,
    }


def batch_events(count: int) -> list[dict[str, Any]]:
    """``count`` events of one run: create_task then update_task, task after task."""
    run_id = str(uuid.uuid4())
    events: list[dict[str, Any]] = []
    for index in range(count):
        task_id, done = index // 2 + 1, index % 2 == 1
        op = "update_task" if done else "create_task"
        events.append({"op": op, "body": task_body(task_id, run_id, done=done)})
    return events


def ms_per_event(client: TestClient, events: list[dict[str, Any]]) -> float:
    """Send one batch to a new workflow; wall milliseconds per event."""
    path = f"/workflows/bench-{uuid.uuid4().hex[:12]}/events"
    started = time.perf_counter()
    response = client.post(path, json={"events": events}, headers=AUTH)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    statuses = {result["status"] for result in response.json()["results"]}
    if not statuses <= {200, 201}:
        raise SystemExit(f"unexpected answers in the batch: {sorted(statuses)}")
    return elapsed * 1000 / len(events)


#: Tasks of the refused run, and ids each run holds, in the "with 409s" batch.
CONFLICT_TASKS = 200
CONFLICT_RESERVED = 100


def conflict_ms_per_event(client: TestClient) -> float:
    """The "with 409s" batch to a new workflow; wall milliseconds per event."""
    workflow = f"/workflows/bench-{uuid.uuid4().hex[:12]}"
    run_a, run_b = str(uuid.uuid4()), str(uuid.uuid4())
    for run_id in (run_a, run_b):
        body = {"count": CONFLICT_RESERVED}
        client.post(f"{workflow}/runs/{run_id}/reserve", json=body, headers=AUTH)
    ids = range(1, CONFLICT_TASKS + 1)
    events = [{"op": "create_task", "body": task_body(i, run_a, done=False)} for i in ids]
    for task_id in ids:
        started = {**task_body(task_id, run_a, done=False), "status": "In progress"}
        events.append({"op": "update_task", "body": started})
        events.append({"op": "update_task", "body": task_body(task_id, run_a, done=True)})
    began = time.perf_counter()
    response = client.post(f"{workflow}/events", json={"events": events}, headers=AUTH)
    elapsed = time.perf_counter() - began
    response.raise_for_status()
    refused = [result["status"] for result in response.json()["results"]].count(409)
    if refused != 3 * (CONFLICT_TASKS - CONFLICT_RESERVED):
        raise SystemExit(f"expected 300 answers 409 in the batch, got {refused}")
    return elapsed * 1000 / len(events)


def measure(url: str, rounds: int, count: int) -> tuple[list[float], list[float]]:
    """Samples of the plain batch and of the "with 409s" batch."""
    engine = create_db_engine(url)
    try:
        create_schema(engine)
        app = create_app(Store(engine), TokenSet([TOKEN]))
        with TestClient(app) as client:
            ms_per_event(client, batch_events(count))  # warm-up: caches, first pages
            conflict_ms_per_event(client)
            plain = [ms_per_event(client, batch_events(count)) for _ in range(rounds)]
            refused = [conflict_ms_per_event(client) for _ in range(rounds)]
            return plain, refused
    finally:
        engine.dispose()


@contextmanager
def database(backend: str) -> Iterator[str]:
    """A fresh, empty database URL for ``backend``; PostgresUnavailable if it cannot run."""
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as directory:
        if backend == "sqlite":
            yield f"sqlite:///{Path(directory) / 'bench.sqlite3'}"
            return
        with PostgresCluster.start() as cluster:
            yield cluster.create_database("bench_batch")


def report(backend: str, samples: list[float], *, target: bool = True) -> None:
    median = statistics.median(samples)
    spread = f"{min(samples):.3f}-{max(samples):.3f}"
    line = f"  {backend:<24}{median:8.3f} ms/event  (rounds: {spread})"
    if backend == "sqlite" and target:
        verdict = "meets" if median <= TARGET_MS else "misses"
        line += f"  {verdict} target <= {TARGET_MS} ms/event"
    print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=at_least(1), default=7)
    parser.add_argument("--events", type=at_least(2), default=1000)
    parser.add_argument(
        "--backends", type=some_of("sqlite", "postgresql"), default=("sqlite", "postgresql")
    )
    args = parser.parse_args()

    print(f"\nbatch of {args.events} task events, median of {args.rounds} rounds")
    for backend in args.backends:
        try:
            with database(backend) as url:
                plain, refused = measure(url, args.rounds, args.events)
        except PostgresUnavailable as error:
            print(f"  {backend:<24}skipped: {error}")
            continue
        report(backend, plain)
        report(f"{backend}, with 409s", refused, target=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
