"""The HTTP API: routes, error answers and the application factory.

Handlers are plain functions (FastAPI runs them in its thread pool) that make exactly
one ``Store`` call each, so every request is one database transaction: it is written
whole or not at all.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import APIRouter, FastAPI, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import DataError, SQLAlchemyError

from dotflow_api import dashboard, routes_batch, routes_runs
from dotflow_api._version import __version__
from dotflow_api.api_common import (
    AUTH_ERRORS,
    BODY_ERRORS,
    MAX_PAGE,
    NOT_FOUND,
    TASK_CONFLICT,
    Limit,
    Offset,
    TaskIdPath,
    WorkflowIdPath,
    mismatch,
    store_of,
    task_view,
    workflow_view,
)
from dotflow_api.auth import Authenticator, AuthMiddleware, Owner, TokenSet
from dotflow_api.dashboard.link import DashboardLinkMiddleware
from dotflow_api.extensions import BATCH_HEADER, ExtensionsHeaderMiddleware, batch_header_value
from dotflow_api.limits import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware
from dotflow_api.paths import DecodedPathRoute, RawPathMiddleware
from dotflow_api.schemas import (
    MAX_TASK_ID,
    ErrorDetail,
    Health,
    NextTaskId,
    TaskAck,
    TaskBody,
    TaskList,
    TaskStatus,
    WorkflowCreate,
    WorkflowList,
    WorkflowUpdate,
    WorkflowView,
)
from dotflow_api.sessions import SessionStore
from dotflow_api.store import ConflictError, NotFoundError, Store
from dotflow_api.timing import TimingLogMiddleware
from dotflow_api.tokens import TokenStore

logger = logging.getLogger("dotflow_api.app")

#: The API is served at the root and under this prefix (the base URL the docs show).
API_PREFIX: Final = "/api/v1"

router = APIRouter(route_class=DecodedPathRoute)


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
    | BODY_ERRORS,
)
def create_workflow(
    body: WorkflowCreate, owner: Owner, request: Request, response: Response
) -> WorkflowView:
    """Register a workflow (201), or update it if this token already has it (200)."""
    fields = body.model_dump(include=body.model_fields_set - {"id", "run_id"})
    row, created = store_of(request).upsert_workflow(owner, body.id, fields, body.run_id)
    if not created:
        response.status_code = status.HTTP_200_OK
    return workflow_view(row)


@router.patch(
    "/workflows/{workflow_id}",
    tags=["runner"],
    response_model=WorkflowView,
    responses={201: {"model": WorkflowView, "description": "Was unknown; registered."}}
    | BODY_ERRORS,
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
        raise mismatch("id", "workflow_id")
    fields = body.model_dump(include=body.model_fields_set - {"id", "run_id"})
    row, created = store_of(request).upsert_workflow(owner, workflow_id, fields, body.run_id)
    if created:
        response.status_code = status.HTTP_201_CREATED
    return workflow_view(row)


@router.get(
    "/workflows",
    tags=["read"],
    response_model=WorkflowList,
    responses=AUTH_ERRORS,
)
def list_workflows(
    owner: Owner, request: Request, limit: Limit = 100, offset: Offset = 0
) -> WorkflowList:
    """The caller's workflows, most recently registered first."""
    page = store_of(request).list_workflows(owner, limit=limit, offset=offset)
    return WorkflowList(
        items=[workflow_view(row) for row in page.rows],
        total=page.total,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/workflows/{workflow_id}",
    tags=["read"],
    response_model=WorkflowView,
    responses=AUTH_ERRORS | NOT_FOUND,
)
def get_workflow(workflow_id: WorkflowIdPath, owner: Owner, request: Request) -> WorkflowView:
    """One workflow: status, timestamps, duration and task counts."""
    return workflow_view(store_of(request).get_workflow(owner, workflow_id))


@router.post(
    "/workflows/{workflow_id}/tasks",
    tags=["runner"],
    status_code=status.HTTP_201_CREATED,
    response_model=TaskAck,
    responses={200: {"model": TaskAck, "description": "Existed already; updated."}}
    | BODY_ERRORS
    | TASK_CONFLICT,
)
def create_task(
    workflow_id: WorkflowIdPath,
    body: TaskBody,
    owner: Owner,
    request: Request,
    response: Response,
) -> TaskAck:
    """Store a task (201), or update it if its id exists (200); registers the workflow.

    With a ``run_id``, a task of another run is never changed (409)."""
    fields = body.model_dump(include=body.model_fields_set - {"id", "run_id"})
    if not store_of(request).upsert_task(owner, workflow_id, body.id, fields, body.run_id):
        response.status_code = status.HTTP_200_OK
    return TaskAck(workflow_id=workflow_id, id=body.id, status=body.status)


@router.get(
    "/workflows/{workflow_id}/tasks/next-id",
    tags=["runner"],
    response_model=NextTaskId,
    responses={
        409: {"model": ErrorDetail, "description": "The workflow holds the largest task id."}
    }
    | AUTH_ERRORS,
)
def next_task_id(
    workflow_id: WorkflowIdPath, owner: Owner, request: Request
) -> NextTaskId | JSONResponse:
    """The id for the workflow's next task: 1 + the highest id stored or reserved by a
    live run (1 when none); 409 when no id the server takes is left.

    A read, not a reservation: runs that start together should reserve their ids
    (``POST /workflows/{workflow_id}/runs/{run_id}/reserve``)."""
    next_id, last_id = store_of(request).next_task_id(owner, workflow_id)
    if next_id > MAX_TASK_ID:
        return JSONResponse(
            {
                "detail": f"the workflow holds the largest task id ({MAX_TASK_ID} = 2**53), "
                "so it has no next id; report further tasks under a new workflow id"
            },
            status_code=status.HTTP_409_CONFLICT,
        )
    return NextTaskId(next_id=next_id, last_id=last_id)


@router.patch(
    "/workflows/{workflow_id}/tasks/{task_id}",
    tags=["runner"],
    response_model=TaskAck,
    responses=BODY_ERRORS | NOT_FOUND | TASK_CONFLICT,
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
        raise mismatch("id", "task_id")
    fields = body.model_dump(include=body.model_fields_set - {"id", "run_id"})
    store_of(request).update_task(owner, workflow_id, task_id, fields, body.run_id)
    return TaskAck(workflow_id=workflow_id, id=task_id, status=body.status)


@router.get(
    "/workflows/{workflow_id}/tasks",
    tags=["read"],
    response_model=TaskList,
    responses=AUTH_ERRORS | NOT_FOUND,
)
def list_tasks(
    workflow_id: WorkflowIdPath,
    owner: Owner,
    request: Request,
    limit: Limit = MAX_PAGE,
    offset: Offset = 0,
    run_id: Annotated[
        str | None, Query(min_length=1, description="Only the tasks of this run.")
    ] = None,
    status: Annotated[
        TaskStatus | None, Query(description="Only the tasks in this status.")
    ] = None,
) -> TaskList:
    """The workflow's tasks ordered by id, with contexts, errors and timestamps;
    ``run_id`` and ``status`` narrow the list (an unknown status is a 422)."""
    page = store_of(request).list_tasks(
        owner,
        workflow_id,
        limit=limit,
        offset=offset,
        run_id=run_id,
        status=None if status is None else status.value,
    )
    return TaskList(
        items=[task_view(workflow_id, row) for row in page.rows],
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


async def _on_conflict(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConflictError)
    return JSONResponse(
        {"detail": str(exc), "next_id": exc.next_id}, status_code=status.HTTP_409_CONFLICT
    )


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
    batch: bool = True,
    timing_log: Path | None = None,
) -> FastAPI:
    """Build the ASGI application over ``store``, accepting ``tokens`` and the tokens
    stored in the database (``dotflow-api tokens create``).

    Middleware, outermost first: authentication (401 before any body is read), the
    body limit (413), then routing on the percent-encoded path; every API answer names
    the dashboard page of a run (``Dotflow-Dashboard``, built on ``public_url`` if given,
    else on the address the request used). ``/docs`` serves
    Swagger UI from files shipped with the package, so it works offline.

    ``batch=False`` (``serve --no-batch``) leaves out the batch endpoint (404 there) and
    the ``Dotflow-Batch`` header, so clients send single requests only. ``timing_log``
    (``serve --timing-log``) appends a line per request to that file
    (:mod:`dotflow_api.timing`).
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
    app.state.batch = batch
    for prefix in ("", API_PREFIX):  # the documented base URL ends in /api/v1
        app.include_router(router, prefix=prefix, include_in_schema=not prefix)
        app.include_router(routes_runs.router, prefix=prefix, include_in_schema=not prefix)
        if batch:
            app.include_router(routes_batch.router, prefix=prefix, include_in_schema=not prefix)
    dashboard.install(app)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(NotFoundError, _on_not_found)
    app.add_exception_handler(ConflictError, _on_conflict)
    app.add_exception_handler(DataError, _on_data_error)
    app.add_exception_handler(SQLAlchemyError, _on_database_error)
    # add_middleware puts each new middleware outside the previous ones.
    app.add_middleware(RawPathMiddleware)
    app.add_middleware(DashboardLinkMiddleware, public_url=public_url)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes)
    app.add_middleware(AuthMiddleware, authenticator=authenticator)
    if batch:
        app.add_middleware(ExtensionsHeaderMiddleware, max_body_bytes=max_body_bytes)
    if timing_log is not None:
        app.add_middleware(TimingLogMiddleware, path=timing_log)
    app.openapi = lambda: _openapi_with_extensions(app)  # type: ignore[method-assign]
    return app


def _openapi_with_extensions(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the ``Dotflow-Batch`` header on every answer (unless
    the batch endpoint is off) and the ``/api/v1`` prefix as a second server (cached,
    as FastAPI caches its own)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    document["servers"] = [
        {"url": "/", "description": "The API at the root."},
        {"url": API_PREFIX, "description": "The same API under /api/v1."},
    ]
    if app.state.batch:
        _document_batch_header(document)
    app.openapi_schema = document
    return document


def _document_batch_header(document: dict[str, Any]) -> None:
    """Declare ``Dotflow-Batch`` and reference it from every answer of ``document``."""
    document.setdefault("components", {})["headers"] = {
        BATCH_HEADER: {
            "description": "Sent on every answer by servers that take batches at POST "
            "/workflows/{workflow_id}/events: 'max-events=N, max-bytes=M', the most events "
            "and body bytes one batch may carry. Absent: send single requests only.",
            "schema": {"type": "string", "example": batch_header_value(DEFAULT_MAX_BODY_BYTES)},
        }
    }
    reference = {"$ref": f"#/components/headers/{BATCH_HEADER}"}
    for item in document["paths"].values():
        for operation in item.values():
            for answer in operation.get("responses", {}).values():
                answer.setdefault("headers", {})[BATCH_HEADER] = reference


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document the server serves, built without tokens or a database."""
    from dotflow_api.db import create_db_engine

    app = create_app(Store(create_db_engine("sqlite://")), TokenSet(()))
    return app.openapi()
