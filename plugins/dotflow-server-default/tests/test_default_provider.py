"""The default provider: the contract kit, and ``trylast`` numbering."""

from __future__ import annotations

import logging

import pytest
from dotflow_server_default import DefaultProvider, provider

from dotflow_core import (
    INITIAL_TASK_ID,
    DotFlow,
    ProviderManager,
    Settings,
    action,
    installed_providers,
)
from dotflow_core.manager import load_provider
from dotflow_core.testing import ProviderContract, RecordingProvider


@action
def step() -> str:
    return "done"


class TestDefaultProviderContract(ProviderContract):
    def make_provider(self) -> object:
        return DefaultProvider()


def test_the_entry_point_is_installed_and_names_the_provider() -> None:
    installed = installed_providers()
    assert "default" in installed, "pip install -e plugins/dotflow-server-default first"
    assert installed["default"].distribution == "dotflow-server-default"
    assert load_provider("default") is provider


@pytest.mark.parametrize("default_first", [True, False], ids=["default-first", "default-last"])
def test_a_provider_that_knows_the_next_task_id_wins(default_first: bool) -> None:
    manager = ProviderManager()
    knows = RecordingProvider(next_task_id=7)
    plugins: list[tuple[object, str]] = [(DefaultProvider(), "default"), (knows, "recorder")]
    for plugin, name in plugins if default_first else reversed(plugins):
        manager.add(plugin, name=name)
    manager.configure(Settings(config={}, environ={}))

    workflow = DotFlow(workflow_id="resumed-workflow", providers=manager)
    workflow.task.add(step).add(step)

    assert [task.task_id for task in workflow.result_task()] == [7, 8]
    assert knows.names()[:2] == ["configure", "get_next_task_id"]


def test_alone_it_answers_the_initial_task_id() -> None:
    manager = ProviderManager.from_providers([DefaultProvider()], Settings(config={}, environ={}))
    assert manager.hook.get_next_task_id(workflow_id="w", run_id="r") == INITIAL_TASK_ID
    workflow = DotFlow(workflow_id="w", providers=manager)
    workflow.task.add(step)
    workflow.start()
    assert workflow.result_task()[0].task_id == INITIAL_TASK_ID


def test_events_are_logged_at_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="dotflow.server.default"):
        manager = ProviderManager.from_providers(
            [DefaultProvider()], Settings(config={}, environ={})
        )
        workflow = DotFlow(providers=manager)
        workflow.task.add(step)
        workflow.start()
    mine = [r for r in caplog.records if r.name == "dotflow.server.default"]
    assert {r.levelno for r in mine} == {logging.DEBUG}
    messages = " ".join(r.getMessage() for r in mine)
    for hook in ("configure", "create_workflow", "create_task", "update_task", "flush"):
        assert hook in messages
