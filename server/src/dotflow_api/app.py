"""The HTTP API: routes, error answers and the application factory.

Handlers are plain functions (FastAPI runs them in its thread pool) that make exactly
one ``Store`` call each, so every request is one database transaction: it is written
whole or not at all.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any, Final

from fastapi import APIRouter, FastAPI, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BeforeValidator
from sqlalchemy.exc import DataError, SQLAlchemyError

from dotflow_api import dashboard
from dotflow_api._version import __version__
from dotflow_api.auth import Authenticator, AuthMiddleware, Owner, TokenSet
from dotflow_api.dashboard.link import DashboardLinkMiddleware
from dotflow_api.limits import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware
from dotflow_api.models import WORKFLOW_ID_MAX_LENGTH
from dotflow_api.paths import DecodedPathRoute, RawPathMiddleware
from dotflow_api.schemas import (
    MAX_INT,
    MAX_TASK_ID,
    ErrorDetail,
    Health,
    NextTaskId,
    TaskAck,
    TaskBody,
    TaskList,
    TaskView,
    ValidationErrorBody,
    WorkflowCreate,
    WorkflowList,
    WorkflowUpdate,
    WorkflowView,
    valid_unicode_id,
)
from dotflow_api.sessions import SessionStore
from dotflow_api.store import NotFoundError, Store
from dotflow_api.tokens import TokenStore

logger = logging.getLogger("dotflow_api.app")

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

_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorDetail, "description": "Missing or invalid bearer token."},
    422: {"model": ValidationErrorBody, "description": "Invalid parameters or body."},
    503: {"model": ErrorDetail, "description": "Database busy or unavailable; retry."},
}
_BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    **_AUTH_ERRORS,
    400: {"model": ErrorDetail, "description": "Malformed JSON body."},
    413: {"model": ErrorDetail, "description": "Body larger than the server's limit."},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorDetail, "description": "No such workflow or task for this token."},
}

router = APIRouter(route_class=DecodedPathRoute)


def _store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def _workflow_view(row: dict[str, Any]) -> WorkflowView:
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
    )


def _task_view(workflow_id: str, row: dict[str, Any]) -> TaskView:
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
    )


def _mismatch(field: str, path_param: str) -> RequestValidationError:
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


@router.get("/healthz", tags=["health"], response_model=Health)
def healthz() -> Health:
    """Liveness probe; needs no token."""
    return Health(status="ok")


@router.post(
    "/workflows",
    tags=["runner"],
    status_code=status.HTTP_201_CREATED,
    response_model=WorkflowView,
    responses={200: {"model": WorkflowView, "description": "Existed already; updated."}}
    | _BODY_ERRORS,
)
def create_workflow(
    body: WorkflowCreate, owner: Owner, request: Request, response: Response
) -> WorkflowView:
    """Register a workflow (201), or update it if this token already has it (200)."""
    fields = body.model_dump(include=body.model_fields_set - {"id"})
    row, created = _store(request).upsert_workflow(owner, body.id, fields)
    if not created:
        response.status_code = status.HTTP_200_OK
    return _workflow_view(row)


@router.patch(
    "/workflows/{workflow_id}",
    tags=["runner"],
    response_model=WorkflowView,
    responses={201: {"model": WorkflowView, "description": "Was unknown; registered."}}
    | _BODY_ERRORS,
)
def update_workflow(
    workflow_id: WorkflowIdPath,
    body: WorkflowUpdate,
    owner: Owner,
    request: Request,
    response: Response,
) -> WorkflowView:
    """Update a workflow (200); registers it if unknown (201), as managed mode needs."""
    if body.id is not None and body.id != workflow_id:
        raise _mismatch("id", "workflow_id")
    fields = body.model_dump(include=body.model_fields_set - {"id"})
    row, created = _store(request).upsert_workflow(owner, workflow_id, fields)
    if created:
        response.status_code = status.HTTP_201_CREATED
    return _workflow_view(row)


@router.get(
    "/workflows",
    tags=["read"],
    response_model=WorkflowList,
    responses=_AUTH_ERRORS,
)
def list_workflows(
    owner: Owner, request: Request, limit: Limit = 100, offset: Offset = 0
) -> WorkflowList:
    """The caller's workflows, most recently registered first."""
    page = _store(request).list_workflows(owner, limit=limit, offset=offset)
    return WorkflowList(
        items=[_workflow_view(row) for row in page.rows],
        total=page.total,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/workflows/{workflow_id}",
    tags=["read"],
    response_model=WorkflowView,
    responses=_AUTH_ERRORS | _NOT_FOUND,
)
def get_workflow(workflow_id: WorkflowIdPath, owner: Owner, request: Request) -> WorkflowView:
    """One workflow: status, timestamps, duration and task counts."""
    return _workflow_view(_store(request).get_workflow(owner, workflow_id))


@router.post(
    "/workflows/{workflow_id}/tasks",
    tags=["runner"],
    status_code=status.HTTP_201_CREATED,
    response_model=TaskAck,
    responses={200: {"model": TaskAck, "description": "Existed already; updated."}} | _BODY_ERRORS,
)
def create_task(
    workflow_id: WorkflowIdPath,
    body: TaskBody,
    owner: Owner,
    request: Request,
    response: Response,
) -> TaskAck:
    """Store a task (201), or update it if its id exists (200); registers the workflow."""
    fields = body.model_dump(include=body.model_fields_set - {"id"})
    if not _store(request).upsert_task(owner, workflow_id, body.id, fields):
        response.status_code = status.HTTP_200_OK
    return TaskAck(workflow_id=workflow_id, id=body.id, status=body.status)


@router.get(
    "/workflows/{workflow_id}/tasks/next-id",
    tags=["runner"],
    response_model=NextTaskId,
    responses={
        409: {"model": ErrorDetail, "description": "The workflow holds the largest task id."}
    }
    | _AUTH_ERRORS,
)
def next_task_id(
    workflow_id: WorkflowIdPath, owner: Owner, request: Request
) -> NextTaskId | JSONResponse:
    """The id for the workflow's next task: highest stored id + 1 (1 when none); 409 when
    the workflow already holds the largest task id, so no id the server takes is left."""
    last_id = _store(request).last_task_id(owner, workflow_id)
    if last_id is not None and last_id >= MAX_TASK_ID:
        return JSONResponse(
            {
                "detail": f"the workflow holds the largest task id ({MAX_TASK_ID} = 2**53), "
                "so it has no next id; report further tasks under a new workflow id"
            },
            status_code=status.HTTP_409_CONFLICT,
        )
    return NextTaskId(next_id=1 if last_id is None else last_id + 1, last_id=last_id)


@router.patch(
    "/workflows/{workflow_id}/tasks/{task_id}",
    tags=["runner"],
    response_model=TaskAck,
    responses=_BODY_ERRORS | _NOT_FOUND,
)
def update_task(
    workflow_id: WorkflowIdPath,
    task_id: TaskIdPath,
    body: TaskBody,
    owner: Owner,
    request: Request,
) -> TaskAck:
    """Update a stored task (idempotent); 404 if the workflow or task is unknown."""
    if body.id != task_id:
        raise _mismatch("id", "task_id")
    fields = body.model_dump(include=body.model_fields_set - {"id"})
    _store(request).update_task(owner, workflow_id, task_id, fields)
    return TaskAck(workflow_id=workflow_id, id=task_id, status=body.status)


@router.get(
    "/workflows/{workflow_id}/tasks",
    tags=["read"],
    response_model=TaskList,
    responses=_AUTH_ERRORS | _NOT_FOUND,
)
def list_tasks(
    workflow_id: WorkflowIdPath,
    owner: Owner,
    request: Request,
    limit: Limit = MAX_PAGE,
    offset: Offset = 0,
) -> TaskList:
    """The workflow's tasks ordered by id, with contexts, errors and timestamps."""
    page = _store(request).list_tasks(owner, workflow_id, limit=limit, offset=offset)
    return TaskList(
        items=[_task_view(workflow_id, row) for row in page.rows],
        total=page.total,
        limit=limit,
        offset=offset,
    )


# -- error answers ----------------------------------------------------------------


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 listing the problems (400 for malformed JSON); the input is never echoed."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "invalid JSON")
            loc = error.get("loc", ())
            where = f" at position {loc[-1]}" if len(loc) > 1 else ""
            return JSONResponse(
                {"detail": f"malformed JSON body: {reason}{where}"},
                status_code=status.HTTP_400_BAD_REQUEST,
            )
    issues = [
        {
            "loc": [part if isinstance(part, (str, int)) else str(part) for part in e["loc"]],
            "msg": str(e.get("msg", "invalid value")),
            "type": str(e.get("type", "value_error")),
        }
        for e in errors
    ]
    return JSONResponse({"detail": issues}, status_code=422)


async def _on_not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_404_NOT_FOUND)


async def _on_data_error(request: Request, exc: Exception) -> JSONResponse:
    """A value the database refused (e.g. a NUL character on PostgreSQL): the caller's fault."""
    logger.warning("database refused a value: %s", _db_reason(exc))
    return JSONResponse(
        {"detail": "a value in the request cannot be stored by the database"},
        status_code=422,
    )


async def _on_database_error(request: Request, exc: Exception) -> JSONResponse:
    """Locked, unreachable or failing database (or no free connection): nothing was
    written, the transaction rolled back; the client may retry."""
    logger.error("database error on %s %s: %s", request.method, request.url.path, _db_reason(exc))
    return JSONResponse(
        {"detail": "the database is busy or unavailable; nothing was written, retry later"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "1"},
    )


def _db_reason(exc: Exception) -> str:
    """The driver's own message, without the SQL statement and its parameters."""
    orig = getattr(exc, "orig", None)
    return f"{type(orig or exc).__name__}: {orig or type(exc).__name__}"


# -- the application ----------------------------------------------------------------


def create_app(
    store: Store,
    tokens: TokenSet,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    public_url: str | None = None,
) -> FastAPI:
    """Build the ASGI application over ``store``, accepting ``tokens`` and the tokens
    stored in the database (``dotflow-api tokens create``).

    Middleware, outermost first: authentication (401 before any body is read), the
    body limit (413), then routing on the percent-encoded path; every API answer names
    the dashboard page of a run (``Dotflow-Dashboard``, built on ``public_url`` if given,
    else on the address the request used). ``/docs`` serves
    Swagger UI from files shipped with the package, so it works offline.
    """
    authenticator = Authenticator(tokens, TokenStore(store.engine))
    app = FastAPIOffline(
        title="dotflow-api",
        version=__version__,
        summary="Reference server for dotflow's managed mode.",
        description=(
            "Runners report workflows and tasks; people and tools read them back. "
            "Every request except /healthz and the docs needs `Authorization: Bearer "
            "<token>`, and each token sees only its own workflows. The web dashboard "
            "is at `/`."
        ),
        docs_url="/docs",
        redoc_url=None,
        static_url="/docs/static",
        favicon_url=None,
        # No request to the public validator: the docs page talks to this server only.
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.store = store
    app.state.tokens = tokens
    app.state.authenticator = authenticator
    app.state.sessions = SessionStore(store.engine)
    app.include_router(router)
    dashboard.install(app)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(NotFoundError, _on_not_found)
    app.add_exception_handler(DataError, _on_data_error)
    app.add_exception_handler(SQLAlchemyError, _on_database_error)
    # add_middleware puts each new middleware outside the previous ones.
    app.add_middleware(RawPathMiddleware)
    app.add_middleware(DashboardLinkMiddleware, public_url=public_url)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes)
    app.add_middleware(AuthMiddleware, authenticator=authenticator)
    return app


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document the server serves, built without tokens or a database."""
    from dotflow_api.db import create_db_engine

    app = create_app(Store(create_db_engine("sqlite://")), TokenSet(()))
    return app.openapi()
