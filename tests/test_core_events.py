"""The hook contract as providers see it: order, snapshots, fan-out, isolation, tracing."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import attrs
import pytest

from dotflow_core import (
    DotFlow,
    ProviderLoadError,
    ProviderManager,
    TaskRecord,
    TaskStatus,
    UnknownProviderError,
    WorkflowRecord,
    WorkflowStatus,
    action,
    discovery,
    hookimpl,
)
from dotflow_core.testing import RecordingProvider, sample_task_record, sample_workflow_record


@action
def produce() -> list[int]:
    return [1]


@action
def mutate_previous(previous_context: Any) -> str:
    previous_context.storage.append(2)
    return "mutated"


@action(retry=2, retry_delay=0)
def always_fails() -> None:
    raise RuntimeError("nope")


def statuses(records: list[TaskRecord]) -> list[str]:
    return [record.status.value for record in records]


def test_events_of_a_run_come_in_contract_order(recorder: RecordingProvider) -> None:
    workflow = DotFlow(providers=[recorder])
    workflow.task.add([produce, always_fails])
    workflow.start(keep_going=True)
    assert recorder.names() == [
        "configure",
        "create_workflow",
        "create_task",
        "create_task",
        "update_workflow",
        *["update_task"] * 6,
        "update_workflow",
        "flush",
    ]
    assert statuses(recorder.task_events(1)) == ["Not started", "In progress", "Completed"]
    assert statuses(recorder.task_events(2)) == [
        "Not started",
        "In progress",
        "Retry",
        "In progress",
        "Failed",
    ]
    started, ended = recorder.workflow_events()[1:]
    assert started.status is WorkflowStatus.IN_PROGRESS and started.mode == "sequential"
    assert ended.status is WorkflowStatus.FAILED
    assert (ended.task_count, ended.completed_count, ended.failed_count) == (2, 1, 1)
    assert ended.finished_at is not None and ended.duration is not None


def test_records_are_frozen_attrs_snapshots(recorder: RecordingProvider) -> None:
    workflow = DotFlow(providers=[recorder])
    workflow.task.add(produce)
    workflow.start()
    record = recorder.task_events(1)[-1]
    assert attrs.has(type(record)) and isinstance(record, TaskRecord)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        record.status = TaskStatus.FAILED  # type: ignore[misc]
    assert isinstance(recorder.workflow_events()[0], WorkflowRecord)
    assert record.name == f"{__name__}.produce"
    assert record.workflow_id == workflow.workflow_id


def test_a_snapshot_keeps_the_state_of_its_moment(recorder: RecordingProvider) -> None:
    """The record's fields are those of its moment; its contexts are the values, shared."""
    workflow = DotFlow(providers=[recorder])
    workflow.task.add([produce, mutate_previous])
    workflow.start()
    created, started, completed = recorder.task_events(1)
    assert (created.status, started.status) == (TaskStatus.NOT_STARTED, TaskStatus.IN_PROGRESS)
    assert created.current_context is None and started.finished_at is None
    assert completed.status is TaskStatus.COMPLETED
    # Shared by reference, not copied: what task 2 appended shows in task 1's record.
    assert completed.current_context is workflow.result_storage()[0]
    assert completed.current_context == [1, 2]
    assert recorder.task_events(2)[1].previous_context is completed.current_context


def test_errors_carry_type_message_and_traceback_per_attempt(recorder: RecordingProvider) -> None:
    workflow = DotFlow(providers=[recorder])
    workflow.task.add(always_fails)
    workflow.start()
    final = recorder.task_events(1)[-1]
    assert final.retry_count == 1
    assert [(e.attempt, e.type, e.message) for e in final.errors] == [
        (1, "RuntimeError", "nope"),
        (2, "RuntimeError", "nope"),
    ]
    assert "Traceback" in final.errors[0].traceback and "always_fails" in final.errors[0].traceback


def test_events_fan_out_to_every_provider() -> None:
    first, second = RecordingProvider(), RecordingProvider()
    workflow = DotFlow(providers=[first, second])
    workflow.task.add(produce)
    workflow.start()
    assert first.names() == second.names()
    assert first.task_events() == second.task_events()


def test_a_raising_provider_never_breaks_the_workflow(
    recorder: RecordingProvider, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        @hookimpl
        def update_task(self, task: TaskRecord) -> None:
            raise ValueError("provider bug")

        @hookimpl
        def create_workflow(self, workflow: WorkflowRecord) -> None:
            raise KeyError("also broken")

    with caplog.at_level(logging.ERROR, logger="dotflow"):
        workflow = DotFlow(providers=[Broken(), recorder])
        workflow.task.add([produce, produce, produce])
        workflow.start()
    assert workflow.status is WorkflowStatus.COMPLETED
    assert workflow.result_storage() == [[1], [1], [1]]
    # the healthy provider next to it still got everything
    assert len(recorder.task_events()) == 9
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2  # once per provider and hook, though update_task failed 6 times
    assert "'Broken'" in errors[0].getMessage() and "'create_workflow'" in errors[0].getMessage()
    assert "'update_task'" in errors[1].getMessage() and "provider bug" in errors[1].getMessage()
    failures = workflow.providers.failures
    assert [f.hook for f in failures].count("update_task") == 6


@pytest.mark.parametrize("error", [SystemExit(3), asyncio.CancelledError(), BaseException("odd")])
def test_a_provider_raising_a_base_exception_never_ends_the_run(
    recorder: RecordingProvider, error: BaseException
) -> None:
    class Exiting:
        @hookimpl
        def update_task(self, task: TaskRecord) -> None:
            raise error

    workflow = DotFlow(providers=[Exiting(), recorder])
    workflow.task.add([produce, produce])
    workflow.start()
    assert workflow.status is WorkflowStatus.COMPLETED
    assert statuses(recorder.task_events())[-1] == "Completed"
    assert {failure.error for failure in workflow.providers.failures} == {error}


def test_ctrl_c_inside_a_provider_still_interrupts(recorder: RecordingProvider) -> None:
    class Interrupting:
        @hookimpl
        def update_task(self, task: TaskRecord) -> None:
            raise KeyboardInterrupt

    workflow = DotFlow(providers=[Interrupting(), recorder])
    workflow.task.add(produce)
    with pytest.raises(KeyboardInterrupt):
        workflow.start()


def test_a_class_instead_of_an_instance_is_a_clear_load_error() -> None:
    class Console:
        @hookimpl
        def update_task(self, task: TaskRecord) -> None: ...

    with pytest.raises(ProviderLoadError) as caught:
        DotFlow(providers=[Console])
    assert str(caught.value) == (
        "provider 'Console' failed to load: it is a class; pass an instance, e.g. Console()"
    )


@pytest.mark.parametrize("plugin", [42, object(), "not-a-hook".upper])
def test_an_object_without_hooks_is_a_clear_load_error(plugin: object) -> None:
    with pytest.raises(ProviderLoadError, match="it implements no hook: mark its hook functions"):
        DotFlow(providers=[plugin])


def test_a_wrong_hook_signature_is_a_clear_load_error() -> None:
    class WrongSignature:
        @hookimpl
        def update_task(self, task: TaskRecord, extra: int) -> None: ...

    with pytest.raises(ProviderLoadError) as caught:
        DotFlow(providers=[WrongSignature()])
    message = str(caught.value)
    assert "'WrongSignature'" in message and "extra" in message and "\n" not in message


def test_an_unknown_hook_name_is_a_clear_load_error() -> None:
    class Typo:
        @hookimpl
        def update_tsk(self, task: TaskRecord) -> None: ...

    with pytest.raises(ProviderLoadError) as caught:
        DotFlow(providers=[Typo()])
    assert str(caught.value) == (
        "provider 'Typo' failed to load: unknown hook 'update_tsk' in this provider"
    )  # not pluggy's "in plugin <...Typo object at 0x7f...>"


def test_optional_hooks_from_newer_specs_are_allowed() -> None:
    class Newer:
        @hookimpl(optionalhook=True)
        def hook_from_the_future(self) -> None: ...

    DotFlow(providers=[Newer()])


def test_no_provider_makes_every_hook_a_no_op() -> None:
    workflow = DotFlow(providers=[])
    workflow.task.add(produce)
    workflow.start()
    assert workflow.providers.names == ()
    assert workflow.providers.hook.get_next_task_id(workflow_id="x", run_id="r") is None
    assert workflow.status is WorkflowStatus.COMPLETED


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake installed distribution offering providers through real entry points."""
    site = tmp_path / "site"
    dist_info = site / "dotflow_fake_providers-1.2.3.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: dotflow-fake-providers\nVersion: 1.2.3\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[dotflow.server]\n"
        "inproc-recording = fake_providers_ok:provider\n"
        "inproc-broken = fake_providers_broken\n"
        "inproc-late = fake_providers_late\n"
    )
    (site / "fake_providers_ok.py").write_text(
        "from dotflow_core.testing import RecordingProvider\nprovider = RecordingProvider(5)\n"
    )
    (site / "fake_providers_broken.py").write_text("raise ImportError('missing libfoo')\n")
    (site / "fake_providers_late.py").write_text(
        textwrap.dedent(
            """
            IMPORTED = True
            from dotflow_core import hookimpl

            @hookimpl
            def create_task(task):
                pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(site))
    discovery.rescan()
    yield site
    discovery.rescan()
    for module in ("fake_providers_ok", "fake_providers_broken", "fake_providers_late"):
        sys.modules.pop(module, None)


def test_installed_providers_are_read_from_entry_point_metadata(installed: Path) -> None:
    providers = discovery.installed_providers()
    assert {"inproc-recording", "inproc-broken", "inproc-late"} <= set(providers)
    assert providers["inproc-recording"].distribution == "dotflow-fake-providers"
    assert providers["inproc-recording"].version == "1.2.3"
    assert "fake_providers_broken" not in sys.modules  # nothing imported to list them


def test_only_the_selected_provider_is_imported(installed: Path) -> None:
    workflow = DotFlow(workflow_id="ext", providers=["inproc-recording"])
    workflow.task.add(produce)
    assert workflow.result_task()[0].task_id == 5
    assert "fake_providers_late" not in sys.modules
    assert "fake_providers_broken" not in sys.modules


def test_a_module_can_be_a_provider(installed: Path) -> None:
    workflow = DotFlow(providers=["inproc-late", "inproc-recording"])
    assert workflow.providers.names == ("inproc-late", "inproc-recording")


def test_a_provider_that_fails_to_import_is_named_with_its_cause(installed: Path) -> None:
    with pytest.raises(ProviderLoadError) as caught:
        DotFlow(providers=["inproc-broken"])
    assert str(caught.value) == (
        "provider 'inproc-broken' failed to load: ImportError: missing libfoo"
    )


def test_a_name_two_distributions_offer_fails_alone(installed: Path) -> None:
    """The clash is an error for that name only; every other provider still works."""
    twin = installed / "dotflow_twin-0.1.dist-info"
    twin.mkdir()
    (twin / "METADATA").write_text("Metadata-Version: 2.1\nName: dotflow-twin\nVersion: 0.1\n")
    (twin / "entry_points.txt").write_text(
        "[dotflow.server]\ninproc-recording = fake_providers_late\n"
    )
    discovery.rescan()
    providers = discovery.installed_providers()
    assert providers["inproc-recording"].also_offered_by == ("dotflow-twin",)
    assert providers["inproc-late"].also_offered_by == ()
    with pytest.raises(ProviderLoadError) as caught:
        DotFlow(providers=["inproc-recording"])
    assert str(caught.value) == (
        "provider 'inproc-recording' failed to load: more than one distribution offers it "
        "(dotflow-fake-providers, dotflow-twin); uninstall all but one"
    )
    assert DotFlow(providers=["inproc-late"]).providers.names == ("inproc-late",)


def test_an_unknown_provider_lists_the_installed_ones(installed: Path) -> None:
    with pytest.raises(UnknownProviderError) as caught:
        ProviderManager.from_providers(["nope"])
    message = str(caught.value)
    assert message.startswith("unknown provider 'nope'; installed providers: ")
    listed = message.split("installed providers: ")[1].split(" (or 'none'")[0].split(", ")
    assert {"inproc-broken", "inproc-late", "inproc-recording"} <= set(listed)
    assert listed == sorted(listed)


def test_tracing_prints_every_hook_call_to_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], recorder: RecordingProvider
) -> None:
    monkeypatch.setenv("DOTFLOW_TRACE_HOOKS", "1")
    workflow = DotFlow(providers=[recorder])
    workflow.task.add(produce)
    workflow.start()
    lines = capsys.readouterr().err.splitlines()
    trace = [line for line in lines if line.startswith("dotflow-trace ")]
    assert len(trace) == len(recorder.calls)
    update = next(line for line in trace if "update_task(" in line and "Completed" in line)
    assert "providers=[RecordingProvider]" in update
    assert f"task({workflow.workflow_id}#1 Completed)" in update
    assert update.endswith(" ms)") and "-> []" in update


@pytest.mark.parametrize("value", ["0", "off", "FALSE", " no "])
def test_tracing_stays_off_for_a_false_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    monkeypatch.setenv("DOTFLOW_TRACE_HOOKS", value)
    workflow = DotFlow(providers=[RecordingProvider()])
    workflow.task.add(produce)
    workflow.start()
    assert "dotflow-trace" not in capsys.readouterr().err


def test_tracing_with_a_value_that_is_no_flag_warns_once_and_stays_off(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("DOTFLOW_TRACE_HOOKS", "verbose-please")
    for _ in range(2):
        workflow = DotFlow(providers=[RecordingProvider()])
        workflow.task.add(produce)
        workflow.start()
    assert "dotflow-trace" not in capsys.readouterr().err
    warnings = [r.getMessage() for r in caplog.records if "DOTFLOW_TRACE_HOOKS" in r.getMessage()]
    assert warnings == [
        "DOTFLOW_TRACE_HOOKS='verbose-please': expected true/false (1/0, yes/no, on/off); "
        "hook tracing stays off"
    ]


def test_tracing_is_off_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    workflow = DotFlow(providers=[RecordingProvider()])
    workflow.task.add(produce)
    workflow.start()
    assert "dotflow-trace" not in capsys.readouterr().err


def test_every_hook_can_be_called_through_the_manager(recorder: RecordingProvider) -> None:
    """Drift guard companion: each spec is called here directly, by name."""
    manager = ProviderManager()
    manager.add(recorder)
    workflow = sample_workflow_record()
    manager.hook.configure(settings=None)
    manager.hook.create_workflow(workflow=workflow)
    manager.hook.update_workflow(workflow=workflow)
    manager.hook.create_task(task=sample_task_record(workflow.workflow_id))
    manager.hook.update_task(task=sample_task_record(workflow.workflow_id))
    assert (
        manager.hook.get_next_task_id(workflow_id=workflow.workflow_id, run_id=workflow.run_id)
        is None
    )
    manager.hook.flush(workflow_id=workflow.workflow_id, timeout=1.0)
    manager.hook.shutdown(timeout=1.0)
    assert recorder.names() == [
        "configure",
        "create_workflow",
        "update_workflow",
        "create_task",
        "update_task",
        "get_next_task_id",
        "flush",
        "shutdown",
    ]


EXIT_SCRIPT = textwrap.dedent(
    """
    import sys
    from dotflow_core import DotFlow, action, hookimpl

    class Counting:
        @hookimpl
        def shutdown(self, timeout):
            print("shutdown", timeout, flush=True)

    @action
    def step():
        return 1

    provider = Counting()
    workflow = DotFlow(providers=[provider])
    workflow.task.add(step)
    workflow.start()
    if "shut" in sys.argv:
        workflow.providers.shutdown(timeout=1.0)
    if "again" in sys.argv:
        again = DotFlow(providers=[provider])
        again.task.add(step)
        again.start()
    """
)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), ["shutdown None"]),  # at exit only
        (("shut",), ["shutdown 1.0"]),  # shut down already: nothing more at exit
        (("shut", "again"), ["shutdown 1.0", "shutdown None"]),  # used again: at exit too
    ],
)
def test_every_provider_gets_one_shutdown_after_its_last_use(
    tmp_path: Path, args: tuple[str, ...], expected: list[str]
) -> None:
    script = tmp_path / "exit_script.py"
    script.write_text(EXIT_SCRIPT)
    finished = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=60
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.splitlines() == expected
