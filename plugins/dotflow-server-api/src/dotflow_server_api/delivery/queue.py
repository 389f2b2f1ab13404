"""The queue of requests and its ordering and coalescing rules: plain single-threaded code.

No locks, no threads, no clock of its own: the caller holds whatever lock it
needs and passes the time in, so tests drive it directly.

- a *stream* is the sequence of requests of one task, or of one workflow; a
  stream has at most one request in flight, and sends in order;
- a task's requests wait until its workflow's create is settled;
- a workflow's final status waits until none of its tasks has a request left, or,
  for a workflow this run created, goes last in the batch that carries them;
- requests replayed from the outbox go before this run's.

Pending requests of one stream are *coalesced*: a newer update replaces a
pending update, and a pending create absorbs later updates (the POST then
carries the latest state).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable

from dotflow_server_api.delivery.items import Item, Stats, Stream, StreamKey
from dotflow_server_api.delivery.streams import StreamTable
from dotflow_server_api.payloads import (
    CREATE_TASK,
    CREATE_WORKFLOW,
    UPDATE_TASK,
    UPDATE_WORKFLOW,
    as_create_task,
    as_create_workflow,
)


def merged_request(older: Item, newer: Item) -> bool:
    """Fold ``newer``'s request into ``older``'s if that keeps the order; True if it did."""
    old, new = older.request, newer.request
    if new.kind in (UPDATE_TASK, CREATE_TASK) and old.kind == new.kind:
        # Two creates: a task moved to a free id (see .renumber) carries creates only.
        older.request = new
    elif new.kind == UPDATE_TASK and old.kind == CREATE_TASK:
        older.request = as_create_task(new)
    elif new.kind == UPDATE_WORKFLOW and old.kind == UPDATE_WORKFLOW:
        older.request = new
    elif new.kind == UPDATE_WORKFLOW and old.kind == CREATE_WORKFLOW and not new.final:
        # A final status must wait for the tasks, which wait for the create: never merged.
        older.request = as_create_workflow(new)
    else:
        return False
    return True


class RequestQueue(StreamTable):
    """Streams of pending requests, and which of them may be sent next.

    :param max_queue: requests held before intermediate updates are dropped.
    :param stats: where coalesced and dropped events are counted.
    :param changed: ``changed(item, absorbed)`` for every request that is new
        (``absorbed`` None) or absorbed another (the journal writes its state
        again, and forgets the absorbed one).
    """

    def __init__(
        self,
        max_queue: int,
        stats: Stats,
        changed: Callable[[Item, Item | None], None] | None = None,
    ) -> None:
        self.max_queue = max_queue
        self.stats = stats
        super().__init__()
        self._changed = changed or (lambda item, superseded: None)
        self._delayed: list[tuple[float, int, StreamKey]] = []
        #: Requests pending or in flight (not abandoned).
        self.size = 0
        self.in_flight = 0
        #: Set when an intermediate update was dropped because the queue was full.
        self.overflowed = False

    # -- adding ----------------------------------------------------------------

    def add(self, item: Item) -> bool:
        """Coalesce ``item`` into its stream's tail, or append it; False if it was dropped."""
        state = self._workflow(item.request.workflow_id)
        stream = self._stream(state, item.task_key)
        if stream.pending and self._merge(stream.pending[-1], item):
            return True
        request = item.request
        intermediate = request.kind in (UPDATE_TASK, UPDATE_WORKFLOW) and not request.last
        if self.size >= self.max_queue and intermediate:
            # Full: creates and final statuses are kept; an intermediate status that
            # nothing pending can absorb is dropped (the final one carries the same fields).
            self.stats.dropped += item.events
            self.overflowed = True
            self._touch(state, stream)  # forget a stream created for nothing
            return False
        stream.pending.append(item)
        self.size += 1
        self._changed(item, None)
        self._touch(state, stream)
        self._wake(stream)
        return True

    def add_replayed(self, items: Iterable[Item]) -> int:
        """Put replayed requests ahead of this run's in their streams.

        :returns: how many requests the queue gained (replayed ones merge where they can).
        """
        by_stream: dict[StreamKey, list[Item]] = {}
        for item in sorted(items, key=lambda queued: queued.seq):
            by_stream.setdefault((item.request.workflow_id, item.task_key), []).append(item)
        added = 0
        for (workflow_id, task_id), replayed in by_stream.items():
            state = self._workflow(workflow_id)
            stream = self._stream(state, task_id)
            self.unsent_replays += len(replayed)
            merged: list[Item] = []
            for item in [*replayed, *stream.pending]:
                if not (merged and self._merge(merged[-1], item)):
                    merged.append(item)
            gained = len(merged) - len(stream.pending)
            self.size += gained
            added += gained
            stream.pending = deque(merged)
            self._touch(state, stream)
            self._wake(stream)
        return added

    def _merge(self, older: Item, newer: Item) -> bool:
        if not merged_request(older, newer):
            return False
        if newer.unsent_replay:
            self._replay_sent(newer)
        older.events += newer.events
        older.in_doubt = older.in_doubt or newer.in_doubt
        older.first_enqueued_at = min(older.first_enqueued_at, newer.first_enqueued_at)
        self.stats.coalesced += newer.events
        self._changed(older, newer)  # newer is gone: its journal line, if any, is superseded
        return True

    # -- taking ----------------------------------------------------------------

    def next_ready(self, now: float) -> Item | None:
        """Take the next request that may be sent at ``now``, in queue order."""
        self._due(now)
        while self._ready:
            seq, key = heapq.heappop(self._ready)
            head = self._head(seq, key, now)
            if head is not None and self._sendable(head[0], head[1], seq):
                return self._start(head[0], head[1], now)
        return None

    def next_batch(self, first: Item, now: float, most: int) -> list[Item]:
        """Take up to ``most`` more requests of ``first``'s workflow that may go with it now.

        They go in one batch after ``first``, which the server applies in order: when
        ``first`` is the workflow's create, its tasks go with it rather than wait for it;
        a new workflow's final status goes last, after its tasks' last requests (see
        :meth:`~.streams.StreamTable.final_rider`).
        """
        workflow_id = first.request.workflow_id
        creating = first.request.kind == CREATE_WORKFLOW
        state = self.workflows.get(workflow_id)
        if creating and state is not None and state.parked:
            for task_id in state.parked:
                task_stream = self.streams.get((workflow_id, task_id))
                if task_stream is not None:
                    self._wake(task_stream)
            state.parked.clear()
        self._due(now)
        taken: list[Item] = []
        others: list[tuple[int, StreamKey]] = []
        while self._ready and len(taken) < most:
            seq, key = heapq.heappop(self._ready)
            if key[0] != workflow_id:
                others.append((seq, key))
                continue
            head = self._head(seq, key, now)
            if head is not None and self._sendable(head[0], head[1], seq, creating=creating):
                taken.append(self._start(head[0], head[1], now))
        for entry in others:
            heapq.heappush(self._ready, entry)
        rider = self.final_rider(workflow_id, [first, *taken], now) if len(taken) < most else None
        if rider is not None:
            taken.append(self._start(*rider, now))
        return taken

    def _due(self, now: float) -> None:
        """Move the delayed requests whose time has come to the ready heap."""
        while self._delayed and self._delayed[0][0] <= now:
            _, seq, key = heapq.heappop(self._delayed)
            heapq.heappush(self._ready, (seq, key))

    def _head(self, seq: int, key: StreamKey, now: float) -> tuple[Stream, Item] | None:
        """The stream and head a ready-heap entry stands for; None when the entry is stale
        or the head must wait (then it is moved to the delayed heap)."""
        stream = self.streams.get(key)
        if stream is None or stream.in_flight is not None or not stream.pending:
            return None
        item = stream.pending[0]
        if item.seq != seq:
            return None
        if item.not_before > now:
            heapq.heappush(self._delayed, (item.not_before, seq, key))
            return None
        return stream, item

    def next_wakeup(self, now: float) -> float | None:
        """Seconds until a delayed request may go (None: none is delayed)."""
        return max(self._delayed[0][0] - now, 0.0) if self._delayed else None

    def _sendable(self, stream: Stream, item: Item, seq: int, *, creating: bool = False) -> bool:
        """Whether the head of ``stream`` may go now; parks it where it must wait.

        ``creating``: it goes in a batch after its workflow's create, so it need not wait.
        """
        state = self.workflows[stream.workflow_id]
        if stream.task_id is not None and not creating and self._create_open(state):
            if item.unsent_replay and self._create_failing(state):
                self._replay_sent(item)  # blocked by a failing create: hold nothing back
            state.parked.add(stream.task_id)
            return False
        if item.request.final and state.busy_tasks:
            if item.unsent_replay:
                self._replay_sent(item)  # waits for tasks that may be this run's
            state.final_parked = True
            return False
        if self.unsent_replays and not item.unsent_replay:
            self._held.append((seq, stream.key))  # replayed requests go first
            return False
        return True

    def _start(self, stream: Stream, item: Item, now: float) -> Item:
        if item.unsent_replay:
            self._replay_sent(item)
        stream.pending.popleft()
        stream.in_flight = item
        item.attempts += 1
        item.sent_at = now
        self.in_flight += 1
        return item

    # -- results -----------------------------------------------------------------

    def finished(self, item: Item) -> None:
        """``item`` was answered for good (delivered, dropped) or was abandoned earlier."""
        stream = self._landed(item)
        if item.request.final:  # the run is over: a later run of this workflow is not new
            self.new_workflows.discard(item.request.workflow_id)
        if not item.abandoned:
            self.size -= 1
        self._settled(stream)

    def retry(self, item: Item, not_before: float) -> None:
        """``item`` failed in a retryable way: back at its stream's head until ``not_before``."""
        stream = self._landed(item)
        item.not_before = not_before
        if item.request.kind == CREATE_WORKFLOW:  # its parked replayed tasks hold nothing back
            state = self._workflow(item.request.workflow_id)
            for task_id in state.parked:
                task_stream = self.streams.get((item.request.workflow_id, task_id))
                if task_stream and task_stream.pending and task_stream.pending[0].unsent_replay:
                    self._replay_sent(task_stream.pending[0])
        stream.pending.appendleft(item)
        if len(stream.pending) > 1 and self._merge(item, stream.pending[1]):
            del stream.pending[1]
            self.size -= 1
        self._settled(stream)

    def put_back(self, item: Item) -> None:
        """``item`` was taken but not sent (it did not fit a batch): back at its stream's head."""
        stream = self._landed(item)
        item.attempts -= 1
        stream.pending.appendleft(item)
        self._settled(stream)

    def _landed(self, item: Item) -> Stream:
        self.in_flight -= 1
        state = self._workflow(item.request.workflow_id)
        stream = self._stream(state, item.task_key)
        stream.in_flight = None
        return stream

    def _settled(self, stream: Stream) -> None:
        self._touch(self._workflow(stream.workflow_id), stream)
        self._wake(stream)

    def take(self, wanted: Callable[[Item], bool]) -> list[Item]:
        """Remove the wanted requests (pending and in flight, marked abandoned), in order."""
        taken: list[Item] = []
        for stream in list(self.streams.values()):
            keep: deque[Item] = deque()
            for item in stream.pending:
                (taken if wanted(item) else keep).append(item)
                if item.unsent_replay and wanted(item):
                    self._replay_sent(item)
            stream.pending = keep
            flying = stream.in_flight
            if flying is not None and not flying.abandoned and wanted(flying):
                flying.abandoned = True
                if flying.request.kind == CREATE_TASK and not flying.in_doubt:
                    flying.in_doubt = True  # sent, its answer never heard: may be stored
                    self._changed(flying, None)
                taken.append(flying)
        self.size -= len(taken)
        for stream in list(self.streams.values()):
            state = self.workflows.get(stream.workflow_id)
            if state is not None:
                self._touch(state, stream)
        return sorted(taken, key=lambda item: item.seq)

    def reschedule(self, latest: Callable[[Item], float]) -> None:
        """Bring every delayed request forward to at most ``latest(item)`` (a deadline came)."""
        for stream in self.streams.values():
            for item in stream.pending:
                item.not_before = min(item.not_before, latest(item))
        self._delayed = [
            (min(when, _head_time(self, key)), seq, key) for when, seq, key in self._delayed
        ]
        heapq.heapify(self._delayed)


def _head_time(queue: RequestQueue, key: StreamKey) -> float:
    stream = queue.streams.get(key)
    return stream.pending[0].not_before if stream and stream.pending else 0.0
