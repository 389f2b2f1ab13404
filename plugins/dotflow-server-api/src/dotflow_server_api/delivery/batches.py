"""The part of ``Delivery`` that sends a workflow's events in batches (see :mod:`..batching`).

A worker that takes a request takes, with it, the other requests of that
workflow that may go now (up to the server's ``max-events``), keeps as many as
fit ``max-bytes`` (their bodies are built outside the lock) and puts the rest
back. One batch is one HTTP request for the concurrency limit and the server's
health; each event's own result is then applied as a single request's would be.
A mixin of :class:`~.core.Delivery`.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from dotflow_server_api.batching import batch_size, encode_batch, event_size, split_answer
from dotflow_server_api.delivery.items import Item
from dotflow_server_api.delivery.results import Results
from dotflow_server_api.payloads import CREATE_WORKFLOW, fitted
from dotflow_server_api.transport import Outcome, Result

if TYPE_CHECKING:
    from dotflow_server_api.batching import BatchSupport
    from dotflow_server_api.body_limit import BodyLimit
    from dotflow_server_api.transport import Transport

logger = logging.getLogger("dotflow.server.api")


class Batches(Results):
    """Sends one request or one batch (see :class:`~.core.Delivery`)."""

    _cond: threading.Condition
    _transport: Transport | None
    _body_limit: BodyLimit

    def transport(self) -> Transport:
        raise NotImplementedError

    def _batch_support(self) -> BatchSupport | None:
        """What the destination offers (None before the transport is built, or a fake's)."""
        support: BatchSupport | None = getattr(self._transport, "batch", None)
        return support

    def _batch_members(self, first: Item, now: float) -> list[Item]:
        """``first`` and the requests that may go with it in one batch (lock held)."""
        support = self._batch_support()
        offer = support.offer if support is not None else None
        if offer is None or first.probe:
            return [first]
        return [first, *self._queue.next_batch(first, now, offer[0] - 1)]

    def _send(self, items: list[Item]) -> None:
        """Send ``items`` (taken under the lock) as one request, then apply the result."""
        if len(items) > 1:
            items = self._fitting(items)
        if len(items) == 1:
            item = items[0]
            self._fit_body(item)
            result = self._post_or_retry(item.request.method, item.request.path, item.request.body)
            with self._cond:
                self._sending -= 1
                self._complete(item, result)
                self._cond.notify_all()
            return
        path, body = encode_batch([item.request for item in items])
        result = self._post_or_retry("POST", path, body)
        with self._cond:
            self._sending -= 1
            self._complete_batch(items, result)
            self._cond.notify_all()

    def _post_or_retry(self, method: str, path: str, body: bytes | None) -> Result:
        try:
            return self.transport().send(method, path, body)
        except Exception as error:  # a transport that cannot be built, or a bug
            return Result(outcome=Outcome.RETRY, detail=f"{type(error).__name__}: {error}")

    def _fitting(self, items: list[Item]) -> list[Item]:
        """The first of ``items`` that fit the offer's ``max-bytes``; the others go back.

        Builds the bodies not built yet (outside the lock: encoding contexts takes time).
        """
        support = self._batch_support()
        offer = support.offer if support is not None else None
        limit = offer[1] if offer is not None else 0
        sizes: list[int] = []
        for item in items:
            self._fit_body(item)
            size = event_size(item.request)
            if sizes and batch_size([*sizes, size]) > limit:
                break
            sizes.append(size)
        keep, rest = items[: len(sizes)], items[len(sizes) :]
        if rest:
            with self._cond:
                for item in rest:
                    self._queue.put_back(item)
                self._cond.notify_all()
        return keep

    def _fit_body(self, item: Item) -> None:
        """Cut a task body over the limit a 413 taught (built outside the lock)."""
        request = item.request
        limit = self._body_limit.bytes
        if request.task_id is None or not self._body_limit.lowered or len(request.body) <= limit:
            return
        smaller = fitted(request, limit)
        if smaller.body:  # built here, not under the lock
            with self._cond:
                if item.request is request:  # not renumbered meanwhile
                    item.request = smaller

    def _complete_batch(self, items: list[Item], result: Result) -> None:
        """Apply a batch's answer to each of its events (lock held)."""
        now = self._now()
        support = self._batch_support()
        if result.outcome is Outcome.DELIVERED:
            split = split_answer(result.content, len(items), self._redact)
            if split is None:
                logger.warning(
                    "the server's answer to a batch of %d events is not one result per event;"
                    " sending single requests",
                    len(items),
                )
                if support is not None:
                    support.refused(Result(outcome=Outcome.REJECTED, status=400), len(items))
                self._put_back_answered(items, now)
                return
            self._answered(items[0], result, now)
            self._apply_each(items, split, now)
            return
        refusal = result.outcome is Outcome.REJECTED and support is not None
        if refusal and support is not None and support.refused(result, len(items)):
            self._put_back_answered(items, now)
            return
        self._answered(items[0], result, now)
        not_before: float | None = None
        for item in items:  # one answer for all: retried together, or dropped alike
            not_before = self._apply(item, result, now, not_before) or not_before

    def _apply_each(self, items: list[Item], results: list[Result], now: float) -> None:
        """Each event's own result; a task that rode with a create that failed goes again."""
        create_failed = False
        self._refused_together = frozenset(
            item.task_key
            for item, result in zip(items, results, strict=True)
            if result.outcome is Outcome.CONFLICT and item.task_key is not None
        )
        try:
            for item, result in zip(items, results, strict=True):
                if item.request.kind == CREATE_WORKFLOW:
                    create_failed = result.outcome is not Outcome.DELIVERED
                elif create_failed and result.outcome is not Outcome.DELIVERED:
                    result = Result(
                        outcome=Outcome.RETRY, status=result.status, maybe_applied=False
                    )
                self._apply(item, result, now)
        finally:
            self._refused_together = frozenset()

    def _put_back_answered(self, items: list[Item], now: float) -> None:
        """The server answered but did not take the batch: its events go again, unbatched
        or in smaller batches, not counted as failures."""
        self.stats.requests += 1
        if self._health.answer(now, items[0]):
            self._limit.restart()
        for item in items:
            if item.abandoned:
                self._queue.finished(item)
            else:
                self._queue.put_back(item)

    def _redact(self, text: str) -> str:
        transport = self._transport
        return transport.redact(text) if transport is not None else text
