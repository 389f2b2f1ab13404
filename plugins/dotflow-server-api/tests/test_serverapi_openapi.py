"""Our requests against the shipped contract (openapi.json, exported from the reference server)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
from dotflow_server_api import payloads

from dotflow_core import TaskStatus, WorkflowStatus
from dotflow_core.testing import sample_task_record, sample_workflow_record

#: Where the package keeps the contract (importlib.resources: wherever it is installed).
SHIPPED = resources.files("dotflow_server_api") / "openapi.json"


@pytest.fixture(scope="module")
def contract() -> dict[str, Any]:
    """The shipped document; missing, every test using it fails (never skips)."""
    return json.loads(SHIPPED.read_text(encoding="utf-8"))


def test_the_contract_is_shipped_in_the_package_as_openapi_3() -> None:
    assert SHIPPED.is_file(), "openapi.json is missing from the dotflow_server_api package"
    document = json.loads(SHIPPED.read_text(encoding="utf-8"))
    assert document["openapi"].startswith("3.")
    assert document["paths"]


def schema(contract: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    body = contract["paths"][path][method.lower()]["requestBody"]["content"]["application/json"]
    reference = body["schema"]["$ref"].rsplit("/", 1)[-1]
    return contract["components"]["schemas"][reference]


def test_every_endpoint_we_call_is_in_the_contract(contract: dict[str, Any]) -> None:
    ours = {
        ("POST", payloads.ENDPOINTS[payloads.CREATE_WORKFLOW]),
        ("PATCH", payloads.ENDPOINTS[payloads.UPDATE_WORKFLOW]),
        ("POST", payloads.ENDPOINTS[payloads.CREATE_TASK]),
        ("PATCH", payloads.ENDPOINTS[payloads.UPDATE_TASK]),
        ("GET", "/workflows/{workflow_id}/tasks/next-id"),
    }
    theirs = {(m.upper(), path) for path, ops in contract["paths"].items() for m in ops}
    assert ours <= theirs


@pytest.mark.parametrize(
    ("build", "method", "path"),
    [
        (lambda: payloads.create_workflow(sample_workflow_record()), "POST", "/workflows"),
        (
            lambda: payloads.update_workflow(sample_workflow_record(WorkflowStatus.FAILED)),
            "PATCH",
            "/workflows/{workflow_id}",
        ),
        (
            lambda: payloads.create_task(sample_task_record("w", 3)),
            "POST",
            "/workflows/{workflow_id}/tasks",
        ),
        (
            lambda: payloads.update_task(sample_task_record("w", 3, TaskStatus.FAILED)),
            "PATCH",
            "/workflows/{workflow_id}/tasks/{task_id}",
        ),
    ],
)
def test_bodies_use_the_contracts_fields(
    contract: dict[str, Any], build: Any, method: str, path: str
) -> None:
    request = build()
    body = json.loads(request.body)
    expected = schema(contract, method, path)
    assert set(body) <= set(expected["properties"])
    assert set(expected.get("required", [])) <= set(body)
    status_schema = contract["components"]["schemas"][
        expected["properties"]["status"]["$ref"].rsplit("/", 1)[-1]
    ]
    assert body["status"] in status_schema["enum"]


def test_the_next_id_answer_needs_only_next_id(contract: dict[str, Any]) -> None:
    """``{"next_id": N}`` is a whole answer; ``last_id`` is optional."""
    operation = contract["paths"]["/workflows/{workflow_id}/tasks/next-id"]["get"]
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    reference = answer["$ref"].rsplit("/", 1)[-1]
    assert contract["components"]["schemas"][reference]["required"] == ["next_id"]


def _answer(contract: dict[str, Any], path: str) -> dict[str, Any]:
    answer = contract["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
    reference = answer["schema"]["$ref"].rsplit("/", 1)[-1]
    return contract["components"]["schemas"][reference]


@pytest.mark.parametrize(
    ("path", "query", "fields"),
    [
        ("/workflows/{workflow_id}/runs", {"limit"}, {"items", "total"}),
        ("/runs/{run_id}", set(), {"workflow_id", "run_id", "status", "duration", "task_count"}),
        ("/workflows/{workflow_id}/tasks", {"run_id", "limit", "offset"}, {"items", "total"}),
    ],
)
def test_the_reads_of_dotflow_runs_are_in_the_contract(
    contract: dict[str, Any], path: str, query: set[str], fields: set[str]
) -> None:
    operation = contract["paths"][path]["get"]
    parameters = {item["name"] for item in operation["parameters"] if item["in"] == "query"}
    assert query <= parameters
    assert fields <= set(_answer(contract, path)["properties"])
