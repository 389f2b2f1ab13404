"""Turning a hook's record into the request that reports it (method, path, JSON body).

Bodies are built from an explicit allow-list of fields, never from the raw
record. A hook only wraps its record (a frozen snapshot whose contexts are the
step's values themselves) in a :class:`Request`; the JSON body is encoded when
it is first needed, by the delivery worker that sends it or by the outbox that
spools it. So the workflow's thread never pays for encoding, and an event
coalesced into a later one of the same task is never encoded at all. Each
context is encoded on its own, within :data:`~.contexts.CONTEXT_MAX_BYTES`,
by a bounded walk (:func:`dotflow_core.serialize.to_json_safe`: a context
that does not fit becomes a ``{"truncated": true, "type": ..., "length": ...,
"preview": ...}`` marker, at a cost set by the cap, not by the data); given a
:class:`~.contexts.ContextEncoder`, a value shared by several bodies is
encoded once. Errors too long or too many are cut: texts to
:data:`ERROR_TEXT_LIMIT` characters, then the middle attempts to one
:data:`ERRORS_OMITTED` entry saying which. Building a body never raises, and a
body never passes :data:`MAX_BODY_BYTES`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote

from dotflow_core.plugin import (
    TaskRecord,
    TaskStatus,
    WorkflowRecord,
    WorkflowStatus,
    capped_repr,
    to_json_safe,
)
from dotflow_server_api.contexts import CONTEXT_MAX_BYTES, ContextEncoder, encode, encode_within

#: Largest body sent. Contexts are capped on their own (``CONTEXT_MAX_BYTES`` each);
#: should the rest of a body leave less room than that, they share what is left.
MAX_BODY_BYTES: Final = 5_000_000
#: Longest error message / traceback kept when the errors alone would pass the cap.
ERROR_TEXT_LIMIT: Final = 20_000
#: Room kept for the contexts when errors are many: past it, middle errors are omitted.
CONTEXTS_RESERVE: Final = 64_000
#: The ``type`` of the entry that stands for the failed attempts a body omitted.
ERRORS_OMITTED: Final = "dotflow.ErrorsOmitted"

CREATE_WORKFLOW: Final = "create_workflow"
UPDATE_WORKFLOW: Final = "update_workflow"
CREATE_TASK: Final = "create_task"
UPDATE_TASK: Final = "update_task"
KINDS: Final = (CREATE_WORKFLOW, UPDATE_WORKFLOW, CREATE_TASK, UPDATE_TASK)

_CONTEXT_FIELDS: Final = ("current_context", "previous_context")
_FINAL_WORKFLOW: Final = frozenset({WorkflowStatus.COMPLETED.value, WorkflowStatus.FAILED.value})


class Request:
    """One request of the wire contract, ready to send (or to write to the outbox).

    Give either ``body`` (bytes) or ``build``, a function returning them that is
    called once, when :attr:`body` is first read. Treated as immutable:
    :meth:`replace` makes a changed copy.
    """

    __slots__ = (
        "_body",
        "_build",
        "final",
        "kind",
        "last",
        "method",
        "path",
        "run_id",
        "task_id",
        "workflow_id",
    )

    def __init__(
        self,
        *,
        kind: str,
        method: str,
        path: str,
        workflow_id: str,
        body: bytes | None = None,
        build: Callable[[], bytes] | None = None,
        task_id: int | None = None,
        final: bool = False,
        last: bool = False,
        run_id: str | None = None,
    ) -> None:
        if (body is None) == (build is None):
            raise TypeError("give a Request either body or build")
        self.kind = kind
        self.method = method
        #: Path below the base URL, segments percent-encoded, e.g. ``/workflows/a%2Fb/tasks``.
        self.path = path
        self._body = body
        self._build = build
        self.workflow_id = workflow_id
        self.task_id = task_id
        #: True for the workflow's final status (Completed / Failed): sent after all its tasks.
        self.final = final
        #: True for the last event of its task or workflow (status Completed / Failed).
        self.last = last
        #: The run that reports (the body's ``run_id``), or None.
        self.run_id = run_id

    @property
    def body(self) -> bytes:
        """The JSON body (ASCII-only JSON bytes), encoded on first use; never raises."""
        body = self._body
        if body is None:
            assert self._build is not None
            # Two threads may race here; both build the same bytes from the same record.
            body = self._body = _never_failing(self._build, self)
        return body

    def replace(self, **changes: Any) -> Request:
        """A copy with some fields changed (``body=`` or ``build=`` replace the body)."""
        fields: dict[str, Any] = {name: getattr(self, name) for name in _PLAIN_FIELDS}
        if "body" not in changes and "build" not in changes:
            fields.update(body=self._body, build=None if self._body is not None else self._build)
        fields.update(changes)
        return Request(**fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return self.body == other.body and all(
            getattr(self, name) == getattr(other, name) for name in _PLAIN_FIELDS
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        size = "body not built yet" if self._body is None else f"{len(self._body)} bytes"
        return f"Request({self.kind}, {self.method} {self.path}, {size})"

    @property
    def endpoint(self) -> str:
        """Method and path template, for log lines that must not flood per id."""
        return f"{self.method} {ENDPOINTS[self.kind]}"


#: The fields of a :class:`Request` other than its body.
_PLAIN_FIELDS: Final = tuple(name for name in Request.__slots__ if not name.startswith("_"))

ENDPOINTS: Final = {
    CREATE_WORKFLOW: "/workflows",
    UPDATE_WORKFLOW: "/workflows/{workflow_id}",
    CREATE_TASK: "/workflows/{workflow_id}/tasks",
    UPDATE_TASK: "/workflows/{workflow_id}/tasks/{task_id}",
}


def segment(value: object) -> str:
    """One path segment, percent-encoded (``a/b c`` -> ``a%2Fb%20c``).

    ``.`` and ``..`` are encoded too (``%2E``): left as they are, URL
    normalisation would remove them as dot-segments and change the path.
    """
    encoded = quote(utf8(str(value)), safe="")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


def utf8(text: str) -> bytes:
    """``text`` as UTF-8, never raising on lone surrogates.

    An id read from the environment holds the bytes that were not UTF-8 as
    surrogate escapes: those bytes come back as they were; any other lone
    surrogate is kept as its three-byte form.
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return text.encode("utf-8", "surrogatepass")


def workflow_path(workflow_id: str) -> str:
    return f"/workflows/{segment(workflow_id)}"


def tasks_path(workflow_id: str) -> str:
    return f"{workflow_path(workflow_id)}/tasks"


def task_path(workflow_id: str, task_id: int) -> str:
    return f"{tasks_path(workflow_id)}/{segment(task_id)}"


def next_id_path(workflow_id: str) -> str:
    return f"{tasks_path(workflow_id)}/next-id"


def reserve_path(workflow_id: str, run_id: str) -> str:
    return f"{workflow_path(workflow_id)}/runs/{segment(run_id)}/reserve"


def workflow_fields(record: WorkflowRecord) -> dict[str, Any]:
    """The workflow fields of both the create and the update bodies (all but ``id``)."""
    return {
        "status": _text(record.status),
        "name": None if record.name is None else _text(record.name),
        "mode": None if record.mode is None else _text(record.mode),
        "created_at": _iso(record.created_at),
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
        "duration": to_json_safe(record.duration),
        "task_count": to_json_safe(record.task_count),
        "completed_count": to_json_safe(record.completed_count),
        "failed_count": to_json_safe(record.failed_count),
        **_run(record),
    }


def task_fields(record: TaskRecord) -> dict[str, Any]:
    """The task body (create and update alike): the allow-listed fields only."""
    fields = _task_head(record)
    for name in _CONTEXT_FIELDS:
        fields[name] = to_json_safe(getattr(record, name), max_bytes=CONTEXT_MAX_BYTES)
    return fields


def _task_head(record: TaskRecord) -> dict[str, Any]:
    """The task body's fields but its contexts."""
    return {
        "id": record.task_id,
        "name": _text(record.name),
        "status": _text(record.status),
        "group_name": _text(record.group_name),
        "retry_count": to_json_safe(record.retry_count),
        "duration": to_json_safe(record.duration),
        "errors": [
            {
                "attempt": to_json_safe(error.attempt),
                "type": _text(error.type),
                "message": _text(error.message),
                "traceback": _text(error.traceback),
            }
            for error in record.errors
        ],
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
        **_run(record),
    }


def _run_of(record: TaskRecord | WorkflowRecord) -> str | None:
    try:
        run_id = getattr(record, "run_id", None)
        return None if run_id is None else _text(run_id)
    except Exception:
        return None


def _run(record: TaskRecord | WorkflowRecord) -> dict[str, str]:
    """``{"run_id": ...}`` naming the run that reports, when the record has one: the
    server then keeps a record per run (the dashboard's run pages, ``dotflow runs``)."""
    run_id = getattr(record, "run_id", None)
    return {} if run_id is None else {"run_id": _text(run_id)}


def create_workflow(record: WorkflowRecord) -> Request:
    """``POST /workflows`` with the id and every workflow field."""
    return Request(
        kind=CREATE_WORKFLOW,
        method="POST",
        path="/workflows",
        build=lambda: _encoded(
            lambda: encode({"id": record.workflow_id, **workflow_fields(record)}), record
        ),
        workflow_id=record.workflow_id,
    )


def update_workflow(record: WorkflowRecord) -> Request:
    """``PATCH /workflows/{id}`` with every workflow field; final for Completed / Failed."""
    final = _status_text(record) in _FINAL_WORKFLOW
    return Request(
        kind=UPDATE_WORKFLOW,
        method="PATCH",
        path=workflow_path(record.workflow_id),
        build=lambda: _encoded(lambda: encode(workflow_fields(record)), record),
        workflow_id=record.workflow_id,
        final=final,
        last=final,
    )


def create_task(record: TaskRecord, contexts: ContextEncoder | None = None) -> Request:
    """``POST /workflows/{id}/tasks`` with the task body (contexts encoded by ``contexts``)."""
    return Request(
        kind=CREATE_TASK,
        method="POST",
        path=tasks_path(record.workflow_id),
        build=lambda: _encoded(lambda: task_body(record, contexts=contexts), record),
        workflow_id=record.workflow_id,
        task_id=record.task_id,
        run_id=_run_of(record),
    )


def update_task(record: TaskRecord, contexts: ContextEncoder | None = None) -> Request:
    """``PATCH /workflows/{id}/tasks/{task_id}`` with the same body as the create."""
    return Request(
        kind=UPDATE_TASK,
        method="PATCH",
        path=task_path(record.workflow_id, record.task_id),
        build=lambda: _encoded(lambda: task_body(record, contexts=contexts), record),
        workflow_id=record.workflow_id,
        task_id=record.task_id,
        last=_is_final_task(record),
        run_id=_run_of(record),
    )


def as_create_workflow(update: Request) -> Request:
    """A workflow update turned into the create it is merged into (same fields, plus ``id``)."""
    return update.replace(
        kind=CREATE_WORKFLOW,
        method="POST",
        path="/workflows",
        body=None,
        build=lambda: encode({"id": update.workflow_id, **json.loads(update.body)}),
        final=False,
        last=False,
    )


def as_create_task(update: Request) -> Request:
    """A task update turned into the create it is merged into (the bodies are the same)."""
    return update.replace(kind=CREATE_TASK, method="POST", path=tasks_path(update.workflow_id))


def renumbered(request: Request, task_id: int, *, create: bool = False) -> Request:
    """A task request reporting the same task under id ``task_id`` (the body's ``id`` too).

    ``create`` turns an update into a create: a task moved to a free id is new there.
    The body is rewritten when first read (never under the delivery's lock).
    """

    def build() -> bytes:
        body = json.loads(request.body)
        body["id"] = task_id
        return encode(body)

    if create or request.kind == CREATE_TASK:
        return request.replace(
            kind=CREATE_TASK,
            method="POST",
            path=tasks_path(request.workflow_id),
            task_id=task_id,
            body=None,
            build=build,
        )
    return request.replace(
        path=task_path(request.workflow_id, task_id), task_id=task_id, body=None, build=build
    )


def run_of_body(body: object) -> str | None:
    """The ``run_id`` a decoded body names (an outbox line's), or None."""
    run_id = body.get("run_id") if isinstance(body, dict) else None
    return run_id if isinstance(run_id, str) else None


def task_body(
    record: TaskRecord, limit: int = MAX_BODY_BYTES, contexts: ContextEncoder | None = None
) -> bytes:
    """The encoded task body, at most ``limit`` bytes.

    Each context takes at most ``CONTEXT_MAX_BYTES`` on its own, so a huge
    ``previous_context`` never cuts a small ``current_context``. Only when the
    rest of the body leaves less room than both need do they share it: the
    smaller keeps up to half (whole if it fits), the other gets the rest.
    Raises what reading the record raises; the requests built from it never do.
    """
    values = [getattr(record, name) for name in _CONTEXT_FIELDS]
    workflow_id = str(record.workflow_id)

    def encoded(value: Any, budget: int) -> bytes:
        if contexts is None:
            return encode_within(value, budget)
        return contexts.encode(value, budget, workflow_id)

    return _assemble(_task_head(record), values, limit, encoded)


def fitted(request: Request, limit: int) -> Request:
    """``request`` (a task's) with its body cut to at most ``limit`` bytes, built when read.

    For a destination that refused the body as too large (HTTP 413): the contexts
    become smaller previews and the errors are cut as :func:`task_body` cuts them;
    the id, status and every other field stay.
    """

    def build() -> bytes:
        body = json.loads(request.body)
        values = [body.pop(name, None) for name in _CONTEXT_FIELDS]
        return _assemble(body, values, limit, encode_within)

    return request.replace(build=build)


def _assemble(
    head: dict[str, Any],
    values: list[Any],
    limit: int,
    encoded: Callable[[Any, int], bytes],
) -> bytes:
    """The task body of ``head`` (its fields but the contexts) and the two context
    ``values``, within ``limit`` bytes: errors cut first if need be, then the contexts
    share the room left, each within ``CONTEXT_MAX_BYTES``."""
    data = encode(head)
    if len(data) + _CONTEXTS_OVERHEAD > limit:
        for error in head.get("errors") or ():
            for key in ("message", "traceback"):
                text = error.get(key)
                if isinstance(text, str) and len(text) > ERROR_TEXT_LIMIT:
                    error[key] = text[: ERROR_TEXT_LIMIT - 3] + "..."
        data = encode(head)
    reserve = min(limit // 10, CONTEXTS_RESERVE)
    if len(data) + _CONTEXTS_OVERHEAD + reserve > limit and head.get("errors"):
        head["errors"] = _errors_within(head["errors"], limit)
        data = encode(head)
    room = limit - len(data) - _CONTEXTS_OVERHEAD
    parts = [encoded(value, min(CONTEXT_MAX_BYTES, room)) for value in values]
    if sum(map(len, parts)) > room:
        small = 0 if len(parts[0]) <= len(parts[1]) else 1
        if len(parts[small]) > room // 2:
            parts[small] = encoded(values[small], room // 2)
        parts[1 - small] = encoded(values[1 - small], room - len(parts[small]))
    current, previous = parts
    return b"".join(
        (data[:-1], b',"current_context":', current, b',"previous_context":', previous, b"}")
    )


def _errors_within(errors: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The latest errors and the first, a marker between, in at most half of ``limit``.

    A step retried hundreds of times with long errors would otherwise make a body
    no server accepts, and the task's final status would be lost with it. The
    last error (why the task failed) goes first, then the first, then the others
    from the latest back.
    """
    budget = limit // 2
    marker_room = 300  # the marker's own bytes, its counts included
    sizes = [len(encode(error)) + 1 for error in errors]
    last = sizes[-1] if len(errors) > 1 else 0
    fits_first = bool(sizes) and last + sizes[0] + marker_room <= budget
    kept_head = errors[:1] if fits_first else []
    used = sum(sizes[: len(kept_head)]) + marker_room
    tail_start = len(errors)
    while tail_start > len(kept_head) and used + sizes[tail_start - 1] <= budget:
        tail_start -= 1
        used += sizes[tail_start]
    omitted = errors[len(kept_head) : tail_start]
    if not omitted:
        return errors
    marker = {
        "attempt": omitted[0].get("attempt"),
        "type": ERRORS_OMITTED,
        "message": (
            f"{len(omitted)} failed attempt(s) omitted, from attempt "
            f"{omitted[0].get('attempt')} to {omitted[-1].get('attempt')}, to keep the "
            f"report under {limit} bytes"
        ),
        "traceback": "",
    }
    return [*kept_head, marker, *errors[tail_start:]]


#: The bytes the two context keys add to a body (their values aside).
_CONTEXTS_OVERHEAD: Final = len(b',"current_context":,"previous_context":')


def _encoded(build: Callable[[], bytes], record: TaskRecord | WorkflowRecord) -> bytes:
    """``build()``; if it raises, the minimal body of ``record``, saying why.

    Reading a field or encoding it may raise (a record a third-party engine built
    wrongly, or MemoryError); the minimal body still carries the id and the
    status the server needs, and a marker in place of what was lost.
    """
    try:
        return build()
    except Exception as error:
        reason = _failure(error)
        if hasattr(record, "task_id"):
            return encode(
                {
                    "id": record.task_id,
                    "name": _text(getattr(record, "name", "")),
                    "status": _text(getattr(record, "status", TaskStatus.FAILED)),
                    "current_context": reason,
                    "previous_context": None,
                }
            )
        return encode(
            {
                "id": record.workflow_id,
                "status": _text(getattr(record, "status", "")),
                "error": reason,
            }
        )


def _failure(error: Exception) -> dict[str, Any]:
    """The marker that stands in for what could not be encoded."""
    return {"truncated": True, "error": f"{type(error).__name__}: {capped_repr(error, 200)}"}


def _never_failing(build: Callable[[], bytes], request: Request) -> bytes:
    """``build()``; should even the record's minimal body fail, the least one that says why."""
    try:
        return build()
    except Exception as error:
        reason = _failure(error)
        if request.task_id is not None:
            fallback: dict[str, Any] = {"id": request.task_id, "current_context": reason}
        else:
            fallback = {"id": request.workflow_id, "error": reason}
        return encode(fallback)


def _status_text(record: WorkflowRecord) -> str | None:
    try:
        return _text(record.status)
    except Exception:
        return None


def _is_final_task(record: TaskRecord) -> bool:
    try:
        return TaskStatus(record.status).is_final
    except Exception:
        return False


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value.value if isinstance(value, (TaskStatus, WorkflowStatus)) else value
    return capped_repr(value)


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    converted = to_json_safe(value)
    return converted if isinstance(converted, str) else None
