"""What every dashboard page shares: the templates, the security headers, ids in links.

Pages carry a strict Content-Security-Policy: scripts, styles and images come from
this server only, so nothing a page shows can reach another host.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from dotflow_api._version import __version__
from dotflow_api.dashboard import session as auth
from dotflow_api.dashboard import views
from dotflow_api.dashboard.queries import DashboardQueries

HERE: Final = Path(__file__).parent
#: Rows per page of a list (workflows, a workflow's runs).
PAGE_SIZE: Final = 25
#: Seconds between two refreshes of a page showing something still running.
REFRESH_SECONDS: Final = 2

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

templates = Jinja2Templates(directory=str(HERE / "templates"))


def quote_id(value: str | int) -> str:
    """A path parameter percent-encoded as the routes expect (``.`` and ``..`` too)."""
    text = quote(str(value), safe="")
    return text.replace(".", "%2E") if text in (".", "..") else text


def queries(request: Request) -> DashboardQueries:
    return request.app.state.dashboard  # type: ignore[no-any-return]


def page(
    request: Request, template: str, context: Mapping[str, Any], status_code: int = 200
) -> HTMLResponse:
    """``template`` rendered with what every page needs, and the security headers."""
    response = templates.TemplateResponse(
        request,
        template,
        {
            "base": auth.root(request),
            "version": __version__,
            "views": views,
            "quote_id": quote_id,
            "signed_in": context.get("signed_in", True),
            "refresh_seconds": REFRESH_SECONDS,
            **context,
        },
        status_code=status_code,
    )
    response.headers.update(SECURITY_HEADERS)
    return response


def not_found(request: Request, what: str) -> HTMLResponse:
    return page(request, "not_found.html", {"what": what}, status_code=404)


def int_param(request: Request, name: str, default: int) -> int:
    """A positive integer query parameter; ``default`` when absent or not a number."""
    try:
        value = int(request.query_params.get(name, default))
    except ValueError:
        return default
    return max(value, 1)


@dataclass(frozen=True)
class Pager:
    """Where a paginated list is: its page, the page count, the neighbours' links."""

    number: int
    pages: int
    previous: str | None
    next: str | None


def page_offset(request: Request) -> int:
    """Rows before the request's ``?page=``."""
    return (int_param(request, "page", 1) - 1) * PAGE_SIZE


def pager(request: Request, total: int, keep: Mapping[str, str | None] | None = None) -> Pager:
    """The pager of a list of ``total`` rows at the request's ``?page=``; ``keep``: the
    other query parameters its links carry (empty ones are left out)."""
    number = int_param(request, "page", 1)
    pages = max(math.ceil(total / PAGE_SIZE), 1)

    def link(target: int) -> str:
        params: dict[str, Any] = {**(keep or {}), "page": target}
        return "?" + urlencode({key: value for key, value in params.items() if value})

    return Pager(
        number=number,
        pages=pages,
        previous=link(number - 1) if number > 1 else None,
        next=link(number + 1) if number < pages else None,
    )


#: Gives the link of one item of a kind (a run, a task) from its id.
Href = Callable[[str | int], str]


def href_maker(request: Request, *parts: str) -> Href:
    """A function giving the link of one item below ``/ui/<parts...>/``."""
    prefix = "/".join([auth.root(request), "ui", *parts])
    return lambda item: f"{prefix}/{quote_id(item)}"
