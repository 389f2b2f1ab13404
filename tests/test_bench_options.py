"""The benchmarks refuse bad values up front (one line, exit 2, nothing built or run),
and the managed-mode benchmark's verdicts say how sure they are."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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
        ("bench_cli.py", ["--runs", "-1"], "argument --runs: -1 is below the minimum, 1"),
        ("bench_executors.py", ["--tasks", "1"], "argument --tasks: 1 is below the minimum, 2"),
        (
            "bench_executors.py",
            ["--tasks", "20", "--chain", "20"],
            "argument --chain: 20 must be below --tasks (20)",
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
    sys.path.insert(0, str(BENCH))
    try:
        import bench_managed
    finally:
        sys.path.remove(str(BENCH))
    return bench_managed


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
