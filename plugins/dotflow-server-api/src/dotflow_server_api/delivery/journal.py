"""The journal: undelivered requests kept in the outbox folder as they wait (kill -9 loses none).

Group commit: hooks only mark a request *dirty* (in memory, under the
delivery's lock); a journal thread wakes :data:`COMMIT_DELAY` after the first
dirty request, takes everything dirty at once, and writes it with one
``write`` and one ``fsync``, outside the delivery's lock, never on the
workflow's thread. A request delivered before its commit is never written at
all (the normal, fast path does no disk I/O). A request that changed again
(coalesced) is written again and its older line acked; a settled one is
acked. When no line of the file is live any more, the file is deleted.

The file is claimed by this process from the start (see :mod:`..outbox`):
no other runner replays it while this one lives; after a crash, the next run
(or ``dotflow outbox flush``) finds the claim's owner dead and recovers it.
At ``close``, what is left stays, and the file is released for any run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

from dotflow_server_api.delivery.items import Item

if TYPE_CHECKING:
    from dotflow_server_api.outbox import Outbox

logger = logging.getLogger("dotflow.server.api")

#: Seconds from the first dirty request to its commit: requests delivered within
#: that time are never written, and anything older than it plus one write is
#: durable (the promise: every event older than 0.5 s survives a kill -9).
COMMIT_DELAY: Final = 0.15
#: The journals this process holds open: never claimed for replay by itself.
LIVE_PATHS: set[Path] = set()


class Batch:
    """What one commit writes: request lines, then ack lines."""

    __slots__ = ("acks", "entries", "items")

    def __init__(self) -> None:
        self.entries: list[tuple[int, Item]] = []
        self.acks: list[int] = []
        self.items: list[Item] = []

    def __bool__(self) -> bool:
        return bool(self.entries or self.acks)


class Journal:
    """This delivery's journal; the ``mark_*`` and ``take`` methods need the delivery's lock.

    :param outbox: gives the outbox folder (imported on first use).
    :param clock: monotonic time, for :attr:`dirty_since`.
    """

    def __init__(self, outbox: Callable[[], Outbox], clock: Callable[[], float]) -> None:
        self._outbox = outbox
        self._clock = clock
        self._dirty: dict[int, Item] = {}
        self._acks: list[int] = []
        self._superseded: dict[int, list[int]] = {}
        #: Lines written (or being written) and not acked.
        self._live = 0
        self._next = 0
        #: When the oldest dirty request became dirty (monotonic), or None.
        self.dirty_since: float | None = None
        self._io = threading.Lock()
        self._path: Path | None = None
        self._handle: IO[str] | None = None
        self._failed = False

    # -- in memory, under the delivery's lock ------------------------------------

    def mark_changed(self, item: Item, absorbed: Item | None) -> None:
        """``item`` is new, or absorbed another request (which is gone: its lines with it)."""
        self._dirty[id(item)] = item
        if absorbed is not None:
            self._dirty.pop(id(absorbed), None)
            gone = self._superseded.pop(id(absorbed), [])
            if absorbed.jid is not None:
                gone.append(absorbed.jid)
                absorbed.jid = None
            if gone:
                self._superseded.setdefault(id(item), []).extend(gone)
        self._due()

    def _due(self) -> None:
        if self.dirty_since is None:
            self.dirty_since = self._clock()

    def mark_settled(self, item: Item) -> None:
        """``item`` was delivered or dropped: its lines are acked, it is not written any more."""
        self._dirty.pop(id(item), None)
        if item.jid is not None:
            self._acks.append(item.jid)
            item.jid = None
        self._acks.extend(self._superseded.pop(id(item), ()))
        if self._acks:
            self._due()

    @property
    def pending(self) -> bool:
        return bool(self._dirty or self._acks)

    def take(self, only: list[Item] | None = None) -> Batch:
        """Take what is dirty (``only``: just these requests) for one commit; numbers the lines."""
        batch = Batch()
        chosen = self._dirty if only is None else {id(item): item for item in only}
        for key, item in list(chosen.items()):
            if key in self._dirty or item.jid is None:
                self._dirty.pop(key, None)
                self._next += 1
                if item.jid is not None:
                    batch.acks.append(item.jid)
                item.jid = self._next
                batch.entries.append((self._next, item))
                batch.items.append(item)
                batch.acks.extend(self._superseded.pop(key, ()))
        if only is None:
            batch.acks.extend(self._acks)
            self._acks = []
            self.dirty_since = None
        self._live += len(batch.entries) - len(batch.acks)
        return batch

    @property
    def live(self) -> int:
        return self._live

    # -- on disk, outside the delivery's lock -----------------------------------

    def write(self, batch: Batch, *, empty: bool) -> bool:
        """Write ``batch`` and fsync; delete the file instead when ``empty`` (nothing live).

        :returns: False when the outbox cannot be written (logged once).
        """
        from dotflow_server_api.outbox_lines import Entry, ack_line

        with self._io:
            if empty:
                self._delete()
                return True
            if not batch:
                return True
            lines = [
                Entry(
                    request=item.request,
                    first_enqueued_at=item.first_enqueued_at,
                    attempts=item.attempts,
                    events=item.events,
                    in_doubt=item.in_doubt,
                    n=number,
                    seq=item.seq,
                ).to_line()
                for number, item in batch.entries
            ]
            if batch.acks:
                lines.append(ack_line(batch.acks))
            try:
                handle = self._open()
                handle.write("".join(lines))
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as error:
                self._failed_once(error)
                return False
        return True

    def close(self, keep: bool) -> Path | None:
        """End this journal: release the file for any run when ``keep``, else delete it."""
        with self._io:
            path = self._path
            if path is None:
                return None
            if not keep:
                self._delete()
                return None
            self._close_handle()
            self._path = None
            self._live = 0
            LIVE_PATHS.discard(path)
            try:
                return self._outbox().release(path)
            except OSError as error:
                self._failed_once(error)
                return path

    def forget(self) -> None:
        """In a forked child: the parent's file is the parent's (never touched here)."""
        self._io = threading.Lock()
        self._handle = None
        self._path = None
        self._dirty.clear()
        self._acks.clear()
        self._superseded.clear()
        self._live = 0
        self.dirty_since = None

    def _open(self) -> IO[str]:
        if self._handle is None:
            outbox = self._outbox()
            outbox.ensure_directory()
            path = outbox.new_journal_path()
            LIVE_PATHS.add(path)  # before it exists: this process's replay never claims it
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            self._handle = os.fdopen(descriptor, "w", encoding="ascii", errors="replace")
            self._path = path
        return self._handle

    def _close_handle(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
            self._handle = None

    def _delete(self) -> None:
        self._close_handle()
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
            LIVE_PATHS.discard(self._path)
            self._path = None
        self._live = 0

    def _failed_once(self, error: OSError) -> None:
        if not self._failed:
            self._failed = True
            logger.error(
                "cannot write the outbox journal (%s): undelivered events are kept in memory "
                "only, and lost if this process is killed or ends before they are sent",
                error.strerror or error,
            )
