"""Filling in the server's ``Dotflow-Dashboard`` template for ``dotflow start``'s last line."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from dotflow_server_api.links import expand_run_link


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("http://h:8/ui/workflows/{workflow_id}", "http://h:8/ui/workflows/a%2Fb%20c"),
        (
            "https://h/ui/workflows/{workflow_id}/runs/{run_id}",
            "https://h/ui/workflows/a%2Fb%20c/runs/r-1",
        ),
        ("https://h/ui/{unknown}", None),
        ("javascript:alert(1)//{workflow_id}", None),
        ("/relative/{workflow_id}", None),
    ],
)
def test_templates_are_filled_with_encoded_ids(template: str, expected: str | None) -> None:
    workflow = SimpleNamespace(workflow_id="a/b c", run_id="r-1")
    assert expand_run_link(template, workflow) == expected


def test_a_run_id_the_record_lacks_gives_no_link() -> None:
    workflow = SimpleNamespace(workflow_id="wf")
    assert expand_run_link("http://h/ui/workflows/{workflow_id}/runs/{run_id}", workflow) is None
    assert expand_run_link("http://h/ui/workflows/{workflow_id}", workflow) == (
        "http://h/ui/workflows/wf"
    )
