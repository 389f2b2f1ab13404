"""The next task id of a resumed workflow: the one synchronous call of the provider.

Asked of the server within :data:`NEXT_ID_DEADLINE` (one retry at most),
while the outbox is read on another thread: the workflow's thread never scans
it, and a spooled task id counts only if read within the same deadline.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Final

from dotflow_core.plugin import INITIAL_TASK_ID, MAX_TASK_ID, ConfigurationError, DaemonCall
from dotflow_server_api import payloads
from dotflow_server_api.contract import MAX_WORKFLOW_ID_LENGTH, printable
from dotflow_server_api.delivery import Delivery
from dotflow_server_api.delivery.reporting import not_found_hint
from dotflow_server_api.transport import Outcome, Result, Transport

logger = logging.getLogger("dotflow.server.api")

#: Connect and read timeout of the synchronous next-id request (seconds).
NEXT_ID_TIMEOUT: Final = (2.0, 2.0)
#: The whole next-id lookup, its one retry included, gives up after this many seconds:
#: the timeouts above bound each connect and each socket read, not a server that
#: trickles its answer a byte at a time.
NEXT_ID_DEADLINE: Final = 2.5
#: Pause before the one retry, which is made only when the first attempt failed fast
#: enough to leave it at least :data:`NEXT_ID_RETRY_MIN` seconds.
NEXT_ID_RETRY_PAUSE: Final = 0.2
NEXT_ID_RETRY_MIN: Final = 1.0
#: Task ids reserved for a run when it starts (the hook comes before any task is added,
#: so the run's size is unknown): runs that start together number their first
#: RESERVE_COUNT tasks apart; a run with more tasks may meet another run's ids beyond
#: them, and its tasks are then moved to free ids (see :mod:`.delivery.renumber`).
RESERVE_COUNT: Final = 100
#: Of the next-id budget, what is kept for the reservation itself when earlier runs'
#: spooled events are delivered first (see :func:`settle_earlier_runs`).
RESERVE_MIN_TIME: Final = 1.5
#: Answers meaning the server has no reservation endpoint (a seed-contract server).
UNSUPPORTED: Final = frozenset({404, 405})


def local_highest_task_id(
    delivery: Delivery, workflow_id: str, deadline: float
) -> Callable[..., int | None]:
    """Start reading what is queued and spooled for ``workflow_id``; call the result for it
    (it waits for the reading until ``deadline``, or the earlier time it is given)."""
    spooled = DaemonCall(
        lambda: _spooled_highest_task_id(delivery, workflow_id), name="dotflow-outbox-scan"
    )

    def result(until: float = deadline) -> int | None:
        queued = delivery.highest_queued_task_id(workflow_id)
        in_time = spooled.wait(min(until, deadline) - time.monotonic())
        return _highest(queued, spooled.result() if in_time else None)

    return result


def ask_next_id(
    delivery: Delivery, workflow_id: str, run_id: str | None, deadline: float
) -> tuple[int | None, str, bool]:
    """``(first id of a block reserved for run_id, "", True)``, else ``(the server's
    next_id, "", False)``, or ``(None, cause, False)``.

    With ``run_id``, ``POST .../runs/{run_id}/reserve`` reserves :data:`RESERVE_COUNT`
    ids for the run (runs that start together get disjoint blocks); a server without
    that endpoint (404, 405) is asked ``GET .../tasks/next-id`` instead, as before. At
    most one retry, and all before ``deadline`` (the lookup's :data:`NEXT_ID_DEADLINE`).
    """
    try:
        transport = delivery.transport()
    except Exception as error:
        return None, f"{type(error).__name__}: {error}", False
    if run_id is not None:
        body = json.dumps({"count": RESERVE_COUNT}).encode()
        reserve = ("POST", payloads.reserve_path(workflow_id, run_id), body, "first_id")
        answer, cause, status = _ask(transport, reserve, deadline)
        if status not in UNSUPPORTED:
            return answer, cause, answer is not None
    path = payloads.next_id_path(workflow_id)
    answer, cause, status = _ask(transport, ("GET", path, None, "next_id"), deadline)
    if status == 404:
        return None, not_found_hint(delivery.config.base_url, path), False
    return answer, cause, False


def _ask(
    transport: Transport, request: tuple[str, str, bytes | None, str], deadline: float
) -> tuple[int | None, str, int | None]:
    """Send ``request`` (method, path, body, answer field), one retry at most before
    ``deadline``: ``(id, "", status)`` or ``(None, cause, status)``."""
    method, path, body, field = request
    cause = ""
    for attempt in (1, 2):
        result = _send_within(transport, method, path, body, deadline - time.monotonic())
        if result.outcome is Outcome.DELIVERED and result.status != 200:
            return None, f"HTTP {result.status} (expected 200)", result.status
        if result.outcome is Outcome.DELIVERED:
            return (*_parse_id(result.content, field), result.status)
        if result.outcome is Outcome.AUTH:
            return None, f"HTTP {result.status}: the server rejected the token", result.status
        cause = result.describe()
        if result.status in UNSUPPORTED or result.outcome is not Outcome.RETRY or attempt == 2:
            return None, cause, result.status
        if deadline - time.monotonic() < NEXT_ID_RETRY_PAUSE + NEXT_ID_RETRY_MIN:
            break
        time.sleep(NEXT_ID_RETRY_PAUSE)
    return None, cause, None


def settle_earlier_runs(
    delivery: Delivery, workflow_id: str, local_known: Callable[..., int | None], deadline: float
) -> None:
    """Deliver the outbox's events of ``workflow_id`` before a reservation is asked.

    An earlier run whose events were spooled (the server was down, the machine
    stopped) still holds its reservation on the server until its final status
    arrives; reserving first would start this run after that whole block. The
    replay may take what the budget leaves beyond :data:`RESERVE_MIN_TIME`.
    """
    if local_known(deadline - RESERVE_MIN_TIME) is None:
        return  # nothing spooled (or the outbox could not be read in time)
    budget = deadline - time.monotonic() - RESERVE_MIN_TIME
    if budget > 0 and not delivery.deliver_replayed(workflow_id, budget):
        logger.info(
            "workflow %s: earlier runs' events are still on their way; this run's ids are "
            "reserved after theirs",
            printable(workflow_id),
        )


def check_workflow_id(workflow_id: str) -> None:
    """A workflow id the wire contract cannot carry stops the run before any task."""
    if len(workflow_id) > MAX_WORKFLOW_ID_LENGTH:
        raise ConfigurationError(
            f"workflow id {printable(workflow_id)} (from WORKFLOW_ID, --workflow-id or "
            f"workflow_id=) is {len(workflow_id)} characters long; the server's API accepts "
            f"at most {MAX_WORKFLOW_ID_LENGTH}"
        )


def _spooled_highest_task_id(delivery: Delivery, workflow_id: str) -> int | None:
    """The highest task id waiting in the outbox (a whole scan: never on the workflow's thread)."""
    if delivery._outbox is None and not os.path.isdir(delivery.config.outbox_dir):
        return None
    try:
        return delivery.outbox.highest_task_id(workflow_id)
    except Exception as error:
        logger.warning("could not read the outbox %s: %s", delivery.outbox.directory, error)
        return None


def _highest(*numbers: int | None) -> int | None:
    known = [number for number in numbers if number is not None]
    return max(known) if known else None


def _send_within(
    transport: Transport, method: str, path: str, body: bytes | None, seconds: float
) -> Result:
    """``method path``, given up after ``seconds`` whatever the server does.

    The request runs on a daemon thread; one that overruns is left to finish (or
    time out) on its own, and the workflow goes on.
    """
    timeout = (min(NEXT_ID_TIMEOUT[0], seconds), min(NEXT_ID_TIMEOUT[1], seconds))
    call = DaemonCall(
        lambda: transport.send(method, path, body, timeout=timeout),
        name="dotflow-server-api-next-id",
    )
    if call.wait(seconds):
        return call.result()
    return Result(outcome=Outcome.RETRY, detail=f"no complete answer within {NEXT_ID_DEADLINE:g} s")


def _parse_id(content: bytes, field: str) -> tuple[int | None, str]:
    """Read ``{field: N}``: N must be an int from 1 to 2**53 (a bool is not an int)."""
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None, "the answer is not JSON"
    if not isinstance(data, dict) or field not in data:
        return None, f"the answer has no {field}"
    value = data[field]
    if type(value) is not int:
        return None, f"{field} is {type(value).__name__}, not an integer"
    if not INITIAL_TASK_ID <= value <= MAX_TASK_ID:
        return None, f"{field} {value} is outside {INITIAL_TASK_ID}..2**53"
    return value, ""
