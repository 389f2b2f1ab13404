"""Request and response bodies of the wire contract (pydantic models).

Request bodies ignore unknown fields (forward compatibility). Before field validation
every request body goes through ``clean_json``, which makes arbitrary client JSON safe
to store and to send back: it rejects nesting deeper than ``MAX_JSON_DEPTH`` and
NaN/Infinity, and replaces lone surrogates (not valid Unicode) with U+FFFD, except in
a workflow id: there a lone surrogate is a 422, because replacing it would merge
distinct ids into one workflow.

Datetimes are accepted as ISO 8601 (naive values are taken as UTC), stored as UTC and
returned with an explicit ``+00:00`` offset, which every ``datetime.fromisoformat``
(Python 3.10 included) parses.
"""

from __future__ import annotations

import enum
import math
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    WithJsonSchema,
    model_validator,
)

from dotflow_api.models import RUN_ID_MAX_LENGTH, WORKFLOW_ID_MAX_LENGTH

#: Deepest nesting accepted in a request body (contexts included); the client caps at 64.
MAX_JSON_DEPTH: Final = 128
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
#: Largest integer the server stores in an integer column (32-bit signed, portable).
MAX_INT: Final = 2**31 - 1
#: Largest task id (a 64-bit column): the largest ``next_id`` the api client accepts,
#: and the largest integer a JSON double holds exactly.
MAX_TASK_ID: Final = 2**53


class BatchOp(str, enum.Enum):
    """The single requests a batch event may stand for."""

    CREATE_WORKFLOW = "create_workflow"
    UPDATE_WORKFLOW = "update_workflow"
    CREATE_TASK = "create_task"
    UPDATE_TASK = "update_task"


class TaskStatus(str, enum.Enum):
    """The status of a task; the values are the strings dotflow sends."""

    NOT_STARTED = "Not started"
    IN_PROGRESS = "In progress"
    COMPLETED = "Completed"
    RETRY = "Retry"
    FAILED = "Failed"


class WorkflowStatus(str, enum.Enum):
    """The status of a workflow as a whole."""

    IN_PROGRESS = "In progress"
    COMPLETED = "Completed"
    FAILED = "Failed"


def _to_utc(value: datetime) -> datetime:
    """Normalise a datetime to aware UTC; naive values are taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError as exc:
        raise ValueError("datetime is out of range once converted to UTC") from exc


def _require_text(value: Any) -> Any:
    """Refuse a number (pydantic would take it as a Unix time): ISO 8601 text only."""
    if isinstance(value, (int, float)):
        raise ValueError("expected an ISO 8601 date-time string, e.g. 2026-01-31T12:00:00Z")
    return value


def _iso(value: datetime) -> str:
    return value.isoformat()


#: A datetime in, an ISO 8601 string with ``+00:00`` out.
UtcDatetime = Annotated[
    datetime,
    BeforeValidator(_require_text),
    AfterValidator(_to_utc),
    PlainSerializer(_iso, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


def valid_unicode_id(value: Any) -> Any:
    """``value`` unchanged; ``ValueError`` if it is a string with a lone surrogate."""
    if isinstance(value, str) and _SURROGATE.search(value):
        raise ValueError(
            "workflow id is not valid UTF-8 (it holds bytes or lone surrogates that "
            "UTF-8 cannot encode); use an id of Unicode characters"
        )
    return value


WorkflowId = Annotated[
    str, Field(min_length=1, max_length=WORKFLOW_ID_MAX_LENGTH), BeforeValidator(valid_unicode_id)
]
# Strict: a JSON string, boolean or fractional number is a wrong type (422), never
# converted ("3" -> 3, true -> 1); a JSON integer is still a valid number of seconds.
Count = Annotated[int, Strict(), Field(ge=0, le=MAX_INT)]
TaskId = Annotated[int, Strict(), Field(ge=1, le=MAX_TASK_ID)]
RunId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=RUN_ID_MAX_LENGTH,
        description="The run that sends the event (dotflow sends a UUID per start()).",
    ),
    BeforeValidator(valid_unicode_id),
]
#: Most task ids one reservation takes.
MAX_RESERVATION: Final = 10_000
#: Most events one batch request carries.
MAX_BATCH_EVENTS: Final = 1000
Seconds = Annotated[float, Strict(), Field(allow_inf_nan=False)]


def clean_json(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Return ``value`` (parsed JSON) made safe to store and to serialise again.

    Raises ``ValueError`` for nesting deeper than ``max_depth`` or a non-finite number.
    Walks iteratively, so a huge or deep document cannot exhaust the stack.
    """
    root: list[Any] = [value]
    # Each entry: (container, key, depth of the value at container[key]).
    stack: list[tuple[Any, Any, int]] = [(root, 0, 0)]
    while stack:
        container, key, depth = stack.pop()
        item = container[key]
        if isinstance(item, str):
            container[key] = _clean_text(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError("NaN and Infinity are not valid JSON numbers")
        elif isinstance(item, (dict, list)):
            if depth >= max_depth:
                raise ValueError(f"JSON is nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                cleaned: dict[str, Any] = {}
                for name, child in item.items():
                    cleaned[_clean_text(name) if isinstance(name, str) else name] = child
                container[key] = cleaned
                stack.extend((cleaned, name, depth + 1) for name in cleaned)
            else:
                stack.extend((item, index, depth + 1) for index in range(len(item)))
    return root[0]


def _clean_text(text: str) -> str:
    """``text`` with lone surrogates (unencodable in UTF-8) replaced by U+FFFD.

    A Python string only holds surrogates that were unpaired in the JSON text: the
    JSON decoder joins valid pairs into one character.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


class RequestBody(BaseModel):
    """Base of the request bodies: unknown fields ignored, input cleaned first."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _clean(cls, data: Any) -> Any:
        if isinstance(data, dict):
            raw_id = data.get("id")
            data = clean_json(data)
            if isinstance(raw_id, str):
                data["id"] = raw_id  # validated as is: see ``valid_unicode_id``
        return data


class TaskErrorBody(BaseModel):
    """One failed attempt of a task."""

    model_config = ConfigDict(extra="ignore")

    attempt: Annotated[int, Strict()] = Field(
        description="The attempt that failed, counting from 1."
    )
    type: str = Field(description='The exception class name, e.g. "ValueError".')
    message: str = Field(description="str() of the exception.")
    traceback: str = Field(default="", description="The formatted traceback.")


class WorkflowFields(RequestBody):
    """The workflow fields a runner reports (all but ``id``)."""

    status: WorkflowStatus
    name: str | None = None
    mode: str | None = Field(
        default=None, description="Execution mode: sequential, background or parallel."
    )
    created_at: UtcDatetime | None = None
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    duration: Seconds | None = Field(default=None, description="Seconds from start to finish.")
    task_count: Count = 0
    completed_count: Count = 0
    failed_count: Count = 0
    run_id: RunId | None = Field(
        default=None,
        description="The run reporting (optional): the fields then describe that run, and "
        "the workflow while it is the latest run.",
    )


class WorkflowCreate(WorkflowFields):
    """Body of ``POST /workflows``."""

    id: WorkflowId


class WorkflowUpdate(WorkflowFields):
    """Body of ``PATCH /workflows/{workflow_id}``; ``id``, if given, must match the path."""

    id: WorkflowId | None = None


class TaskBody(RequestBody):
    """Body of ``POST /workflows/{workflow_id}/tasks`` and of the task ``PATCH``."""

    id: TaskId
    name: str
    status: TaskStatus
    group_name: str = "default"
    retry_count: Count = 0
    duration: Seconds | None = None
    errors: list[TaskErrorBody] = Field(default_factory=list)
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    current_context: Any = None
    previous_context: Any = None
    run_id: RunId | None = Field(
        default=None,
        description="The run reporting (optional). With it, a task another run stored (or "
        "reserved) is never changed: the answer is 409 with the next free id.",
    )


class WorkflowView(BaseModel):
    """A workflow as the server holds it."""

    id: str
    status: WorkflowStatus
    name: str | None
    mode: str | None
    created_at: UtcDatetime | None
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    duration: float | None
    task_count: int = Field(description="Tasks added, as last reported by the runner.")
    completed_count: int = Field(description="Completed tasks, as last reported.")
    failed_count: int = Field(description="Failed tasks, as last reported.")
    stored_task_count: int = Field(description="Tasks the server holds for this workflow.")
    registered_at: UtcDatetime = Field(description="When the server first saw the workflow.")
    updated_at: UtcDatetime = Field(description="When the server last changed it.")
    latest_run_id: str | None = Field(
        default=None,
        description="The newest run (the status, times and counts above are its own), or "
        "null when no client sent a run id.",
    )
    run_count: int = Field(default=0, description="Runs the server knows of.")


class WorkflowList(BaseModel):
    """A page of the caller's workflows, newest first."""

    items: list[WorkflowView]
    total: int
    limit: int
    offset: int


class TaskErrorView(BaseModel):
    """One failed attempt of a task, as stored."""

    attempt: int
    type: str
    message: str
    traceback: str


class TaskView(BaseModel):
    """A task as the server holds it."""

    workflow_id: str
    id: int
    name: str
    status: TaskStatus
    group_name: str
    retry_count: int
    duration: float | None
    errors: list[TaskErrorView]
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    current_context: Any
    previous_context: Any
    registered_at: UtcDatetime
    updated_at: UtcDatetime
    run_id: str | None = Field(
        default=None, description="The run that created the task (null: sent without one)."
    )


class TaskList(BaseModel):
    """A page of a workflow's tasks, ordered by id."""

    items: list[TaskView]
    total: int
    limit: int
    offset: int


class TaskAck(BaseModel):
    """Answer to a task write: what was stored (contexts are not echoed back)."""

    workflow_id: str
    id: int
    status: TaskStatus


class NextTaskId(BaseModel):
    """Answer of ``GET /workflows/{workflow_id}/tasks/next-id``."""

    next_id: int = Field(description="The id to give the next task: last_id + 1, or 1.")
    last_id: int | None = Field(
        default=None,
        description="The highest task id stored, or null. Optional: clients need only next_id.",
    )


class RunView(BaseModel):
    """One run of a workflow (one ``start()``), as its runner reported it."""

    workflow_id: str
    run_id: str
    status: WorkflowStatus
    name: str | None = Field(description="The workflow name the run reported.")
    mode: str | None
    created_at: UtcDatetime | None
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    duration: float | None
    task_count: int = Field(description="Tasks added, as reported by the run.")
    completed_count: int
    failed_count: int
    stored_task_count: int = Field(description="Tasks of this run the server holds.")
    first_task_id: int | None = Field(description="Lowest id of the run's stored tasks.")
    last_task_id: int | None = Field(description="Highest id of the run's stored tasks.")
    reserved_first_id: int | None = Field(description="First id of the run's reservation.")
    reserved_last_id: int | None = Field(description="Last id of the run's reservation.")
    registered_at: UtcDatetime
    updated_at: UtcDatetime


class RunList(BaseModel):
    """A page of a workflow's runs, newest first."""

    items: list[RunView]
    total: int
    limit: int
    offset: int


class ReserveBody(RequestBody):
    """Body of ``POST /workflows/{workflow_id}/runs/{run_id}/reserve``."""

    count: Annotated[int, Strict(), Field(ge=1, le=MAX_RESERVATION)] = Field(
        default=1, description="How many consecutive task ids to reserve."
    )


class Reservation(BaseModel):
    """Task ids reserved for one run: no other run's request may take them."""

    workflow_id: str
    run_id: str
    first_id: int = Field(description="The first reserved id.")
    last_id: int = Field(description="The last reserved id (first_id + count - 1).")


class TaskConflict(BaseModel):
    """Answer 409 to a task write of a run that would change another run's task."""

    detail: str
    next_id: int | None = Field(
        description="The next free id: report this run's tasks from there (null: none left)."
    )


class BatchEvent(BaseModel):
    """One event of a batch: which single request it stands for, and that request's body."""

    model_config = ConfigDict(extra="ignore")

    op: BatchOp = Field(
        description="create_workflow = POST /workflows, update_workflow = PATCH "
        "/workflows/{workflow_id}, create_task = POST .../tasks, update_task = PATCH "
        ".../tasks/{body.id}."
    )
    body: dict[str, Any] = Field(description="The body that single request takes.")


class BatchBody(BaseModel):
    """Body of ``POST /workflows/{workflow_id}/events``."""

    model_config = ConfigDict(extra="ignore")

    events: list[BatchEvent] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


class BatchResult(BaseModel):
    """The answer the single request would have had: its status code and body."""

    status: int
    body: dict[str, Any]


class BatchAnswer(BaseModel):
    """Answer of a batch: one result per event, in order."""

    results: list[BatchResult]


class Health(BaseModel):
    """Answer of ``GET /healthz``."""

    status: str


class ErrorDetail(BaseModel):
    """The body of every error answer other than a validation error."""

    detail: str


class ValidationIssue(BaseModel):
    """One problem found in a request."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    """The body of a 422 answer: every problem found, without echoing the input."""

    detail: list[ValidationIssue]
