"""The pages below a workflow: the workflow (its runs), one run, one task.

Every page needs a live session and shows only the signed-in token's data: another
tenant's workflow, run or task is a 404, exactly as in the API.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from dotflow_api.dashboard import render, views
from dotflow_api.dashboard import session as auth
from dotflow_api.dashboard.chart import CHART_HEIGHT, duration_chart
from dotflow_api.models import RUN_ID_MAX_LENGTH, utcnow
from dotflow_api.paths import DecodedPathRoute
from dotflow_api.schemas import MAX_TASK_ID
from dotflow_api.store import NotFoundError

router = APIRouter(route_class=DecodedPathRoute, include_in_schema=False)


@router.get("/ui/workflows/{workflow_id}", response_class=HTMLResponse)
def workflow_page(request: Request, workflow_id: str) -> HTMLResponse:
    """One workflow: its latest state, its runs (newest first) and their durations."""
    owner = auth.viewer(request)
    queries = render.queries(request)
    try:
        workflow = queries.workflow(owner, workflow_id)
        runs = queries.runs(
            owner, workflow_id, limit=render.PAGE_SIZE, offset=render.page_offset(request)
        )
    except NotFoundError:
        return render.not_found(request, f"workflow {workflow_id!r}")
    run_href = render.href_maker(request, "workflows", render.quote_id(workflow_id), "runs")
    loose = queries.run_tasks(owner, workflow_id, None)  # sent by clients without runs
    return render.page(
        request,
        "workflow.html",
        {
            "workflow": workflow,
            "runs": runs.rows,
            "total": runs.total,
            "pager": render.pager(request, runs.total),
            "chart": duration_chart(runs.rows, lambda run: run_href(run["run_id"])),
            "run_href": run_href,
            "chart_height": CHART_HEIGHT,
            "tasks": loose,
            "timeline": views.timeline(loose, utcnow()) if loose else None,
            "task_href": _task_href(request, workflow_id),
            "live": not views.is_final(workflow["status"]),
        },
    )


@router.get("/ui/workflows/{workflow_id}/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, workflow_id: str, run_id: str) -> HTMLResponse:
    """One run: its tasks on a timeline beside a table; refreshes itself while it runs."""
    owner = auth.viewer(request)
    queries = render.queries(request)
    if len(run_id) > RUN_ID_MAX_LENGTH:
        return render.not_found(request, f"run {run_id[:RUN_ID_MAX_LENGTH]!r}\u2026")
    try:
        workflow = queries.workflow(owner, workflow_id)
        run = queries.run(owner, workflow_id, run_id)
    except NotFoundError:
        return render.not_found(request, f"run {run_id!r} of workflow {workflow_id!r}")
    tasks = queries.run_tasks(owner, workflow_id, run_id)
    return render.page(
        request,
        "run.html",
        {
            "workflow": workflow,
            "run": run,
            "tasks": tasks,
            "timeline": views.timeline(tasks, utcnow()),
            "live": not views.is_final(run["status"]),
            "task_href": _task_href(request, workflow_id),
        },
    )


def _task_href(request: Request, workflow_id: str) -> render.Href:
    return render.href_maker(request, "workflows", render.quote_id(workflow_id), "tasks")


@router.get("/ui/workflows/{workflow_id}/tasks/{task_id}", response_class=HTMLResponse)
def task_page(request: Request, workflow_id: str, task_id: str) -> HTMLResponse:
    """One task: its errors, one per failed attempt, and its contexts."""
    owner = auth.viewer(request)
    if not task_id.isdigit() or not 1 <= int(task_id) <= MAX_TASK_ID:
        return render.not_found(request, f"task {task_id!r}")
    queries = render.queries(request)
    try:
        workflow = queries.workflow(owner, workflow_id)
        task = queries.task(owner, workflow_id, int(task_id))
    except NotFoundError:
        return render.not_found(request, f"task {task_id} of workflow {workflow_id!r}")
    run_href = render.href_maker(request, "workflows", render.quote_id(workflow_id), "runs")
    return render.page(
        request,
        "task.html",
        {
            "workflow": workflow,
            "task": task,
            "run_link": run_href(task["run_id"]) if task.get("run_id") else None,
            "errors": views.attempt_errors(task["errors"]),
            "current": views.preview(task["current_context"]),
            "previous": views.preview(task["previous_context"]),
        },
    )
