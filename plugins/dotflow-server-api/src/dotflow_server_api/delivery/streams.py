"""The streams of the queue and the bookkeeping of their workflows (single-threaded).

Which tasks of a workflow still have requests, which wait for the workflow's
create, whether its final status waits for its tasks, and the heap of
streams whose head may be ready. :class:`~.queue.RequestQueue` builds on it.
"""

from __future__ import annotations

import heapq

from dotflow_server_api.delivery.items import Item, Stream, StreamKey, WorkflowState
from dotflow_server_api.payloads import CREATE_WORKFLOW


class StreamTable:
    """Every stream with something queued, by key, and every workflow's state."""

    def __init__(self) -> None:
        self.streams: dict[StreamKey, Stream] = {}
        self.workflows: dict[str, WorkflowState] = {}
        self._ready: list[tuple[int, StreamKey]] = []
        #: Replayed requests not sent yet, and this run's requests held back until then.
        self.unsent_replays = 0
        self._held: list[tuple[int, StreamKey]] = []
        #: Workflows whose create this delivery sent and the server answered 201: new,
        #: so no other run's task can refuse one of their writes (see ``final_rider``).
        self.new_workflows: set[str] = set()

    # -- queries -------------------------------------------------------------------

    def items(self) -> list[Item]:
        """Every request still to deliver (pending, and in flight unless abandoned)."""
        found: list[Item] = []
        for stream in self.streams.values():
            if stream.in_flight is not None and not stream.in_flight.abandoned:
                found.append(stream.in_flight)
            found.extend(stream.pending)
        return found

    def workflow_live(self, workflow_id: str) -> bool:
        state = self.workflows.get(workflow_id)
        return state is not None and (state.stream.live or bool(state.busy_tasks))

    def workflow_pending(self, workflow_id: str) -> int:
        return sum(
            (1 if stream.in_flight is not None and not stream.in_flight.abandoned else 0)
            + len(stream.pending)
            for stream in self.streams.values()
            if stream.workflow_id == workflow_id
        )

    def highest_task_id(self, workflow_id: str) -> int | None:
        state = self.workflows.get(workflow_id)
        return max(state.busy_tasks) if state and state.busy_tasks else None

    def has_live_in_flight_sent_after(self, moment: float) -> bool:
        return any(
            stream.in_flight is not None
            and not stream.in_flight.abandoned
            and stream.in_flight.sent_at > moment
            for stream in self.streams.values()
        )

    def final_rider(
        self, workflow_id: str, batch: list[Item], now: float
    ) -> tuple[Stream, Item] | None:
        """The final status that may go last in ``batch``, with its stream; None if it waits.

        A final status waits for its tasks' last requests; in a batch, which the server
        applies in order, it may go right after them instead, saving the run's last round
        trip. Only for a workflow this run created (``new_workflows``), whose tasks'
        requests are all in ``batch``: no other run's task can then refuse one of them
        (a 409) and send it again after the final status.
        """
        state = self.workflows.get(workflow_id)
        if state is None or state.parked or workflow_id not in self.new_workflows:
            return None
        stream = state.stream
        head = stream.pending[0] if stream.pending and stream.in_flight is None else None
        if head is None or not head.request.final or head.seq < 0 or head.not_before > now:
            return None
        if self.unsent_replays:  # replayed requests go first
            return None
        in_batch = {id(member) for member in batch}
        for task_id in state.busy_tasks:
            task = self.streams.get((workflow_id, task_id))
            if task is None or task.pending or id(task.in_flight) not in in_batch:
                return None
        state.final_parked = False
        return stream, head

    # -- bookkeeping -------------------------------------------------------------

    def _workflow(self, workflow_id: str) -> WorkflowState:
        state = self.workflows.get(workflow_id)
        if state is None:
            stream = Stream(workflow_id, None)
            state = self.workflows[workflow_id] = WorkflowState(stream)
            self.streams[stream.key] = stream
        return state

    def _stream(self, state: WorkflowState, task_id: int | None) -> Stream:
        if task_id is None:
            return state.stream
        key = (state.stream.workflow_id, task_id)
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = Stream(state.stream.workflow_id, task_id)
        return stream

    def _touch(self, state: WorkflowState, stream: Stream) -> None:
        """Update the bookkeeping after ``stream`` changed."""
        if stream.task_id is not None:
            self._touch_task(state, stream)
        elif not self._create_open(state) and state.parked:
            for task_id in state.parked:
                task_stream = self.streams.get((stream.workflow_id, task_id))
                if task_stream is not None:
                    self._wake(task_stream)
            state.parked.clear()
        if (
            not state.stream.live
            and state.stream.in_flight is None
            and not state.busy_tasks
            and not state.parked
        ):
            self.workflows.pop(stream.workflow_id, None)
            self.streams.pop(state.stream.key, None)

    def _touch_task(self, state: WorkflowState, stream: Stream) -> None:
        assert stream.task_id is not None
        if stream.live:
            state.busy_tasks.add(stream.task_id)
        else:
            state.busy_tasks.discard(stream.task_id)
            if stream.in_flight is None:
                self.streams.pop(stream.key, None)
        if not state.busy_tasks and state.final_parked:
            state.final_parked = False
            self._wake(state.stream)

    @staticmethod
    def _create_open(state: WorkflowState) -> bool:
        stream = state.stream
        if stream.in_flight is not None and stream.in_flight.request.kind == CREATE_WORKFLOW:
            return not stream.in_flight.abandoned
        return any(item.request.kind == CREATE_WORKFLOW for item in stream.pending)

    @staticmethod
    def _create_failing(state: WorkflowState) -> bool:
        """True when the workflow's create has failed at least once."""
        stream = state.stream
        heads = [stream.in_flight] if stream.in_flight is not None else []
        heads += [item for item in stream.pending if item.request.kind == CREATE_WORKFLOW]
        return any(item.request.kind == CREATE_WORKFLOW and item.failures for item in heads)

    def _wake(self, stream: Stream) -> None:
        if stream.in_flight is None and stream.pending:
            heapq.heappush(self._ready, (stream.pending[0].seq, stream.key))

    def _replay_sent(self, item: Item) -> None:
        """``item`` (replayed) was sent or is gone: this run's requests may follow once all are."""
        item.unsent_replay = False
        self.unsent_replays -= 1
        if self.unsent_replays == 0:
            for entry in self._held:
                heapq.heappush(self._ready, entry)
            self._held.clear()
