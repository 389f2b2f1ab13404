"""How many requests may be in flight at once: AIMD (additive increase, multiplicative decrease).

Delivery starts with a few connections (:data:`INITIAL_LIMIT`) and grows while
answers come back healthy: by one per answer up to the threshold (a slow
start: the limit doubles every round trip), then by one per round trip. A
connection reset, a refusal, a timeout, a 429 or a 503 halves it, once per
round trip (the requests already on the wire when it shrank do not shrink it
again). ``SERVER_MAX_IN_FLIGHT`` is the ceiling. Like TCP's congestion window,
and Netflix's concurrency-limits ``AIMDLimit``.
"""

from __future__ import annotations

from typing import Final

#: Requests in flight at the start, and again after an outage: below the listen
#: backlog of the smallest servers (Python's http.server: 5).
INITIAL_LIMIT: Final = 4
#: The factor a backpressure signal multiplies the limit by.
DECREASE: Final = 0.5


class AimdLimit:
    """The current concurrency limit (single-threaded: the caller holds the lock)."""

    def __init__(self, ceiling: int, initial: int = INITIAL_LIMIT) -> None:
        self.ceiling = max(ceiling, 1)
        self._initial = max(min(initial, self.ceiling), 1)
        self._limit = float(self._initial)
        #: Below this the limit grows by one per answer (slow start), above by one per round trip.
        self._threshold = float(self.ceiling)
        #: Requests sent before this moment cannot shrink the limit again.
        self._shrunk_at = float("-inf")

    @property
    def limit(self) -> int:
        return max(int(self._limit), 1)

    def answered(self, in_flight: int) -> None:
        """A healthy answer: grow, but only while the limit is being used (no idle growth)."""
        if in_flight + 1 < self.limit or self._limit >= self.ceiling:
            return
        step = 1.0 if self._limit < self._threshold else 1.0 / self._limit
        self._limit = min(self._limit + step, float(self.ceiling))

    def pushed_back(self, sent_at: float, now: float) -> None:
        """A backpressure signal from a request sent at ``sent_at``: shrink, once per round trip."""
        if sent_at < self._shrunk_at:
            return
        self._limit = max(self._limit * DECREASE, 1.0)
        self._threshold = max(self._limit, 2.0)
        self._shrunk_at = now

    def restart(self) -> None:
        """After an outage: start small again."""
        self._limit = float(self._initial)
        self._shrunk_at = float("-inf")
