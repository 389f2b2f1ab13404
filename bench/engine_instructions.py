"""Engine cost in instructions per task, counted by callgrind: a figure load leaves alone.

Each variant of ``engine_workload.py`` runs under ``valgrind --tool=callgrind``
twice, with ``--small`` and ``--large`` tasks (one warm-up run and one measured
run each, so every task count is run twice). The difference of the two totals,
divided by twice the difference in tasks, is what one more task costs: start-up,
imports and the workflow's own events cancel out.

Needs valgrind. Usage: python bench/engine_instructions.py [--small 1000] [--large 3000]
[--variants core-none core-counting] (``dotflow`` and ``dotflow-quiet`` run in
bench/.venv-dotflow, created on first use).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from _options import at_least
from _venvs import BENCH_DIR, dotflow_python

WORKLOAD = BENCH_DIR / "engine_workload.py"
PEER_VARIANTS = frozenset({"dotflow", "dotflow-quiet"})
_COLLECTED = re.compile(r"Collected : (\d+)")


def instructions(python: Path | str, variant: str, tasks: int) -> int:
    """Instructions callgrind counted for one run of the workload (warm-up and one repeat)."""
    completed = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            str(python),
            str(WORKLOAD),
            variant,
            str(tasks),
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=BENCH_DIR,  # dotflow writes its .output/ directory here
    )
    found = _COLLECTED.search(completed.stderr)
    if found is None:
        raise RuntimeError(f"no callgrind total in the output of {variant}: {completed.stderr}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=at_least(1), default=1000)
    parser.add_argument("--large", type=at_least(2), default=3000)
    parser.add_argument("--variants", nargs="+", default=["core-none", "core-counting"])
    args = parser.parse_args()
    if args.large <= args.small:
        parser.error("--large must be above --small")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed")
    print(f"{'variant':<16}{'instructions/task':>18}")
    for variant in args.variants:
        python = dotflow_python() if variant in PEER_VARIANTS else sys.executable
        small = instructions(python, variant, args.small)
        large = instructions(python, variant, args.large)
        # Each run is the warm-up plus one measured repeat: every task count runs twice.
        per_task = (large - small) / (2 * (args.large - args.small))
        print(f"{variant:<16}{per_task:>18,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
