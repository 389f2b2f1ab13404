"""Server health: outage or backpressure, when to retry, the deadline, and the outage log lines.

An error on one connection while others succeed (or are still waiting for
their answer) is *backpressure*: the concurrency limit shrinks and that request
retries after a short backoff. An *outage* is when nothing answers: the
failure came with nothing else in flight and no answer since it was sent.
During an outage one request at a time probes the server, with exponential
backoff and full jitter (or the server's ``Retry-After``).

While a flush or a shutdown waits, no retry is scheduled past its deadline:
a backoff is clamped to half the time left (less the round trip the answer
needs), so the attempts crowd towards the deadline rather than past it. A
``Retry-After`` beyond the deadline is honoured (the request is spooled).
Single-threaded: the caller holds the lock and passes the time in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from dotflow_server_api.backoff import parse_retry_after
from dotflow_server_api.delivery.items import Item
from dotflow_server_api.transport import Result

logger = logging.getLogger("dotflow.server.api")

#: Seconds after an outage WARNING during which a new outage is logged at DEBUG only
#: (with its recovery): a server that fails every other request does not flood the log.
OUTAGE_LOG_INTERVAL = 60.0
#: A retry after backpressure waits this fraction of the outage backoff.
BACKPRESSURE_SCALE: Final = 0.25
#: The shortest wait between two attempts of one request (seconds).
MIN_RETRY_WAIT: Final = 0.02
#: Round trip assumed before one was measured (seconds).
DEFAULT_ROUND_TRIP: Final = 0.1


class ServerHealth:
    """Outage state, retry scheduling and the deadline of one destination.

    :param base_url: for log lines.
    :param delay: ``delay(failures, retry_after_header) -> seconds``.
    """

    def __init__(self, base_url: str, delay: Callable[[int, str | None], float]) -> None:
        self.base_url = base_url
        self._delay = delay
        self.outage_since: float | None = None
        self._outage_failures = 0
        self.pause_until = 0.0
        #: The earliest deadline someone waits for (flush or close), or None.
        self.deadline: float | None = None
        #: When an answer (anything but a retryable failure) last came.
        self.last_answer_at = float("-inf")
        #: Answers so far (see ``Delivery._close_deadline``).
        self.answered = 0
        self._round_trip = DEFAULT_ROUND_TRIP
        #: When the last outage WARNING was logged; whether the current outage was not
        #: (too soon after it), and how many such quiet outages there were since.
        self._warned_at: float | None = None
        self._quiet = False
        self._quiet_outages = 0

    # -- gating ----------------------------------------------------------------

    def wait_before_sending(self, now: float, in_flight: int) -> float | None:
        """0 if a request may go now; else seconds to wait (None: until something lands)."""
        if self.outage_since is None:
            return 0.0
        if in_flight > 0:
            return None  # one probe at a time during an outage
        return max(self.pause_until - now, 0.0)

    # -- results -----------------------------------------------------------------

    def answer(self, now: float, item: Item) -> bool:
        """An answer came; returns True when it ends an outage."""
        self.answered += 1
        self.last_answer_at = now
        if item.sent_at:
            self._round_trip = 0.8 * self._round_trip + 0.2 * max(now - item.sent_at, 0.0)
        if self.outage_since is None:
            return False
        logger.log(
            logging.DEBUG if self._quiet else logging.INFO,
            "delivery to %s recovered after %.1f s",
            self.base_url,
            now - self.outage_since,
        )
        self.outage_since = None
        self._outage_failures = 0
        self.pause_until = 0.0
        return True

    def failure(self, now: float, item: Item, result: Result, others_in_flight: int) -> float:
        """A retryable failure of ``item`` (its ``failures`` already counted): when to retry it."""
        asked = parse_retry_after(result.retry_after) is not None
        wait = self._delay(item.failures, result.retry_after)
        backpressure = others_in_flight > 0 or self.last_answer_at >= item.sent_at
        if self.outage_since is None and backpressure:
            if not asked:
                wait *= BACKPRESSURE_SCALE
        elif self.outage_since is None or item.probe:
            self._outage_step(now, item, result, wait, asked)
        if not asked:
            wait = self._clamped(now, wait)
        item.asked = asked
        # The next probe is another request when there is one: a request the server keeps
        # refusing (while it takes others) cannot hold everything else back.
        not_before = max(now + wait, self.pause_until + 0.001 if self.outage_since else 0.0)
        logger.debug(
            "%s attempt %d failed (%s); retry in %.2f s",
            item.request.endpoint,
            item.attempts,
            result.describe(),
            not_before - now,
        )
        return not_before

    def _outage_step(
        self, now: float, item: Item, result: Result, wait: float, asked: bool
    ) -> None:
        if self.outage_since is None:
            self._outage_began(now, item, result)
        else:
            self._outage_failures += 1
        # One draw when this request's own backoff and the outage's are the same
        # step (the usual probe): full jitter, not the larger of two draws.
        if item.failures != self._outage_failures:
            wait = self._delay(self._outage_failures, result.retry_after)
        self.pause_until = now + (wait if asked else self._clamped(now, wait))

    # -- the deadline --------------------------------------------------------------

    def _clamped(self, now: float, wait: float) -> float:
        """``wait``, but leaving room for more attempts and an answer before the deadline."""
        if self.deadline is None:
            return wait
        room = self.deadline - now - 2 * self._round_trip
        return max(min(wait, room / 2), MIN_RETRY_WAIT)

    def latest_retry(self, now: float, item: Item) -> float:
        """The latest ``not_before`` a pending ``item`` may keep now that a deadline is set."""
        if item.asked or item.not_before <= now:
            return item.not_before
        return now + self._clamped(now, item.not_before - now)

    def set_deadline(self, now: float, deadline: float) -> None:
        """A flush or close waits until ``deadline``: bring a long outage pause forward."""
        self.deadline = deadline if self.deadline is None else min(self.deadline, deadline)
        if self.pause_until > now:
            self.pause_until = now + self._clamped(now, self.pause_until - now)

    # -- logs -----------------------------------------------------------------------

    def _outage_began(self, now: float, item: Item, result: Result) -> None:
        """Enter the outage state; one WARNING, unless one was logged a moment ago."""
        self.outage_since = now
        self._outage_failures = 1
        warned_at = self._warned_at
        self._quiet = warned_at is not None and now - warned_at < OUTAGE_LOG_INTERVAL
        if self._quiet:
            self._quiet_outages += 1
            logger.debug(
                "cannot deliver to %s again (%s: %s); retrying",
                self.base_url,
                item.request.endpoint,
                result.describe(),
            )
            return
        self._warned_at = now
        since = (
            f"; {self._quiet_outages} short outage(s) since the last warning"
            if self._quiet_outages
            else ""
        )
        self._quiet_outages = 0
        logger.warning(
            "cannot deliver to %s (%s: %s); events are kept and retried, "
            "one request at a time, until it answers%s",
            self.base_url,
            item.request.endpoint,
            result.describe(),
            since,
        )
