"""CLI start-up: wall time of ``dotflow --help``, side by side with dotflow 1.0.1's CLI.

Both commands run interleaved in the same run, each as a fresh process; the
figure is the median wall time. Target: dotflow-core's at most 0.5x dotflow's.
Also times ``dotflow providers`` and ``dotflow --version`` for reference.

Usage: python bench/bench_cli.py [--runs 21]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from _options import at_least
from _venvs import BENCH_DIR, dotflow_python, ours_python

TARGET_RATIO = 0.5


def wall_time(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=BENCH_DIR
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=at_least(1), default=21)
    args = parser.parse_args()

    ours = str(ours_python().parent / "dotflow")
    theirs = str(dotflow_python().parent / "dotflow")
    commands = {
        "dotflow-core --help": [ours, "--help"],
        "dotflow 1.0.1 --help": [theirs, "--help"],
        "dotflow-core --version": [ours, "--version"],
        "dotflow-core providers": [ours, "providers"],
    }
    for command in commands.values():
        wall_time(command)  # warm the file-system cache
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, command in commands.items():
            samples[name].append(wall_time(command))

    median = {name: statistics.median(values) * 1000 for name, values in samples.items()}
    print(f"\nCLI start-up, median wall time of {args.runs} runs")
    for name, value in median.items():
        print(f"  {name:<24}{value:8.1f} ms")
    ratio = median["dotflow-core --help"] / median["dotflow 1.0.1 --help"]
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(f"\n--help ratio dotflow-core / dotflow 1.0.1: {ratio:.2f}x ({verdict} target <= 0.5x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
