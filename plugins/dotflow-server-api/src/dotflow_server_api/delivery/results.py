"""The part of ``Delivery`` that applies a request's result: delivered, retried, dropped.

A mixin of :class:`~.core.Delivery`; every method runs with the lock held.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dotflow_server_api.delivery.items import Item, Stats
from dotflow_server_api.delivery.renumber import Renumbering, run_streams
from dotflow_server_api.payloads import CREATE_TASK, CREATE_WORKFLOW
from dotflow_server_api.transport import Outcome, Result

if TYPE_CHECKING:
    from dotflow_server_api.body_limit import BodyLimit
    from dotflow_server_api.delivery.health import ServerHealth
    from dotflow_server_api.delivery.journal import Journal
    from dotflow_server_api.delivery.limiter import AimdLimit
    from dotflow_server_api.delivery.queue import RequestQueue
    from dotflow_server_api.delivery.reporting import RejectionLog
    from dotflow_server_api.delivery.workers import WorkerPool


class Results:
    """Applies results (see :class:`~.core.Delivery`)."""

    stats: Stats
    _queue: RequestQueue
    _health: ServerHealth
    _limit: AimdLimit
    _journal: Journal
    _journal_pool: WorkerPool
    _reporter: RejectionLog
    _auth_failed: bool
    _ids: Renumbering
    _body_limit: BodyLimit
    #: HTTP requests on the wire (a batch is one), not counting the one being applied.
    _sending: int
    #: While a batch's answer is applied: the task keys it refused with a 409.
    _refused_together: frozenset[int] = frozenset()

    def _now(self) -> float:
        raise NotImplementedError

    # -- results -------------------------------------------------------------

    def _complete(self, item: Item, result: Result) -> None:
        """Apply a single request's result (lock held)."""
        now = self._now()
        self._answered(item, result, now)
        self._apply(item, result, now)

    def _answered(self, item: Item, result: Result, now: float) -> None:
        """Once per HTTP answer (a batch is one): the counts, the server's health, the limit.

        ``item`` is the request, or a batch's first event; ``_sending`` no longer counts it.
        """
        self.stats.requests += 1
        if result.outcome is Outcome.RETRY:
            if not item.abandoned:
                self._limit.pushed_back(item.sent_at, now)
            return
        self._reporter.first_answer(item, result)
        if self._health.answer(now, item):
            self._limit.restart()
        self._limit.answered(self._sending)

    def _apply(
        self, item: Item, result: Result, now: float, not_before: float | None = None
    ) -> float | None:
        """Apply one event's result: delivered, retried, moved to a free id or dropped.

        :param not_before: when to retry (a batch's events retry together), else computed.
        :returns: when a retried ``item`` goes again, else None.
        """
        if result.outcome is Outcome.RETRY and not item.abandoned:
            return self._retry_later(item, result, now, not_before)
        if result.outcome is Outcome.CONFLICT and self._moved_on_conflict(item, result, now):
            return None
        if result.status == 413 and self._cut_on_413(item, now):
            return None
        self._queue.finished(item)
        if not item.abandoned:
            self._settle(item, result)
        return None

    def _moved_on_conflict(self, item: Item, result: Result, now: float) -> bool:
        """A 409 naming the next free id, to a task write of a run: move the run's tasks to
        free ids and send ``item`` again at once; False when it is not such a write."""
        if item.abandoned or item.request.run_id is None or item.task_key is None:
            return False
        assert result.next_id is not None
        streams = list(run_streams(self._queue.streams, item))
        if self._ids.conflict(item, result.next_id, streams, self._refused_together):
            for stream in streams:
                for queued in stream.pending:
                    self._retranslate(queued)
        self._retranslate(item)
        item.in_doubt = False  # refused: not stored under the id it was sent with
        self._queue.retry(item, now)
        return True

    def _cut_on_413(self, item: Item, now: float) -> bool:
        """A task body refused as too large: lower the body limit and send ``item`` again
        at once, cut to it; False when it cannot be cut small enough (or is no task's)."""
        if item.abandoned or item.request.task_id is None:
            return False
        size = len(item.request.body)
        limit = self._body_limit.refused(size)
        if limit is None:
            return False
        self._reporter.body_limit_lowered(item, size, limit)
        self._queue.retry(item, now)
        return True

    def _changed(self, item: Item, absorbed: Item | None) -> None:
        """``item``'s state changed (or it absorbed ``absorbed``): journal it again."""
        self._journal.mark_changed(item, absorbed)
        self._journal_pool.grow_to(1)

    def _retranslate(self, item: Item) -> None:
        """Point ``item`` at its task's current id; journal it again if that changed it."""
        if self._ids.translate(item):
            self._changed(item, None)

    def _retry_later(
        self, item: Item, result: Result, now: float, not_before: float | None
    ) -> float:
        item.failures += 1
        if result.maybe_applied and item.request.kind == CREATE_TASK and not item.in_doubt:
            item.in_doubt = True
            self._ids.hold(item)
            self._changed(item, None)  # a crash now replays it as in doubt
        if not_before is None:
            not_before = self._health.failure(now, item, result, self._sending)
        self._queue.retry(item, not_before)
        if item.in_doubt:  # a later update merged into it goes under the id it holds
            self._retranslate(item)
        return not_before

    def _settle(self, item: Item, result: Result) -> None:
        """``item`` was answered for good: count it and ack its journal lines (lock held)."""
        outcome = result.outcome
        if outcome is Outcome.DELIVERED:
            self.stats.delivered += item.events
            if item.request.kind == CREATE_WORKFLOW and result.status == 201 and item.seq >= 0:
                self._queue.new_workflows.add(item.request.workflow_id)
            if self._ids.delivered(item):
                stream = self._queue.streams.get((item.request.workflow_id, item.task_key))
                for queued in stream.pending if stream else ():
                    self._retranslate(queued)
        elif outcome is Outcome.AUTH:
            self._token_rejected(item, result)
            if item.seq < 0:  # replayed from the outbox: stays there (its journal line), not lost
                self.stats.spooled += item.events
                return
            self.stats.dropped += item.events
        else:
            self.stats.dropped += item.events
            self._reporter.rejected(item, result)
        self._journal.mark_settled(item)
        if self._journal.pending:
            self._journal_pool.grow_to(1)

    def _token_rejected(self, item: Item, result: Result) -> None:
        self._auth_failed = True
        self._reporter.token_rejected(item, result)
        # Events of this run are dropped, never spooled for later; requests replayed
        # from the outbox stay there (they were accepted under this identity before).
        replayed = self._queue.take(lambda queued: queued.seq < 0)
        self.stats.spooled += sum(queued.events for queued in replayed)
        dropped = self._queue.take(lambda queued: True)
        self.stats.dropped += sum(queued.events for queued in dropped)
        for queued in dropped:
            self._journal.mark_settled(queued)
