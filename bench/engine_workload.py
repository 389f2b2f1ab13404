"""One measurement of the engine benchmark, run in its own interpreter.

Usage: python engine_workload.py VARIANT TASKS REPEATS

Prints one JSON object: the variant and the best wall time per task in
microseconds over REPEATS runs of a TASKS-task sequential workflow of no-op steps.
Variants: ``floor`` (a bare loop calling the step), ``core-none`` (dotflow-core,
no provider), ``core-counting`` (dotflow-core, an in-process provider counting
every hook call), ``dotflow`` (dotflow 1.0.1 with its default configuration)
and ``dotflow-quiet`` (dotflow 1.0.1 logging errors only).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any


def noop() -> None:
    return None


def floor(tasks: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(tasks):
            noop()

    return run


def counting_provider() -> Any:
    """A provider whose four event hooks only count their calls (``.calls``).

    Built on call, so that importing this module imports no dotflow-core.
    """
    from dotflow_core import hookimpl

    class Counting:
        calls = 0

        @hookimpl
        def create_workflow(self, workflow: object) -> None:
            self.calls += 1

        @hookimpl
        def update_workflow(self, workflow: object) -> None:
            self.calls += 1

        @hookimpl
        def create_task(self, task: object) -> None:
            self.calls += 1

        @hookimpl
        def update_task(self, task: object) -> None:
            self.calls += 1

    return Counting()


def core(tasks: int, counting: bool) -> Callable[[], None]:
    from dotflow_core import DotFlow, action

    step = action(noop)

    def run() -> None:
        provider = counting_provider()
        workflow = DotFlow(providers=[provider] if counting else [])
        for _ in range(tasks):
            workflow.task.add(step=step)
        workflow.start()
        assert not counting or provider.calls == 3 * tasks + 3, provider.calls

    return run


def dotflow(tasks: int, quiet: bool) -> Callable[[], None]:
    from dotflow import Config, DotFlow, action
    from dotflow.providers import LogDefault

    step = action(noop)

    def run() -> None:
        workflow = DotFlow(config=Config(log=LogDefault(level="ERROR"))) if quiet else DotFlow()
        for _ in range(tasks):
            workflow.task.add(step=step)
        workflow.start()

    return run


VARIANTS: dict[str, Callable[[int], Callable[[], None]]] = {
    "floor": floor,
    "core-none": lambda tasks: core(tasks, counting=False),
    "core-counting": lambda tasks: core(tasks, counting=True),
    "dotflow": lambda tasks: dotflow(tasks, quiet=False),
    "dotflow-quiet": lambda tasks: dotflow(tasks, quiet=True),
}


def main() -> None:
    variant, tasks, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    run = VARIANTS[variant](tasks)
    run()  # warm-up: imports, caches
    best = min(_timed(run) for _ in range(repeats))
    print(json.dumps({"variant": variant, "us_per_task": best / tasks * 1e6}))


def _timed(run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
