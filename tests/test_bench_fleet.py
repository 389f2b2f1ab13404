"""bench_fleet.py at a tiny size: real runners against a real ``dotflow-api serve``, and
the report reads what the server stored (a smoke test; the figures are the bench's)."""

from __future__ import annotations

from typing import Any

import pytest
from bench_modules import import_bench


@pytest.fixture(scope="module")
def bench_fleet() -> Any:
    return import_bench("bench_fleet")


def test_two_runners_store_everything_on_both_paths(
    bench_fleet: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--runners", "2", "--tasks", "3", "--backends", "sqlite", "--ids", "distinct"]
    assert bench_fleet.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split("  ")[0]: line.split() for line in lines if line.startswith("sqlite, ")}
    assert sorted(rows) == ["sqlite, batch, distinct id", "sqlite, single, distinct id"]
    for cells in rows.values():
        # ... errors, spooled, stored, missing, dup, unfinished
        assert cells[-6:] == ["0", "0", "6/6", "0", "0", "0"]
    single = rows["sqlite, single, distinct id"]
    assert single[-9] == "0"  # serve --no-batch: no batch request answered
    stored = "6/6 tasks stored, 0 lost, 0 duplicated, 2/2 runs Completed: meets target"
    assert sum(f"after the run: {stored}" in line for line in lines) == 2
    produced = "events: 22 produced, the runners report 22 delivered"
    assert sum(produced in line for line in lines) == 2


def test_percentile_is_nearest_rank(bench_fleet: Any) -> None:
    percentile = import_bench("fleet_scenario").percentile
    values = [float(n) for n in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99)) == (50.0, 99.0)
    assert percentile([], 0.5) == 0.0
