"""The lines of an outbox file: one request per line, ack lines, and reading them back.

A request line is a JSON object: ``method``, ``path``, ``body`` (the request
as sent), ``kind``, ``workflow_id``, ``task_id``, ``final``, ``last`` (what
replay needs to keep the ordering rules), ``first_enqueued_at``, ``attempts``,
``events``, and in a journal ``n`` (the line's number in its file) and ``seq``
(queue order). An ack line, ``{"ack": [n, ...]}``, says those requests were
settled (delivered, dropped, or superseded by a later line of the same
request). A file is read line by line: a torn last line (a crash mid-write)
is skipped, and a line that is not a request the wire contract allows is
returned as rejected with the reason, never sent.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs

from dotflow_server_api.contract import ContractError, check_body_size, check_request
from dotflow_server_api.payloads import Request, run_of_body


def _count(value: Any, default: int) -> int:
    return value if type(value) is int and value >= 0 else default


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def _epoch(text: Any) -> float:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except (TypeError, ValueError, OverflowError):
        return time.time()


@attrs.define(kw_only=True)
class Entry:
    """One spooled request and its delivery history."""

    request: Request
    first_enqueued_at: float
    attempts: int = 0
    #: Hook events the request carries (several once coalesced).
    events: int = 1
    #: A task's create sent before and perhaps stored under its id (see ``Item.in_doubt``).
    in_doubt: bool = False
    #: Line number in a journal (acks name it), and queue order; None in a plain file.
    n: int | None = None
    seq: int | None = None

    def to_line(self) -> str:
        request = self.request
        head: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "kind": request.kind,
            "workflow_id": request.workflow_id,
            "task_id": request.task_id,
            "final": request.final,
            "last": request.last,
            "first_enqueued_at": _iso(self.first_enqueued_at),
            "attempts": self.attempts,
            "events": self.events,
        }
        if self.in_doubt:
            head["in_doubt"] = True
        if self.n is not None:
            head["n"] = self.n
        if self.seq is not None:
            head["seq"] = self.seq
        text = json.dumps(head, ensure_ascii=True, separators=(",", ":"))
        # The body is already JSON: splice it in rather than parse and encode it again.
        return f'{text[:-1]},"body":{request.body.decode("ascii", "replace")}}}\n'

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Entry:
        """Build an entry from a parsed line; raises ContractError when the contract forbids it."""
        check_request(data)
        body = json.dumps(data["body"], ensure_ascii=True, separators=(",", ":")).encode()
        check_body_size(body)
        request = Request(
            kind=data["kind"],
            method=data["method"],
            path=data["path"],
            body=body,
            workflow_id=data["workflow_id"],
            task_id=data.get("task_id"),
            final=data.get("final") is True,
            last=data.get("last") is True,
            run_id=run_of_body(data["body"]),
        )
        n, seq = data.get("n"), data.get("seq")
        return cls(
            request=request,
            first_enqueued_at=_epoch(data.get("first_enqueued_at")),
            attempts=_count(data.get("attempts"), 0),
            events=max(_count(data.get("events"), 1), 1),
            in_doubt=data.get("in_doubt") is True,
            n=n if type(n) is int else None,
            seq=seq if type(seq) is int else None,
        )

    @classmethod
    def from_line(cls, line: str) -> Entry:
        """Parse one request line; raises ValueError (a ContractError says why) otherwise."""
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ContractError(f"a line is a JSON object, not {type(data).__name__}")
        return cls.from_data(data)


def ack_line(numbers: list[int]) -> str:
    return json.dumps({"ack": numbers}, separators=(",", ":")) + "\n"


@attrs.define(kw_only=True)
class Rejected:
    """An outbox line that is never sent, and why."""

    number: int
    reason: str
    text: str


@attrs.define(kw_only=True)
class Contents:
    """What a file holds: its unsettled requests, in queue order, and the lines set aside."""

    entries: list[Entry] = attrs.Factory(list)
    rejected: list[Rejected] = attrs.Factory(list)
    #: A last line cut short by a crash mid-write (its request was not yet durable).
    torn: bool = False


def read_file(path: Path) -> Contents:
    """Read ``path`` line by line; raises OSError when it cannot be read at all."""
    contents = Contents()
    acked: set[int] = set()
    found: list[Entry] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                contents.torn = bool(raw.strip())
                break
            _read_line(number, raw, found, acked, contents)
    contents.entries = sorted(
        (entry for entry in found if entry.n is None or entry.n not in acked),
        key=lambda entry: entry.seq if entry.seq is not None else 0,
    )
    return contents


def _read_line(
    number: int, raw: bytes, found: list[Entry], acked: set[int], contents: Contents
) -> None:
    text = raw.decode("utf-8", "replace").rstrip("\r\n")
    if not text.strip():
        return
    try:
        data = json.loads(text)
        if isinstance(data, dict) and set(data) == {"ack"}:
            acked.update(_ack_numbers(data["ack"]))
            return
        if not isinstance(data, dict):
            raise ContractError(f"a line is a JSON object, not {type(data).__name__}")
        found.append(Entry.from_data(data))
    except (ValueError, KeyError, TypeError) as error:
        reason = str(error) if isinstance(error, ContractError) else f"not JSON: {error}"
        contents.rejected.append(Rejected(number=number, reason=reason, text=text))


def _ack_numbers(value: Any) -> list[int]:
    if not isinstance(value, list) or not all(type(number) is int for number in value):
        raise ContractError("an ack line lists line numbers (integers)")
    return value
