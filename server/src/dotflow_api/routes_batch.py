"""The batch endpoint, ``POST /workflows/{workflow_id}/events``: a workflow's events in
one transaction, one answer per event.

Optional: ``create_app(batch=False)`` (``dotflow-api serve --no-batch``) leaves this
router out, so the server answers 404 there and sends no ``Dotflow-Batch`` header.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status
from pydantic import ValidationError
from sqlalchemy.exc import DataError

from dotflow_api.api_common import BODY_ERRORS, WorkflowIdPath, store_of, workflow_view
from dotflow_api.auth import Owner
from dotflow_api.paths import DecodedPathRoute
from dotflow_api.schemas import (
    BatchAnswer,
    BatchBody,
    BatchEvent,
    BatchOp,
    BatchResult,
    TaskAck,
    TaskBody,
    WorkflowCreate,
    WorkflowUpdate,
)
from dotflow_api.store import BatchWrite, ConflictError, NotFoundError, task_write, workflow_write

router = APIRouter(route_class=DecodedPathRoute)


@router.post(
    "/workflows/{workflow_id}/events",
    tags=["runner"],
    response_model=BatchAnswer,
    responses=BODY_ERRORS,
)
def apply_batch(
    workflow_id: WorkflowIdPath, body: BatchBody, owner: Owner, request: Request
) -> BatchAnswer:
    """Apply an ordered list of the workflow's events in one transaction.

    Each event is the body of one single request (``op`` says which); the answer holds,
    in order, the status and body that request would have got, so a 409 on one task is
    handled as for a single request while the other events are applied. Servers that
    offer this endpoint say so in the ``Dotflow-Batch`` header of every answer."""
    items = [_batch_item(owner, workflow_id, event) for event in body.events]
    answers = store_of(request).batch(items)
    return BatchAnswer(
        results=[
            _batch_result(event, answer, workflow_id)
            for event, answer in zip(body.events, answers, strict=True)
        ]
    )


def _batch_item(owner: str, workflow_id: str, event: BatchEvent) -> BatchWrite | Exception:
    """The write an event stands for, or the error its body has."""
    try:
        if event.op in (BatchOp.CREATE_WORKFLOW, BatchOp.UPDATE_WORKFLOW):
            model = WorkflowCreate if event.op is BatchOp.CREATE_WORKFLOW else WorkflowUpdate
            workflow = model.model_validate(event.body)
            if workflow.id is not None and workflow.id != workflow_id:
                return _BodyMismatch("body id must be the workflow id of the batch's path")
            fields = workflow.model_dump(include=workflow.model_fields_set - {"id", "run_id"})
            return workflow_write(owner, workflow_id, fields, workflow.run_id)
        task = TaskBody.model_validate(event.body)
    except ValidationError as error:
        return error
    fields = task.model_dump(include=task.model_fields_set - {"id", "run_id"})
    return task_write(
        owner,
        workflow_id,
        task.id,
        fields,
        task.run_id,
        create=event.op is BatchOp.CREATE_TASK,
    )


class _BodyMismatch(ValueError):
    """An event whose body names another workflow than the batch."""


def _batch_result(event: BatchEvent, answer: Any, workflow_id: str) -> BatchResult:
    if isinstance(answer, Exception):
        return _error_result(answer)
    if event.op in (BatchOp.CREATE_WORKFLOW, BatchOp.UPDATE_WORKFLOW):
        row, created = answer
        new = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return BatchResult(status=new, body=workflow_view(row).model_dump(mode="json"))
    ack = TaskAck(workflow_id=workflow_id, id=event.body["id"], status=event.body["status"])
    code = status.HTTP_201_CREATED if answer else status.HTTP_200_OK
    return BatchResult(status=code, body=ack.model_dump(mode="json"))


def _error_result(error: Exception) -> BatchResult:
    if isinstance(error, ConflictError):
        return BatchResult(status=409, body={"detail": str(error), "next_id": error.next_id})
    if isinstance(error, NotFoundError):
        return BatchResult(status=404, body={"detail": str(error)})
    if isinstance(error, ValidationError):
        issues = [
            {
                "loc": ["body", *(str(part) for part in issue["loc"])],
                "msg": str(issue.get("msg", "invalid value")),
                "type": str(issue.get("type", "value_error")),
            }
            for issue in error.errors(include_input=False)
        ]
        return BatchResult(status=422, body={"detail": issues})
    if isinstance(error, DataError):
        return BatchResult(
            status=422, body={"detail": "a value in the event cannot be stored by the database"}
        )
    return BatchResult(
        status=422,
        body={"detail": [{"loc": ["body", "id"], "msg": str(error), "type": "value_error"}]},
    )


__all__ = ["router"]
