"""The records the queue is made of: a queued request, a stream, a workflow's state, counts.

Plain slotted classes rather than attrs: they are created per event, and
defining them costs nothing at import (the provider is imported on every
managed run).
"""

from __future__ import annotations

from collections import deque

from dotflow_server_api.payloads import Request

StreamKey = tuple[str, int | None]


class Item:
    """A queued request and its delivery state."""

    __slots__ = (
        "abandoned",
        "asked",
        "attempts",
        "events",
        "failures",
        "first_enqueued_at",
        "in_doubt",
        "jid",
        "not_before",
        "probe",
        "request",
        "sent_at",
        "seq",
        "task_key",
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
        unsent_replay: bool = False,
        in_doubt: bool = False,
    ) -> None:
        self.request = request
        #: The task's stream: the id it was first queued under (None for a workflow's
        #: request). ``request.task_id`` is the id it is sent under, which differs once
        #: the run's tasks were moved to free ids (see :mod:`.renumber`).
        self.task_key = request.task_id
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
        #: Spooled or dropped while in flight: its result no longer matters.
        self.abandoned = False
        #: Sent while an outage was already known (a probe).
        self.probe = False
        #: Replayed from the outbox and not sent yet: this run's requests wait for it.
        self.unsent_replay = unsent_replay
        #: The server's ``Retry-After`` set ``not_before``: a deadline does not bring it forward.
        self.asked = False
        #: The journal line holding this request's current state (None: not journaled).
        self.jid: int | None = None
        #: A task's create that was sent and may have been stored under its id (it timed
        #: out, or the answer broke): the run's renumbering leaves it where it is.
        self.in_doubt = in_doubt

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

    __slots__ = (
        "coalesced",
        "delivered",
        "dropped",
        "rejected_lines",
        "replayed",
        "requests",
        "spooled",
    )

    def __init__(self) -> None:
        self.delivered = 0
        self.spooled = 0
        self.dropped = 0
        self.coalesced = 0
        #: Requests sent (attempts, not events).
        self.requests = 0
        self.replayed = 0
        #: Outbox lines that failed validation (kept aside in ``rejected/``, never sent).
        self.rejected_lines = 0

    @property
    def anything(self) -> bool:
        return any((self.delivered, self.spooled, self.dropped, self.replayed))

    @property
    def undelivered(self) -> int:
        """Events this run dropped or left in the outbox (strict delivery fails on these)."""
        return self.spooled + self.dropped

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={getattr(self, name)}" for name in sorted(self.__slots__))
        return f"Stats({counts})"
