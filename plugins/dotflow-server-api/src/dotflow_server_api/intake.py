"""The requests of a run's first moments, held until the delivery exists.

Building a :class:`~dotflow_server_api.delivery.Delivery` imports the delivery
package (about twenty modules), and delivery does not begin before
:data:`START_DELAY` anyway. So the provider's first requests wait here, in a
plain list, and a starter thread builds the delivery once ``START_DELAY`` has
passed since the first one (or at once when someone needs it: a flush, the
next-id lookup, the counts). A short workflow then runs before that import
instead of after it, and no request waits longer than it would have.

Small on purpose, and importing nothing of the delivery package: the provider
imports it when it loads, on the workflow's thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

from dotflow_server_api.payloads import Request

#: Seconds between the first queued event and the start of delivery, unless a flush
#: asks for it sooner: a short workflow then runs without competing for the GIL with
#: the import of the delivery machinery and of requests, and with the first
#: connections; a longer one loses nothing (its events wait, coalesced).
START_DELAY: Final = 0.1


class Intake:
    """Holds requests until ``start()`` has built the delivery, which then takes them.

    :param start: builds the delivery and hands the held requests to it (see
        :meth:`take`); called once, by the starter thread or by whoever needs the
        delivery first.
    :param delay: seconds from the first held request to the call of ``start``.

    ``hold`` and ``take`` are called with the provider's lock held, so that no
    request can pass the held ones; the starter thread calls ``start`` without
    holding anything.
    """

    def __init__(
        self,
        start: Callable[[], object],
        delay: float = START_DELAY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._start = start
        self._delay = delay
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._held: list[Request] = []
        self._first_at: float | None = None
        self._thread: threading.Thread | None = None
        #: False once the delivery took the requests, or a thread could not start.
        self.open = True

    def hold(self, request: Request) -> bool:
        """Keep ``request`` for the delivery; False if it must be submitted directly."""
        with self._cond:
            if not self.open:
                return False
            if self._thread is None:
                thread = threading.Thread(
                    target=self._wait_then_start, name="dotflow-server-api-intake", daemon=True
                )
                try:
                    thread.start()
                except RuntimeError:  # the interpreter is shutting down
                    self.open = False
                    return False
                self._thread = thread
                self._first_at = self._clock()
            self._held.append(request)
            return True

    @property
    def holding(self) -> bool:
        """Requests wait here."""
        return bool(self._held)

    def close(self) -> None:
        """Hold nothing more (what is held stays for :meth:`take`); the starter thread ends."""
        with self._cond:
            self.open = False
            self._cond.notify_all()

    def take(self) -> tuple[list[Request], float]:
        """The held requests, in order, and seconds since the first; the intake closes."""
        with self._cond:
            held, self._held, self.open = self._held, [], False
            elapsed = 0.0 if self._first_at is None else self._clock() - self._first_at
            self._cond.notify_all()
        return held, max(elapsed, 0.0)

    def _wait_then_start(self) -> None:
        with self._cond:
            while self.open:
                remaining = (self._first_at or 0.0) + self._delay - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if not self.open:  # someone else built the delivery
                return
        self._start()
