"""The runner-facing part of the OpenAPI document: the wire contract clients ship.

The HTTP client package (``dotflow-server-api``) carries this subset as its
``openapi.json``; ``server/scripts/export_contract.py`` writes it and a test fails
when the served document and the shipped file drift apart.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, Final

from dotflow_api.app import openapi_document

#: (path, method) of every operation a runner calls, and those ``dotflow runs`` reads.
CLIENT_OPERATIONS: Final = (
    ("/workflows", "post"),
    ("/workflows/{workflow_id}", "patch"),
    ("/workflows/{workflow_id}/tasks", "post"),
    ("/workflows/{workflow_id}/tasks/{task_id}", "patch"),
    ("/workflows/{workflow_id}/tasks/next-id", "get"),
    ("/workflows/{workflow_id}/runs/{run_id}/reserve", "post"),
    ("/workflows/{workflow_id}/events", "post"),
    ("/workflows/{workflow_id}/runs", "get"),
    ("/runs/{run_id}", "get"),
    ("/workflows/{workflow_id}/tasks", "get"),
)


def client_contract(document: dict[str, Any] | None = None) -> dict[str, Any]:
    """The subset of ``document`` (default: the served one) that runners depend on.

    Keeps the client operations, every component schema they reference (transitively)
    and the security schemes.
    """
    served = openapi_document() if document is None else document
    paths: dict[str, dict[str, Any]] = {}
    for path, method in CLIENT_OPERATIONS:
        operation = served["paths"][path][method]
        paths.setdefault(path, {})[method] = copy.deepcopy(operation)

    components = served.get("components", {})
    all_schemas: dict[str, Any] = components.get("schemas", {})
    needed: dict[str, Any] = {}
    pending = list(_refs(paths))
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed[name] = copy.deepcopy(all_schemas[name])
        pending.extend(_refs(needed[name]))

    info = dict(served.get("info", {}))
    info["title"] = f"{info.get('title', 'dotflow-api')} runner contract"
    info["description"] = (
        "The endpoints a dotflow runner calls in managed mode, and those dotflow runs "
        "reads. Generated from the "
        "dotflow-api server by server/scripts/export_contract.py; do not edit by hand."
    )
    info.pop("summary", None)
    return {
        "openapi": served["openapi"],
        "info": info,
        "servers": copy.deepcopy(served.get("servers", [])),
        "paths": paths,
        "components": {
            "schemas": dict(sorted(needed.items())),
            "securitySchemes": copy.deepcopy(components.get("securitySchemes", {})),
            "headers": copy.deepcopy(components.get("headers", {})),
        },
    }


def _refs(node: Any) -> Iterator[str]:
    """Names of the component schemas referenced anywhere under ``node``."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            yield ref.rsplit("/", 1)[1]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)
