"""``Delivery``: the queue, the server's health, the workers and the journal of one destination.

Hooks only :meth:`Delivery.submit` requests; worker threads send them over
one pooled session, as many at once as the adaptive limit allows
(:mod:`.limiter`), in the order :mod:`.queue` keeps; :mod:`.health` decides
between backpressure and outage and when to retry; the journal
(:mod:`.journal`) keeps what waits on disk. The lock is held only for
in-memory work: no disk I/O and no network under it.

:meth:`Delivery.flush` and :meth:`Delivery.close` wait at most their
deadline; what is left stays in the outbox.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from dotflow_server_api.body_limit import BodyLimit
from dotflow_server_api.delivery import reporting
from dotflow_server_api.delivery.batches import Batches
from dotflow_server_api.delivery.health import ServerHealth
from dotflow_server_api.delivery.items import Item, Stats
from dotflow_server_api.delivery.journal import COMMIT_DELAY, Journal
from dotflow_server_api.delivery.lifecycle import Lifecycle
from dotflow_server_api.delivery.limiter import INITIAL_LIMIT, AimdLimit
from dotflow_server_api.delivery.queue import RequestQueue
from dotflow_server_api.delivery.renumber import Renumbering
from dotflow_server_api.delivery.workers import IDLE_RETIREMENT, START_DELAY, StartGate, WorkerPool
from dotflow_server_api.payloads import Request
from dotflow_server_api.settings import ApiSettings
from dotflow_server_api.transport import Transport, quiet_http_client

if TYPE_CHECKING:
    from dotflow_server_api.outbox import Outbox

logger = logging.getLogger("dotflow.server.api")


def _default_delay(rand: Callable[[], float]) -> Callable[[int, str | None], float]:
    def delay(failures: int, retry_after: str | None) -> float:
        from dotflow_server_api.backoff import retry_delay

        return retry_delay(failures, retry_after, rand=rand)

    return delay


#: Every delivery of this process, so that a forked child can reset them all.
_DELIVERIES: weakref.WeakSet[Delivery] = weakref.WeakSet()


def _reset_after_fork() -> None:
    quiet_http_client.after_fork()
    for delivery in list(_DELIVERIES):
        delivery._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


class Delivery(Batches, Lifecycle):
    """The queue and the workers of one destination (base URL and token).

    :param transport_factory: builds the HTTP transport (tests inject fakes).
    :param delay: ``delay(failures, retry_after_header) -> seconds`` before a retry.
    :param clock: a monotonic clock, for scheduling.
    :param wall: wall-clock time, for ``first_enqueued_at``.
    :param start_delay: see :data:`.workers.START_DELAY`.
    :param idle_retirement: see :data:`.workers.IDLE_RETIREMENT`.
    :param initial_limit: requests in flight at first (see :mod:`.limiter`).
    :param commit_delay: see :data:`.journal.COMMIT_DELAY`.
    """

    def __init__(
        self,
        config: ApiSettings,
        *,
        transport_factory: Callable[[ApiSettings], Transport] = Transport,
        delay: Callable[[int, str | None], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        start_delay: float = START_DELAY,
        idle_retirement: float = IDLE_RETIREMENT,
        initial_limit: int = INITIAL_LIMIT,
        commit_delay: float = COMMIT_DELAY,
    ) -> None:
        self.config = config
        self._start_delay = start_delay
        self._idle_retirement = idle_retirement
        self._initial_limit = initial_limit
        self._commit_delay = commit_delay
        self._outbox: Outbox | None = None
        self._transport_factory = transport_factory
        self._delay = delay or _default_delay(rand)
        self._clock = clock
        self._wall = wall
        self._transport_lock = threading.Lock()
        self._transport: Transport | None = None
        self._generation = 0
        self._reset_state()
        _DELIVERIES.add(self)

    @property
    def outbox(self) -> Outbox:
        """This destination's outbox folder (the module is imported on first use)."""
        if self._outbox is None:
            from dotflow_server_api.outbox import Outbox

            config = self.config
            self._outbox = Outbox(config.outbox_dir, config.base_url, config.fingerprint)
        return self._outbox

    # -- state ---------------------------------------------------------------

    def _reset_state(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self.stats = Stats()
        self._journal = Journal(lambda: self.outbox, self._clock)
        self._seq = 0
        self._sending = 0
        self._queue = RequestQueue(self.config.max_queue, self.stats, self._changed)
        self._health = ServerHealth(self.config.base_url, self._delay)
        self._limit = AimdLimit(self.config.max_in_flight, self._initial_limit)
        self._pool = WorkerPool(self._work, "dotflow-server-api")
        self._pool.generation = self._generation = self._generation + 1
        self._journal_pool = WorkerPool(self._journal_work, "dotflow-journal")
        self._gate = StartGate(self._start_delay)
        self._reporter = reporting.RejectionLog(self.config.base_url)
        self._body_limit = BodyLimit()
        self._ids = Renumbering()
        self._replay_started = False
        self._replayed = False
        self._auth_failed = False
        #: When a flush or close last ran out of time: (answers then, monotonic time).
        self._gave_up: tuple[int, float] | None = None
        self._queue_full_logged = False

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's queue, workers, journal and connections."""
        self._transport_lock = threading.Lock()
        self._transport = None  # the parent's sockets: never use or close them here
        self._journal.forget()
        self._reset_state()

    def _now(self) -> float:
        return self._clock()

    # -- submitting ----------------------------------------------------------

    def submit(self, request: Request) -> None:
        """Queue one request; returns at once (never sends nor writes on the caller's thread)."""
        with self._cond:
            if self._auth_failed:
                self.stats.dropped += 1
                return
            self._gate.first_event(self._clock())
            self._queue.add(self._new_item(request))
            if self._queue.overflowed and not self._queue_full_logged:
                self._queue_full_logged = True
                reporting.queue_full(self.config.max_queue)
            self._start_workers()
            self._cond.notify()

    def first_event_was(self, elapsed: float) -> None:
        """The first event came ``elapsed`` seconds ago, held until this delivery existed
        (see :mod:`...intake`): delivery begins ``START_DELAY`` after it, not after now."""
        with self._cond:
            self._gate.first_event(self._clock() - elapsed)

    def _new_item(self, request: Request) -> Item:
        self._seq += 1
        item = Item(request=request, seq=self._seq, first_enqueued_at=self._wall())
        self._ids.translate(item)  # the run's tasks were moved to free ids: this one too
        return item

    def not_found(self, message: str, *, log: bool) -> None:
        """The run's first request (the next-id lookup) got a 404: see :class:`.RejectionLog`."""
        with self._cond:
            self._reporter.not_found(message, log=log)

    def count_dropped(self, events: int) -> None:
        """Count events lost before they could be queued (a request that could not be built)."""
        with self._cond:
            self.stats.dropped += events

    # -- workers -------------------------------------------------------------

    def _start_workers(self) -> None:
        """Start one more worker while fewer run than wanted (lock held).

        Wanted: as many as the limit allows and requests are queued. One is enough
        before delivery begins (see :data:`START_DELAY`), until the transport is
        built (that worker imports requests; nothing can be sent before), and during
        an outage (one worker probes the server). Every worker calls this when it
        starts and before it takes each request, so a burst's workers start as a
        chain, one thread after the other, while the first request is on the wire.
        """
        wanted = min(self._limit.limit, max(self._queue.size, 1))
        if not self._gate.open or self._transport is None or self._health.outage_since is not None:
            wanted = 1
        self._pool.grow_to(wanted)

    def transport(self) -> Transport:
        """The shared transport, built on first use (imports ``requests``)."""
        with self._transport_lock:
            transport = self._transport
            built = transport is None
            if transport is None:
                transport = self._transport = self._transport_factory(self.config)
        if built:
            with self._cond:
                if self._gate.open:  # not for the next-id lookup before delivery starts
                    self._start_workers()  # more requests can be sent now
        return transport

    def _wait_for_start(self, generation: int) -> None:
        """Hold the workers until ``START_DELAY`` after the first event, or a flush."""
        with self._cond:
            while self._pool.current(generation):
                remaining = self._gate.remaining(self._clock())
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._pool.current(generation) and not self._gate.open:
                self._gate.open = True
                self._start_workers()

    def _hurry_up(self) -> None:
        """Someone waits for delivery: start now (lock held)."""
        if not self._gate.hurry:
            self._gate.hurry = True
            self._cond.notify_all()

    def _work(self, generation: int) -> None:
        try:
            self._wait_for_start(generation)
            self._replay_if_first(generation)
            while self._send_one(generation):
                pass
        except Exception:
            logger.exception("delivery worker stopped unexpectedly; the events stay queued")
            with self._cond:
                self._pool.left(generation)
                self._cond.notify_all()

    def _send_one(self, generation: int) -> bool:
        """Take a request (or a batch), send it, apply the result; False when this worker leaves."""
        with self._cond:
            self._start_workers()  # the next link of a chain of starts
            item = self._wait_for_item(generation)
            if item is None:
                self._pool.left(generation)
                self._cond.notify_all()
                return False
            items = self._batch_members(item, self._clock())
            self._sending += 1
        self._send(items)
        with self._cond:
            return self._pool.current(generation)

    def _wait_for_item(self, generation: int) -> Item | None:
        """The next request to send (lock held); None when this worker should stop.

        A worker stops when the delivery is closed, or when nothing at all was
        queued for it (not even a retry for later) during ``idle_retirement``.
        """
        idle_since: float | None = None
        while self._pool.current(generation):
            now = self._clock()
            item, wait = self._next_item(now)
            if item is not None:
                return item
            if wait is None:
                idle_since = now if idle_since is None else idle_since
                wait = self._idle_retirement - (now - idle_since)
                if wait <= 0:
                    return None
            else:
                idle_since = None
            self._cond.wait(wait)
        return None

    def _next_item(self, now: float) -> tuple[Item | None, float | None]:
        """Take the next sendable request, or say how long until one may be (lock held)."""
        if not self._replayed:
            return None, None
        in_flight = self._sending
        pause = self._health.wait_before_sending(now, in_flight)
        if pause is None or pause > 0:
            return None, pause
        if in_flight >= self._limit.limit:
            return None, None  # woken when one lands
        item = self._queue.next_ready(now)
        if item is None:
            return None, self._queue.next_wakeup(now)
        item.probe = self._health.outage_since is not None
        return item, None
