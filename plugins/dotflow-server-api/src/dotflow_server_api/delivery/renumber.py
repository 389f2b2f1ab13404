"""Moving a run's tasks to free ids when the server says their ids are another run's (409).

A server that keeps runs (the reference server) refuses a write of run R that
would change a task another run stored or reserved: HTTP 409 with the next
free id. The run's tasks whose create the server has not acknowledged are then
reported under free ids, all shifted by the same offset (their relative order
kept), and one WARNING names the old and the new ids. A task the server has
acknowledged (its create was delivered, or only its updates are queued: the
create was delivered earlier, maybe by another process) keeps its id: it is
*pinned*.

Streams of the queue stay keyed by the id a task was first queued under (its
*key*, :attr:`~.items.Item.task_key`); the id a request goes out under is
``pin`` or ``key + shift``. Requests replayed from the outbox carry the ids
they were last journaled under and their run's id, so a replay takes the same
path: a stale outbox never overwrites newer rows. Single-threaded: the caller
holds the delivery's lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from dotflow_server_api.delivery.items import Item, Stream
from dotflow_server_api.payloads import CREATE_TASK, renumbered

logger = logging.getLogger("dotflow.server.api")

RunKey = tuple[str, str]


class RunIds:
    """The ids of one run's tasks: the offset of the unpinned ones, and the pinned ones."""

    __slots__ = ("pins", "shift")

    def __init__(self) -> None:
        self.shift = 0
        self.pins: dict[int, int] = {}

    def wire_id(self, key: int) -> int:
        pinned = self.pins.get(key)
        return key + self.shift if pinned is None else pinned


class Renumbering:
    """Every run's ids (runs that had a task acknowledged or met a conflict)."""

    def __init__(self) -> None:
        self._runs: dict[RunKey, RunIds] = {}
        #: Renumberings so far (each logged once).
        self.moves = 0

    def _run(self, item: Item) -> RunIds | None:
        run_id = item.request.run_id
        if run_id is None or item.task_key is None:
            return None
        return self._runs.get((item.request.workflow_id, run_id))

    def translate(self, item: Item) -> bool:
        """Point ``item``'s request at its task's current id; True if it changed."""
        ids = self._run(item)
        if ids is None or item.task_key is None:
            return False
        wire = ids.wire_id(item.task_key)
        if wire == item.request.task_id:
            return False
        item.request = renumbered(item.request, wire, create=item.task_key not in ids.pins)
        return True

    def delivered(self, item: Item) -> bool:
        """A task request of a run was acknowledged: its id is the task's for good.

        :returns: True when the task's other requests must be translated (the run
            had moved its unpinned tasks since this one was sent).
        """
        run_id = item.request.run_id
        if run_id is None or item.task_key is None or item.request.task_id is None:
            return False
        ids = self._runs.setdefault((item.request.workflow_id, run_id), RunIds())
        moved = ids.wire_id(item.task_key) != item.request.task_id
        ids.pins[item.task_key] = item.request.task_id
        return moved

    def hold(self, item: Item) -> None:
        """``item``, a create of a run, may be stored under the id it was sent with:
        that id is its task's until the server refuses it (see :meth:`conflict`)."""
        run_id, key, sent = item.request.run_id, item.task_key, item.request.task_id
        if run_id is None or key is None or sent is None:
            return
        self._runs.setdefault((item.request.workflow_id, run_id), RunIds()).pins[key] = sent

    def conflict(
        self,
        item: Item,
        next_free: int,
        streams: Iterable[Stream],
        refused: frozenset[int] = frozenset(),
    ) -> bool:
        """The server refused ``item`` (409, next free id ``next_free``): move the run's
        unacknowledged tasks to free ids from ``next_free`` on; True if they moved.

        A task whose create may be stored under the id it was sent with (sent without
        a clear answer, see ``Item.in_doubt``) keeps that id, unless it is in
        ``refused``: the keys of the tasks the same answer refused too (a batch's).
        False when they had moved already since ``item`` was sent (an earlier answer):
        ``item`` is then only sent again under its task's current id.
        """
        run_id, key, sent = item.request.run_id, item.task_key, item.request.task_id
        assert run_id is not None and key is not None and sent is not None
        ids = self._runs.setdefault((item.request.workflow_id, run_id), RunIds())
        if ids.wire_id(key) != sent:
            return False
        ids.pins.pop(key, None)  # refused: not this run's task on the server
        moving = {key}
        #: Above every id this run holds or may hold: the server's answer may predate
        #: one of this run's writes (in flight then, or answered since).
        floor = max(next_free, max(ids.pins.values(), default=0) + 1)
        for stream in streams:
            task = stream.task_id
            if stream.in_flight is not None and stream.in_flight.request.task_id is not None:
                floor = max(floor, stream.in_flight.request.task_id + 1)
            if task is None or task == key or task in ids.pins:
                continue
            doubtful = None if task in refused else _doubtful_id(stream)
            if doubtful is not None:  # stays where it may be stored; its own 409 moves it
                ids.pins[task] = doubtful
                floor = max(floor, doubtful + 1)
            elif _has_create(stream):
                moving.add(task)
            else:  # only updates queued: the server acknowledged its create earlier
                ids.pins[task] = ids.wire_id(task)
                floor = max(floor, ids.pins[task] + 1)
        old = sorted(ids.wire_id(task) for task in moving)
        ids.shift = max(floor - min(moving), ids.shift + 1)
        new = sorted(ids.wire_id(task) for task in moving)
        self.moves += 1
        logger.warning(
            "workflow %s: task id(s) %s of run %s are taken by another run on the server "
            "(HTTP 409); this run's task(s) are reported as %s instead, in the same order",
            item.request.workflow_id,
            _ids(old),
            run_id,
            _ids(new),
        )
        return True


def run_streams(streams: dict[tuple[str, int | None], Stream], item: Item) -> Iterator[Stream]:
    """The task streams of ``item``'s workflow holding a request of ``item``'s run."""
    for stream in list(streams.values()):
        if stream.workflow_id != item.request.workflow_id or stream.task_id is None:
            continue
        requests = [*stream.pending, *([stream.in_flight] if stream.in_flight else [])]
        if any(queued.request.run_id == item.request.run_id for queued in requests):
            yield stream


def _has_create(stream: Stream) -> bool:
    flying = stream.in_flight
    if flying is not None and not flying.abandoned and flying.request.kind == CREATE_TASK:
        return True
    return any(queued.request.kind == CREATE_TASK for queued in stream.pending)


def _doubtful_id(stream: Stream) -> int | None:
    """The id a queued create of the task was sent under and may be stored under (see
    ``Item.in_doubt``), else None. Moving that task could store it twice."""
    for queued in stream.pending:
        if queued.in_doubt and queued.request.task_id is not None:
            return queued.request.task_id
    return None


def _ids(numbers: list[int]) -> str:
    """``3-7`` for a run of consecutive ids, else a comma list (the first 10 and a count)."""
    if numbers and numbers == list(range(numbers[0], numbers[0] + len(numbers))):
        return str(numbers[0]) if len(numbers) == 1 else f"{numbers[0]}-{numbers[-1]}"
    shown = ", ".join(map(str, numbers[:10]))
    return shown if len(numbers) <= 10 else f"{shown} and {len(numbers) - 10} more"
