"""The ``run_link`` hook: providers say where an ended run can be seen."""

from __future__ import annotations

from typing import Any

from dotflow_core import ProviderManager, WorkflowRecord, hookimpl
from dotflow_core.testing import sample_workflow_record


class Linker:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.seen: list[WorkflowRecord] = []

    @hookimpl
    def run_link(self, workflow: WorkflowRecord) -> Any:
        self.seen.append(workflow)
        return self.answer


class Broken:
    @hookimpl
    def run_link(self, workflow: WorkflowRecord) -> str:
        raise RuntimeError("no link today")


def test_every_provider_is_asked_and_only_real_urls_are_kept() -> None:
    manager = ProviderManager(shutdown_at_exit=False)
    good = Linker("https://dash.example/ui/workflows/wf/runs/r1")
    for plugin in (
        good,
        Linker("http://127.0.0.1:8000/ui/workflows/wf/runs/r1"),
        Linker("https://dash.example/ui/workflows/wf/runs/r1"),  # a duplicate
        Linker("ftp://elsewhere/x"),
        Linker("https://has space/x"),
        Linker(42),
        Linker(None),
        Broken(),
    ):
        manager.add(plugin)
    workflow = sample_workflow_record()
    assert len(manager.hook.run_link(workflow=workflow)) == 6  # None answers are left out
    links = manager.run_links(workflow)
    assert sorted(links) == [
        "http://127.0.0.1:8000/ui/workflows/wf/runs/r1",
        "https://dash.example/ui/workflows/wf/runs/r1",
    ]
    assert good.seen[-1] is workflow
    assert [failure.hook for failure in manager.failures] == ["run_link", "run_link"]


def test_no_provider_means_no_link() -> None:
    assert ProviderManager(shutdown_at_exit=False).run_links(sample_workflow_record()) == []
