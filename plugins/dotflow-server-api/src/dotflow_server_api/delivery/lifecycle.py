"""The parts of ``Delivery`` that begin and end things: replay, the journal's commits, flush, close.

A mixin of :class:`~.core.Delivery`, apart because it is the code that
touches the disk: always outside the delivery's lock.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from dotflow_server_api.delivery import reporting
from dotflow_server_api.delivery.items import Item, Stats
from dotflow_server_api.delivery.journal import LIVE_PATHS, Batch, Journal

if TYPE_CHECKING:
    from dotflow_server_api.delivery.health import ServerHealth
    from dotflow_server_api.delivery.queue import RequestQueue
    from dotflow_server_api.delivery.workers import StartGate, WorkerPool
    from dotflow_server_api.outbox import Outbox
    from dotflow_server_api.settings import ApiSettings
    from dotflow_server_api.transport import Transport

logger = logging.getLogger("dotflow.server.api")


class Lifecycle:
    """Replay, journal commits, flush and close (see :class:`~.core.Delivery`)."""

    config: ApiSettings
    stats: Stats
    _cond: threading.Condition
    _queue: RequestQueue
    _health: ServerHealth
    _journal: Journal
    _pool: WorkerPool
    _journal_pool: WorkerPool
    _gate: StartGate
    _clock: Callable[[], float]
    _commit_delay: float
    _idle_retirement: float
    _replay_started: bool
    _replayed: bool
    _auth_failed: bool
    _gave_up: tuple[int, float] | None
    _transport_lock: threading.Lock
    _transport: Transport | None
    _outbox: Outbox | None

    @property
    def outbox(self) -> Outbox:
        raise NotImplementedError

    def _start_workers(self) -> None:
        raise NotImplementedError

    def _hurry_up(self) -> None:
        raise NotImplementedError

    # -- replay --------------------------------------------------------------

    def _replay_if_first(self, generation: int | None = None) -> int:
        """Claim and queue the outbox once per generation, before this run's requests go.

        :returns: how many requests the outbox added to the queue (0 if already done).
        """
        with self._cond:
            generation = self._pool.generation if generation is None else generation
            if self._replay_started or not self._pool.current(generation):
                return 0
            self._replay_started = True
        items, rejected = self._load_outbox()
        with self._cond:
            queued = self._queue.add_replayed(items) if items else 0
            self.stats.replayed += len(items)
            self.stats.rejected_lines += rejected
            if items:
                self._start_workers()
                logger.info(
                    "replaying %d event(s) from the outbox %s first",
                    len(items),
                    self.outbox.directory,
                )
            self._replayed = True
            self._cond.notify_all()
        return queued

    def _load_outbox(self) -> tuple[list[Item], int]:
        """Read what waits (disk I/O, no lock); each file's requests go to this journal first."""
        if self._outbox is None and not os.path.isdir(self.config.outbox_dir):
            return [], 0  # a fresh machine or CI runner: nothing to replay, no import
        from dotflow_server_api.delivery import replay as replaying

        items: list[Item] = []
        rejected = 0
        try:
            for loaded in replaying.load(self.outbox, LIVE_PATHS):
                with self._cond:
                    batch = self._journal.take(only=loaded.items)
                journaled = self._journal.write(batch, empty=False)
                replaying.retire(self.outbox, loaded, journaled)
                items.extend(loaded.items)
                rejected += loaded.rejected
        except Exception:
            logger.exception("could not read the outbox %s", self.outbox.directory)
        return items, rejected

    def replay(self) -> int:
        """Load the outbox now, on this thread, and start sending (``dotflow outbox flush``).

        :returns: how many requests the outbox queued (counted when queued: workers may
            have sent some already).
        """
        queued = self._replay_if_first()
        with self._cond:
            self._hurry_up()
            if self._queue.size:
                self._start_workers()
        return queued

    def deliver_replayed(self, workflow_id: str, timeout: float) -> bool:
        """Start delivery now and wait up to ``timeout`` for the outbox's requests of
        ``workflow_id`` to be answered; True when none is left.

        For a resumed run, before it asks where numbering goes on: an earlier run's
        spooled events (its final status among them, which ends its reservation of ids
        on the server) land first. What is left keeps its place in the queue.
        """
        deadline = self._clock() + max(timeout, 0.0)
        with self._cond:
            self._hurry_up()
            self._start_workers()  # the first worker replays the outbox
            while not self._replayed or self._queue.workflow_live(workflow_id):
                remaining = deadline - self._clock()
                if remaining <= 0 or not self._pool.can_progress():
                    return False
                self._cond.wait(remaining)
            return True

    # -- the journal's thread ----------------------------------------------------

    def _journal_work(self, generation: int) -> None:
        try:
            while True:
                with self._cond:
                    taken = self._wait_for_commit(generation)
                    if taken is None:
                        self._journal_pool.left(generation)
                        return
                batch, empty = taken
                self._journal.write(batch, empty=empty)
        except Exception:
            logger.exception("the outbox journal stopped unexpectedly")
            with self._cond:
                self._journal_pool.left(generation)

    def _wait_for_commit(self, generation: int) -> tuple[Batch, bool] | None:
        """The next group commit, once due (lock held); None when this thread should leave."""
        idle_since: float | None = None
        journal = self._journal
        while self._journal_pool.current(generation):
            now = self._clock()
            if journal.dirty_since is not None:
                due = journal.dirty_since + self._commit_delay - now
                if due <= 0:
                    batch = journal.take()
                    return batch, journal.live == 0 and not journal.pending
                idle_since = None
                self._cond.wait(due)
                continue
            idle_since = now if idle_since is None else idle_since
            wait = self._idle_retirement - (now - idle_since)
            if wait <= 0:
                return None
            self._cond.wait(wait)
        return None

    # -- flush, close ------------------------------------------------------------

    def flush(self, workflow_id: str, timeout: float) -> None:
        """Wait up to ``timeout`` for ``workflow_id``'s requests; the rest stays in the outbox."""
        now = self._clock()
        deadline = now + max(timeout, 0.0)
        with self._cond:
            self._set_deadline(now, deadline)
            self._hurry_up()
            while self._queue.workflow_live(workflow_id) and self._pool.can_progress():
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._health.deadline = None
            left: list[Item] = []
            if self._queue.workflow_live(workflow_id):
                self._gave_up = (self._health.answered, self._clock())
                left = self._queue.take(lambda item: item.request.workflow_id == workflow_id)
            batch = self._journal.take(only=left)
        self._spool(left, batch)

    def close(self, timeout: float) -> Stats:
        """Wait up to ``timeout`` for everything, leave the rest in the outbox, stop the workers.

        Returns the counts since the last ``close`` and logs them. The delivery
        can be used again afterwards (a new ``submit`` starts new workers).
        """
        with self._cond:
            now = self._clock()
            deadline = self._close_deadline(timeout)
            self._set_deadline(now, deadline)
            self._hurry_up()
            while (self._queue.size > 0 or not self._replay_done()) and self._pool.can_progress():
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._health.deadline = None
            left = self._queue.take(lambda item: True) if self._queue.size else []
            if left:
                self._gave_up = (self._health.answered, self._clock())
            batch = self._journal.take()
            keep = self._journal.live > 0
            if not keep:
                batch = Batch()  # the file goes: no acks to write into it
            stats = self._end_generation()
        self._spool(left, batch, stats)
        self._journal.close(keep)
        with self._transport_lock:
            transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        reporting.summary(stats, self.config.base_url, str(self.outbox.directory) if keep else None)
        return stats

    def _end_generation(self) -> Stats:
        """Reset for a later run (lock held); returns the counts of the one that ends."""
        stats, self.stats = self.stats, Stats()
        self._queue.stats = self.stats
        self._pool.new_generation()
        self._journal_pool.new_generation()
        self._replay_started = self._replayed = False
        self._auth_failed = False
        self._gate.reset()
        self._cond.notify_all()
        return stats

    def _set_deadline(self, now: float, deadline: float) -> None:
        """Someone waits until ``deadline``: no retry is scheduled past it (lock held)."""
        health = self._health
        health.set_deadline(now, deadline)
        self._queue.reschedule(lambda item: health.latest_retry(now, item))
        self._cond.notify_all()

    def _spool(self, left: list[Item], batch: Batch, stats: Stats | None = None) -> None:
        """Make ``left`` (taken from the queue) durable in the journal: the outbox (no lock)."""
        stats = stats or self.stats
        events = sum(item.events for item in left)
        if not left and not batch:
            return
        if self._journal.write(batch, empty=False):
            with self._cond:
                stats.spooled += events
            return
        with self._cond:
            stats.dropped += events
        logger.error(
            "could not write the outbox in %s: %d event(s) are lost",
            self.outbox.directory,
            events,
        )

    def _close_deadline(self, timeout: float) -> float:
        """When ``close`` stops waiting (lock held).

        ``timeout`` from now; but now when a flush (or close) already ran out of time,
        the server has answered nothing since, and no request sent since is still
        waiting for its answer. The exit after a workflow whose flush gave up then
        adds no second deadline.
        """
        now = self._clock()
        if self._gave_up is not None:
            answered, gave_up_at = self._gave_up
            if answered == self._health.answered and not self._queue.has_live_in_flight_sent_after(
                gave_up_at
            ):
                logger.debug(
                    "not waiting for %s: it has answered nothing since the last wait ran out",
                    self.config.base_url,
                )
                return now
        return now + max(timeout, 0.0)

    def _replay_done(self) -> bool:
        return self._replayed or not self._replay_started

    # -- queries -------------------------------------------------------------------

    def highest_queued_task_id(self, workflow_id: str) -> int | None:
        """The highest task id with a request still queued for ``workflow_id``."""
        with self._cond:
            return self._queue.highest_task_id(workflow_id)

    def pending(self, workflow_id: str | None = None) -> int:
        """Requests queued or in flight (for one workflow, or all)."""
        with self._cond:
            if workflow_id is None:
                return self._queue.size
            return self._queue.workflow_pending(workflow_id)
