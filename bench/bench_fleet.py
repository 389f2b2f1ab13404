"""A fleet: N concurrent ``dotflow start`` runners x M tasks against ``dotflow-api serve``.

Every scenario starts a fresh server (``dotflow-api serve`` in a subprocess, with
``--timing-log``) on a fresh database, starts the N runners at once (each its own
process and ``DOTFLOW_HOME``, as on its own machine; ``--provider api``), waits for
them, then reads back what the server stored. Scenarios: SQLite and PostgreSQL (a
private cluster, ``dotflow_api.pgcluster``; "skipped: reason" when absent) x the batch
path and the single path (``serve --no-batch``) x one shared ``WORKFLOW_ID`` and one
id per runner.

Prints per scenario: events/s ingested (events the runners report delivered, over the
time from starting them to the end of the server's last request), requests and p50/p99
request latency (server side, from the timing log: time in the application, not the
time queued before it), errors (HTTP answers >= 400, runners exiting non-zero, their
WARNING/ERROR lines), events spooled at exit (the runners' own counts, and what
``dotflow outbox list`` finds in their outboxes), and the stored state checked run by
run against what the runners produced: tasks missing, duplicated, not Completed, runs
completed. When events were spooled, the outboxes are flushed and the state checked
again.

Targets (issue 17): 20 runners x 200 tasks on this 2-core machine, 0 events spooled at
exit on SQLite and PostgreSQL; always 0 lost, 0 duplicated.

Usage: python bench/bench_fleet.py [--runners 20] [--tasks 200]
           [--backends sqlite,postgresql] [--paths batch,single] [--ids shared,distinct]
           [--server-workers 1] [--flush-timeout 5]
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _options import at_least, some_of
from fleet_scenario import Scenario, run

BACKENDS = ("sqlite", "postgresql")
PATHS = ("batch", "single")
IDS = ("shared", "distinct")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runners", type=at_least(1), default=20)
    parser.add_argument("--tasks", type=at_least(1), default=200, help="tasks per runner")
    parser.add_argument("--backends", type=some_of(*BACKENDS), default=BACKENDS)
    parser.add_argument("--paths", type=some_of(*PATHS), default=PATHS)
    parser.add_argument("--ids", type=some_of(*IDS), default=IDS)
    parser.add_argument("--server-workers", type=at_least(1), default=1)
    parser.add_argument(
        "--flush-timeout", type=at_least(0.1, float), default=5.0, help="SERVER_FLUSH_TIMEOUT"
    )
    return parser.parse_args(argv)


@contextmanager
def databases(backend: str) -> Iterator[Any]:
    """Yields a function making a fresh database URL per scenario, or the reason why not."""
    if backend == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="dotflow-bench-fleet-db-"))
        numbers = itertools.count(1)
        try:
            yield lambda: f"sqlite:///{folder / f'fleet-{next(numbers)}.sqlite3'}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    from dotflow_api.pgcluster import PostgresCluster, PostgresUnavailable

    try:
        cluster = PostgresCluster.start()
    except PostgresUnavailable as error:
        yield str(error)
        return
    numbers = itertools.count(1)
    try:
        yield lambda: cluster.create_database(f"fleet_{next(numbers)}")
    finally:
        cluster.stop()


def scenarios(args: argparse.Namespace, backend: str) -> list[Scenario]:
    return [
        Scenario(
            backend,
            path,
            ids,
            args.runners,
            args.tasks,
            server_workers=args.server_workers,
            flush_timeout=args.flush_timeout,
        )
        for path in args.paths
        for ids in args.ids
    ]


def run_all(args: argparse.Namespace) -> list[tuple[Scenario, dict[str, Any] | str]]:
    results: list[tuple[Scenario, dict[str, Any] | str]] = []
    for backend in args.backends:
        with databases(backend) as new_database:
            for scenario in scenarios(args, backend):
                if isinstance(new_database, str):
                    results.append((scenario, new_database))
                    continue
                workdir = Path(tempfile.mkdtemp(prefix="dotflow-bench-fleet-"))
                try:
                    results.append((scenario, run(scenario, new_database(), workdir)))
                finally:
                    shutil.rmtree(workdir, ignore_errors=True)
                print(f"{scenario.name}: done", file=sys.stderr)
    return results


COLUMNS = (
    ("scenario", 30), ("wall s", 7), ("events/s", 9), ("requests", 9), ("batches", 8),
    ("p50 ms", 7), ("p99 ms", 8), ("errors", 7), ("spooled", 8), ("stored", 12),
    ("missing", 8), ("dup", 4), ("unfinished", 11),
)  # fmt: skip


def row(scenario: Scenario, result: dict[str, Any]) -> str:
    errors = sum(result["http_errors"].values()) + result["runner_failures"]
    cells = [
        scenario.name,
        f"{result['wall']:.1f}",
        f"{result['delivered'] / result['ingest_window']:.0f}",
        str(result["requests"]),
        str(result["batch_requests"]),
        f"{result['p50'] * 1000:.1f}",
        f"{result['p99'] * 1000:.1f}",
        str(errors),
        str(result["spooled"]),
        f"{result['stored']}/{result['expected']}",
        str(result["missing"]),
        str(result["duplicated"]),
        str(result["not_completed"]),
    ]
    return "".join(
        cell.ljust(width) if index == 0 else cell.rjust(width)
        for index, (cell, (_, width)) in enumerate(zip(cells, COLUMNS, strict=True))
    )


def verdicts(scenario: Scenario, result: dict[str, Any]) -> list[str]:
    lines = []
    spooled = result["spooled"]
    lines.append(
        f"  spooled at exit: {spooled} (runners' counts; outboxes hold "
        f"{result['spooled_in_outbox']} in {result['outbox_files']} file(s)): "
        f"{'meets' if spooled == 0 else 'MISSES'} target 0"
    )
    lines.append(_stored_line("after the run", "", scenario, result))
    if "after_flush_stored" in result:
        lines.append(_stored_line("after `dotflow outbox flush`", "after_flush_", scenario, result))
    problems = [f"HTTP {status} x{n}" for status, n in result["http_errors"].items()]
    if result["runner_failures"]:
        problems.append(f"{result['runner_failures']} runner(s) exited non-zero")
    if result["runner_warnings"]:
        problems.append(f"{result['runner_warnings']} runner WARNING/ERROR line(s)")
    produced = result["delivered"] + result["spooled"] + result["dropped"]
    lines.append(
        f"  events: {result['produced']} produced, the runners report {result['delivered']} "
        f"delivered in {result['client_requests']} request(s), {result['spooled']} spooled, "
        f"{result['dropped']} dropped ({produced} in all); "
        + ("; ".join(problems) if problems else "no errors")
    )
    return lines


def _stored_line(when: str, prefix: str, scenario: Scenario, result: dict[str, Any]) -> str:
    lost = result[f"{prefix}missing"] + result[f"{prefix}not_completed"]
    duplicated = result[f"{prefix}duplicated"]
    return (
        f"  {when}: {result[f'{prefix}stored']}/{result['expected']} tasks stored, "
        f"{lost} lost, {duplicated} duplicated, "
        f"{result[f'{prefix}runs_completed']}/{scenario.runners} runs Completed: "
        f"{'meets' if lost == duplicated == 0 else 'MISSES'} target 0 lost, 0 duplicated"
    )


def report(args: argparse.Namespace, results: list[tuple[Scenario, Any]]) -> None:
    load = " / ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"\n{args.runners} runners x {args.tasks} tasks at once, server --workers "
        f"{args.server_workers}, SERVER_FLUSH_TIMEOUT={args.flush_timeout:g}; "
        f"load average now {load} (1/5/15 min)"
    )
    print("".join(name.ljust(w) if i == 0 else name.rjust(w)
                  for i, (name, w) in enumerate(COLUMNS)))  # fmt: skip
    for scenario, result in results:
        if isinstance(result, str):
            print(f"{scenario.name:<30}skipped: {result}")
            continue
        print(row(scenario, result))
        for line in verdicts(scenario, result):
            print(line)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report(args, run_all(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
