"""An example ETL workflow: three steps, one of which fails once and is retried.

Run it with any provider, e.g. ``dotflow start --step etl.extract --step
etl.transform --step etl.load`` from this directory.
"""

from __future__ import annotations

from typing import Any

from dotflow_core import Context, action

ORDERS = [
    {"order": 1001, "customer": "ada", "amount": "19.90"},
    {"order": 1002, "customer": "grace", "amount": "5.00"},
    {"order": 1003, "customer": "ada", "amount": "42.10"},
]

_load_attempts = 0


@action
def extract(initial_context: Context) -> list[dict[str, Any]]:
    """Read the raw orders (a real job would query a database or an API)."""
    limit = (initial_context.storage or {}).get("limit", len(ORDERS))
    return ORDERS[:limit]


@action
def transform(previous_context: Context) -> dict[str, float]:
    """Total the amounts per customer."""
    totals: dict[str, float] = {}
    for row in previous_context.storage:
        totals[row["customer"]] = round(totals.get(row["customer"], 0.0) + float(row["amount"]), 2)
    return totals


@action(retry=3, retry_delay=0.2, backoff=True)
def load(previous_context: Context) -> dict[str, Any]:
    """Store the totals; the first attempt meets a (simulated) transient outage."""
    global _load_attempts
    _load_attempts += 1
    if _load_attempts == 1:
        raise ConnectionError("warehouse not reachable (simulated, retried)")
    return {"rows_written": len(previous_context.storage)}
