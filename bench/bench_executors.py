"""Parallel mode on executors: 200 CPU-bound tasks of about 50 ms, on 2 workers.

The workflow: 180 independent tasks in the ``default`` group and one named
group of 20 tasks, each receiving the previous one's value. Side by side in
one run, interleaved round by round (the median is reported):

- floor: the same 200 calls in a bare loop (the CPU work itself);
- sequential: ``start()``;
- parallel: ``start(mode="parallel", max_workers=2)``, the built-in worker processes;
- processes: ``start(mode="parallel", executor=ProcessPoolExecutor(2))``;
- dask: ``start(mode="parallel", executor=client.get_executor())`` on a
  ``LocalCluster`` of 2 worker processes, one thread each;
- dask-map: Dask's own ``client.map`` of the same function on the same cluster
  (the named group as a chain of ``client.submit`` calls, each given the
  previous future), no dotflow involved.

Pools and the cluster are started and warmed up (every worker has imported the
steps) before the clock starts, as a long-lived cluster would be.

Each variant runs in a driver process that holds what it needs and nothing
else, as a user's would: floor, sequential, parallel and processes in a fresh
child process per round (``--driver NAME``; the clock runs inside it, around
``start()`` only), the two Dask variants in this process, next to the
cluster's scheduler. (Until 2026-12-04 every variant ran here: the built-in
parallel mode then forked, for every task, a driver holding the Dask
scheduler and its threads, a cost no user of that mode pays.)

Printed: wall time, speed-up over sequential, and the overhead per task: the
worker time a run spends on anything but the steps' own work,
``(workers x wall - floor) / tasks`` (for sequential, ``(wall - floor) / tasks``).
Then the same speed-ups and Dask gap within each round (paired: the variants of
one round ran minutes apart at most), their median and range: this machine's
speed drifts between rounds (the floor of one run has read 6.7 s and 9.4 s).

Targets: every parallel variant at least 1.7x faster than sequential; the
overhead per task of ``dask`` within 2 ms of ``dask-map``'s.

``--work sleep`` makes every task sleep ``--task-ms`` instead: the CPUs are then
not what the variants compete for, so the speed-ups and overheads measure the
engine's scheduling even on a machine busy with other work (not the target's
setup, which is CPU work on an otherwise idle machine).

Usage: python bench/bench_executors.py [--tasks 200] [--chain 20] [--task-ms 50] [--rounds 3]
       [--work cpu|sleep]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from _options import at_least
from executors_workload import burn, burn_after, spin, spin_after

from dotflow_core import DotFlow

WORKERS = 2
TARGET_SPEEDUP = 1.7
TARGET_DASK_GAP_MS = 2.0


def calibrate(task_ms: float) -> int:
    """Loops of ``spin`` that take about ``task_ms`` here (best of five, so load inflates less)."""
    loops = 100_000
    best = min(_timed(lambda: spin(loops)) for _ in range(5))
    return max(1, int(loops * task_ms / 1000 / best))


def _timed(function: Callable[[], Any]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def workflow(independent: int, chain: int, loops: int | float) -> DotFlow:
    flow = DotFlow(providers=[])
    for _ in range(independent):
        flow.task.add(burn, initial_context=loops)
    for _ in range(chain):
        flow.task.add(burn_after, initial_context=loops, group_name="chain")
    return flow


def check(flow: DotFlow, chain: int) -> None:
    """Every task completed and the chain counted through: a fast wrong run is no figure."""
    failed = [task for task in flow.result_task() if task.current_context.storage is None]
    if failed or flow.result_storage()[-1] != chain:
        raise SystemExit(f"bench_executors.py: a run went wrong: {failed[:1] or flow.result()}")


def dask_map(client: Any, independent: int, chain: int, loops: int | float) -> None:
    futures = client.map(spin, [loops] * independent, pure=False)
    previous = None
    for _ in range(chain):
        previous = client.submit(spin_after, loops, previous, pure=False)
    results = client.gather([*futures, previous])
    if results[-1] != chain:
        raise SystemExit("bench_executors.py: Dask's own chain went wrong")


#: The variants run in a child process of their own (see the module's docstring).
DRIVEN: tuple[str, ...] = ("floor", "sequential", "parallel", "processes")


def drive(name: str, independent: int, chain: int, loops: int | float) -> float:
    """One timed run of ``name`` in this process (a child started with ``--driver``)."""
    if name == "floor":
        return _timed(lambda: [spin(loops) for _ in range(independent + chain)])
    options: dict[str, Any] = {}
    pool = None
    if name == "parallel":  # as many workers as the other variants get
        options = {"mode": "parallel", "max_workers": WORKERS}
    elif name == "processes":
        pool = ProcessPoolExecutor(max_workers=WORKERS)
        list(pool.map(spin, [1] * WORKERS * 2))  # every worker has imported the steps
        options = {"mode": "parallel", "executor": pool}
    flow = workflow(independent, chain, loops)
    try:
        seconds = _timed(lambda: flow.start(**options))
    finally:
        if pool is not None:
            pool.shutdown()
    check(flow, chain)
    return seconds


def driven(name: str, independent: int, chain: int, loops: int | float) -> float:
    """:func:`drive` in a fresh child process; its seconds."""
    finished = subprocess.run(
        [sys.executable, __file__, "--driver", name, "--loops", repr(loops),
         "--tasks", str(independent + chain), "--chain", str(chain)],
        capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    if finished.returncode != 0:
        raise SystemExit(f"bench_executors.py: the {name} driver failed:\n{finished.stderr}")
    return float(finished.stdout.split()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=at_least(2), default=200)
    parser.add_argument("--chain", type=at_least(1), default=20, help="tasks of the named group")
    parser.add_argument("--task-ms", type=at_least(1, float), default=50.0)
    parser.add_argument("--rounds", type=at_least(1), default=3)
    parser.add_argument("--work", choices=("cpu", "sleep"), default="cpu", help="what a task does")
    parser.add_argument("--driver", choices=DRIVEN, help=argparse.SUPPRESS)
    parser.add_argument("--loops", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.chain >= args.tasks:
        parser.error(f"argument --chain: {args.chain} must be below --tasks ({args.tasks})")
    independent = args.tasks - args.chain
    if args.driver is not None:
        loops_given: int | float = float(args.loops) if "." in args.loops else int(args.loops)
        print(repr(drive(args.driver, independent, args.chain, loops_given)))
        return 0
    import distributed  # in requirements/test.txt; users get it with dotflow-core[dask]

    load_before = os.getloadavg()[0]
    loops: int | float = calibrate(args.task_ms) if args.work == "cpu" else args.task_ms / 1000
    cluster = distributed.LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = distributed.Client(cluster)
    try:
        dask_executor = client.get_executor()
        list(dask_executor.map(spin, [1] * WORKERS * 2))  # every worker imports the steps now

        def run_dask() -> None:
            flow = workflow(independent, args.chain, loops)
            flow.start(mode="parallel", executor=dask_executor)
            check(flow, args.chain)

        here: dict[str, Callable[[], None]] = {
            "dask": run_dask,
            "dask-map": lambda: dask_map(client, independent, args.chain, loops),
        }
        samples: dict[str, list[float]] = {name: [] for name in (*DRIVEN, *here)}
        for round_number in range(1, args.rounds + 1):
            for name in DRIVEN:
                samples[name].append(driven(name, independent, args.chain, loops))
            for name, variant in here.items():
                samples[name].append(_timed(variant))
            print(f"round {round_number}/{args.rounds} done", file=sys.stderr)
    finally:
        client.close()
        cluster.close()
    load = (load_before, os.getloadavg()[0])
    return report(samples, args, load)


def report(
    samples: dict[str, list[float]], args: argparse.Namespace, load: tuple[float, float]
) -> int:
    wall = {name: statistics.median(values) for name, values in samples.items()}
    floor = wall["floor"]
    work = "CPU" if args.work == "cpu" else "sleep"
    print(
        f"\n{args.tasks} tasks of ~{args.task_ms:g} ms {work} ({args.tasks - args.chain} "
        f"independent, a chain of {args.chain}), {WORKERS} workers; median of {args.rounds} rounds"
    )
    print(
        f"load average {load[0]:.1f} at the start, {load[1]:.1f} at the end, on "
        f"{os.cpu_count()} CPUs: above {WORKERS} the workers could not have the CPUs they need"
    )
    print(f"{'variant':<12}{'wall s':>9}{'speed-up':>10}{'overhead ms/task':>18}")
    overhead: dict[str, float] = {}
    for name, seconds in wall.items():
        workers = 1 if name in ("floor", "sequential") else WORKERS
        overhead[name] = (workers * seconds - floor) / args.tasks * 1000
        speedup = wall["sequential"] / seconds
        print(f"{name:<12}{seconds:>9.2f}{speedup:>9.2f}x{overhead[name]:>18.2f}")
    verdicts = []
    print(f"\ntargets: parallel variants >= {TARGET_SPEEDUP}x sequential")
    for name in ("parallel", "processes", "dask"):
        speedup = wall["sequential"] / wall[name]
        verdicts.append(speedup >= TARGET_SPEEDUP)
        print(f"  {name:<10} {speedup:5.2f}x  {'meets' if verdicts[-1] else 'misses'} target")
    gap = overhead["dask"] - overhead["dask-map"]
    verdicts.append(gap <= TARGET_DASK_GAP_MS)
    print(
        f"  dask overhead - dask-map overhead: {gap:+.2f} ms/task "
        f"(target <= {TARGET_DASK_GAP_MS:g}): {'meets' if verdicts[-1] else 'misses'} target"
    )
    report_paired(samples, args.tasks)
    return 0


def report_paired(samples: dict[str, list[float]], tasks: int) -> None:
    """The same figures within each round (variants next to each other in time), then
    their median and range: a machine whose speed drifts between rounds moves every
    variant of a round together, and the medians of the walls above mix rounds."""
    rounds = range(len(samples["floor"]))
    if len(rounds) < 2:
        return
    print("\nper round, each variant against the sequential run and floor of its own round")
    for name in ("parallel", "processes", "dask"):
        speedups = [samples["sequential"][i] / samples[name][i] for i in rounds]
        print(f"  {name:<10} speed-up {_spread(speedups, 'x')}")
    gaps = [WORKERS * (samples["dask"][i] - samples["dask-map"][i]) / tasks * 1000 for i in rounds]
    print(f"  dask overhead - dask-map overhead {_spread(gaps, ' ms/task')}")


def _spread(values: list[float], unit: str) -> str:
    return (
        f"median {statistics.median(values):.2f}{unit} "
        f"(rounds: {min(values):.2f} to {max(values):.2f})"
    )


if __name__ == "__main__":
    sys.exit(main())
