"""Reading the outbox back: claim files, set poisoned lines aside, turn requests into items.

Runs on a delivery worker thread (never the workflow's), without the
delivery's lock: this is the disk I/O of a replay.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from dotflow_server_api.delivery.items import Item

if TYPE_CHECKING:
    from dotflow_server_api.outbox import Outbox, Recovered

logger = logging.getLogger("dotflow.server.api")

#: Sequence numbers of replayed requests start here, below every new request's.
REPLAY_SEQ_START = -(10**15)


class Loaded:
    """One claimed file's requests, as queue items, and whether its bad lines were kept aside."""

    __slots__ = ("items", "kept_aside", "path", "rejected")

    def __init__(self, path: Path, items: list[Item], rejected: int, kept_aside: bool) -> None:
        self.path = path
        self.items = items
        self.rejected = rejected
        self.kept_aside = kept_aside


def load(outbox: Outbox, owned: set[Path], seq: int = REPLAY_SEQ_START) -> list[Loaded]:
    """Claim every file waiting in ``outbox`` and read it (rejected lines go to ``rejected/``)."""
    loaded: list[Loaded] = []
    for recovered in outbox.claim(owned):
        items = []
        for entry in recovered.contents.entries:
            seq += 1
            items.append(
                Item(
                    request=entry.request,
                    seq=seq,
                    first_enqueued_at=entry.first_enqueued_at,
                    attempts=entry.attempts,
                    events=entry.events,
                    unsent_replay=True,
                    in_doubt=entry.in_doubt,
                )
            )
        loaded.append(Loaded(recovered.path, items, *_keep_aside(outbox, recovered)))
    for stuck in outbox.stuck:
        logger.error("outbox entry %s is not replayed: %s", stuck.path, stuck.reason)
    return loaded


def _keep_aside(outbox: Outbox, recovered: Recovered) -> tuple[int, bool]:
    """Move the file's rejected lines to ``rejected/``; (how many, whether that worked)."""
    contents = recovered.contents
    if contents.torn:
        logger.info(
            "outbox file %s ends with a line cut short by a crash; the lines before it are "
            "replayed",
            recovered.path,
        )
    if not contents.rejected:
        return 0, True
    count = len(contents.rejected)
    try:
        target = outbox.reject(recovered.path, contents.rejected)
    except OSError as error:
        logger.error(
            "outbox file %s: %d line(s) fail the wire contract (first: %s) and cannot be kept "
            "aside (%s); the file stays as it is",
            recovered.path,
            count,
            contents.rejected[0].reason,
            error.strerror,
        )
        return count, False
    logger.error(
        "outbox file %s: %d line(s) fail the wire contract and are never sent (first, line %d: "
        "%s); kept in %s",
        recovered.path,
        count,
        contents.rejected[0].number,
        contents.rejected[0].reason,
        target,
    )
    return count, True


def retire(outbox: Outbox, loaded: Loaded, journaled: bool) -> None:
    """The file's requests are in this process's journal (or not): delete it, or give it back."""
    if journaled and loaded.kept_aside:
        with contextlib.suppress(FileNotFoundError):
            loaded.path.unlink()
        return
    with contextlib.suppress(OSError):
        outbox.release(loaded.path)
