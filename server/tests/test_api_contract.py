"""The contract shipped in the client package must match what the server serves.

The shipped file's paths and components must equal, exactly, the contract exported
from the served document (response bodies and limits such as ``maximum`` included).
The finer checks below name what drifted: for every operation in the shipped file the
served document has it, with the same request-body shape (properties, required fields
and types, ``$ref``s resolved), the same parameters and the same response status codes;
and every runner-facing operation the server serves is in the shipped file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dotflow_api.app import openapi_document
from dotflow_api.contract import CLIENT_OPERATIONS, client_contract

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED = (
    REPO_ROOT / "plugins" / "dotflow-server-api" / "src" / "dotflow_server_api" / "openapi.json"
)
HOW_TO_FIX = "regenerate it: python server/scripts/export_contract.py"
METHODS = ("get", "put", "post", "patch", "delete")


@pytest.fixture(scope="module")
def served() -> dict[str, Any]:
    return openapi_document()


@pytest.fixture(scope="module")
def shipped() -> dict[str, Any]:
    assert SHIPPED.exists(), f"{SHIPPED} is missing; {HOW_TO_FIX}"
    return json.loads(SHIPPED.read_text(encoding="utf-8"))


def _resolve(document: dict[str, Any], node: Any, seen: frozenset[str] = frozenset()) -> Any:
    """``node`` with every local ``$ref`` replaced by its target (cycles cut)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            if ref in seen:
                return {"$ref": ref}
            target: Any = document
            for part in ref[2:].split("/"):
                target = target[part]
            return _resolve(document, target, seen | {ref})
        return {key: _resolve(document, value, seen) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve(document, value, seen) for value in node]
    return node


def _shape(schema: Any) -> Any:
    """What a client depends on in a resolved schema: types, properties, required, enums."""
    if not isinstance(schema, dict):
        return schema
    shape: dict[str, Any] = {}
    for key in ("type", "format", "enum", "const"):
        if key in schema:
            shape[key] = schema[key]
    if "properties" in schema:
        shape["properties"] = {name: _shape(sub) for name, sub in schema["properties"].items()}
    if "required" in schema:
        shape["required"] = sorted(schema["required"])
    if "items" in schema:
        shape["items"] = _shape(schema["items"])
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            shape[key] = sorted(
                (_shape(sub) for sub in schema[key]), key=lambda s: json.dumps(s, sort_keys=True)
            )
    return shape


def _operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    ]


def _body_shape(document: dict[str, Any], path: str, method: str) -> Any:
    operation = document["paths"][path][method]
    body = operation.get("requestBody")
    if body is None:
        return None
    schema = body["content"]["application/json"]["schema"]
    return {"required": body.get("required", False), "schema": _shape(_resolve(document, schema))}


def _parameters(document: dict[str, Any], path: str, method: str) -> Any:
    operation = document["paths"][path][method]
    return sorted(
        (
            param["in"],
            param["name"],
            param.get("required", False),
            json.dumps(_shape(_resolve(document, param.get("schema", {}))), sort_keys=True),
        )
        for param in operation.get("parameters", [])
    )


def test_shipped_contract_lists_exactly_the_client_operations(shipped: dict[str, Any]) -> None:
    assert sorted(_operations(shipped)) == sorted(CLIENT_OPERATIONS), HOW_TO_FIX


def test_every_shipped_operation_is_served(shipped: dict[str, Any], served: dict[str, Any]) -> None:
    missing = [op for op in _operations(shipped) if op not in _operations(served)]
    assert not missing, f"served document lacks {missing}; {HOW_TO_FIX}"


@pytest.mark.parametrize(("path", "method"), CLIENT_OPERATIONS)
def test_request_bodies_match(
    shipped: dict[str, Any], served: dict[str, Any], path: str, method: str
) -> None:
    assert _body_shape(shipped, path, method) == _body_shape(served, path, method), HOW_TO_FIX


@pytest.mark.parametrize(("path", "method"), CLIENT_OPERATIONS)
def test_parameters_match(
    shipped: dict[str, Any], served: dict[str, Any], path: str, method: str
) -> None:
    assert _parameters(shipped, path, method) == _parameters(served, path, method), HOW_TO_FIX


@pytest.mark.parametrize(("path", "method"), CLIENT_OPERATIONS)
def test_response_status_codes_match(
    shipped: dict[str, Any], served: dict[str, Any], path: str, method: str
) -> None:
    shipped_codes = sorted(shipped["paths"][path][method]["responses"])
    served_codes = sorted(served["paths"][path][method]["responses"])
    assert shipped_codes == served_codes, HOW_TO_FIX


def test_security_scheme_matches(shipped: dict[str, Any], served: dict[str, Any]) -> None:
    assert shipped["components"]["securitySchemes"] == served["components"]["securitySchemes"]
    for path, method in CLIENT_OPERATIONS:
        assert shipped["paths"][path][method].get("security") == [{"bearerAuth": []}]


def test_contract_is_self_contained(shipped: dict[str, Any]) -> None:
    text = json.dumps(shipped)
    for name in shipped["components"]["schemas"]:
        assert f'"#/components/schemas/{name}"' in text or name in text
    # Every $ref resolves inside the file.
    _resolve(shipped, shipped["paths"])


def test_drift_is_detected(served: dict[str, Any]) -> None:
    """The comparison above really notices a changed field type."""
    drifted = client_contract(json.loads(json.dumps(served)))
    drifted["components"]["schemas"]["TaskBody"]["properties"]["id"]["type"] = "string"
    assert _body_shape(drifted, "/workflows/{workflow_id}/tasks", "post") != _body_shape(
        served, "/workflows/{workflow_id}/tasks", "post"
    )


def test_shipped_file_is_exactly_the_served_contract(
    shipped: dict[str, Any], served: dict[str, Any]
) -> None:
    expected = client_contract(served)
    assert shipped["paths"] == expected["paths"], HOW_TO_FIX
    assert shipped["components"] == expected["components"], HOW_TO_FIX
