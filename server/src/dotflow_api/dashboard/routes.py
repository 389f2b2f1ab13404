"""The dashboard's entry pages and wiring: signing in and out, the workflows list.

Every page needs a live session (see :mod:`dotflow_api.dashboard.session`) and shows
only the signed-in token's workflows; the pages below a workflow are in
:mod:`dotflow_api.dashboard.pages`, what they share in :mod:`dotflow_api.dashboard.render`.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from dotflow_api.dashboard import pages, render
from dotflow_api.dashboard import session as auth
from dotflow_api.dashboard.queries import DashboardQueries
from dotflow_api.models import WORKFLOW_ID_MAX_LENGTH
from dotflow_api.paths import DecodedPathRoute

#: Longest token accepted by the sign-in form (longer ones are not tokens).
MAX_TOKEN_CHARS: Final = 4096

router = APIRouter(route_class=DecodedPathRoute, include_in_schema=False)


# -- signing in and out -------------------------------------------------------------


@router.get("/ui/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    """The sign-in form."""
    return render.page(
        request,
        "login.html",
        {"next": auth.safe_next(request, next), "error": None, "signed_in": False},
    )


@router.post("/ui/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Check the token; on success open a session and go where the user was heading."""
    if not auth.same_origin(request):
        return render.page(
            request, "login.html", _login_error(request, None, "forbidden"), status_code=403
        )
    form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=10)
    token = (form.get("token") or [""])[0].strip()
    next_path = auth.safe_next(request, (form.get("next") or [None])[0])
    if not token:
        return render.page(request, "login.html", _login_error(request, next_path, "empty"), 400)
    owner = None
    if len(token) <= MAX_TOKEN_CHARS:
        owner = await run_in_threadpool(
            auth.authenticator(request).owner_for_token, token.encode("utf-8", "replace")
        )
    if owner is None:
        return render.page(request, "login.html", _login_error(request, next_path, "wrong"), 401)
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


@router.get("/", response_class=HTMLResponse)
def workflows_page(request: Request) -> HTMLResponse:
    """Every workflow of the signed-in token, newest activity first, filtered, paginated."""
    owner = auth.viewer(request)
    status = request.query_params.get("status") or None
    search = (request.query_params.get("q") or "").strip()[:WORKFLOW_ID_MAX_LENGTH] or None
    queries = render.queries(request)
    result = queries.workflows(
        owner,
        status=status,
        search=search,
        limit=render.PAGE_SIZE,
        offset=render.page_offset(request),
    )
    return render.page(
        request,
        "workflows.html",
        {
            "rows": result.rows,
            "total": result.total,
            "status": status,
            "search": search or "",
            "statuses": queries.statuses(owner),
            "pager": render.pager(request, result.total, {"status": status, "q": search}),
        },
    )


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    """The dashboard's icon, for browsers that ask for it at the root."""
    return FileResponse(render.HERE / "static" / "favicon.svg", media_type="image/svg+xml")


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
    app.include_router(pages.router)
    app.mount(
        "/ui/static", StaticFiles(directory=str(render.HERE / "static")), name="dashboard-static"
    )
    app.add_exception_handler(auth.SignInRequired, _on_sign_in_required)
