"""The dashboard's pages: server-rendered HTML, read-only, one owner's data per session.

Every page needs a live session (see :mod:`dotflow_api.dashboard.session`) and shows
only the signed-in token's workflows: another tenant's workflow is a 404, exactly as
in the API. Pages carry a strict Content-Security-Policy: scripts, styles and images
come from this server only, so nothing a page shows can reach another host.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from dotflow_api._version import __version__
from dotflow_api.dashboard import session as auth
from dotflow_api.dashboard import views
from dotflow_api.dashboard.queries import DashboardQueries
from dotflow_api.models import WORKFLOW_ID_MAX_LENGTH, utcnow
from dotflow_api.paths import DecodedPathRoute
from dotflow_api.schemas import MAX_TASK_ID
from dotflow_api.store import NotFoundError

_HERE = Path(__file__).parent
#: Workflows per page of the list.
PAGE_SIZE: Final = 25
#: Seconds between two refreshes of a page showing something still running.
REFRESH_SECONDS: Final = 2
#: Longest token accepted by the sign-in form (longer ones are not tokens).
MAX_TOKEN_CHARS: Final = 4096

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(directory=str(_HERE / "templates"))
router = APIRouter(route_class=DecodedPathRoute, include_in_schema=False)


def quote_id(value: str | int) -> str:
    """A path parameter percent-encoded as the routes expect (``.`` and ``..`` too)."""
    text = quote(str(value), safe="")
    return text.replace(".", "%2E") if text in (".", "..") else text


def _queries(request: Request) -> DashboardQueries:
    return request.app.state.dashboard  # type: ignore[no-any-return]


def _page(
    request: Request, template: str, context: Mapping[str, Any], status_code: int = 200
) -> HTMLResponse:
    base = auth.root(request)
    response = templates.TemplateResponse(
        request,
        template,
        {
            "base": base,
            "version": __version__,
            "views": views,
            "quote_id": quote_id,
            "signed_in": context.get("signed_in", True),
            **context,
        },
        status_code=status_code,
    )
    response.headers.update(SECURITY_HEADERS)
    return response


def _not_found(request: Request, what: str) -> HTMLResponse:
    return _page(request, "not_found.html", {"what": what}, status_code=404)


# -- signing in and out -------------------------------------------------------------


@router.get("/ui/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    """The sign-in form."""
    return _page(
        request,
        "login.html",
        {"next": auth.safe_next(request, next), "error": None, "signed_in": False},
    )


@router.post("/ui/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Check the token; on success open a session and go where the user was heading."""
    if not auth.same_origin(request):
        return _page(
            request, "login.html", _login_error(request, None, "forbidden"), status_code=403
        )
    form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=10)
    token = (form.get("token") or [""])[0].strip()
    next_path = auth.safe_next(request, (form.get("next") or [None])[0])
    if not token:
        return _page(request, "login.html", _login_error(request, next_path, "empty"), 400)
    owner = None
    if len(token) <= MAX_TOKEN_CHARS:
        owner = await run_in_threadpool(
            auth.authenticator(request).owner_for_token, token.encode("utf-8", "replace")
        )
    if owner is None:
        return _page(request, "login.html", _login_error(request, next_path, "wrong"), 401)
    session_id = await run_in_threadpool(auth.sessions(request).create, owner)
    response = RedirectResponse(next_path, status_code=303)
    auth.set_session_cookie(request, response, session_id)
    return response


_LOGIN_ERRORS: Final = {
    "empty": "Enter a token to sign in.",
    "wrong": (
        "That token is not accepted by this server. Check it for typos, or ask whoever "
        "runs the server for a token (dotflow-api tokens create NAME)."
    ),
    "forbidden": "This form was sent from another site; sign in from this server's page.",
}


def _login_error(request: Request, next_path: str | None, kind: str) -> dict[str, Any]:
    return {
        "next": auth.safe_next(request, next_path),
        "error": _LOGIN_ERRORS[kind],
        "signed_in": False,
    }


@router.post("/ui/logout")
def logout(request: Request) -> Response:
    """End the session and show the sign-in page."""
    if not auth.same_origin(request):
        return Response("cross-site request refused", status_code=403)
    auth.sessions(request).end(request.cookies.get(auth.COOKIE_NAME, ""))
    response = RedirectResponse(auth.login_url(request) + "?signed_out=1", status_code=303)
    auth.clear_session_cookie(request, response)
    return response


# -- workflows ----------------------------------------------------------------------


def _int_param(request: Request, name: str, default: int) -> int:
    try:
        value = int(request.query_params.get(name, default))
    except ValueError:
        return default
    return max(value, 1)


@router.get("/", response_class=HTMLResponse)
def workflows_page(request: Request) -> HTMLResponse:
    """Every workflow of the signed-in token, newest activity first, filtered, paginated."""
    owner = auth.viewer(request)
    status = request.query_params.get("status") or None
    search = (request.query_params.get("q") or "").strip()[:WORKFLOW_ID_MAX_LENGTH] or None
    page_number = _int_param(request, "page", 1)
    queries = _queries(request)
    result = queries.workflows(
        owner,
        status=status,
        search=search,
        limit=PAGE_SIZE,
        offset=(page_number - 1) * PAGE_SIZE,
    )
    pages = max(math.ceil(result.total / PAGE_SIZE), 1)

    def page_link(number: int) -> str:
        params = {"status": status or "", "q": search or "", "page": number}
        return "?" + urlencode({key: value for key, value in params.items() if value})

    return _page(
        request,
        "workflows.html",
        {
            "rows": result.rows,
            "total": result.total,
            "status": status,
            "search": search or "",
            "statuses": queries.statuses(owner),
            "page_number": page_number,
            "pages": pages,
            "previous": page_link(page_number - 1) if page_number > 1 else None,
            "next_page": page_link(page_number + 1) if page_number < pages else None,
        },
    )


@router.get("/ui/workflows/{workflow_id}", response_class=HTMLResponse)
def workflow_page(request: Request, workflow_id: str) -> HTMLResponse:
    """One workflow: its status and its tasks on a timeline."""
    owner = auth.viewer(request)
    queries = _queries(request)
    try:
        workflow = queries.workflow(owner, workflow_id)
    except NotFoundError:
        return _not_found(request, f"workflow {workflow_id!r}")
    tasks = queries.tasks(owner, workflow_id)
    live = not views.is_final(workflow["status"])
    return _page(
        request,
        "run.html",
        {
            "workflow": workflow,
            "tasks": tasks,
            "timeline": views.timeline(tasks, utcnow()),
            "live": live,
            "refresh_seconds": REFRESH_SECONDS,
            "task_href": lambda task_id: _task_href(request, workflow_id, task_id),
        },
    )


def _task_href(request: Request, workflow_id: str, task_id: int) -> str:
    return f"{auth.root(request)}/ui/workflows/{quote_id(workflow_id)}/tasks/{task_id}"


@router.get("/ui/workflows/{workflow_id}/tasks/{task_id}", response_class=HTMLResponse)
def task_page(request: Request, workflow_id: str, task_id: str) -> HTMLResponse:
    """One task: its errors, one per failed attempt, and its contexts."""
    owner = auth.viewer(request)
    if not task_id.isdigit() or not 1 <= int(task_id) <= MAX_TASK_ID:
        return _not_found(request, f"task {task_id!r}")
    try:
        workflow = _queries(request).workflow(owner, workflow_id)
        task = _queries(request).task(owner, workflow_id, int(task_id))
    except NotFoundError:
        return _not_found(request, f"task {task_id} of workflow {workflow_id!r}")
    return _page(
        request,
        "task.html",
        {
            "workflow": workflow,
            "task": task,
            "errors": task["errors"] if isinstance(task["errors"], list) else [],
            "current": views.preview(task["current_context"]),
            "previous": views.preview(task["previous_context"]),
        },
    )


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    """The dashboard's icon, for browsers that ask for it at the root."""
    return FileResponse(_HERE / "static" / "favicon.svg", media_type="image/svg+xml")


# -- wiring -------------------------------------------------------------------------


async def _on_sign_in_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, auth.SignInRequired)
    response = RedirectResponse(auth.login_url(request, exc.next_path), status_code=303)
    response.headers["Cache-Control"] = "no-store"
    return response


def install(app: FastAPI) -> None:
    """Add the dashboard's pages and static files to ``app`` (state set by ``create_app``)."""
    app.state.dashboard = DashboardQueries(app.state.store.engine)
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=str(_HERE / "static")), name="dashboard-static")
    app.add_exception_handler(auth.SignInRequired, _on_sign_in_required)
