"""Delivery: the queue between the hooks and the server.

Hooks only :meth:`Delivery.submit` requests; daemon worker threads send them
over one pooled session, up to ``max_in_flight`` at once (workers start as
requests queue up and leave after ``IDLE_RETIREMENT`` with nothing to send),
while order holds where it matters:

- a *stream* is the sequence of requests of one task, or of one workflow;
  a stream has at most one request in flight, and sends in order;
- a task's requests wait until its workflow's create is settled;
- a workflow's final status waits until none of its tasks has a request left.

Requests of one stream that are still pending are *coalesced*: a newer update
replaces a pending update, and a pending create absorbs later updates (the
POST then carries the latest state); order and final state are kept. A
request that fails in a retryable way stays queued (never dropped after N
tries); during an outage one request at a time probes the server, with
exponential backoff and full jitter (or the server's ``Retry-After``).

:meth:`Delivery.flush` and :meth:`Delivery.close` wait at most their
deadline, then move what is left to the durable :class:`~.outbox.Outbox`.
"""

from __future__ import annotations

import heapq
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from dotflow_server_api.payloads import (
    CREATE_TASK,
    CREATE_WORKFLOW,
    UPDATE_TASK,
    UPDATE_WORKFLOW,
    Request,
    as_create_task,
    as_create_workflow,
)
from dotflow_server_api.settings import ApiSettings
from dotflow_server_api.transport import Outcome, Result, Transport, quiet_http_client

if TYPE_CHECKING:  # imported when first needed: at the first spool or replay
    from dotflow_server_api.outbox import ClaimedFile, Outbox

logger = logging.getLogger("dotflow.server.api")

#: Sequence numbers of replayed requests start here, below every new request's.
_REPLAY_SEQ_START = -(10**15)
#: Seconds between the first queued event and the start of delivery, unless a flush
#: asks for it sooner: a short workflow then runs without competing for the GIL with
#: the import of requests and the first connections; a longer one loses nothing (its
#: events wait, coalesced).
START_DELAY = 0.1
#: Seconds a worker waits with nothing to send before it leaves (another is started when
#: work comes): the extra workers of a burst do not linger, each woken by every later
#: completion.
IDLE_RETIREMENT = 2.0
#: Seconds after an outage WARNING during which a new outage is logged at DEBUG only
#: (with its recovery): a server that fails every other request does not flood the log.
OUTAGE_LOG_INTERVAL = 60.0

StreamKey = tuple[str, int | None]


# Plain slotted classes rather than attrs: they are created per event, and defining
# them costs nothing at import (the provider is imported on every managed run).


class Item:
    """A queued request and its delivery state."""

    __slots__ = (
        "abandoned",
        "attempts",
        "events",
        "failures",
        "first_enqueued_at",
        "not_before",
        "origins",
        "probe",
        "request",
        "sent_at",
        "seq",
        "unsent_replay",
    )

    def __init__(
        self,
        request: Request,
        seq: int,
        first_enqueued_at: float,
        *,
        attempts: int = 0,
        events: int = 1,
        origins: list[ClaimedFile] | None = None,
        unsent_replay: bool = False,
    ) -> None:
        self.request = request
        #: Queue order; replayed requests come first.
        self.seq = seq
        #: Wall-clock time the oldest event in this request was queued.
        self.first_enqueued_at = first_enqueued_at
        #: Sends tried so far.
        self.attempts = attempts
        #: Hook events this request carries (more than one once coalesced).
        self.events = events
        #: Failures in a row of this request; sets its own backoff.
        self.failures = 0
        #: Monotonic time before which it is not sent again.
        self.not_before = 0.0
        #: Monotonic time it was last taken for sending.
        self.sent_at = 0.0
        #: Outbox files whose entries this request carries (settled when it is).
        self.origins: list[ClaimedFile] = origins or []
        #: Spooled or dropped while in flight: its result no longer matters.
        self.abandoned = False
        #: Sent while an outage was already known (a probe).
        self.probe = False
        #: Replayed from the outbox and not sent yet: this run's requests wait for it.
        self.unsent_replay = unsent_replay

    def __repr__(self) -> str:
        return f"<Item {self.seq} {self.request.method} {self.request.path} x{self.events}>"


class Stream:
    """The requests of one task, or of one workflow, in order."""

    __slots__ = ("in_flight", "pending", "task_id", "workflow_id")

    def __init__(self, workflow_id: str, task_id: int | None) -> None:
        self.workflow_id = workflow_id
        self.task_id = task_id
        self.pending: deque[Item] = deque()
        self.in_flight: Item | None = None

    @property
    def key(self) -> StreamKey:
        return (self.workflow_id, self.task_id)

    @property
    def live(self) -> bool:
        """Something still to deliver (an abandoned in-flight request does not count)."""
        return bool(self.pending) or (self.in_flight is not None and not self.in_flight.abandoned)


class WorkflowState:
    """Per workflow: its own stream and which of its tasks still have requests."""

    __slots__ = ("busy_tasks", "final_parked", "parked", "stream")

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.busy_tasks: set[int] = set()
        #: Tasks whose next request waits for the workflow's create.
        self.parked: set[int] = set()
        #: The final status waits for ``busy_tasks`` to empty.
        self.final_parked = False


class Stats:
    """Counts of hook events (a coalesced request carries several) since the last summary."""

    __slots__ = ("coalesced", "delivered", "dropped", "replayed", "requests", "spooled")

    def __init__(self) -> None:
        self.delivered = 0
        self.spooled = 0
        self.dropped = 0
        self.coalesced = 0
        #: Requests sent (attempts, not events).
        self.requests = 0
        self.replayed = 0

    @property
    def anything(self) -> bool:
        return any((self.delivered, self.spooled, self.dropped, self.replayed))

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={getattr(self, name)}" for name in sorted(self.__slots__))
        return f"Stats({counts})"


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


class Delivery:
    """The queue and the workers of one destination (base URL and token).

    :param transport_factory: builds the HTTP transport (tests inject fakes).
    :param delay: ``delay(failures, retry_after_header) -> seconds`` before a retry.
    :param clock: a monotonic clock, for scheduling.
    :param wall: wall-clock time, for ``first_enqueued_at``.
    :param start_delay: see :data:`START_DELAY`.
    :param idle_retirement: see :data:`IDLE_RETIREMENT`.
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
    ) -> None:
        self.config = config
        self._start_delay = start_delay
        self._idle_retirement = idle_retirement
        self._outbox: Outbox | None = None
        self._transport_factory = transport_factory
        self._delay = delay or _default_delay(rand)
        self._clock = clock
        self._wall = wall
        self._transport_lock = threading.Lock()
        self._transport: Transport | None = None
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
        self._streams: dict[StreamKey, Stream] = {}
        self._workflows: dict[str, WorkflowState] = {}
        self._ready: list[tuple[int, StreamKey]] = []
        self._delayed: list[tuple[float, int, StreamKey]] = []
        self._size = 0
        self._in_flight = 0
        self._seq = 0
        self._generation = getattr(self, "_generation", 0) + 1
        self._workers = 0
        self._cannot_start = False
        self._replay_started = False
        self._replayed = False
        #: When delivery may begin (set by the first submit), and whether a flush wants it now.
        self._start_at: float | None = None
        self._hurry = False
        self._delivering = False
        self._owned_claims: set[Any] = set()
        #: Replayed requests not sent yet, and this run's requests held back until then.
        self._unsent_replays = 0
        self._held: list[tuple[int, StreamKey]] = []
        self._auth_failed = False
        self._outage_since: float | None = None
        self._outage_failures = 0
        self._pause_until = 0.0
        #: When the last outage WARNING was logged; whether the current outage was not
        #: (too soon after it), and how many such quiet outages there were since.
        self._outage_warned_at: float | None = None
        self._outage_quiet = False
        self._quiet_outages = 0
        #: Requests the server answered (anything but "retry"); that count and the time
        #: when a flush or close last ran out of time with requests left: see
        #: :meth:`_close_deadline`.
        self._answered = 0
        self._gave_up: tuple[int, float] | None = None
        self._logged: set[tuple[str, int | None]] = set()
        self._queue_full_logged = False
        self.stats = Stats()

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's queue, workers, claims and connections."""
        self._transport_lock = threading.Lock()
        self._transport = None  # the parent's sockets: never use or close them here
        self._reset_state()

    # -- submitting ----------------------------------------------------------

    def submit(self, request: Request) -> None:
        """Queue one request; returns at once (never sends on the caller's thread)."""
        with self._cond:
            if self._auth_failed:
                self.stats.dropped += 1
                return
            self._seq += 1
            if self._start_at is None:
                self._start_at = self._clock() + self._start_delay
            item = Item(request=request, seq=self._seq, first_enqueued_at=self._wall())
            self._attach(item)
            self._start_workers()
            self._cond.notify()

    def count_dropped(self, events: int) -> None:
        """Count events lost before they could be queued (a request that could not be built)."""
        with self._cond:
            self.stats.dropped += events

    def _attach(self, item: Item) -> None:
        """Coalesce ``item`` into its stream's pending tail, or append it (lock held)."""
        state = self._workflow(item.request.workflow_id)
        stream = self._stream(state, item.request.task_id)
        if stream.pending and self._merge(stream.pending[-1], item):
            return
        request = item.request
        intermediate = request.kind in (UPDATE_TASK, UPDATE_WORKFLOW) and not request.last
        if self._size >= self.config.max_queue and intermediate:
            # Full: pending updates are coalesced (above); creates and final statuses
            # are kept; an intermediate status (In progress, Retry) that nothing
            # pending can absorb is dropped: the final one carries the same fields.
            self.stats.dropped += item.events
            if not self._queue_full_logged:
                self._queue_full_logged = True
                logger.warning(
                    "the delivery queue is full (%d requests, SERVER_MAX_QUEUE): pending updates "
                    "are coalesced, creates and final statuses are kept, intermediate updates "
                    "are dropped and counted",
                    self.config.max_queue,
                )
            self._touch(state, stream)  # forget a stream created for nothing
            return
        stream.pending.append(item)
        self._size += 1
        self._touch(state, stream)
        self._wake(stream)

    def _merge(self, older: Item, newer: Item) -> bool:
        """Fold ``newer`` into the pending ``older`` of the same stream, if that keeps the order."""
        old, new = older.request, newer.request
        if new.kind == UPDATE_TASK and old.kind == UPDATE_TASK:
            merged = new
        elif new.kind == UPDATE_TASK and old.kind == CREATE_TASK:
            merged = as_create_task(new)
        elif new.kind == UPDATE_WORKFLOW and old.kind == UPDATE_WORKFLOW:
            merged = new
        elif new.kind == UPDATE_WORKFLOW and old.kind == CREATE_WORKFLOW and not new.final:
            # A final status must wait for the tasks, which wait for the create: never merged.
            merged = as_create_workflow(new)
        else:
            return False
        older.request = merged
        if newer.unsent_replay:
            self._replay_sent(newer)
        older.events += newer.events
        older.origins.extend(newer.origins)
        older.first_enqueued_at = min(older.first_enqueued_at, newer.first_enqueued_at)
        self.stats.coalesced += newer.events
        return True

    def _workflow(self, workflow_id: str) -> WorkflowState:
        state = self._workflows.get(workflow_id)
        if state is None:
            stream = Stream(workflow_id, None)
            state = self._workflows[workflow_id] = WorkflowState(stream)
            self._streams[stream.key] = stream
        return state

    def _stream(self, state: WorkflowState, task_id: int | None) -> Stream:
        if task_id is None:
            return state.stream
        key = (state.stream.workflow_id, task_id)
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = Stream(state.stream.workflow_id, task_id)
        return stream

    def _touch(self, state: WorkflowState, stream: Stream) -> None:
        """Update the bookkeeping after ``stream`` changed (lock held)."""
        if stream.task_id is not None:
            if stream.live:
                state.busy_tasks.add(stream.task_id)
            else:
                state.busy_tasks.discard(stream.task_id)
                if stream.in_flight is None:
                    self._streams.pop(stream.key, None)
            if not state.busy_tasks and state.final_parked:
                state.final_parked = False
                self._wake(state.stream)
        elif not self._create_open(state) and state.parked:
            for task_id in state.parked:
                task_stream = self._streams.get((stream.workflow_id, task_id))
                if task_stream is not None:
                    self._wake(task_stream)
            state.parked.clear()
        if (
            not state.stream.live
            and state.stream.in_flight is None
            and not state.busy_tasks
            and not state.parked
        ):
            self._workflows.pop(stream.workflow_id, None)
            self._streams.pop(state.stream.key, None)

    @staticmethod
    def _create_open(state: WorkflowState) -> bool:
        stream = state.stream
        if stream.in_flight is not None and stream.in_flight.request.kind == CREATE_WORKFLOW:
            return not stream.in_flight.abandoned
        return any(item.request.kind == CREATE_WORKFLOW for item in stream.pending)

    def _wake(self, stream: Stream) -> None:
        if stream.in_flight is None and stream.pending:
            heapq.heappush(self._ready, (stream.pending[0].seq, stream.key))

    # -- workers -------------------------------------------------------------

    def _start_workers(self) -> None:
        """Start one more worker while fewer run than wanted (lock held).

        Wanted: ``min(max_in_flight, queued requests)``. One is enough before
        delivery begins (see :data:`START_DELAY`) and until the transport is
        built (that worker imports requests; nothing can be sent before), and
        during an outage (one worker probes the server). Every worker calls this
        when it starts and before it takes each request, so a burst's workers
        start as a chain, one thread after the other, while the first request is
        on the wire, rather than all at once before it can be sent.
        """
        wanted = min(self.config.max_in_flight, max(self._size, 1))
        if not self._delivering or self._transport is None or self._outage_since is not None:
            wanted = 1
        if self._workers < wanted and not self._cannot_start:
            thread = threading.Thread(
                target=self._work,
                args=(self._generation,),
                name=f"dotflow-server-api-{self._workers + 1}",
                daemon=True,
            )
            try:
                thread.start()
            except RuntimeError:  # the interpreter is shutting down: flush/close spool instead
                self._cannot_start = True
                return
            self._workers += 1

    def transport(self) -> Transport:
        """The shared transport, built on first use (imports ``requests``)."""
        with self._transport_lock:
            transport = self._transport
            built = transport is None
            if transport is None:
                transport = self._transport = self._transport_factory(self.config)
        if built:
            with self._cond:
                if self._delivering:  # not for the next-id lookup before delivery starts
                    self._start_workers()  # more requests can be sent now
        return transport

    def _wait_for_start(self, generation: int) -> None:
        """Hold the workers until ``START_DELAY`` after the first event, or a flush."""
        with self._cond:
            while not self._hurry and generation == self._generation:
                remaining = (self._start_at or 0.0) - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if generation == self._generation and not self._delivering:
                self._delivering = True
                self._start_workers()

    def _hurry_up(self) -> None:
        """Someone waits for delivery: start now (lock held)."""
        if not self._hurry:
            self._hurry = True
            self._cond.notify_all()

    def _work(self, generation: int) -> None:
        counted = True  # among self._workers
        try:
            self._wait_for_start(generation)
            self._replay_if_first(generation)
            while True:
                with self._cond:
                    # The next link of a chain of starts; after an outage, back to full width.
                    self._start_workers()
                    item = self._wait_for_item(generation)
                    if item is None:
                        if generation == self._generation:  # idle too long: retire, counted
                            self._workers -= 1  # out under the lock that found no work
                            counted = False
                        return
                try:
                    result = self.transport().send(
                        item.request.method, item.request.path, item.request.body
                    )
                except Exception as error:  # a transport that cannot be built, or a bug
                    result = Result(
                        outcome=Outcome.RETRY, detail=f"{type(error).__name__}: {error}"
                    )
                with self._cond:
                    self._complete(item, result)
                    if generation != self._generation:
                        return
                    self._cond.notify_all()
        except Exception:
            logger.exception("delivery worker stopped unexpectedly; the events stay queued")
        finally:
            with self._cond:
                if counted and generation == self._generation:
                    self._workers -= 1
                self._cond.notify_all()

    def _wait_for_item(self, generation: int) -> Item | None:
        """The next request to send (lock held); None when this worker should stop.

        A worker stops when the delivery is closed, or when nothing at all was
        queued for it (not even a retry for later) during ``idle_retirement``.
        """
        idle_since: float | None = None
        while generation == self._generation:
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
        if self._outage_since is not None:
            if self._in_flight > 0:
                return None, None  # one probe at a time during an outage
            if now < self._pause_until:
                return None, self._pause_until - now
        while self._delayed and self._delayed[0][0] <= now:
            _, seq, key = heapq.heappop(self._delayed)
            heapq.heappush(self._ready, (seq, key))
        while self._ready:
            seq, key = heapq.heappop(self._ready)
            stream = self._streams.get(key)
            if (
                stream is None
                or stream.in_flight is not None
                or not stream.pending
                or stream.pending[0].seq != seq
            ):
                continue  # stale entry
            item = stream.pending[0]
            if item.not_before > now:
                heapq.heappush(self._delayed, (item.not_before, seq, key))
                continue
            state = self._workflows[stream.workflow_id]
            if stream.task_id is not None and self._create_open(state):
                if item.unsent_replay and self._create_failing(state):
                    self._replay_sent(item)  # blocked by a failing create: hold nothing back
                state.parked.add(stream.task_id)
                continue
            if item.request.final and state.busy_tasks:
                if item.unsent_replay:
                    self._replay_sent(item)  # waits for tasks that may be this run's
                state.final_parked = True
                continue
            if self._unsent_replays and not item.unsent_replay:
                self._held.append((seq, key))  # replayed requests go first
                continue
            if item.unsent_replay:
                self._replay_sent(item)
            stream.pending.popleft()
            stream.in_flight = item
            item.attempts += 1
            item.sent_at = now
            item.probe = self._outage_since is not None
            self._in_flight += 1
            return item, None
        if self._delayed:
            return None, max(self._delayed[0][0] - now, 0.0)
        return None, None

    @staticmethod
    def _create_failing(state: WorkflowState) -> bool:
        """True when the workflow's create has failed at least once."""
        stream = state.stream
        heads = [stream.in_flight] if stream.in_flight is not None else []
        heads += [item for item in stream.pending if item.request.kind == CREATE_WORKFLOW]
        return any(item.request.kind == CREATE_WORKFLOW and item.failures for item in heads)

    def _replay_sent(self, item: Item) -> None:
        """``item`` (replayed) was sent or is gone: this run's requests may follow once all are."""
        item.unsent_replay = False
        self._unsent_replays -= 1
        if self._unsent_replays == 0:
            for entry in self._held:
                heapq.heappush(self._ready, entry)
            self._held.clear()

    def _complete(self, item: Item, result: Result) -> None:
        """Apply a request's result (lock held)."""
        self._in_flight -= 1
        self.stats.requests += 1
        state = self._workflow(item.request.workflow_id)
        stream = self._stream(state, item.request.task_id)
        stream.in_flight = None
        outcome = result.outcome
        if outcome is not Outcome.RETRY:
            self._answered += 1
        if item.abandoned:
            self._touch(state, stream)
            self._wake(stream)
            return
        if outcome is Outcome.RETRY:
            self._retry_later(stream, item, result)
        else:
            self._size -= 1
            if outcome is Outcome.DELIVERED:
                self._delivered(item)
            elif outcome is Outcome.AUTH:
                if item.origins:  # replayed from the outbox: back there, not lost
                    self._write_outbox([item])
                else:
                    self._settle(item, dropped=True)
                self._token_rejected(item, result)
            else:
                self._settle(item, dropped=True)
                self._log_rejected(item, result)
        self._touch(state, stream)
        self._wake(stream)

    def _delivered(self, item: Item) -> None:
        self._settle(item, dropped=False)
        if self._outage_since is not None:
            logger.log(
                logging.DEBUG if self._outage_quiet else logging.INFO,
                "delivery to %s recovered after %.1f s; %d request(s) waiting",
                self.config.base_url,
                self._clock() - self._outage_since,
                self._size,
            )
            self._outage_since = None
            self._outage_failures = 0
            self._pause_until = 0.0

    def _settle(self, item: Item, *, dropped: bool) -> None:
        if dropped:
            self.stats.dropped += item.events
        else:
            self.stats.delivered += item.events
        for origin in item.origins:
            origin.settle()

    def _retry_later(self, stream: Stream, item: Item, result: Result) -> None:
        now = self._clock()
        item.failures += 1
        if item.request.kind == CREATE_WORKFLOW:  # its parked replayed tasks hold nothing back
            state = self._workflow(item.request.workflow_id)
            for task_id in state.parked:
                task_stream = self._streams.get((item.request.workflow_id, task_id))
                if task_stream and task_stream.pending and task_stream.pending[0].unsent_replay:
                    self._replay_sent(task_stream.pending[0])
        wait = self._delay(item.failures, result.retry_after)
        if self._outage_since is None or item.probe:
            if self._outage_since is None:
                self._outage_began(now, item, result)
            else:
                self._outage_failures += 1
            # One draw when this request's own backoff and the outage's are the same
            # step (the usual probe): full jitter, not the larger of two draws.
            pause = (
                wait
                if item.failures == self._outage_failures
                else self._delay(self._outage_failures, result.retry_after)
            )
            self._pause_until = now + pause
        # The next probe is another request when there is one: a request the server keeps
        # refusing (while it takes others) cannot hold everything else back.
        item.not_before = max(now + wait, self._pause_until + 0.001)
        logger.debug(
            "%s attempt %d failed (%s); retry in %.2f s",
            item.request.endpoint,
            item.attempts,
            result.describe(),
            item.not_before - now,
        )
        stream.pending.appendleft(item)
        if len(stream.pending) > 1 and self._merge(item, stream.pending[1]):
            del stream.pending[1]
            self._size -= 1

    def _outage_began(self, now: float, item: Item, result: Result) -> None:
        """Enter the outage state; one WARNING, unless one was logged a moment ago."""
        self._outage_since = now
        self._outage_failures = 1
        warned_at = self._outage_warned_at
        self._outage_quiet = warned_at is not None and now - warned_at < OUTAGE_LOG_INTERVAL
        if self._outage_quiet:
            self._quiet_outages += 1
            logger.debug(
                "cannot deliver to %s again (%s: %s); retrying",
                self.config.base_url,
                item.request.endpoint,
                result.describe(),
            )
            return
        self._outage_warned_at = now
        since = (
            f"; {self._quiet_outages} short outage(s) since the last warning"
            if self._quiet_outages
            else ""
        )
        self._quiet_outages = 0
        logger.warning(
            "cannot deliver to %s (%s: %s); events are kept and retried, "
            "one request at a time, until it answers%s",
            self.config.base_url,
            item.request.endpoint,
            result.describe(),
            since,
        )

    def _log_rejected(self, item: Item, result: Result) -> None:
        key = (item.request.endpoint, result.status)
        if key in self._logged:
            return
        self._logged.add(key)
        if result.status is None:
            logger.error(
                "%s could not be sent (%s); the event is dropped (further such failures of "
                "this endpoint are counted, not logged)",
                item.request.endpoint,
                result.describe(),
            )
            return
        logger.error(
            "%s rejected %s with HTTP %s: %s; the event is dropped (further HTTP %s answers "
            "to this endpoint are counted, not logged)",
            self.config.base_url,
            item.request.endpoint,
            result.status,
            result.detail or "(empty body)",
            result.status,
        )

    def _token_rejected(self, item: Item, result: Result) -> None:
        self._auth_failed = True
        logger.error(
            "%s rejected the token (HTTP %s on %s): nothing more is sent in this run; "
            "check SERVER_USER_TOKEN",
            self.config.base_url,
            result.status,
            item.request.endpoint,
        )
        # Events of this run are dropped, never spooled for later; requests replayed
        # from the outbox go back to it (they were accepted under this identity before).
        replayed = self._take(lambda queued: bool(queued.origins))
        dropped = self._take(lambda queued: True)
        self.stats.dropped += sum(queued.events for queued in dropped)
        self._write_outbox(replayed)

    # -- replay --------------------------------------------------------------

    def _replay_if_first(self, generation: int | None = None) -> int:
        """Claim and queue the outbox once per generation, before this run's requests go.

        :returns: how many requests the outbox added to the queue (0 if already done).
        """
        with self._cond:
            generation = self._generation if generation is None else generation
            if self._replay_started or generation != self._generation:
                return 0
            self._replay_started = True
        loaded: list[Item] = []
        try:
            seq = _REPLAY_SEQ_START
            # No outbox directory at all (a fresh machine or CI runner): nothing to
            # replay, and no need to import the outbox module.
            claims = self.outbox.claim(self._owned_claims) if self._outbox_exists() else ()
            for claimed, entries in claims:
                self._owned_claims.add(claimed.path)
                for entry in entries:
                    seq += 1
                    loaded.append(
                        Item(
                            request=entry.request,
                            seq=seq,
                            first_enqueued_at=entry.first_enqueued_at,
                            attempts=entry.attempts,
                            events=entry.events,
                            origins=[claimed],
                            unsent_replay=True,
                        )
                    )
        except Exception:
            logger.exception("could not read the outbox %s", self.outbox.directory)
        with self._cond:
            if generation != self._generation:  # closed meanwhile: back to the outbox
                self._write_outbox(loaded)
                return 0
            queued = self._insert_replayed(loaded) if loaded else 0
            if loaded:
                self._start_workers()
                self.stats.replayed += len(loaded)
                logger.info(
                    "replaying %d event(s) from the outbox %s first",
                    len(loaded),
                    self.outbox.directory,
                )
            self._replayed = True
            self._cond.notify_all()
        return queued

    def _outbox_exists(self) -> bool:
        return self._outbox is not None or os.path.isdir(self.config.outbox_dir)

    def _insert_replayed(self, loaded: list[Item]) -> int:
        """Put replayed requests ahead of this run's in their streams (lock held).

        :returns: how many requests the queue gained (replayed ones merge where they can).
        """
        added = 0
        by_stream: dict[StreamKey, list[Item]] = {}
        for item in loaded:
            by_stream.setdefault((item.request.workflow_id, item.request.task_id), []).append(item)
        for (workflow_id, task_id), items in by_stream.items():
            state = self._workflow(workflow_id)
            stream = self._stream(state, task_id)
            merged: list[Item] = []
            self._unsent_replays += len(items)
            for item in [*items, *stream.pending]:
                if not (merged and self._merge(merged[-1], item)):
                    merged.append(item)
            gained = len(merged) - len(stream.pending)
            self._size += gained
            added += gained
            stream.pending = deque(merged)
            self._touch(state, stream)
            self._wake(stream)
        return added

    def replay(self) -> int:
        """Load the outbox now, on this thread, and start sending (``dotflow outbox flush``).

        :returns: how many requests the outbox queued (counted when queued: workers may
            have sent some already).
        """
        queued = self._replay_if_first()
        with self._cond:
            self._hurry_up()
            if self._size:
                self._start_workers()
        return queued

    # -- flush, close, spool -----------------------------------------------------

    def flush(self, workflow_id: str, timeout: float) -> None:
        """Wait up to ``timeout`` for ``workflow_id``'s requests, then spool what is left."""
        deadline = self._clock() + max(timeout, 0.0)
        with self._cond:
            self._hurry_up()
            while self._workflow_live(workflow_id) and self._can_progress():
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._workflow_live(workflow_id):
                self._gave_up = (self._answered, self._clock())
                items = self._take(lambda item: item.request.workflow_id == workflow_id)
                self._write_outbox(items)

    def close(self, timeout: float) -> Stats:
        """Wait up to ``timeout`` for everything, spool the rest, stop the workers.

        Returns the counts since the last ``close`` and logs them. The delivery
        can be used again afterwards (a new ``submit`` starts new workers).
        """
        with self._cond:
            deadline = self._close_deadline(timeout)
            self._hurry_up()
            while (self._size > 0 or not self._replay_done()) and self._can_progress():
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._size > 0:
                self._gave_up = (self._answered, self._clock())
                self._write_outbox(self._take(lambda item: True))
            stats, self.stats = self.stats, Stats()
            self._generation += 1  # workers of the old generation exit
            self._workers = 0
            self._replay_started = self._replayed = False
            self._auth_failed = False
            self._start_at, self._hurry, self._delivering = None, False, False
            self._cond.notify_all()
        with self._transport_lock:
            transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        self._log_summary(stats)
        return stats

    def _close_deadline(self, timeout: float) -> float:
        """When ``close`` stops waiting (lock held).

        ``timeout`` from now; but now when a flush (or close) already ran out of time,
        the server has answered nothing since, and no request sent since is still
        waiting for its answer. The exit after a workflow whose flush gave up then
        adds no second deadline: what is left is what a down or hanging server
        already did not take (requests replayed from the outbox, say).
        """
        now = self._clock()
        if self._gave_up is not None:
            answered, gave_up_at = self._gave_up
            if answered == self._answered and not any(
                stream.in_flight is not None
                and not stream.in_flight.abandoned
                and stream.in_flight.sent_at > gave_up_at
                for stream in self._streams.values()
            ):
                logger.debug(
                    "not waiting for %s: it has answered nothing since the last wait ran out",
                    self.config.base_url,
                )
                return now
        return now + max(timeout, 0.0)

    def _replay_done(self) -> bool:
        return self._replayed or not self._replay_started

    def _can_progress(self) -> bool:
        """False when nothing can send any more (no worker and none can be started)."""
        return self._workers > 0 or not self._cannot_start

    def _workflow_live(self, workflow_id: str) -> bool:
        state = self._workflows.get(workflow_id)
        return state is not None and (state.stream.live or bool(state.busy_tasks))

    def _take(self, wanted: Callable[[Item], bool]) -> list[Item]:
        """Remove the wanted requests (pending and in flight) from the queue (lock held)."""
        taken: list[Item] = []
        for stream in list(self._streams.values()):
            keep: deque[Item] = deque()
            for item in stream.pending:
                (taken if wanted(item) else keep).append(item)
                if item.unsent_replay and wanted(item):
                    self._replay_sent(item)
            stream.pending = keep
            flying = stream.in_flight
            if flying is not None and not flying.abandoned and wanted(flying):
                flying.abandoned = True
                taken.append(flying)
        self._size -= len(taken)
        for stream in list(self._streams.values()):
            state = self._workflows.get(stream.workflow_id)
            if state is not None:
                self._touch(state, stream)
        return sorted(taken, key=lambda item: item.seq)

    def _write_outbox(self, items: Iterable[Item]) -> None:
        """Write requests to the outbox, one file per workflow (lock held; small, local I/O)."""
        from dotflow_server_api.outbox import Entry

        by_workflow: dict[str, list[Item]] = {}
        for item in items:
            by_workflow.setdefault(item.request.workflow_id, []).append(item)
        for workflow_id, group in by_workflow.items():
            entries = [
                Entry(
                    request=item.request,
                    first_enqueued_at=item.first_enqueued_at,
                    attempts=item.attempts,
                    events=item.events,
                )
                for item in group
            ]
            events = sum(item.events for item in group)
            try:
                path = self.outbox.write(workflow_id, entries)
            except OSError as error:
                self.stats.dropped += events
                logger.error(
                    "could not write the outbox in %s (%s): %d event(s) of workflow %s are lost",
                    self.outbox.directory,
                    error.strerror or error,
                    events,
                    workflow_id,
                )
                continue
            self.stats.spooled += events
            for item in group:
                for origin in item.origins:
                    origin.settle()
            logger.debug("spooled %d request(s) to %s", len(group), path)

    def _log_summary(self, stats: Stats) -> None:
        if not stats.anything and not stats.requests:
            return
        level = logging.WARNING if (stats.spooled or stats.dropped) else logging.INFO
        where = f" to the outbox {self.outbox.directory}" if stats.spooled else ""
        logger.log(
            level,
            "dotflow-server-api: %d event(s) delivered to %s in %d request(s), "
            "%d spooled%s, %d dropped",
            stats.delivered,
            self.config.base_url,
            stats.requests,
            stats.spooled,
            where,
            stats.dropped,
        )

    # -- queries ---------------------------------------------------------------

    def highest_queued_task_id(self, workflow_id: str) -> int | None:
        """The highest task id with a request still queued for ``workflow_id``."""
        with self._cond:
            state = self._workflows.get(workflow_id)
            return max(state.busy_tasks) if state and state.busy_tasks else None

    def pending(self, workflow_id: str | None = None) -> int:
        """Requests queued or in flight (for one workflow, or all)."""
        with self._cond:
            if workflow_id is None:
                return self._size
            return sum(
                (1 if stream.in_flight is not None and not stream.in_flight.abandoned else 0)
                + len(stream.pending)
                for stream in self._streams.values()
                if stream.workflow_id == workflow_id
            )
