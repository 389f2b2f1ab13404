"""``dotflow start`` as a dotflow 1.0.1 user types it, and the command's limits on its inputs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import Project, Result, popen_dotflow

Dotflow = Callable[..., Result]

#: Steps and factories a dotflow user would write (module ``legacy`` in the project).
LEGACY_PY = """\
import json
import os
import pathlib
import sys
import time

from dotflow_core import DotFlow, action

OUT = pathlib.Path(os.environ["LEGACY_OUT"])


def note(**fields):
    with OUT.open("a") as handle:
        handle.write(json.dumps(fields) + "\\n")


@action
def show(initial_context):
    note(step="show", value=initial_context.storage, pid=os.getpid())
    return initial_context.storage


@action
def chain(previous_context):
    note(step="chain", got=previous_context.storage)
    return previous_context.storage


@action
def boom():
    raise ValueError("bad row 7\\nsecond line of the message")


def callback(task):
    print(f"callback of task {task.task_id}", file=sys.stderr, flush=True)


def nightly():
    workflow = DotFlow(name="nightly")
    workflow.task.add(step=show, initial_context="from the factory")
    workflow.task.add(step="legacy:boom", group_name="other")
    return workflow


def not_a_workflow():
    return 42


def raises():
    raise RuntimeError("cannot build")


def own_providers():
    return DotFlow(providers=[])


@action
def sleeper():
    pathlib.Path(os.environ["LEGACY_PIDS"], str(os.getpid())).write_text("")
    time.sleep(60)


@action
def forks():
    pid = os.fork()
    if pid == 0:
        return "in the child"  # returns in the child: the engine must end it here
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@action
def after_fork():
    note(step="after_fork", pid=os.getpid())
"""


@pytest.fixture
def legacy(project: Project, tmp_path: Path) -> Project:
    (project.path / "legacy.py").write_text(LEGACY_PY)
    pids = tmp_path / "pids"
    pids.mkdir()
    project.env.update(LEGACY_OUT=str(tmp_path / "legacy.jsonl"), LEGACY_PIDS=str(pids))
    return project


def notes(project: Project) -> list[dict]:
    path = Path(project.env["LEGACY_OUT"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_colon_paths_and_plain_text_contexts_work_as_in_dotflow(
    dotflow: Dotflow, legacy: Project
) -> None:
    result = dotflow("start", "--step", "legacy:show", "-i", "abc", "-c", "legacy:callback")
    assert result.returncode == 0, result
    assert notes(legacy) == [{"step": "show", "value": "abc", "pid": notes(legacy)[0]["pid"]}]
    assert "callback of task 1" in result.stderr
    # JSON stays JSON (dotflow would pass the text); text that looks like JSON must parse.
    dotflow("start", "-s", "legacy.show", "-i", '{"rows": 2}')
    assert notes(legacy)[-1]["value"] == {"rows": 2}


def test_name_defaults_to_the_host_name_and_name_sets_it(dotflow: Dotflow, legacy: Project) -> None:
    dotflow("start", "-s", "legacy.show", "-p", "fake")
    created = [e for e in legacy.events() if e["hook"] == "create_workflow"]
    assert created[-1]["record"]["name"] == socket.gethostname()
    dotflow("start", "-s", "legacy.show", "-p", "fake", "--name", "nightly ETL")
    created = [e for e in legacy.events() if e["hook"] == "create_workflow"]
    assert created[-1]["record"]["name"] == "nightly ETL"


def test_group_chains_steps_in_parallel_mode(dotflow: Dotflow, legacy: Project) -> None:
    result = dotflow(
        "start", "-m", "parallel", "-i", "1",
        "--group", "a", "-s", "legacy.show", "-s", "legacy.chain",
        "--group", "b", "-s", "legacy.show", "-s", "legacy.chain",
        "-p", "fake",
    )  # fmt: skip
    assert result.returncode == 0, result
    chained = [note for note in notes(legacy) if note["step"] == "chain"]
    assert chained == [{"step": "chain", "got": 1}] * 2  # each received its group's previous
    groups = {e["record"]["task_id"]: e["record"]["group_name"] for e in legacy.events()
              if e["hook"] == "create_task"}  # fmt: skip
    assert groups == {1: "a", 2: "a", 3: "b", 4: "b"}


def test_a_group_without_steps_after_it_is_a_usage_error(dotflow: Dotflow) -> None:
    result = dotflow("start", "-s", "flow.extract", "--group", "late")
    assert result.returncode == 2 and "--group 'late': no --step follows it" in result.stderr


def test_quiet_still_names_the_failed_tasks(dotflow: Dotflow, legacy: Project) -> None:
    result = dotflow("start", "-s", "legacy.show", "-s", "legacy.boom", "-q", "--keep-going")
    assert result.returncode == 1, result
    assert result.lines[0] == "dotflow: failed: task 2 legacy.boom: ValueError: bad row 7"
    assert len(result.lines) == 2  # that line and the summary
    json_run = dotflow("start", "-s", "legacy.boom", "-q", "--log-format", "json")
    (summary,) = json_run.json_lines()
    assert summary["failed_tasks"] == [
        {"task_id": 1, "name": "legacy.boom", "error": "ValueError: bad row 7"}
    ]


def test_parallel_callbacks_follow_their_tasks_progress_line(
    dotflow: Dotflow, legacy: Project
) -> None:
    result = dotflow(
        "start", "-m", "parallel", "-s", "legacy.show", "-s", "legacy.show",
        "-c", "legacy.callback", "-p", "fake",
    )  # fmt: skip
    assert result.returncode == 0, result
    for task_id in (1, 2):
        completed = result.lines.index(
            next(line for line in result.lines if f"task {task_id} legacy.show: Completed" in line)
        )
        called = result.lines.index(f"callback of task {task_id}")
        assert called > completed, result


def test_a_workflow_factory_runs_with_the_commands_providers_and_mode(
    dotflow: Dotflow, legacy: Project
) -> None:
    result = dotflow("start", "--workflow", "legacy:nightly", "-p", "fake", "-m", "parallel")
    assert result.returncode == 1, result  # its second task fails: exit 1, as for --step
    assert notes(legacy)[0]["value"] == "from the factory"
    assert "providers: fake (flag)" in result.lines[-1]
    created = next(e for e in legacy.events() if e["hook"] == "create_workflow")
    assert (created["record"]["name"], created["record"]["task_count"]) == ("nightly", 0)
    started = [e for e in legacy.events() if e["hook"] == "update_workflow"]
    assert started[0]["record"]["mode"] == "parallel"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("-w", "legacy:not_a_workflow"), "not_a_workflow() returned 42; expected a DotFlow"),
        (("-w", "legacy:raises"), "raises() raised RuntimeError: cannot build"),
        (("-w", "legacy:own_providers"), "has providers of its own"),
        (("-w", "legacy:show"), "is not a function returning a DotFlow"),
        (("-w", "legacy:nightly", "-i", "1"), "--initial-context applies to --step runs"),
        (("-w", "legacy:nightly", "--name", "x"), "--name applies to --step runs"),
        (("-w", "legacy:nightly", "-s", "legacy.show"), "not allowed with argument"),
    ],
)
def test_a_bad_workflow_factory_is_a_usage_error(
    dotflow: Dotflow, legacy: Project, args: tuple[str, ...], fragment: str
) -> None:
    result = dotflow("start", *args, "-p", "fake")
    assert result.returncode == 2, result
    assert len(result.lines) == 1 and fragment in result.lines[0], result
    assert not [e for e in legacy.events() if e["hook"] == "update_workflow"]


def test_an_initial_context_file_is_read_up_to_a_cap(dotflow: Dotflow) -> None:
    result = dotflow("start", "-s", "flow.extract", "-i", "@/dev/zero")
    assert result.returncode == 2, result
    assert "larger than 64 MiB" in result.stderr and len(result.lines) == 1


def test_deeply_nested_json_is_a_one_line_error(dotflow: Dotflow, project: Project) -> None:
    (project.path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    result = dotflow("start", "-s", "flow.extract", "-i", "@deep.json")
    assert result.returncode == 2, result
    assert len(result.lines) == 1 and "nested too deeply" in result.lines[0], result
    assert "Traceback" not in result.stderr


def test_version_says_where_the_docs_are(dotflow: Dotflow) -> None:
    result = dotflow("--version")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("dotflow-core ")
    assert lines[1].startswith("docs: https://")


def test_version_says_when_dotflow_shares_the_environment(dotflow: Dotflow, tmp_path: Path) -> None:
    """The one-command clash: ``dotflow --version`` names the other distribution."""
    alone = dotflow("--version")
    assert "note:" not in alone.stdout
    site = tmp_path / "site"
    info = site / "dotflow-1.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dotflow\nVersion: 1.0.1\n")
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    shared = dotflow("--version", env={"PYTHONPATH": path})
    assert shared.returncode == 0, shared
    notes = [line for line in shared.stdout.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1, shared
    assert "dotflow 1.0.1 is installed here too" in notes[0]
    assert "separate virtualenvs" in notes[0]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_parallel_workers_exit_when_the_command_is_killed(legacy: Project) -> None:
    pids = Path(legacy.env["LEGACY_PIDS"])
    process = popen_dotflow(
        "start", "-m", "parallel", "-s", "legacy.sleeper", "-s", "legacy.sleeper",
        cwd=legacy.path, env=legacy.env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while len(list(pids.iterdir())) < 2:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the workers never started"
            time.sleep(0.05)
        workers = [int(path.name) for path in pids.iterdir()]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        deadline = time.monotonic() + 10  # generous: the kernel acts at once
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in workers if _alive(pid)], "workers outlived their parent"
    finally:
        if process.poll() is None:
            process.kill()
        for path in pids.iterdir():
            if _alive(int(path.name)):
                os.kill(int(path.name), signal.SIGKILL)


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_a_step_that_forks_runs_the_rest_of_the_workflow_once(
    dotflow: Dotflow, legacy: Project, mode: str
) -> None:
    result = dotflow(
        "start", "-m", mode, "--group", "g", "-s", "legacy.forks", "-s", "legacy.after_fork",
        "-p", "fake",
    )  # fmt: skip
    assert result.returncode == 0, result
    assert [note["step"] for note in notes(legacy)] == ["after_fork"]
    finals = [e for e in legacy.events() if e["hook"] == "update_task"
              and e["record"]["status"] == "Completed"]  # fmt: skip
    assert [e["record"]["task_id"] for e in finals] == [1, 2]
    assert finals[0]["record"]["current_context"] == 0  # the child's exit code: it ended cleanly
    assert result.stderr.count("workflow") == 2  # one start, one summary: nothing from the child


@pytest.mark.parametrize("decorator", ["@action", "@action(timeout=60)"])
def test_fork_child_of_a_library_run_reports_nothing(tmp_path: Path, decorator: str) -> None:
    """Without the CLI: the child a step forked ends without a second hook call.

    With a timeout the step runs on a thread of its own, all the child has of the run.
    """
    script = tmp_path / "run.py"
    script.write_text(
        "import os, sys\n"
        "from dotflow_core import DotFlow, action, hookimpl\n"
        "class Log:\n"
        "    @hookimpl\n"
        "    def update_task(self, task):\n"
        "        print(os.getpid(), task.task_id, task.status.value, flush=True)\n"
        f"{decorator}\n"
        "def forks():\n"
        "    return os.fork()\n"
        "@action\n"
        "def second():\n"
        "    return 2\n"
        "workflow = DotFlow(providers=[Log()])\n"
        "workflow.task.add(step=[forks, second])\n"
        "workflow.start()\n"
        "os.wait()\n"
    )
    completed = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    pids = {line.split()[0] for line in completed.stdout.splitlines()}
    assert len(pids) == 1, completed.stdout
    assert len(completed.stdout.splitlines()) == 4  # two tasks: In progress, Completed
