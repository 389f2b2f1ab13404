"""Delivery's log lines other than outages: rejections, misconfiguration, the summary."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from dotflow_server_api.delivery.items import Item, Stats
from dotflow_server_api.settings import BASE_URL_ENV, TOKEN_ENV
from dotflow_server_api.transport import Result

logger = logging.getLogger("dotflow.server.api")

#: Every endpoint of the contract (after a 404 said the base URL is wrong, their 404s are counted).
_ALL_ENDPOINTS = tuple(
    f"{method} {template}"
    for method, template in (
        ("POST", "/workflows"),
        ("PATCH", "/workflows/{workflow_id}"),
        ("POST", "/workflows/{workflow_id}/tasks"),
        ("PATCH", "/workflows/{workflow_id}/tasks/{task_id}"),
    )
)
#: The prefix the reference server serves its API under.
API_PREFIX = "/api/v1"


def not_found_hint(base_url: str, path: str) -> str:
    """One ERROR's text for a 404 to a run's first request: names the URL and the likely cause."""
    prefix = urlsplit(base_url).path.rstrip("/")
    if prefix:
        cause = (
            f"the server may not serve its API under {prefix!r} (a prefix too many?), "
            f"or expects another one"
        )
    else:
        cause = f"the server's API may live under a prefix such as {API_PREFIX!r} (missing?)"
    return (
        f"{BASE_URL_ENV}={base_url} looks wrong: {base_url}{path} answered HTTP 404 "
        f"(not found); {cause}; check the URL the server documents for its API"
    )


class RejectionLog:
    """Logs each kind of rejection once (per endpoint and status), then only counts."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._logged: set[tuple[str, int | None]] = set()
        self._first_answered = False
        self._body_limit_said = False

    def first_answer(self, item: Item, result: Result) -> None:
        """The first answer of a run: a 404 means a wrong base URL, said once and loudly."""
        if self._first_answered:
            return
        self._first_answered = True
        if result.status == 404:  # every endpoint's 404s are counted from here on
            self._logged.update((endpoint, 404) for endpoint in _ALL_ENDPOINTS)
            logger.error(
                "%s; the event is dropped", not_found_hint(self.base_url, item.request.path)
            )

    def not_found(self, message: str, *, log: bool) -> None:
        """The next-id lookup (a run's first request) got a 404: one ERROR, unless not ``log``."""
        if self._first_answered:
            return
        self._first_answered = True
        self._logged.update((endpoint, 404) for endpoint in _ALL_ENDPOINTS)
        if log:
            logger.error("%s", message)

    def rejected(self, item: Item, result: Result) -> None:
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
            self.base_url,
            item.request.endpoint,
            result.status,
            result.detail or "(empty body)",
            result.status,
        )

    def body_limit_lowered(self, item: Item, size: int, limit: int) -> None:
        """A 413 lowered the task body limit: one WARNING per run, then DEBUG lines."""
        level = logging.DEBUG if self._body_limit_said else logging.WARNING
        self._body_limit_said = True
        logger.log(
            level,
            "%s answered HTTP 413 (too large) to %s with a body of %d bytes; task bodies "
            "are cut to %d bytes from now on (contexts become shorter previews, every task "
            "and status still arrives); raise the server's or proxy's body limit (nginx: "
            "client_max_body_size) to keep them whole",
            self.base_url,
            item.request.endpoint,
            size,
            limit,
        )

    def token_rejected(self, item: Item, result: Result) -> None:
        logger.error(
            "%s rejected the token (HTTP %s on %s): nothing more is sent in this run; check %s",
            self.base_url,
            result.status,
            item.request.endpoint,
            TOKEN_ENV,
        )


def queue_full(max_queue: int) -> None:
    logger.warning(
        "the delivery queue is full (%d requests, SERVER_MAX_QUEUE): pending updates "
        "are coalesced, creates and final statuses are kept, intermediate updates "
        "are dropped and counted",
        max_queue,
    )


def summary(stats: Stats, base_url: str, outbox_directory: str | None) -> None:
    """The last line of a delivery: counts of delivered, spooled and dropped events."""
    if not stats.anything and not stats.requests:
        return
    level = logging.WARNING if (stats.spooled or stats.dropped) else logging.INFO
    where = f" to the outbox {outbox_directory}" if stats.spooled and outbox_directory else ""
    logger.log(
        level,
        "dotflow-server-api: %d event(s) delivered to %s in %d request(s), "
        "%d spooled%s, %d dropped",
        stats.delivered,
        base_url,
        stats.requests,
        stats.spooled,
        where,
        stats.dropped,
    )
