"""The queue, the limiter and the server health as plain single-threaded code (no threads)."""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import pytest
from dotflow_server_api.delivery.health import MIN_RETRY_WAIT, ServerHealth
from dotflow_server_api.delivery.items import Item, Stats
from dotflow_server_api.delivery.limiter import AimdLimit
from dotflow_server_api.delivery.queue import RequestQueue
from dotflow_server_api.payloads import (
    CREATE_TASK,
    CREATE_WORKFLOW,
    Request,
    create_task,
    create_workflow,
    update_task,
    update_workflow,
)
from dotflow_server_api.transport import Outcome, Result

from dotflow_core import TaskStatus, WorkflowStatus
from dotflow_core.testing import sample_task_record, sample_workflow_record

_seq = itertools.count(1)


def item(request: Request, seq: int | None = None) -> Item:
    return Item(request=request, seq=next(_seq) if seq is None else seq, first_enqueued_at=0.0)


def workflow_record(workflow_id: str, status: WorkflowStatus = WorkflowStatus.IN_PROGRESS) -> Any:
    return attrs.evolve(sample_workflow_record(status), workflow_id=workflow_id)


def drain(queue: RequestQueue, now: float = 0.0) -> list[Item]:
    """Everything sendable now (as concurrent workers would take it)."""
    taken = []
    while (next_item := queue.next_ready(now)) is not None:
        taken.append(next_item)
    return taken


class Journaled:
    def __init__(self) -> None:
        self.changed: list[tuple[Item, Item | None]] = []

    def __call__(self, changed: Item, superseded: Item | None) -> None:
        self.changed.append((changed, superseded))


@pytest.fixture
def workflow() -> str:
    return sample_workflow_record().workflow_id


def test_tasks_wait_for_the_workflows_create_then_go_together(workflow: str) -> None:
    queue = RequestQueue(100, Stats())
    queue.add(item(create_workflow(workflow_record(workflow))))
    for task_id in (1, 2, 3):
        queue.add(item(create_task(sample_task_record(workflow, task_id))))
    (first,) = drain(queue)
    assert first.request.kind == CREATE_WORKFLOW  # the tasks are parked behind it
    queue.finished(first)
    assert [taken.request.task_id for taken in drain(queue)] == [1, 2, 3]


def test_a_pending_create_absorbs_the_later_updates_of_its_task(workflow: str) -> None:
    stats, journal = Stats(), Journaled()
    queue = RequestQueue(100, stats, journal)
    queue.add(item(create_task(sample_task_record(workflow, 1, TaskStatus.NOT_STARTED))))
    queue.add(item(update_task(sample_task_record(workflow, 1, TaskStatus.IN_PROGRESS))))
    queue.add(item(update_task(sample_task_record(workflow, 1, TaskStatus.COMPLETED))))
    (only,) = drain(queue)
    assert only.request.kind == CREATE_TASK and only.events == 3
    assert b'"status":"Completed"' in only.request.body
    assert stats.coalesced == 2
    assert [changed for changed, _ in journal.changed] == [only, only, only]


def test_one_request_per_stream_in_flight_and_order_kept(workflow: str) -> None:
    queue = RequestQueue(100, Stats())
    queue.add(item(create_task(sample_task_record(workflow, 1))))
    (sent,) = drain(queue)
    queue.add(item(update_task(sample_task_record(workflow, 1, TaskStatus.COMPLETED))))
    assert drain(queue) == []  # its create is still in flight
    queue.finished(sent)
    (update,) = drain(queue)
    assert update.request.method == "PATCH"


def test_the_final_status_waits_for_every_task(workflow: str) -> None:
    queue = RequestQueue(100, Stats())
    record = workflow_record(workflow)
    queue.add(item(create_task(sample_task_record(workflow, 1))))
    done = workflow_record(workflow, WorkflowStatus.COMPLETED)
    queue.add(item(update_workflow(done)))
    (task,) = drain(queue)
    assert task.request.task_id == 1
    queue.finished(task)
    (final,) = drain(queue)
    assert final.request.final
    assert record.workflow_id == final.request.workflow_id


def test_a_retry_waits_for_its_time_then_goes_first(workflow: str) -> None:
    queue = RequestQueue(100, Stats())
    queue.add(item(create_task(sample_task_record(workflow, 1))))
    (sent,) = drain(queue, now=10.0)
    queue.retry(sent, not_before=12.0)
    assert drain(queue, now=11.0) == []
    assert queue.next_wakeup(11.0) == pytest.approx(1.0)
    queue.reschedule(lambda queued: 11.5)  # a deadline came: no later than 11.5
    assert drain(queue, now=11.4) == []
    assert drain(queue, now=11.5) == [sent] and sent.attempts == 2


def test_replayed_requests_go_before_this_runs(workflow: str) -> None:
    queue = RequestQueue(100, Stats())
    queue.add(item(create_task(sample_task_record("other", 1))))
    earlier = item(create_task(sample_task_record(workflow, 7)), seq=-100)
    earlier.unsent_replay = True
    assert queue.add_replayed([earlier]) == 1
    taken = drain(queue)
    assert taken[0] is earlier and [t.request.workflow_id for t in taken] == [workflow, "other"]


def test_a_full_queue_drops_intermediate_updates_and_keeps_the_rest(workflow: str) -> None:
    stats = Stats()
    queue = RequestQueue(2, stats)
    queue.add(item(create_task(sample_task_record(workflow, 1))))
    queue.add(item(create_task(sample_task_record(workflow, 2))))
    drain(queue)  # both in flight: nothing pending to coalesce into
    assert not queue.add(item(update_task(sample_task_record(workflow, 1, TaskStatus.IN_PROGRESS))))
    assert queue.add(item(update_task(sample_task_record(workflow, 2, TaskStatus.COMPLETED))))
    assert stats.dropped == 1 and queue.overflowed


def test_take_removes_what_is_wanted_and_abandons_what_flies(workflow: str) -> None:
    queue = RequestQueue(100, Stats())
    queue.add(item(create_task(sample_task_record(workflow, 1))))
    queue.add(item(create_task(sample_task_record("other", 1))))
    (flying, _) = drain(queue)
    taken = queue.take(lambda queued: queued.request.workflow_id == workflow)
    assert taken == [flying] and flying.abandoned
    assert not queue.workflow_live(workflow) and queue.workflow_live("other")


# -- the limiter ---------------------------------------------------------------------------


def test_the_limit_starts_small_doubles_per_round_trip_and_halves_on_backpressure() -> None:
    limit = AimdLimit(ceiling=32, initial=4)
    assert limit.limit == 4
    for _ in range(4):  # a full round trip of healthy answers
        limit.answered(in_flight=limit.limit - 1)
    assert limit.limit == 8
    limit.pushed_back(sent_at=1.0, now=2.0)
    assert limit.limit == 4
    limit.pushed_back(sent_at=1.5, now=2.1)  # on the wire before it shrank: no second cut
    assert limit.limit == 4
    for _ in range(40):
        limit.answered(in_flight=limit.limit - 1)
    assert limit.limit < 32  # additive now, not doubling
    limit.restart()
    assert limit.limit == 4


def test_the_limit_never_passes_the_ceiling_nor_grows_unused() -> None:
    limit = AimdLimit(ceiling=6, initial=4)
    for _ in range(10):
        limit.answered(in_flight=0)  # one request at a time: the limit is not the bottleneck
    assert limit.limit == 4
    for _ in range(10):
        limit.answered(in_flight=limit.limit - 1)
    assert limit.limit == 6


# -- server health -------------------------------------------------------------------------


def failed(request: Request, sent_at: float) -> Item:
    queued = item(request)
    queued.sent_at = sent_at
    queued.failures = 1
    return queued


def test_an_error_while_others_are_in_flight_is_backpressure_not_an_outage(workflow: str) -> None:
    health = ServerHealth("http://h", lambda failures, header: 1.0)
    request = create_task(sample_task_record(workflow, 1))
    retry_at = health.failure(5.0, failed(request, 4.0), Result(outcome=Outcome.RETRY), 3)
    assert health.outage_since is None
    assert retry_at == pytest.approx(5.25)  # a quarter of the backoff
    health.failure(6.0, failed(request, 5.9), Result(outcome=Outcome.RETRY), 0)
    assert health.outage_since == 6.0  # nothing else in flight, nothing answered since
    assert health.wait_before_sending(6.5, in_flight=0) > 0


def test_while_a_deadline_waits_no_retry_is_scheduled_past_it(workflow: str) -> None:
    health = ServerHealth("http://h", lambda failures, header: 30.0)
    health.set_deadline(0.0, 5.0)
    request = create_workflow(workflow_record(workflow))
    retry_at = health.failure(0.0, failed(request, 0.0), Result(outcome=Outcome.RETRY), 0)
    assert retry_at < 5.0
    later = health.failure(4.9, failed(request, 4.8), Result(outcome=Outcome.RETRY), 0)
    assert later <= 4.9 + MIN_RETRY_WAIT + 0.002


def test_a_retry_after_past_the_deadline_is_honoured(workflow: str) -> None:
    health = ServerHealth("http://h", lambda failures, header: 30.0)
    health.set_deadline(0.0, 5.0)
    request = create_workflow(workflow_record(workflow))
    answer = Result(outcome=Outcome.RETRY, status=503, retry_after="30")
    assert health.failure(0.0, failed(request, 0.0), answer, 0) >= 30.0


# -- the journal's bookkeeping (in memory: what a commit would write) ----------------------


def test_the_journal_writes_the_coalesced_state_once_and_acks_what_it_replaces(
    workflow: str,
) -> None:
    from dotflow_server_api.delivery.journal import Journal

    journal = Journal(lambda: None, lambda: 0.0)  # type: ignore[arg-type, return-value]
    queue = RequestQueue(100, Stats(), journal.mark_changed)
    queue.add(item(update_task(sample_task_record(workflow, 1, TaskStatus.IN_PROGRESS))))
    first = journal.take()
    (line,) = first.entries
    assert line[0] == 1 and first.acks == []
    replayed = item(update_task(sample_task_record(workflow, 1, TaskStatus.COMPLETED)), seq=-5)
    replayed.unsent_replay = True
    (loaded,) = journal.take(only=[replayed]).entries  # a replay journals what it reads first
    queue.add_replayed([replayed])  # the replayed update absorbs this run's pending one
    second = journal.take()
    assert [kept for _, kept in second.entries] == [replayed]
    assert sorted(second.acks) == [1, loaded[0]]  # both older lines are superseded
    (sent,) = drain(queue)
    queue.finished(sent)
    journal.mark_settled(sent)
    assert journal.take().acks == [second.entries[0][0]]
    assert journal.live == 0


def test_a_batch_takes_the_tasks_with_their_workflows_create_and_no_other_workflow(
    workflow: str,
) -> None:
    queue = RequestQueue(100, Stats())
    queue.add(item(create_workflow(workflow_record(workflow))))
    queue.add(item(create_workflow(workflow_record("other"))))
    for task_id in (1, 2, 3):
        queue.add(item(create_task(sample_task_record(workflow, task_id))))
    queue.add(item(create_task(sample_task_record("other", 1))))
    queue.add(item(update_workflow(workflow_record(workflow, WorkflowStatus.COMPLETED))))
    first = queue.next_ready(0.0)
    assert first is not None and first.request.kind == CREATE_WORKFLOW
    riders = queue.next_batch(first, 0.0, 10)
    # The tasks ride with the create; the final status waits for them; "other" stays.
    assert [(r.request.workflow_id, r.request.task_id) for r in riders] == [
        (workflow, 1),
        (workflow, 2),
        (workflow, 3),
    ]
    (second,) = drain(queue)
    assert second.request.workflow_id == "other" and second.request.kind == CREATE_WORKFLOW


def test_a_batch_is_capped_and_what_is_put_back_goes_next_in_order(workflow: str) -> None:
    queue = RequestQueue(100, Stats())
    for task_id in (1, 2, 3, 4):
        queue.add(item(create_task(sample_task_record(workflow, task_id))))
    first = queue.next_ready(0.0)
    assert first is not None
    riders = queue.next_batch(first, 0.0, 2)
    assert [r.request.task_id for r in riders] == [2, 3]
    assert queue.in_flight == 3
    queue.put_back(riders[1])
    assert queue.in_flight == 2 and riders[1].attempts == 0
    assert [taken.request.task_id for taken in drain(queue)] == [3, 4]


def _created_workflow_with_tasks(workflow: str, *, new: bool) -> RequestQueue:
    """A workflow whose create was delivered (answered 201 when ``new``), its tasks'
    creates and its final status queued."""
    queue = RequestQueue(100, Stats())
    queue.add(item(create_workflow(workflow_record(workflow))))
    (create,) = drain(queue)
    queue.finished(create)
    if new:
        queue.new_workflows.add(workflow)
    for task_id in (1, 2, 3):
        queue.add(item(create_task(sample_task_record(workflow, task_id))))
    queue.add(item(update_workflow(workflow_record(workflow, WorkflowStatus.COMPLETED))))
    return queue


def _answered_then_next(queue: RequestQueue, *sent: Item) -> Item:
    """``sent`` are answered for good; the one request that may go next."""
    for answered in sent:
        queue.finished(answered)
    (following,) = drain(queue)
    return following


def test_a_new_workflows_final_status_goes_last_in_the_batch_of_its_tasks(
    workflow: str,
) -> None:
    queue = _created_workflow_with_tasks(workflow, new=True)
    first = queue.next_ready(0.0)
    assert first is not None and first.request.task_id == 1
    riders = queue.next_batch(first, 0.0, 10)
    assert [(r.request.task_id, r.request.final) for r in riders] == [
        (2, False),
        (3, False),
        (None, True),
    ]
    assert queue.in_flight == 4 and drain(queue) == []
    for sent in (first, *riders):
        queue.finished(sent)
    assert queue.size == 0 and workflow not in queue.new_workflows  # its run is over


def test_the_final_status_waits_when_the_workflow_existed_before_this_run(
    workflow: str,
) -> None:
    queue = _created_workflow_with_tasks(workflow, new=False)  # its create answered 200
    first = queue.next_ready(0.0)
    assert first is not None
    riders = queue.next_batch(first, 0.0, 10)
    assert [r.request.task_id for r in riders] == [2, 3]  # another run's task may refuse one
    assert _answered_then_next(queue, first, *riders).request.final


def test_the_final_status_waits_for_a_task_request_the_batch_has_no_room_for(
    workflow: str,
) -> None:
    queue = _created_workflow_with_tasks(workflow, new=True)
    first = queue.next_ready(0.0)
    assert first is not None
    riders = queue.next_batch(first, 0.0, 1)  # task 3's create is left out
    assert [r.request.task_id for r in riders] == [2]
    (third,) = drain(queue)
    assert third.request.task_id == 3  # the final status still waits for it
    assert _answered_then_next(queue, first, *riders, third).request.final


def test_the_final_status_waits_for_a_task_request_in_flight_outside_the_batch(
    workflow: str,
) -> None:
    queue = _created_workflow_with_tasks(workflow, new=True)
    alone = queue.next_ready(0.0)  # task 1's create, sent on its own
    assert alone is not None and alone.request.task_id == 1
    queue.add(item(update_task(sample_task_record(workflow, 1, TaskStatus.COMPLETED))))
    first = queue.next_ready(0.0)
    assert first is not None and first.request.task_id == 2
    riders = queue.next_batch(first, 0.0, 10)
    assert [r.request.task_id for r in riders] == [3]  # task 1 is busy elsewhere
    update = _answered_then_next(queue, alone, first, *riders)
    assert update.request.task_id == 1
    riders = queue.next_batch(update, 0.0, 10)
    assert [r.request.final for r in riders] == [True]  # now it rides after task 1's update


def test_a_final_status_sent_in_a_failed_batch_goes_again_after_its_tasks(
    workflow: str,
) -> None:
    queue = _created_workflow_with_tasks(workflow, new=True)
    first = queue.next_ready(0.0)
    assert first is not None
    batch = [first, *queue.next_batch(first, 0.0, 10)]
    for sent in batch:  # the whole batch failed: everything goes again, in order
        queue.retry(sent, 1.0)
    assert drain(queue, 0.5) == []
    again = queue.next_ready(1.0)
    assert again is not None
    riders = queue.next_batch(again, 1.0, 10)
    assert [r.request.task_id for r in [again, *riders]] == [1, 2, 3, None]
    assert riders[-1].request.final
