"""Delivery: the queue between the hooks and the server, in small modules.

- :mod:`.queue`: the requests, their ordering and coalescing rules (single-threaded);
- :mod:`.health`: backpressure or outage, retry scheduling, the deadline, outage logs;
- :mod:`.limiter`: the adaptive concurrency limit (AIMD);
- :mod:`.workers`: the worker threads (start delay, growth, idle retirement);
- :mod:`.journal`: the crash-safe journal in the outbox folder (group commit);
- :mod:`.replay`: reading the outbox back, poisoned lines set aside;
- :mod:`.core` and :mod:`.lifecycle`: :class:`Delivery`, which ties them together.
"""

from __future__ import annotations

from dotflow_server_api.delivery.core import Delivery
from dotflow_server_api.delivery.health import OUTAGE_LOG_INTERVAL
from dotflow_server_api.delivery.items import Item, Stats, Stream, StreamKey, WorkflowState
from dotflow_server_api.delivery.workers import IDLE_RETIREMENT, START_DELAY

__all__ = [
    "IDLE_RETIREMENT",
    "OUTAGE_LOG_INTERVAL",
    "START_DELAY",
    "Delivery",
    "Item",
    "Stats",
    "Stream",
    "StreamKey",
    "WorkflowState",
]
