"""What the route modules share: path and query parameters, error answers, views.

A view turns a row of the store (a dict of columns) into the response model.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

from fastapi import Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BeforeValidator

from dotflow_api.models import RUN_ID_MAX_LENGTH, WORKFLOW_ID_MAX_LENGTH
from dotflow_api.schemas import (
    MAX_INT,
    MAX_TASK_ID,
    ErrorDetail,
    RunView,
    TaskConflict,
    TaskView,
    ValidationErrorBody,
    WorkflowView,
    valid_unicode_id,
)
from dotflow_api.store import Store

#: Largest page a listing returns.
MAX_PAGE: Final = 1000

WorkflowIdPath = Annotated[
    str,
    BeforeValidator(valid_unicode_id),
    Path(
        min_length=1,
        max_length=WORKFLOW_ID_MAX_LENGTH,
        description="The workflow id, percent-encoded (it may contain any character).",
    ),
]
RunIdPath = Annotated[
    str,
    BeforeValidator(valid_unicode_id),
    Path(min_length=1, max_length=RUN_ID_MAX_LENGTH, description="The run id."),
]
_DECIMAL: Final = re.compile("[1-9][0-9]*")


def _canonical_task_id(value: Any) -> Any:
    """Refuse spellings other than plain decimal (``01``, ``+1``, ``1 ``): one id, one path."""
    if isinstance(value, str) and not _DECIMAL.fullmatch(value):
        raise ValueError(
            f"task id must be written in plain decimal digits, from 1 to {MAX_TASK_ID}, "
            "without sign, leading zeros or spaces, e.g. 7"
        )
    return value


TaskIdPath = Annotated[
    int,
    Path(ge=1, le=MAX_TASK_ID, description="The task id."),
    BeforeValidator(_canonical_task_id),
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=MAX_INT, description="Rows to skip.")]

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorDetail, "description": "Missing or invalid bearer token."},
    422: {"model": ValidationErrorBody, "description": "Invalid parameters or body."},
    503: {"model": ErrorDetail, "description": "Database busy or unavailable; retry."},
}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    400: {"model": ErrorDetail, "description": "Malformed JSON body."},
    413: {"model": ErrorDetail, "description": "Body larger than the server's limit."},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorDetail, "description": "No such workflow or task for this token."},
}
TASK_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "model": TaskConflict,
        "description": "The body names a run_id and the task was stored (or reserved) by "
        "another run: nothing was changed; report this run's tasks from next_id on (the "
        "ids from next_id are reserved for the run).",
    },
}


def store_of(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def mismatch(field: str, path_param: str) -> RequestValidationError:
    """422 for a body ``field`` that differs from the path; the body value is not echoed."""
    return RequestValidationError(
        [
            {
                "loc": ("body", field),
                "msg": f"body {field} does not match the path's {path_param}; they must be equal",
                "type": "value_error",
            }
        ]
    )


def workflow_view(row: dict[str, Any]) -> WorkflowView:
    return WorkflowView(
        id=row["workflow_id"],
        status=row["status"],
        name=row["name"],
        mode=row["mode"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        duration=row["duration"],
        task_count=row["task_count"],
        completed_count=row["completed_count"],
        failed_count=row["failed_count"],
        stored_task_count=row["stored_task_count"],
        registered_at=row["registered_at"],
        updated_at=row["updated_at"],
        latest_run_id=row["latest_run_id"],
        run_count=row["run_count"],
    )


def task_view(workflow_id: str, row: dict[str, Any]) -> TaskView:
    return TaskView(
        workflow_id=workflow_id,
        id=row["task_id"],
        name=row["name"],
        status=row["status"],
        group_name=row["group_name"],
        retry_count=row["retry_count"],
        duration=row["duration"],
        errors=row["errors"] or [],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        current_context=row["current_context"],
        previous_context=row["previous_context"],
        registered_at=row["registered_at"],
        updated_at=row["updated_at"],
        run_id=row["run_id"],
    )


def run_view(workflow_id: str, row: dict[str, Any]) -> RunView:
    return RunView(
        workflow_id=workflow_id,
        **{name: row[name] for name in RunView.model_fields if name != "workflow_id"},
    )
