"""Coming from dotflow 1.0.1: what a dotflow user's code does, through the public API.

Where dotflow 1.0.1 is at hand (:func:`dotflow101`), the same script runs under
both and the outcomes are compared; docs/guide.md's "Coming from dotflow" table
says where dotflow-core differs on purpose.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dotflow_core import (
    DotFlow,
    InvalidStepError,
    TaskRecord,
    WorkflowRecord,
    WorkflowStateError,
    action,
    hookimpl,
)
from dotflow_core.engine.task import Task

ROOT = Path(__file__).resolve().parents[1]

#: Steps both libraries can import: dotflow-core's names, else dotflow's.
FLOW = """\
import os
import pathlib

try:
    from dotflow_core import DotFlow, action
except ImportError:
    from dotflow import DotFlow, action

MARKS = pathlib.Path(os.environ["MARKS"])


def mark(text):
    with MARKS.open("a") as handle:
        handle.write(text + "\\n")


@action
def extract(initial_context):
    mark(f"extract {initial_context.storage!r}")
    return {"rows": 3}


@action(retry=0)
def once():
    mark("once")
    raise ValueError("fails on purpose")


def set_plain_context(*args, **kwargs):
    kwargs["task"].current_context = {"x": 1}


def factory():
    workflow = DotFlow()
    workflow.task.add(step=extract, initial_context="from factory")
    return workflow
"""


def dotflow101() -> Path:
    """The interpreter of a virtualenv holding dotflow 1.0.1 (skips when there is none).

    ``PEER_DOTFLOW_PYTHON`` names one; else bench/.venv-dotflow is used, and created from
    the package index when ``CI`` is true (so that CI compares, and a laptop need not).
    """
    named = os.environ.get("PEER_DOTFLOW_PYTHON")
    if named:
        return Path(named)
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from _venvs import DOTFLOW_VENV, dotflow_python
    finally:
        sys.path.pop(0)
    if (DOTFLOW_VENV / "bin" / "python").exists() or os.environ.get("CI") == "true":
        return dotflow_python()
    pytest.skip(
        "dotflow 1.0.1 not at hand: set PEER_DOTFLOW_PYTHON, or create bench/.venv-dotflow "
        "(make bench does; CI creates it)"
    )


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    (tmp_path / "flow.py").write_text(FLOW)
    return tmp_path


def run_script(python: Path | str, code: str, directory: Path) -> dict[str, Any]:
    """Run ``code`` (which prints one JSON line last) with ``python`` in ``directory``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DOTFLOW_", "SERVER_")) and key != "WORKFLOW_ID"
    }
    path = os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH")]))
    env.update(MARKS=str(directory / "marks.txt"), PYTHONPATH=path, DOTFLOW_PROVIDER="none")
    completed = subprocess.run(
        [str(python), "-c", textwrap.dedent(code)],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


def marks(directory: Path) -> list[str]:
    path = directory / "marks.txt"
    return path.read_text().splitlines() if path.exists() else []


BOTH_SCRIPT = """
import json, socket
try:
    from dotflow_core import DotFlow
except ImportError:
    from dotflow import DotFlow
import flow

workflow = DotFlow()
name = workflow.name
workflow.task.add(step="flow:extract", initial_context="colon")
workflow.task.add(step="flow.once")
counted = workflow.task.count()
workflow.task.clear()
workflow.task.add(step="flow:extract", callback=flow.set_plain_context)
workflow.task.add(step="flow.once")
workflow.start(keep_going=True)
print(json.dumps({
    "name_is_host": name == socket.gethostname(),
    "counted": counted,
    "after_clear": workflow.task.count(),
    "storage": [s if not hasattr(s, "storage") else s.storage for s in workflow.result_storage()],
}))
"""


def test_the_same_script_behaves_as_in_dotflow(flow: Path, tmp_path: Path) -> None:
    """module:attr paths, retry=0, clear(), the host name, a plain context from a callback."""
    ours = run_script(sys.executable, BOTH_SCRIPT, flow)
    ran_ours = marks(flow)
    (flow / "marks.txt").unlink()
    theirs = run_script(dotflow101(), BOTH_SCRIPT, flow)
    assert ours == theirs
    assert marks(flow) == ran_ours


def test_dotflow_habits_work_here(flow: Path) -> None:
    """The same script without dotflow at hand: what each habit gives."""
    result = run_script(sys.executable, BOTH_SCRIPT, flow)
    assert result == {
        "name_is_host": True,
        "counted": 2,
        "after_clear": 2,
        "storage": [{"x": 1}, None],
    }
    # Cleared tasks never ran; retry=0 ran its step once, as dotflow does.
    assert marks(flow) == ["extract None", "once"]


class Recorder:
    def __init__(self) -> None:
        self.workflows: list[WorkflowRecord] = []
        self.tasks: list[TaskRecord] = []

    @hookimpl
    def create_workflow(self, workflow: WorkflowRecord) -> None:
        self.workflows.append(workflow)

    @hookimpl
    def update_workflow(self, workflow: WorkflowRecord) -> None:
        self.workflows.append(workflow)

    @hookimpl
    def create_task(self, task: TaskRecord) -> None:
        self.tasks.append(task)


def test_the_name_defaults_to_the_host_name_and_reaches_providers() -> None:
    recorder = Recorder()
    workflow = DotFlow(providers=[recorder])
    assert workflow.name == socket.gethostname()
    assert {record.name for record in recorder.workflows} == {socket.gethostname()}
    assert DotFlow(providers=[], name="nightly").name == "nightly"
    with pytest.raises(Exception, match="name=3: expected a string"):
        DotFlow(providers=[], name=3)  # type: ignore[arg-type]


@action
def double(initial_context: Any) -> int:
    return int(initial_context.storage) * 2


class Holder:
    @action
    def method(self) -> int:
        return 1


def test_colon_paths_resolve_like_dotted_ones() -> None:
    workflow = DotFlow(providers=[])
    workflow.task.add(step=f"{__name__}:double", initial_context=2)
    workflow.task.add(step=f"{__name__}.double", initial_context=3)
    workflow.start()
    assert workflow.result_storage() == [4, 6]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("flow", "expected 'module.function' or 'module:function'"),
        ("a:b:c", "is not an import path"),
        ("no_such_module_here:step", "importing 'no_such_module_here' failed"),
        (f"{__name__}:missing", f"module {__name__!r} has no attribute 'missing'"),
        (f"{__name__}:Holder.method", "is a method of class Holder (it takes self)"),
    ],
)
def test_bad_paths_say_which_forms_are_valid(path: str, message: str) -> None:
    with pytest.raises(InvalidStepError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DotFlow(providers=[]).task.add(step=path)


def test_retry_zero_runs_once_and_negative_is_refused() -> None:
    attempts: list[int] = []

    @action(retry=0, retry_delay=0)
    def flaky() -> None:
        attempts.append(1)
        raise RuntimeError("no")

    workflow = DotFlow(providers=[])
    workflow.task.add(step=flaky)
    workflow.start()
    assert len(attempts) == 1 and workflow.result_task()[0].retry_count == 0
    with pytest.raises(ValueError, match="retry must be an int >= 0"):
        action(retry=-1)(lambda: None)


def test_clear_keeps_ids_unique_and_is_refused_once_started() -> None:
    recorder = Recorder()
    workflow = DotFlow(providers=[recorder])
    workflow.task.add(step=double, initial_context=1)
    workflow.task.clear()
    workflow.task.add(step=double, initial_context=2)
    assert [task.task_id for task in workflow.task] == [2]
    assert [record.task_id for record in recorder.tasks] == [1, 2]
    workflow.start()
    assert workflow.result_storage() == [4]
    with pytest.raises(WorkflowStateError, match="has started"):
        workflow.task.clear()


def test_a_plain_context_assigned_in_a_callback_is_wrapped() -> None:
    def callback(task: Task) -> None:
        task.current_context = {"x": 1}

    workflow = DotFlow(providers=[])
    workflow.task.add(step=double, initial_context=1, callback=callback)
    workflow.start()
    assert workflow.result_storage() == [{"x": 1}]
    context = workflow.result_context()[0]
    assert (context.task_id, context.workflow_id) == (1, workflow.workflow_id)
    assert workflow.result()["tasks"][0]["current_context"] == {"x": 1}


SURFACE_SCRIPT = """
import json
try:
    from dotflow_core import Context, DotFlow, action
except ImportError:
    from dotflow import Context, DotFlow, action

def public(thing):
    return sorted(name for name in dir(thing) if not name.startswith("_"))

@action
def step():
    return 1

workflow = DotFlow()
workflow.task.add(step=step)
print(json.dumps({
    "DotFlow": public(workflow),
    "TaskBuilder": public(workflow.task),
    "Task": public(workflow.task.queue[0]),
    "Context": public(Context()),
}))
"""


def test_every_name_dotflow_offers_and_we_do_not_has_a_row(flow: Path) -> None:
    """The migration table is complete for the API surface: each missing name is in it."""
    theirs = run_script(dotflow101(), SURFACE_SCRIPT, flow)
    ours = run_script(sys.executable, SURFACE_SCRIPT, flow)
    guide = (ROOT / "docs" / "guide.md").read_text()
    table = guide[guide.index("## Coming from dotflow") :]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    absent = {
        f"{kind}.{name}": name
        for kind, names in theirs.items()
        for name in sorted(set(names) - set(ours[kind]))
    }
    assert absent, "dotflow 1.0.1 offers nothing dotflow-core lacks? the script is wrong"
    undocumented = [
        where
        for where, name in absent.items()
        if not any(f".{name}" in row.split(" | ")[0] or f"`{name}" in row for row in rows)
    ]
    assert not undocumented, f"no row of the 'Coming from dotflow' table for {undocumented}"


def _start_options(python: Path | str) -> set[str]:
    """The option strings ``dotflow start --help`` of that environment lists."""
    import re

    command = Path(python).parent / "dotflow"
    completed = subprocess.run(
        [str(command), "start", "--help"], capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    return set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", completed.stdout)) - {"-h", "--help"}


def test_every_start_option_of_dotflow_has_a_row() -> None:
    """``dotflow start``'s flags: each one dotflow has is either here or in the table."""
    theirs = _start_options(dotflow101())
    ours = _start_options(sys.executable)
    guide = (ROOT / "docs" / "guide.md").read_text()
    rows = [
        line.split(" | ")[0]
        for line in guide[guide.index("## Coming from dotflow") :].splitlines()
        if line.startswith("| `")
    ]
    assert {"--step", "--workflow", "--resume"} <= theirs
    missing = sorted(theirs - ours)
    undocumented = [flag for flag in missing if not any(f"`{flag}" in row for row in rows)]
    assert not undocumented, f"no row of the 'Coming from dotflow' table for {undocumented}"
    # Same name, other meaning: -p is --path there and --provider here.
    assert any("`-p`" in row for row in rows)
