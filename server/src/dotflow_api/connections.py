"""Connection hygiene for uvicorn: idle and slow-header connections cannot exhaust us.

uvicorn closes a keep-alive connection that stays quiet after a response, but a new
connection that sends nothing, or sends its request headers a byte at a time, is kept
for ever, holding a file descriptor. A few hundred of them (a scanner, a broken proxy,
a slow-loris client) use up the process's descriptors, after which no one is served.
:class:`GuardedH11Protocol` adds, per connection:

* a **header timeout**: a connection that has not sent a complete request head within
  ``header_timeout`` seconds of connecting (or of its previous response) is closed;
* **eviction**: when more than ``max_connections`` connections are open, the ones
  that have waited longest without a request in progress are closed first, so a
  newcomer with a real request always gets in before descriptors run out.

A request whose headers arrived is never cut by either. Pass the class as
``uvicorn.Config(http=GuardedH11Protocol, backlog=accept_batch())`` and set the
limits with :func:`configure`.

asyncio accepts up to ``backlog`` connections in a row before any of them reaches
``connection_made`` (where eviction happens); running out of descriptors in such a
burst makes it stop accepting for a second, every time. So the accept batch is kept
small next to the descriptors, and the default connection limit leaves room for one
batch: descriptors = reserve + max connections + one batch.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import OrderedDict
from typing import Any, Final

from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

logger = logging.getLogger("dotflow_api.connections")

#: Seconds a connection may take to send a complete request head.
DEFAULT_HEADER_TIMEOUT: Final = 10.0
#: Descriptors kept free for the database (40 pooled connections at most), log files,
#: imported modules and the like.
DESCRIPTOR_RESERVE: Final = 96
#: Seconds between two warnings about evicted connections.
_WARN_EVERY: Final = 10.0

_CONFIG_KEY: Final = "_dotflow_connection_limits"


def raise_descriptor_limit() -> int:
    """Raise the soft limit on open files to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):  # pragma: no cover - refused by the platform
            logger.debug("cannot raise RLIMIT_NOFILE from %d", soft)
    return int(soft)


def accept_batch() -> int:
    """How many connections asyncio may accept in a row (uvicorn's ``backlog``)."""
    return max(8, min(2048, (raise_descriptor_limit() - DESCRIPTOR_RESERVE) // 4))


def default_max_connections() -> int:
    """Connections one process keeps open at most: what the descriptors allow, less a
    reserve for the database and files, and less one accept batch."""
    return max(16, raise_descriptor_limit() - DESCRIPTOR_RESERVE - accept_batch())


def configure(config: Config, *, header_timeout: float, max_connections: int) -> None:
    """Attach the limits to a uvicorn config (they travel with it to worker processes)."""
    setattr(config, _CONFIG_KEY, (float(header_timeout), int(max_connections)))


class _Waiting:
    """The connections of one server that wait for a request, oldest first."""

    def __init__(self) -> None:
        self.order: OrderedDict[GuardedH11Protocol, None] = OrderedDict()
        self.evicted = 0
        self.last_warning = 0.0


_WAITING: dict[int, _Waiting] = {}


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout and eviction (see the module)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout, self.max_connections = getattr(
            config, _CONFIG_KEY, (DEFAULT_HEADER_TIMEOUT, default_max_connections())
        )
        self._waiting = _WAITING.setdefault(id(server_state), _Waiting())
        self._header_timer: asyncio.TimerHandle | None = None
        self._seen_cycle: object = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[arg-type]
        self._await_request()
        self._evict_if_crowded()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._track_cycle()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._track_cycle():
            self._await_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._request_started()
        super().connection_lost(exc)

    # -- bookkeeping ----------------------------------------------------------------

    def _track_cycle(self) -> bool:
        """True when a new request (a complete head) has started since the last call."""
        if self.cycle is not None and self.cycle is not self._seen_cycle:
            self._seen_cycle = self.cycle
            if not self.cycle.response_complete:
                self._request_started()
            return True
        return False

    def _await_request(self) -> None:
        self._waiting.order[self] = None
        self._waiting.order.move_to_end(self)
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._on_header_timeout)

    def _request_started(self) -> None:
        self._waiting.order.pop(self, None)
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self in self._waiting.order:
            self._close()

    def _close(self) -> None:
        self._waiting.order.pop(self, None)
        if not self.transport.is_closing():
            self.transport.close()

    def _evict_if_crowded(self) -> None:
        excess = len(self.connections) - self.max_connections
        while excess > 0 and self._waiting.order:
            oldest = next(iter(self._waiting.order))
            if oldest is self and len(self._waiting.order) == 1:
                break
            if oldest is self:
                self._waiting.order.move_to_end(self)
                continue
            oldest._close()
            self._waiting.evicted += 1
            excess -= 1
        now = time.monotonic()
        if self._waiting.evicted and now - self._waiting.last_warning > _WARN_EVERY:
            logger.warning(
                "closed %d connection(s) that sent no request, to stay within %d open "
                "connections (see --max-connections)",
                self._waiting.evicted,
                self.max_connections,
            )
            self._waiting.evicted = 0
            self._waiting.last_warning = now
