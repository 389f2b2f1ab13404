"""The wire contract's rules a request must keep before it is sent (outbox lines are untrusted).

Anyone who can write to the outbox folder (a shared ``DOTFLOW_OUTBOX_DIR``, a
restored CI cache) could otherwise make a replay send the token elsewhere or
send what the server never agreed to. A line is sent only when its method,
path and body are what this provider itself would have built for that kind
of request, workflow id and task id.
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import urlsplit

from dotflow_core.plugin import INITIAL_TASK_ID, MAX_TASK_ID, is_strict_int
from dotflow_server_api.payloads import (
    CREATE_TASK,
    CREATE_WORKFLOW,
    MAX_BODY_BYTES,
    UPDATE_TASK,
    UPDATE_WORKFLOW,
    task_path,
    tasks_path,
    workflow_path,
)

#: The contract's longest workflow id (``maxLength`` of every ``workflow_id`` in openapi.json).
MAX_WORKFLOW_ID_LENGTH: Final = 255
#: The method of each kind of request.
METHODS: Final = {
    CREATE_WORKFLOW: "POST",
    UPDATE_WORKFLOW: "PATCH",
    CREATE_TASK: "POST",
    UPDATE_TASK: "PATCH",
}


class ContractError(ValueError):
    """A request the wire contract does not allow; the message says why."""


def expected_path(kind: str, workflow_id: str, task_id: int | None) -> str:
    """The path this provider builds for a request of ``kind``."""
    if kind == CREATE_WORKFLOW:
        return "/workflows"
    if kind == UPDATE_WORKFLOW:
        return workflow_path(workflow_id)
    if kind == CREATE_TASK:
        return tasks_path(workflow_id)
    assert task_id is not None
    return task_path(workflow_id, task_id)


def check_request(data: dict[str, Any]) -> None:
    """Check one outbox line's request fields; raises :class:`ContractError` naming the problem."""
    kind = data.get("kind")
    if kind not in METHODS:
        raise ContractError(f"unknown request kind {_short(kind)}")
    method = data.get("method")
    if method != METHODS[kind]:
        raise ContractError(f"method {_short(method)} is not {METHODS[kind]} ({kind})")
    workflow_id = data.get("workflow_id")
    check_workflow_id(workflow_id)
    task_id = data.get("task_id")
    if kind in (CREATE_TASK, UPDATE_TASK):
        if not is_strict_int(task_id, INITIAL_TASK_ID, MAX_TASK_ID):
            raise ContractError(f"task id {_short(task_id)} is not an integer from 1 to 2**53")
    elif task_id is not None:
        raise ContractError(f"a {kind} request has no task id (got {_short(task_id)})")
    assert isinstance(workflow_id, str)
    path = data.get("path")
    if not isinstance(path, str) or path != expected_path(kind, workflow_id, task_id):
        raise ContractError(
            f"path {_short(path)} is not the contract's "
            f"{expected_path(kind, workflow_id, task_id)!r} for this {kind}"
        )
    body = data.get("body")
    if not isinstance(body, dict):
        raise ContractError(f"the body is {type(body).__name__}, not a JSON object")


def check_workflow_id(workflow_id: object) -> None:
    """A workflow id the contract accepts: a non-empty string of at most 255 characters."""
    if not isinstance(workflow_id, str) or not workflow_id:
        raise ContractError(f"workflow id {_short(workflow_id)} is not a non-empty string")
    if len(workflow_id) > MAX_WORKFLOW_ID_LENGTH:
        raise ContractError(
            f"workflow id of {len(workflow_id)} characters is longer than the contract's "
            f"{MAX_WORKFLOW_ID_LENGTH}"
        )


def check_body_size(body: bytes) -> None:
    if len(body) > MAX_BODY_BYTES:
        raise ContractError(f"the body is {len(body)} bytes, over the cap of {MAX_BODY_BYTES}")


def same_origin(url: str, base_url: str) -> bool:
    """True when ``url`` has ``base_url``'s scheme, host and port (and no credentials)."""
    try:
        target, base = urlsplit(url), urlsplit(base_url)
        return (
            target.scheme == base.scheme
            and target.hostname == base.hostname
            and target.port == base.port
            and target.username is None
            and target.password is None
        )
    except ValueError:
        return False


def printable(text: str, limit: int = 60) -> str:
    """``text`` quoted for a message: control and invisible characters escaped, cut at ``limit``."""
    import unicodedata

    shown = "".join(
        character
        if character.isprintable() and unicodedata.category(character)[0] != "C"
        else character.encode("unicode_escape", "backslashreplace").decode("ascii")
        for character in text[:limit]
    )
    return f"'{shown}...'" if len(text) > limit else f"'{shown}'"


def _short(value: object) -> str:
    """``value`` for an error message: JSON-ish, control characters escaped, at most 80 chars."""
    text = json.dumps(value, ensure_ascii=True, default=repr)
    return text if len(text) <= 80 else text[:77] + "..."
