"""The worker threads of one delivery: when they start, how many, when they leave.

Workers are daemon threads started one at a time, as a chain (each worker
starts the next before it takes a request), so that a burst's threads start
while the first request is on the wire rather than all before it. They leave
after ``idle_retirement`` seconds with nothing to send. A *generation* ends
with every ``close`` and in a forked child: workers of an older generation
exit at their next look at the queue. Single-threaded bookkeeping: the
caller holds the delivery's lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from dotflow_server_api.intake import START_DELAY

#: Seconds a worker waits with nothing to send before it leaves (another is started when
#: work comes): the extra workers of a burst do not linger, each woken by every later
#: completion.
IDLE_RETIREMENT = 2.0


__all__ = ["IDLE_RETIREMENT", "START_DELAY", "StartGate", "WorkerPool"]


class WorkerPool:
    """Counts and starts the threads running ``target(generation)``.

    :param name: thread names are ``<name>-<n>``.
    """

    def __init__(self, target: Callable[[int], None], name: str) -> None:
        self._target = target
        self._name = name
        self.generation = 1
        self.count = 0
        #: The interpreter is shutting down: no thread can start (flush/close spool instead).
        self.cannot_start = False

    def grow_to(self, wanted: int) -> None:
        """Start one more worker while fewer than ``wanted`` run."""
        if self.count >= wanted or self.cannot_start:
            return
        thread = threading.Thread(
            target=self._target,
            args=(self.generation,),
            name=f"{self._name}-{self.count + 1}",
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError:
            self.cannot_start = True
            return
        self.count += 1

    def left(self, generation: int) -> None:
        """A worker of ``generation`` has stopped (or retired)."""
        if generation == self.generation:
            self.count -= 1

    def current(self, generation: int) -> bool:
        return generation == self.generation

    def new_generation(self) -> None:
        """Every running worker exits at its next look at the queue."""
        self.generation += 1
        self.count = 0

    def can_progress(self) -> bool:
        """False when nothing can send any more (no worker and none can be started)."""
        return self.count > 0 or not self.cannot_start


class StartGate:
    """Holds delivery back until ``START_DELAY`` after the first event, or until a flush."""

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self.start_at: float | None = None
        self.hurry = False
        self.open = False

    def first_event(self, now: float) -> None:
        if self.start_at is None:
            self.start_at = now + self._delay

    def remaining(self, now: float) -> float:
        """Seconds until delivery may begin (0: now)."""
        if self.hurry:
            return 0.0
        return max((self.start_at or 0.0) - now, 0.0)

    def reset(self) -> None:
        self.start_at, self.hurry, self.open = None, False, False
