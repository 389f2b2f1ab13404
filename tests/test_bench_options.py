"""The benchmarks refuse bad values up front (one line, exit 2, nothing built or run),
and the managed-mode benchmark's verdicts say how sure they are."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench_modules import import_bench

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize(
    ("script", "arguments", "message"),
    [
        ("bench_managed.py", ["--runs", "0"], "argument --runs: 0 is below the minimum, 1"),
        ("bench_managed.py", ["--step-ms", "-5"], "argument --step-ms: -5 is below the minimum, 0"),
        (
            "bench_managed.py",
            ["--flush-timeout", "soon"],
            "argument --flush-timeout: 'soon' is not a number",
        ),
        (
            "bench_managed.py",
            ["--max-in-flight", "0"],
            "argument --max-in-flight: 0 is below the minimum, 1",
        ),
        ("bench_engine.py", ["--tasks", "1.5"], "argument --tasks: '1.5' is not an integer"),
        ("engine_instructions.py", ["--small", "0"], "argument --small: 0 is below the minimum, 1"),
        (
            "engine_instructions.py",
            ["--small", "500", "--large", "500"],
            "--large must be above --small",
        ),
        ("bench_cli.py", ["--runs", "-1"], "argument --runs: -1 is below the minimum, 1"),
        ("bench_data.py", ["--size", "99"], "argument --size: 99 is below the minimum, 100"),
        ("bench_data.py", ["--rounds", "0"], "argument --rounds: 0 is below the minimum, 1"),
        (
            "bench_data.py",
            ["--growth-rounds", "few"],
            "argument --growth-rounds: 'few' is not an integer",
        ),
        ("bench_executors.py", ["--tasks", "1"], "argument --tasks: 1 is below the minimum, 2"),
        ("bench_fleet.py", ["--runners", "0"], "argument --runners: 0 is below the minimum, 1"),
        (
            "bench_fleet.py",
            ["--backends", "sqlite,mysql"],
            "argument --backends: 'sqlite,mysql' is not a comma-separated list of sqlite, "
            "postgresql",
        ),
        (
            "bench_fleet.py",
            ["--paths", ""],
            "argument --paths: '' is not a comma-separated list of batch, single",
        ),
        (
            "bench_executors.py",
            ["--tasks", "20", "--chain", "20"],
            "argument --chain: 20 must be below --tasks (20)",
        ),
        ("bench_fleet.py", ["--runners", "0"], "argument --runners: 0 is below the minimum, 1"),
        (
            "bench_fleet.py",
            ["--backends", "sqlite,mysql"],
            "argument --backends: 'sqlite,mysql' is not a comma-separated list of "
            "sqlite, postgresql",
        ),
        (
            "bench_fleet.py",
            ["--paths", ""],
            "argument --paths: '' is not a comma-separated list of batch, single",
        ),
    ],
)
def test_a_bad_value_is_named_in_one_line(script: str, arguments: list[str], message: str) -> None:
    finished = subprocess.run(
        [sys.executable, str(BENCH / script), *arguments],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 2
    assert finished.stdout == ""
    assert finished.stderr.splitlines()[-1] == f"{script}: error: {message}"


@pytest.fixture(scope="module")
def bench_managed() -> Any:
    return import_bench("bench_managed")


def test_zero_outage_runs_are_reported_as_not_measured(
    bench_managed: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bench = bench_managed.Bench.__new__(bench_managed.Bench)  # no virtualenvs needed
    sample = {"wall": 0.2, "last_task": 0.1, "requests": 22}
    bench.samples = {
        "ours: api": [sample],
        "ours: no provider": [sample],
        "dotflow 1.0.1: managed": [{**sample, "wall": 1.2}],
    }
    args = argparse.Namespace(runs=1, outage_runs=0, tasks=20, step_ms=0.0, flush_timeout=5.0)
    bench_managed.report(bench, args)
    lines = capsys.readouterr().out.splitlines()
    assert (
        "whole process, dotflow 1.0.1 / ours: 6.00x "
        "(meets target >= 5.00x; too few rounds for an interval)"
    ) in lines
    assert lines[-2:] == [
        "server down: not measured (--outage-runs 0)",
        "server hangs: not measured (--outage-runs 0)",
    ]


@pytest.mark.parametrize(
    ("rounds", "ranks"),
    # The textbook distribution-free 95% intervals for a median: from the k-th
    # smallest to the k-th largest of n (coverage 96.9%, 96.5%, 95.7%, 97.1%).
    [(6, (1, 6)), (15, (4, 12)), (30, (10, 21)), (60, (22, 39))],
)
def test_median_interval_uses_the_order_statistics_of_a_95_percent_interval(
    bench_managed: Any, rounds: int, ranks: tuple[int, int]
) -> None:
    values = [float(rank) for rank in range(rounds, 0, -1)]  # unsorted on purpose
    assert bench_managed.median_interval(values) == ranks


def test_median_interval_needs_six_rounds(bench_managed: Any) -> None:
    # With five values even the widest interval covers the median only 93.75% of the time.
    assert bench_managed.median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            [5.2, 5.3, 5.4, 5.5, 5.6, 5.7, 6.0, 6.1],
            "5.5x, 95% interval 5.2x to 6.1x (meets target >= 5.0x)",
        ),
        (
            [4.0, 5.2, 5.3, 5.4, 5.5, 5.6, 5.7, 6.0],
            "5.5x, 95% interval 4.0x to 6.0x (meets target >= 5.0x; "
            "the interval straddles the target: this run does not settle it)",
        ),
        (
            [3.0, 4.1, 4.2, 4.3, 4.4, 4.5, 4.6, 4.7],
            "4.3x, 95% interval 3.0x to 4.7x (misses target >= 5.0x)",
        ),
    ],
)
def test_ratio_verdict_says_whether_the_run_settles_it(
    bench_managed: Any, values: list[float], expected: str
) -> None:
    shown = bench_managed.verdict(values, 5.0, higher_is_better=True, shown=lambda x: f"{x:.1f}x")
    assert shown == expected


def test_overhead_verdict_counts_lower_as_better(bench_managed: Any) -> None:
    overheads = [0.02, 0.04, 0.05, 0.06, 0.08, 0.12]
    shown = bench_managed.verdict(
        overheads, 0.10, higher_is_better=False, shown=lambda x: f"{x:+.1%}"
    )
    assert shown == (
        "+5.5%, 95% interval +2.0% to +12.0% (meets target <= +10.0%; "
        "the interval straddles the target: this run does not settle it)"
    )


def test_rounds_alternate_which_of_ours_runs_first(bench_managed: Any) -> None:
    first, second = bench_managed.ROUND_ORDERS
    assert (
        sorted(first)
        == sorted(second)
        == sorted(["dotflow 1.0.1: managed", "ours: api", "ours: no provider"])
    )
    ours = ("ours: api", "ours: no provider")
    assert [name for name in first if name in ours] == list(ours)
    assert [name for name in second if name in ours] == list(reversed(ours))


@pytest.fixture(scope="module")
def bench_data() -> Any:
    return import_bench("bench_data")


def test_the_data_benchmark_measures_each_core_variant_in_a_child(
    bench_data: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The workload runs (tiny size) and the report reads what it prints; no peer needed."""
    server = bench_data.LoopbackServer()
    try:
        samples = {
            variant: [bench_data.measure(sys.executable, variant, 300, server.url)]
            for variant in ("core-none", "core-counting", "core-api")
        }
        samples["dotflow"] = [{**samples["core-none"][0], "variant": "dotflow"}]
        bench_data.report(samples, 300, server)
    finally:
        server.close()
    assert samples["core-counting"][0]["events"] == 9  # 3 workflow + 2 x 3 task events
    api = samples["core-api"][0]
    assert (api["spooled"], api["dropped"]) == (0, 0) and api["delivered"] > 0
    assert 0 < server.largest_body <= bench_data.MAX_BODY_BYTES
    assert all(sample[0]["max_rss_mb"] > 0 for sample in samples.values())
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("  core-api / core-none, RSS") for line in lines)
    assert any(", 0 spooled, 0 dropped (meets target 0 and 0)" in line for line in lines)


def test_the_growth_table_prints_a_row_per_size(
    bench_data: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(seconds: float) -> list[dict[str, Any]]:
        return [{"seconds": seconds, "events": 9, "max_rss_mb": 1.0}]

    table = {
        size: {"core-none": run(0.1), "core-counting": run(0.1 + 9e-6), "core-api": run(0.1009)}
        for size in (20, 200, 2000)
    }
    bench_data.report_growth(table)
    rows = capsys.readouterr().out.splitlines()[-3:]
    assert [row.split()[0] for row in rows] == ["20", "200", "2,000"]
    assert all(row.split()[2:] == ["1.0", "100.0"] for row in rows)


def test_the_engine_benchmark_says_which_counting_provider_target_each_run_meets() -> None:
    bench_engine = import_bench("bench_engine")
    median = {"floor": 0.1, "core-none": 5.0, "core-counting": 9.0, "dotflow": 80.0}
    lines = bench_engine.verdicts({**median, "dotflow-quiet": 20.0})
    assert lines == [
        "dotflow / core-none 16.0x >= 8x: met",
        "core-counting 9.00 us/task <= 10 us: met",
        "dotflow / core-counting 8.9x >= 8x: met",
        "dotflow-quiet / core-counting 2.2x >= 2.5x: NOT met",
    ]
    slower = bench_engine.verdicts({**median, "core-counting": 12.0, "dotflow-quiet": 40.0})
    assert slower[1:] == [
        "core-counting 12.00 us/task <= 10 us: NOT met",
        "dotflow / core-counting 6.7x >= 8x: NOT met",
        "dotflow-quiet / core-counting 3.3x >= 2.5x: met",
    ]
