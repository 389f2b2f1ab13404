"""Engine overhead: microseconds per task of a 1,000-task sequential workflow of no-op steps.

Measured side by side in one run, interleaved round by round so that machine
noise hits every variant alike:

- floor: a bare Python loop calling the same step function;
- dotflow-core with no provider, and with a counting in-process provider;
- dotflow==1.0.1 (installed into bench/.venv-dotflow on first use), with its
  default configuration and with its logging turned down to errors.

Targets: dotflow-core's per-task cost at least 8x lower than dotflow 1.0.1's
(default configuration); with the counting provider (issue 15) at most 10 us
per task, at least 8x lower than dotflow 1.0.1's default configuration and at
least 2.5x lower than dotflow 1.0.1 logging errors only.

Wall times depend on the machine and its load; ``engine_instructions.py``
counts the instructions per task (callgrind), which do not.

Each measurement is the best of ``--repeats`` runs in one process. On the
shared 2-core machine of 2026-12-04, with the best of 5 the same code's
core-counting read 7.9 to 12.7 us/task within twenty minutes; with the best of
30, 7.95 and 8.71 (load 2 and 9).

Usage: python bench/bench_engine.py [--tasks 1000] [--rounds 5] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from _options import at_least
from _venvs import BENCH_DIR, dotflow_python

TARGET_RATIO = 8.0
#: Issue 15, the counting provider: most microseconds per task, least ratio to each peer.
COUNTING_TARGET_US = 10.0
COUNTING_TARGET_RATIOS = {"dotflow": 8.0, "dotflow-quiet": 2.5}
WORKLOAD = BENCH_DIR / "engine_workload.py"


def measure(python: Path | str, variant: str, tasks: int, repeats: int) -> float:
    output = subprocess.run(
        [str(python), str(WORKLOAD), variant, str(tasks), str(repeats)],
        capture_output=True,
        text=True,
        check=True,
        cwd=BENCH_DIR,  # dotflow writes its .output/ directory here
    ).stdout
    return float(json.loads(output.strip().splitlines()[-1])["us_per_task"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=at_least(1), default=1000)
    parser.add_argument("--rounds", type=at_least(1), default=5)
    parser.add_argument("--repeats", type=at_least(1), default=20)
    args = parser.parse_args()

    peer = dotflow_python()
    interpreters = {
        "floor": sys.executable,
        "core-none": sys.executable,
        "core-counting": sys.executable,
        "dotflow": peer,
        "dotflow-quiet": peer,
    }
    samples: dict[str, list[float]] = {variant: [] for variant in interpreters}
    for round_number in range(1, args.rounds + 1):
        for variant, python in interpreters.items():
            samples[variant].append(measure(python, variant, args.tasks, args.repeats))
        print(f"round {round_number}/{args.rounds} done", file=sys.stderr)

    median = {variant: statistics.median(values) for variant, values in samples.items()}
    print(f"\nengine overhead, {args.tasks} no-op tasks, sequential (median of {args.rounds})")
    print(f"{'variant':<16}{'us/task':>10}")
    for variant, value in median.items():
        print(f"{variant:<16}{value:>10.2f}")
    print("\nratios (dotflow 1.0.1 / dotflow-core)")
    for ours in ("core-none", "core-counting"):
        for peer_variant in ("dotflow", "dotflow-quiet"):
            print(f"  {peer_variant:<14} / {ours:<14} {median[peer_variant] / median[ours]:6.1f}x")
    overhead = median["core-none"] - median["floor"]
    print(f"\ndotflow-core overhead above the bare loop: {overhead:.2f} us/task")
    print("\ntargets")
    for line in verdicts(median):
        print(f"  {line}")
    return 0


def verdicts(median: dict[str, float]) -> list[str]:
    """One line per target: the figure, the target and whether this run meets it."""

    def verdict(met: bool) -> str:
        return "met" if met else "NOT met"

    ratio = median["dotflow"] / median["core-none"]
    met = verdict(ratio >= TARGET_RATIO)
    lines = [f"dotflow / core-none {ratio:.1f}x >= {TARGET_RATIO:g}x: {met}"]
    counting = median["core-counting"]
    lines.append(
        f"core-counting {counting:.2f} us/task <= {COUNTING_TARGET_US:g} us: "
        f"{verdict(counting <= COUNTING_TARGET_US)}"
    )
    for peer_variant, target in COUNTING_TARGET_RATIOS.items():
        ratio = median[peer_variant] / counting
        met = verdict(ratio >= target)
        lines.append(f"{peer_variant} / core-counting {ratio:.1f}x >= {target:g}x: {met}")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
