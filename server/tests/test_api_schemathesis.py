"""Property-based run of schemathesis over the served OpenAPI document (in-process).

Every operation gets bounded generated requests, valid and invalid, with a valid token;
no answer may be a 5xx, and every answer must match its documented status codes,
content type and schema.
"""

from __future__ import annotations

import warnings

import pytest
import schemathesis
from api_helpers import AUTH_A, TOKEN_A, TOKEN_B
from dotflow_api.app import create_app
from dotflow_api.auth import TokenSet
from dotflow_api.db import create_db_engine, create_schema
from dotflow_api.store import Store
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient`")

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _app() -> object:
    engine = create_db_engine("sqlite://")
    create_schema(engine)
    return create_app(Store(engine), TokenSet([TOKEN_A, TOKEN_B]))


APP = _app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=AUTH_A, checks=CHECKS)
