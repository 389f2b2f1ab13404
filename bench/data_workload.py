"""One measurement of the data benchmark, run in a fresh interpreter.

Usage: python data_workload.py VARIANT SIZE

The workflow of issue 15: step 1 returns ``[{"i": i} for i in range(SIZE)]``,
step 2 returns ``len(previous_context.storage)``; sequential mode. Prints one
JSON object: the variant, the size, ``seconds`` (wall time of ``start()``,
which for dotflow-core includes the providers' flush), ``max_rss_mb`` (this
process's peak resident set, ``ru_maxrss``), ``events`` (hook calls a provider
received) and, for ``core-api``, the api provider's own counts after its
shutdown: ``delivered``, ``spooled``, ``dropped``, ``requests``.

Variants: ``core-none`` (dotflow-core, no provider), ``core-counting`` (an
in-process provider counting its hook calls), ``core-api`` (the ``api``
provider; the caller sets ``SERVER_BASE_URL`` and ``SERVER_USER_TOKEN``) and
``dotflow`` (dotflow 1.0.1, default configuration; run by its interpreter).
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

from engine_workload import counting_provider

SIZE = 0


def items() -> list[dict[str, int]]:
    return [{"i": i} for i in range(SIZE)]


def count(previous_context: Any) -> int:
    return len(previous_context.storage)


class ApiCounts(logging.Handler):
    """Catches the api provider's summary line and keeps its numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = str(record.msg)
        if message.startswith("dotflow-server-api: %d event(s) delivered") and record.args:
            delivered, _, requests, spooled, _, dropped = record.args  # type: ignore[misc]
            self.counts = {
                "delivered": delivered,
                "requests": requests,
                "spooled": spooled,
                "dropped": dropped,
            }


def core(variant: str) -> dict[str, Any]:
    from dotflow_core import DotFlow, action

    counting = counting_provider()
    api_counts = ApiCounts()
    logging.getLogger("dotflow.server.api").addHandler(api_counts)
    logging.getLogger("dotflow.server.api").setLevel(logging.INFO)
    providers: list[Any] = {"core-none": [], "core-counting": [counting], "core-api": ["api"]}[
        variant
    ]
    workflow = DotFlow(providers=providers)
    workflow.task.add(action(items))
    workflow.task.add(action(count))
    seconds = timed(workflow.start)
    if workflow.result_storage()[1] != SIZE:
        raise SystemExit(f"{variant}: step 2 saw {workflow.result_storage()[1]} items")
    result: dict[str, Any] = {"seconds": seconds, "events": counting.calls}
    if variant == "core-api":
        workflow.providers.shutdown(timeout=None)  # the summary: what is left at exit
        result.update(api_counts.counts)
        result["events"] = api_counts.counts.get("delivered", 0)
    return result


def dotflow() -> dict[str, Any]:
    from dotflow import DotFlow, action

    workflow = DotFlow()
    workflow.task.add(step=action(items))
    workflow.task.add(step=action(count))
    return {"seconds": timed(workflow.start), "events": 0}


def timed(run: Callable[[], Any]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    global SIZE
    variant, SIZE = sys.argv[1], int(sys.argv[2])
    result = dotflow() if variant == "dotflow" else core(variant)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"variant": variant, "size": SIZE, "max_rss_mb": peak_kb / 1024, **result}))


if __name__ == "__main__":
    main()
