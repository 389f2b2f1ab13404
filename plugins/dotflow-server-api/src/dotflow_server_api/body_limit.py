"""The largest task body the destination takes, learned from its HTTP 413 answers.

A proxy in front of the server may accept less than the client's 5,000,000-byte
cap (nginx's default ``client_max_body_size`` is 1 MB). Rather than dropping
every task whose contexts are large, the delivery halves the body it sent,
sends it again cut to that size (shorter context previews, see
:func:`~.payloads.fitted`) and builds every later task body within it.
"""

from __future__ import annotations

import threading
from typing import Final

from dotflow_server_api.payloads import MAX_BODY_BYTES

#: Smallest limit learned: below it a 413 is a refusal like any other (the event dropped).
FLOOR_BYTES: Final = 16_384


class BodyLimit:
    """The current limit, lowered by :meth:`refused`; thread-safe."""

    def __init__(self, start: int = MAX_BODY_BYTES) -> None:
        self._lock = threading.Lock()
        self._bytes = start

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def lowered(self) -> bool:
        """True once a 413 lowered the limit below the client's own cap."""
        return self._bytes < MAX_BODY_BYTES

    def refused(self, size: int) -> int | None:
        """A body of ``size`` bytes got HTTP 413: the limit to send it again within, or
        None when it cannot be made small enough (at or under :data:`FLOOR_BYTES`)."""
        with self._lock:
            if size > self._bytes:
                return self._bytes  # built before an earlier 413 lowered the limit
            smaller = size // 2
            if smaller < FLOOR_BYTES:
                return None
            self._bytes = smaller
            return smaller
