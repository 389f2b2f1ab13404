"""A contract kit that provider authors run in their own test suites (needs pytest).

Subclass :class:`ProviderContract` in a test module and say how to build your
provider; pytest then runs every contract test against it::

    from dotflow_core.testing import ProviderContract

    class TestMyProvider(ProviderContract):
        def make_provider(self):
            return MyProvider()

The kit checks that the hook signatures match the specs, that every record
is accepted, that ``get_next_task_id`` answers an int >= 1 or None, that a
normal run in every mode raises nothing inside the provider, and (when you
override :meth:`ProviderContract.delivered_state`) that after ``flush``
the destination holds the final state of every task and of the workflow.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from dotflow_core.engine.action import action
from dotflow_core.engine.context import utc_now
from dotflow_core.engine.workflow import WORKFLOW_ID_ENV, DotFlow
from dotflow_core.hooks.markers import hookimpl
from dotflow_core.hooks.records import (
    INITIAL_TASK_ID,
    TaskError,
    TaskRecord,
    TaskStatus,
    WorkflowRecord,
    WorkflowStatus,
)
from dotflow_core.manager import ProviderManager
from dotflow_core.settings import HOME_ENV, Settings

PROVIDER_UNDER_TEST = "provider-under-test"
#: The timeout the kit gives ``flush`` and ``shutdown``, and how much longer (on a
#: loaded machine) either may take before the kit says it ignored its timeout.
LIFECYCLE_TIMEOUT = 1.0
LIFECYCLE_SLACK = 1.0
#: Prefixes of the environment variables dotflow and its providers read.
DOTFLOW_VARIABLE_PREFIXES = ("DOTFLOW_", "SERVER_")


def is_dotflow_variable(name: str) -> bool:
    """True for a variable that changes what dotflow or a provider does (incl. ``WORKFLOW_ID``)."""
    return name.startswith(DOTFLOW_VARIABLE_PREFIXES) or name == WORKFLOW_ID_ENV


def without_dotflow_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``environ`` without dotflow's variables: for subprocesses that must start clean."""
    return {name: value for name, value in environ.items() if not is_dotflow_variable(name)}


def isolate_environment(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Clear dotflow's variables for this test and give it a private user dir (``DOTFLOW_HOME``).

    So that a test never reads the developer's configuration, token or outbox.
    """
    for name in list(os.environ):
        if is_dotflow_variable(name):
            monkeypatch.delenv(name)
    monkeypatch.setenv(HOME_ENV, str(home))


class RecordingProvider:
    """A provider that keeps every hook call it receives, in order (thread-safe).

    ``calls`` holds ``(hook_name, argument)`` pairs; ``next_task_id`` is what
    it answers to ``get_next_task_id`` (None: no opinion), and ``asked_run_ids``
    the ``run_id`` of each of those calls.
    """

    def __init__(self, next_task_id: int | None = None) -> None:
        self.next_task_id = next_task_id
        self.calls: list[tuple[str, Any]] = []
        self.asked_run_ids: list[str] = []
        self._lock = threading.Lock()

    def _record(self, hook: str, argument: Any) -> None:
        with self._lock:
            self.calls.append((hook, argument))

    def names(self) -> list[str]:
        """The hook names received, in order."""
        with self._lock:
            return [hook for hook, _ in self.calls]

    def task_events(self, task_id: int | None = None) -> list[TaskRecord]:
        """The task records received (``create_task``, ``update_task``), optionally of one task."""
        with self._lock:
            return [
                record
                for hook, record in self.calls
                if hook in ("create_task", "update_task")
                and (task_id is None or record.task_id == task_id)
            ]

    def workflow_events(self) -> list[WorkflowRecord]:
        with self._lock:
            return [
                record
                for hook, record in self.calls
                if hook in ("create_workflow", "update_workflow")
            ]

    @hookimpl
    def configure(self, settings: Settings) -> None:
        self._record("configure", settings)

    @hookimpl
    def create_workflow(self, workflow: WorkflowRecord) -> None:
        self._record("create_workflow", workflow)

    @hookimpl
    def update_workflow(self, workflow: WorkflowRecord) -> None:
        self._record("update_workflow", workflow)

    @hookimpl
    def create_task(self, task: TaskRecord) -> None:
        self._record("create_task", task)

    @hookimpl
    def update_task(self, task: TaskRecord) -> None:
        self._record("update_task", task)

    @hookimpl
    def get_next_task_id(self, workflow_id: str, run_id: str) -> int | None:
        with self._lock:
            self.asked_run_ids.append(run_id)
        self._record("get_next_task_id", workflow_id)
        return self.next_task_id

    @hookimpl
    def flush(self, workflow_id: str, timeout: float | None) -> None:
        self._record("flush", workflow_id)

    @hookimpl
    def shutdown(self, timeout: float | None) -> None:
        self._record("shutdown", timeout)


@action
def contract_step_ok(initial_context: Any) -> dict[str, Any]:
    return {"ok": True, "input": initial_context.storage}


@action(retry=2, retry_delay=0)
def contract_step_fails(previous_context: Any) -> None:
    raise ValueError("this step fails on purpose (dotflow contract kit)")


#: The run every sample record belongs to (one run, as the engine would report it).
SAMPLE_RUN_ID = str(uuid.uuid4())


def sample_workflow_record(status: WorkflowStatus = WorkflowStatus.IN_PROGRESS) -> WorkflowRecord:
    """A realistic workflow record for feeding a hook directly."""
    now = utc_now()
    finished = status is not WorkflowStatus.IN_PROGRESS
    return WorkflowRecord(
        workflow_id=f"contract-{uuid.uuid4()}",
        run_id=SAMPLE_RUN_ID,
        status=status,
        name="dotflow contract kit",
        mode="sequential",
        created_at=now,
        started_at=now,
        finished_at=now if finished else None,
        duration=0.5 if finished else None,
        task_count=2,
        completed_count=1 if finished else 0,
        failed_count=1 if status is WorkflowStatus.FAILED else 0,
    )


def sample_task_record(
    workflow_id: str, task_id: int = INITIAL_TASK_ID, status: TaskStatus = TaskStatus.NOT_STARTED
) -> TaskRecord:
    """A realistic task record, with an error and nested contexts, for feeding a hook directly."""
    now = utc_now()
    finished = status.is_final
    return TaskRecord(
        workflow_id=workflow_id,
        task_id=task_id,
        name="tests.contract.step",
        status=status,
        run_id=SAMPLE_RUN_ID,
        group_name="default",
        retry_count=1 if status is not TaskStatus.NOT_STARTED else 0,
        duration=0.25 if finished else None,
        errors=(TaskError(attempt=1, type="ValueError", message="boom", traceback="Traceback..."),)
        if status is not TaskStatus.NOT_STARTED
        else (),
        created_at=now,
        started_at=None if status is TaskStatus.NOT_STARTED else now,
        finished_at=now if finished else None,
        initial_context={"rows": [1, 2, 3], "when": now},
        previous_context=None,
        current_context={"loaded": 3} if status is TaskStatus.COMPLETED else None,
    )


class ProviderContract:
    """Contract tests for a provider; subclass, override :meth:`make_provider`, run pytest."""

    def make_provider(self) -> object:
        """Return a new instance (or module) of the provider under test."""
        raise NotImplementedError("override make_provider() to return your provider")

    def make_settings(self) -> Settings:
        """The settings its ``configure`` hook receives (default: empty config and environment)."""
        return Settings(config={}, environ={})

    def delivered_state(self, provider: Any, workflow_id: str) -> dict[str, Any] | None:
        """What the provider's destination holds for a workflow, after ``flush``.

        Override to return ``{"status": <workflow status>, "tasks": {task_id: <status>}}``
        read back from where your provider delivers (a server, a file...), and the
        kit checks that delivery is complete. ``None`` (the default) skips that test.
        """
        return None

    # -- fixtures -----------------------------------------------------------

    @pytest.fixture
    def provider(self) -> Iterator[Any]:
        yield self.make_provider()

    @pytest.fixture
    def manager(self, provider: Any) -> Iterator[ProviderManager]:
        manager = ProviderManager()
        manager.add(provider, name=PROVIDER_UNDER_TEST)
        manager.configure(self.make_settings())
        yield manager
        manager.shutdown(timeout=5.0)

    def _assert_no_failures(self, manager: ProviderManager) -> None:
        failures = [f"{f.hook}: {type(f.error).__name__}: {f.error}" for f in manager.failures]
        assert not failures, f"the provider raised inside hooks: {failures}"

    # -- the contract -------------------------------------------------------

    def test_hooks_match_the_specs(self, manager: ProviderManager) -> None:
        assert manager.names == (PROVIDER_UNDER_TEST,)
        assert manager.listening, "the provider implements none of the dotflow hooks"
        self._assert_no_failures(manager)

    def test_accepts_workflow_records(self, manager: ProviderManager) -> None:
        manager.hook.create_workflow(workflow=sample_workflow_record())
        for status in WorkflowStatus:
            manager.hook.update_workflow(workflow=sample_workflow_record(status))
        self._assert_no_failures(manager)

    def test_accepts_task_records(self, manager: ProviderManager) -> None:
        workflow = sample_workflow_record()
        manager.hook.create_task(task=sample_task_record(workflow.workflow_id))
        for status in TaskStatus:
            manager.hook.update_task(task=sample_task_record(workflow.workflow_id, status=status))
        manager.flush(workflow.workflow_id, timeout=5.0)
        self._assert_no_failures(manager)

    def test_get_next_task_id_answers_an_int_or_none(self, manager: ProviderManager) -> None:
        answer = manager.hook.get_next_task_id(
            workflow_id=f"contract-{uuid.uuid4()}", run_id=str(uuid.uuid4())
        )
        assert answer is None or (type(answer) is int and answer >= INITIAL_TASK_ID), (
            f"get_next_task_id answered {answer!r}; expected None or an int >= {INITIAL_TASK_ID}"
        )
        self._assert_no_failures(manager)

    def test_a_run_reports_one_run_id(self, provider: Any, manager: ProviderManager) -> None:
        """Two managed runs of one workflow id: each run's records carry its own ``run_id``.

        ``get_next_task_id`` receives the run's id; the provider raises nothing.
        """
        recorder = RecordingProvider()
        manager.add(recorder, name="contract-recorder")
        workflow_id = f"contract-{uuid.uuid4()}"
        first = self._run(manager, "sequential", workflow_id)
        second = self._run(manager, "sequential", workflow_id)
        assert recorder.asked_run_ids == [first.run_id, second.run_id]
        records = recorder.workflow_events() + recorder.task_events()
        assert {record.run_id for record in records} == {first.run_id, second.run_id}
        assert first.run_id != second.run_id
        self._assert_no_failures(manager)

    def test_lifecycle_hooks_return_within_their_timeout(self, manager: ProviderManager) -> None:
        """``flush`` and ``shutdown`` each return within ``timeout`` (1 s) plus 1 s of slack."""
        finished = threading.Event()
        took: dict[str, float] = {}

        def lifecycle() -> None:
            started = time.monotonic()
            manager.flush(f"contract-{uuid.uuid4()}", timeout=LIFECYCLE_TIMEOUT)
            took["flush"] = time.monotonic() - started
            started = time.monotonic()
            manager.shutdown(timeout=LIFECYCLE_TIMEOUT)
            took["shutdown"] = time.monotonic() - started
            finished.set()

        threading.Thread(target=lifecycle, daemon=True).start()
        assert finished.wait(10.0), "flush/shutdown with timeout=1.0 blocked for more than 10 s"
        late = {
            hook: seconds
            for hook, seconds in took.items()
            if seconds > LIFECYCLE_TIMEOUT + LIFECYCLE_SLACK
        }
        assert not late, ", ".join(
            f"{hook}(timeout={LIFECYCLE_TIMEOUT:g}) took {seconds:.2f} s"
            for hook, seconds in late.items()
        )
        self._assert_no_failures(manager)

    @pytest.mark.parametrize("mode", ["sequential", "background", "parallel"])
    def test_a_normal_run_raises_nothing(self, manager: ProviderManager, mode: str) -> None:
        workflow = self._run(manager, mode)
        assert [task.status for task in workflow.result_task()] == [
            TaskStatus.COMPLETED,
            TaskStatus.FAILED,
            TaskStatus.COMPLETED,
        ]
        self._assert_no_failures(manager)

    def test_delivery_is_complete_after_flush(
        self, provider: Any, manager: ProviderManager
    ) -> None:
        workflow = self._run(manager, "sequential")
        delivered = self.delivered_state(provider, workflow.workflow_id)
        if delivered is None:
            pytest.skip("override delivered_state() to check what reached the destination")
        assert isinstance(delivered, Mapping) and {"status", "tasks"} <= delivered.keys(), (
            f"delivered_state() returned {delivered!r}; expected "
            '{"status": <WorkflowStatus>, "tasks": {<task id>: <TaskStatus>}} or None'
        )
        assert delivered["status"] == workflow.status
        assert delivered["tasks"] == {task.task_id: task.status for task in workflow.result_task()}

    def _run(self, manager: ProviderManager, mode: str, workflow_id: str | None = None) -> DotFlow:
        workflow = DotFlow(workflow_id, providers=manager)
        workflow.task.add(contract_step_ok, initial_context={"n": 1})
        workflow.task.add(contract_step_fails, group_name="failing")
        workflow.task.add(contract_step_ok, group_name="other")
        workflow.start(mode=mode, keep_going=True)
        assert workflow.wait(timeout=60.0), f"the {mode} run did not finish within 60 s"
        return workflow
