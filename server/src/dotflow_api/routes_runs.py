"""Runs and id reservations: the wire contract's extensions for fleets (the batch
endpoint is in :mod:`dotflow_api.routes_batch`).

All additive: a client that sends no ``run_id`` and single requests only sees the seed
contract. See ``server/README.md`` ("Runs, reservations and batches").
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from dotflow_api.api_common import (
    AUTH_ERRORS,
    BODY_ERRORS,
    NOT_FOUND,
    Limit,
    Offset,
    RunIdPath,
    WorkflowIdPath,
    run_view,
    store_of,
)
from dotflow_api.auth import Owner
from dotflow_api.paths import DecodedPathRoute
from dotflow_api.schemas import (
    ErrorDetail,
    Reservation,
    ReserveBody,
    RunList,
    RunView,
)

router = APIRouter(route_class=DecodedPathRoute)


@router.get(
    "/workflows/{workflow_id}/runs",
    tags=["read"],
    response_model=RunList,
    responses=AUTH_ERRORS | NOT_FOUND,
)
def list_runs(
    workflow_id: WorkflowIdPath,
    owner: Owner,
    request: Request,
    limit: Limit = 100,
    offset: Offset = 0,
) -> RunList:
    """The workflow's runs, newest first: status, times, counts and the ids of their tasks."""
    page = store_of(request).list_runs(owner, workflow_id, limit=limit, offset=offset)
    return RunList(
        items=[run_view(workflow_id, row) for row in page.rows],
        total=page.total,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/workflows/{workflow_id}/runs/{run_id}",
    tags=["read"],
    response_model=RunView,
    responses=AUTH_ERRORS | NOT_FOUND,
)
def get_run(
    workflow_id: WorkflowIdPath, run_id: RunIdPath, owner: Owner, request: Request
) -> RunView:
    """One run of the workflow."""
    return run_view(workflow_id, store_of(request).get_run(owner, workflow_id, run_id))


@router.get(
    "/runs/{run_id}",
    tags=["read"],
    response_model=RunView,
    responses=AUTH_ERRORS | NOT_FOUND,
)
def find_run(run_id: RunIdPath, owner: Owner, request: Request) -> RunView:
    """The token's run with this id, whichever workflow it belongs to (``workflow_id`` in
    the answer). Runners send a new UUID per run; should two of the token's workflows
    hold the same run id, the most recent run is the answer."""
    workflow_id, row = store_of(request).find_run(owner, run_id)
    return run_view(workflow_id, row)


@router.post(
    "/workflows/{workflow_id}/runs/{run_id}/reserve",
    tags=["runner"],
    response_model=Reservation,
    responses=BODY_ERRORS
    | {409: {"model": ErrorDetail, "description": "Fewer than count task ids are left."}},
)
def reserve_task_ids(
    workflow_id: WorkflowIdPath,
    run_id: RunIdPath,
    body: ReserveBody,
    owner: Owner,
    request: Request,
) -> Reservation:
    """Reserve ``count`` consecutive free task ids for the run, atomically: runs that
    reserve at the same moment get disjoint ids, and no other run's request may take
    them while the run is unfinished (24 h at most after it last reported). Registers
    the workflow and the run if unknown. Each call reserves a new block."""
    first = store_of(request).reserve(owner, workflow_id, run_id, body.count)
    return Reservation(
        workflow_id=workflow_id, run_id=run_id, first_id=first, last_id=first + body.count - 1
    )


__all__ = ["router"]
