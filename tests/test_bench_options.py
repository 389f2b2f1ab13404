"""The benchmarks refuse bad values up front: one line, exit 2, nothing built or run."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

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


def test_zero_outage_runs_are_reported_as_not_measured(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import bench_managed
    finally:
        sys.path.remove(str(BENCH))
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
    assert "whole process, dotflow 1.0.1 / ours: 6.0x (meets target >= 5x)" in lines
    assert lines[-2:] == [
        "server down: not measured (--outage-runs 0)",
        "server hangs: not measured (--outage-runs 0)",
    ]
