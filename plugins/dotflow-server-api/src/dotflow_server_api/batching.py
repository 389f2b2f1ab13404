"""Batches: several of a workflow's events in one ``POST /workflows/{workflow_id}/events``.

A server that takes batches says so in the ``Dotflow-Batch`` header of every
answer (``max-events=1000, max-bytes=6000000``), so the client learns it from
its first answer, without a round trip of its own. :class:`BatchSupport` keeps
what the destination offers; :func:`encode_batch` builds a batch's body from
the single requests' bodies (their bytes, never parsed again) and
:func:`split_answer` turns the server's answer back into one :class:`Result`
per event, each handled as the single request's answer would be (a 409 on one
task moves that run's tasks to free ids, as for a single request).

A server without the header, or one that refuses the endpoint itself (404,
405, ...), gets single requests, as in the seed contract.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from typing import Final

from dotflow_core.plugin import one_line
from dotflow_server_api.payloads import Request, workflow_path
from dotflow_server_api.transport import SNIPPET_LIMIT, Outcome, Result, classify_status

logger = logging.getLogger("dotflow.server.api")

#: The most events the client puts in one batch, whatever the server offers.
CLIENT_MAX_EVENTS: Final = 1000
#: The most body bytes the client puts in one batch, whatever the server offers.
CLIENT_MAX_BYTES: Final = 8_000_000
#: Answers to a batch that mean "not this endpoint" (a server or proxy without it,
#: or one that cannot read the batch body): send single requests from now on.
REFUSED_STATUSES: Final = frozenset({400, 404, 405, 410, 415, 422, 501})
#: Too large for the server or a proxy in front of it: halve the batch and try again.
TOO_LARGE: Final = 413
#: ``{"events":[`` ... ``]}`` and, per event, ``{"op":"<kind>","body":`` ... ``}``.
_ENVELOPE_BYTES: Final = len(b'{"events":[]}')
_EVENT_OVERHEAD: Final = len(b'{"op":"update_workflow","body":},')

_FIELD = re.compile(r"^\s*([a-z-]+)\s*=\s*(\d{1,12})\s*$")


def parse_offer(header: str) -> tuple[int, int] | None:
    """``(max_events, max_bytes)`` from a ``Dotflow-Batch`` header, capped by the client's
    own limits; None when the header says nothing usable."""
    values: dict[str, int] = {}
    for part in header.split(","):
        match = _FIELD.match(part)
        if match:
            values[match.group(1)] = int(match.group(2))
    events, size = values.get("max-events"), values.get("max-bytes")
    if not events or not size or events < 2:
        return None
    return min(events, CLIENT_MAX_EVENTS), min(size, CLIENT_MAX_BYTES)


class BatchSupport:
    """What one destination offers: learned from its answers, shrunk by its refusals.

    ``learn`` runs on the threads that send (any request: the next-id lookup too);
    the delivery reads the state under its own lock. Each assignment is atomic, and
    a stale read only means one more single request or one batch that is refused.
    """

    def __init__(self) -> None:
        #: True once any answer came (with or without the header).
        self.known = False
        #: The most events and bytes per batch, or None: single requests only.
        self.offer: tuple[int, int] | None = None
        #: The server refused the endpoint itself: never batch again (this process).
        self.refused_for_good = False

    def learn(self, header: str | None, status: int | None) -> None:
        """An answer came with ``status`` (None: no answer) and this ``Dotflow-Batch`` header.

        A 2xx without the header withdraws the offer (a server that no longer batches);
        an error without it keeps the offer (a proxy's error page does not carry it).
        """
        if status is None:
            return
        self.known = True
        if self.refused_for_good:
            return
        if header is not None:
            offer = parse_offer(header)
            if offer != self.offer and self.offer is not None and offer is not None:
                # Keep a size the server refused before (413) rather than grow back to it.
                offer = (min(offer[0], self.offer[0]), min(offer[1], self.offer[1]))
            self.offer = offer
        elif 200 <= status < 300:
            self.offer = None

    def refused(self, result: Result, events: int) -> bool:
        """The batch endpoint refused a batch of ``events`` as a whole.

        :returns: True when its events should be sent again (in smaller batches after a
            413, else as single requests); False when the answer was not a refusal.
        """
        if result.status == TOO_LARGE and self.offer is not None and events > 1:
            max_events, max_bytes = self.offer
            self.offer = (max(min(max_events, events // 2), 1), max(max_bytes // 2, 1))
            logger.debug("batch of %d events too large (HTTP 413); halving", events)
            return True
        if result.status in REFUSED_STATUSES or result.status == TOO_LARGE:
            if not self.refused_for_good:
                logger.info(
                    "the server refused the batch endpoint (%s); sending single requests",
                    result.describe(),
                )
            self.refused_for_good = True
            self.offer = None
            return True
        return False


def event_size(request: Request) -> int:
    """The bytes ``request`` adds to a batch's body (builds its body if not built yet)."""
    return len(request.body) + _EVENT_OVERHEAD


def batch_size(sizes: Sequence[int]) -> int:
    return _ENVELOPE_BYTES + sum(sizes)


def encode_batch(requests: Sequence[Request]) -> tuple[str, bytes]:
    """The path and body of one batch of a workflow's requests, in order."""
    parts = [b'{"op":"%s","body":%s}' % (each.kind.encode(), each.body) for each in requests]
    path = workflow_path(requests[0].workflow_id) + "/events"
    return path, b'{"events":[' + b",".join(parts) + b"]}"


def split_answer(content: bytes, count: int, redact: Callable[[str], str]) -> list[Result] | None:
    """One :class:`Result` per event from a batch's 2xx answer, or None when the answer
    is not ``{"results": [{"status": N, "body": {...}}, ...]}`` with ``count`` results."""
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list) or len(results) != count:
        return None
    split: list[Result] = []
    for entry in results:
        status = entry.get("status") if isinstance(entry, dict) else None
        if type(status) is not int or not 100 <= status <= 599:
            return None
        body = json.dumps(entry.get("body"), separators=(",", ":")).encode()
        split.append(_event_result(status, body, redact))
    return split


def _event_result(status: int, body: bytes, redact: Callable[[str], str]) -> Result:
    outcome, next_id = classify_status(status, body)
    if outcome is Outcome.DELIVERED:
        return Result(outcome=outcome, status=status, content=body)
    snippet = body[: SNIPPET_LIMIT * 4].decode("utf-8", "replace")
    detail = redact(one_line(snippet, SNIPPET_LIMIT))
    return Result(outcome=outcome, status=status, detail=detail, next_id=next_id)
