"""Managed mode through its public faces: the ``dotflow`` CLI and a forked process.

- ``SERVER_STRICT=1``: an unusable next-id answer stops ``dotflow start`` (exit 2)
  before any task runs; without it, one WARNING and the run goes on.
- A bad ``SERVER_BASE_URL`` or an empty token: exit 2, one line naming the variable;
  a token in the config file: the same, naming the key as written there.
- An outbox location that is not, or cannot become, a writable directory: the same,
  for ``dotflow start`` (before any task) and ``dotflow outbox``.
- ``dotflow outbox``: a usage or configuration error is one ``dotflow: error:`` line, exit 2;
  ``flush --timeout`` takes a finite number >= 0 only; every option is in the README,
  and every ``dotflow outbox`` command line the docs show is accepted.
- A 3xx answer to a POST/PATCH is logged as an ERROR and never followed.
- A fork while the parent's worker is delivering: each process sends its own events once.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dotflow_server_api import ServerAPI
from fake_api import TOKEN, Action, FakeAPI, RecordedRequest

from dotflow_core import DotFlow, TaskStatus, action
from dotflow_core.testing import sample_task_record, sample_workflow_record

WORKFLOW_ID = "nightly-etl-42"
SECRET = "tk_live_5e4d3c2b1a-CLI-SECRET"
STEPS = textwrap.dedent(
    """
    from pathlib import Path
    from dotflow_core import action

    @action
    def step(initial_context):
        (Path(__file__).parent / "step-ran").write_text("yes")
        return 1
    """
)
NEXT_ID = r"^GET /api/v1/workflows/[^/]+/tasks/next-id$"


@pytest.fixture
def server() -> Iterator[FakeAPI]:
    with FakeAPI(token=TOKEN, prefix="/api/v1") as api:
        yield api


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory holding ``steps_module.step``, which leaves ``step-ran`` when it runs."""
    (tmp_path / "steps_module.py").write_text(STEPS)
    return tmp_path


def dotflow(
    *arguments: str, cwd: Path | None = None, **variables: str
) -> subprocess.CompletedProcess[str]:
    """The installed ``dotflow`` command with ``arguments``, in ``cwd``, with ``variables`` set."""
    command = shutil.which("dotflow", path=str(Path(sys.executable).parent))
    assert command is not None, "the dotflow console script is not installed"
    environment = {
        **os.environ,  # already cleaned of dotflow variables by the autouse fixture
        **variables,
    }
    return subprocess.run(
        [command, *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def dotflow_start(
    project: Path, outbox_dir: Path, **variables: str
) -> subprocess.CompletedProcess[str]:
    """``dotflow start --provider api --step steps_module.step`` in ``project``."""
    variables = {"SERVER_FLUSH_TIMEOUT": "1", "DOTFLOW_OUTBOX_DIR": str(outbox_dir), **variables}
    return dotflow(
        "start", "--provider", "api", "--step", "steps_module.step", cwd=project, **variables
    )


def resumed(server: FakeAPI) -> dict[str, str]:
    """The variables of a managed run of ``WORKFLOW_ID`` reporting to ``server``."""
    return {"SERVER_BASE_URL": server.url, "SERVER_USER_TOKEN": TOKEN, "WORKFLOW_ID": WORKFLOW_ID}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("dotflow: error:")]


def only_error_line(finished: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused command prints: exit 2, no usage block, no traceback."""
    assert finished.returncode == 2, finished.stderr
    assert finished.stderr.splitlines() == error_lines(finished.stderr), finished.stderr
    (line,) = error_lines(finished.stderr)
    return line


def fail_next_id(server: FakeAPI, failure: str) -> None:
    """Make the next-id endpoint fail the way ``failure`` names."""
    actions = {
        "not json": [Action(raw=b"<html>Bad gateway</html>", match=NEXT_ID)],
        "http 500": [Action(status=500, match=NEXT_ID), Action(status=500, match=NEXT_ID)],
        "http 404": [Action(status=404, match=NEXT_ID)],
        "string": [Action(status=200, body={"next_id": "x"}, match=NEXT_ID)],
        "zero": [Action(status=200, body={"next_id": 0}, match=NEXT_ID)],
        "missing": [Action(status=200, body={"last_id": 7}, match=NEXT_ID)],
    }
    server.script(*actions[failure])


#: Each failure and a piece of the cause the error line must name.
FAILURES = {
    "http 500": "HTTP 500",
    "http 404": "HTTP 404",
    "not json": "not JSON",
    "string": "not an integer",
    "zero": "outside",
    "missing": "no next_id",
}


@pytest.mark.slow
@pytest.mark.parametrize("failure", list(FAILURES))
def test_strict_mode_stops_the_run_before_any_task_when_the_next_id_is_unusable(
    failure: str, server: FakeAPI, project: Path, outbox_dir: Path
) -> None:
    fail_next_id(server, failure)

    finished = dotflow_start(project, outbox_dir, **resumed(server), SERVER_STRICT="1")

    assert finished.returncode == 2, finished.stderr
    assert not (project / "step-ran").exists(), "a step ran although the run was refused"
    errors = error_lines(finished.stderr)
    assert len(errors) == 1, finished.stderr
    assert WORKFLOW_ID in errors[0]
    assert FAILURES[failure] in errors[0]
    assert "Traceback" not in finished.stderr
    assert TOKEN not in finished.stdout + finished.stderr
    asked = [line for line in server.lines() if line.endswith("/next-id")]
    assert len(asked) == (2 if failure == "http 500" else 1), asked  # at most one retry
    # The reservation is asked first; this server has none (404: nothing registered).
    assert [line for line in server.lines() if line.endswith("/reserve")][:1] == [
        line for line in server.lines() if line.startswith("POST ")
    ][:1]
    sent = [
        line
        for line in server.lines()
        if not line.startswith("GET ") and not line.endswith("/reserve")
    ]
    assert sent == [], "the server heard of a run that never started"


@pytest.mark.slow
def test_without_strict_mode_an_unusable_next_id_warns_and_the_run_goes_on(
    server: FakeAPI, project: Path, outbox_dir: Path
) -> None:
    fail_next_id(server, "http 500")

    finished = dotflow_start(project, outbox_dir, **resumed(server))

    assert finished.returncode == 0, finished.stderr
    assert (project / "step-ran").exists()
    warnings = [line for line in finished.stderr.splitlines() if "may collide" in line]
    assert len(warnings) == 1, finished.stderr
    assert "warning" in warnings[0].lower()
    assert WORKFLOW_ID in warnings[0]
    assert "HTTP 500" in warnings[0]
    assert error_lines(finished.stderr) == []
    assert f"POST /api/v1/workflows/{WORKFLOW_ID}/tasks" in server.lines()  # still reported


@pytest.mark.slow
@pytest.mark.parametrize("url", ["ftp://example.com", "/relative/path", "not a url", "http://"])
def test_a_base_url_that_is_not_absolute_http_is_a_configuration_error(
    url: str, project: Path, outbox_dir: Path
) -> None:
    finished = dotflow_start(project, outbox_dir, SERVER_BASE_URL=url, SERVER_USER_TOKEN=SECRET)

    assert finished.returncode == 2, finished.stderr
    assert not (project / "step-ran").exists()
    errors = error_lines(finished.stderr)
    assert len(errors) == 1, finished.stderr
    assert "SERVER_BASE_URL" in errors[0]
    assert SECRET not in finished.stdout + finished.stderr


@pytest.mark.slow
@pytest.mark.parametrize("token", ["", "   "], ids=["empty", "blank"])
def test_an_empty_token_is_a_configuration_error(
    token: str, server: FakeAPI, project: Path, outbox_dir: Path
) -> None:
    finished = dotflow_start(
        project, outbox_dir, SERVER_BASE_URL=server.url, SERVER_USER_TOKEN=token
    )

    assert finished.returncode == 2, finished.stderr
    assert not (project / "step-ran").exists()
    errors = error_lines(finished.stderr)
    assert len(errors) == 1, finished.stderr
    assert "SERVER_USER_TOKEN" in errors[0]
    assert server.requests == []


@pytest.mark.slow
def test_a_token_in_the_config_file_is_refused_naming_its_key(
    server: FakeAPI, project: Path, outbox_dir: Path
) -> None:
    (project / "pyproject.toml").write_text(f'[tool.dotflow.server]\ntoken = "{SECRET}"\n')

    finished = dotflow_start(project, outbox_dir, SERVER_BASE_URL=server.url)

    line = only_error_line(finished)
    assert f"token in [tool.dotflow.server] of {project / 'pyproject.toml'}: " in line
    assert "SERVER_USER_TOKEN" in line  # where it goes instead
    assert SECRET not in finished.stdout + finished.stderr
    assert not (project / "step-ran").exists()
    assert server.requests == []


#: Outbox settings naming a regular file, ``not-a-dir`` in the project, or a path under it;
#: and what the error line names.
UNUSABLE_OUTBOXES = {
    "DOTFLOW_OUTBOX_DIR a file": ({"DOTFLOW_OUTBOX_DIR": "{file}"}, "DOTFLOW_OUTBOX_DIR="),
    "DOTFLOW_OUTBOX_DIR under a file": (
        {"DOTFLOW_OUTBOX_DIR": "{file}/outbox"},
        "DOTFLOW_OUTBOX_DIR=",
    ),
    "DOTFLOW_HOME a file": ({"DOTFLOW_OUTBOX_DIR": "", "DOTFLOW_HOME": "{file}"}, "DOTFLOW_HOME="),
    "outbox_dir a file": (
        {
            "DOTFLOW_OUTBOX_DIR": "",
            "pyproject.toml": '[tool.dotflow.server]\noutbox_dir = "{file}"',
        },
        "outbox_dir in [tool.dotflow.server]",
    ),
}


def unusable_outbox(project: Path, case: str) -> tuple[dict[str, str], str, Path]:
    """The variables of an ``UNUSABLE_OUTBOXES`` case (writing its pyproject.toml), the
    name its error gives, and the file in the way."""
    file = project / "not-a-dir"
    file.write_text("a file, not a directory\n")
    variables, named = UNUSABLE_OUTBOXES[case]
    variables = {key: value.replace("{file}", str(file)) for key, value in variables.items()}
    if "pyproject.toml" in variables:
        (project / "pyproject.toml").write_text(variables.pop("pyproject.toml") + "\n")
    return variables, named, file


@pytest.mark.slow
@pytest.mark.parametrize("case", list(UNUSABLE_OUTBOXES))
def test_an_outbox_that_cannot_be_a_directory_stops_the_run_before_any_task(
    case: str, server: FakeAPI, project: Path, outbox_dir: Path
) -> None:
    variables, named, file = unusable_outbox(project, case)

    finished = dotflow_start(
        project,
        outbox_dir,
        **{"SERVER_BASE_URL": server.url, "SERVER_USER_TOKEN": SECRET, **variables},
    )

    line = only_error_line(finished)
    assert named in line
    assert f"{file} is not a directory" in line
    assert not (project / "step-ran").exists(), "a step ran although its events could be lost"
    assert server.requests == []
    assert SECRET not in finished.stdout + finished.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", ["list", "flush"])
@pytest.mark.parametrize("case", list(UNUSABLE_OUTBOXES))
def test_dotflow_outbox_reports_an_outbox_that_cannot_be_a_directory(
    case: str, command: str, server: FakeAPI, project: Path
) -> None:
    variables, named, file = unusable_outbox(project, case)

    finished = dotflow(
        "outbox",
        command,
        cwd=project,
        **{"SERVER_BASE_URL": server.url, "SERVER_USER_TOKEN": SECRET, **variables},
    )

    line = only_error_line(finished)
    assert named in line
    assert f"{file} is not a directory" in line
    assert finished.stdout == ""
    assert server.requests == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["bogus"], "'bogus'"),
        (["flush", "--all"], "--all"),
        (["list", "extra"], "extra"),
        (["flush", "--timeout"], "--timeout"),
    ],
    ids=["unknown command", "unknown option", "extra argument", "missing value"],
)
def test_a_dotflow_outbox_usage_error_is_one_line(arguments: list[str], named: str) -> None:
    finished = dotflow("outbox", *arguments)

    line = only_error_line(finished)
    assert line.startswith("dotflow: error: dotflow outbox"), line
    assert named in line
    assert line.endswith("--help'"), line  # where the valid usage is


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({}, "SERVER_BASE_URL is not set"),
        ({"SERVER_BASE_URL": "ftp://example.com"}, "SERVER_BASE_URL='ftp://example.com'"),
        ({"SERVER_BASE_URL": "https://h/api", "SERVER_USER_TOKEN": ""}, "SERVER_USER_TOKEN"),
    ],
    ids=["no base URL", "bad base URL", "no token"],
)
def test_a_dotflow_outbox_flush_configuration_error_is_one_line(
    variables: dict[str, str], named: str
) -> None:
    finished = dotflow("outbox", "flush", **{"SERVER_USER_TOKEN": SECRET, **variables})

    line = only_error_line(finished)
    assert named in line
    assert SECRET not in finished.stdout + finished.stderr


@pytest.mark.slow
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", "-1", "soon", ""])
def test_dotflow_outbox_flush_refuses_a_timeout_that_is_not_finite_and_at_least_zero(
    value: str,
) -> None:
    finished = dotflow(
        "outbox",
        "flush",
        f"--timeout={value}",
        SERVER_BASE_URL="http://127.0.0.1:9",
        SERVER_USER_TOKEN=SECRET,
    )

    line = only_error_line(finished)
    assert f"--timeout: {value!r} is not a finite number of seconds >= 0" in line
    assert finished.stdout == ""  # refused before anything was read or sent


@pytest.mark.slow
@pytest.mark.parametrize("command", ["list", "flush"])
def test_every_dotflow_outbox_option_is_documented_in_the_readme(command: str) -> None:
    shown = dotflow("outbox", command, "--help")

    assert shown.returncode == 0, shown.stderr
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", shown.stdout)) - {"--help"}
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert [option for option in sorted(options) if option not in readme] == []


def documented_outbox_commands() -> list[str]:
    """Every ``dotflow outbox ...`` command line in a code span or ``sh`` block of the docs."""
    plugin = Path(__file__).resolve().parents[1]
    documents = [plugin / "README.md"]
    documents += [
        plugin.parents[1] / name for name in ("README.md", "docs/cli.md", "docs/guide.md")
    ]
    commands: set[str] = set()
    for document in (path for path in documents if path.exists()):
        text = document.read_text()
        commands.update(re.findall(r"`(dotflow outbox[^`]*)`", text))
        for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
            lines = (line.partition("#")[0].strip() for line in block.splitlines())
            commands.update(line for line in lines if line.startswith("dotflow outbox"))
    return sorted(commands)


@pytest.mark.slow
@pytest.mark.parametrize("command", documented_outbox_commands())
def test_every_dotflow_outbox_command_the_docs_show_is_accepted(command: str) -> None:
    finished = dotflow(*shlex.split(command)[1:], SERVER_BASE_URL="")

    # No server is configured: a flush stops at that (exit 2), never at its arguments.
    assert "see 'dotflow outbox" not in finished.stderr, finished.stderr
    assert "SERVER_BASE_URL is not set" in finished.stderr or finished.returncode == 0


@action
def ok(initial_context: Any) -> int:
    return 1


REDIRECTED = {
    "POST": r"^POST /api/v1/workflows/[^/]+/tasks$",  # the task's create
    "PATCH": r"^PATCH /api/v1/workflows/[^/]+$",  # the workflow's final status
}


@pytest.mark.parametrize("method", list(REDIRECTED))
@pytest.mark.parametrize("target", ["same server", "other server"])
@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_is_logged_as_an_error_and_not_followed(
    status: int,
    target: str,
    method: str,
    fake: FakeAPI,
    make_provider: Callable[..., ServerAPI],
    api_logs: pytest.LogCaptureFixture,
) -> None:
    with FakeAPI(token=None, prefix="/api/v1") as other:
        location = f"{(fake if target == 'same server' else other).url}/moved"
        fake.script(Action(status=status, headers={"Location": location}, match=REDIRECTED[method]))
        provider = make_provider(fake.url)
        run = DotFlow(providers=[provider])
        run.task.add(ok)
        run.start()
        provider.shutdown(5)
        everything = fake.requests + other.requests

    redirected = [r for r in fake.requests if r.status == status]
    assert len(redirected) == 1, fake.lines()
    assert redirected[0].method == method
    matching = [line for line in fake.lines() if line == redirected[0].line]
    assert len(matching) == 1, "the redirected request was sent again"
    assert not [r.line for r in everything if r.path.endswith("/moved")], (
        "the redirect was followed"
    )
    assert other.requests == []
    assert not [r.line for r in everything if r.method == "GET"], "re-sent as a GET"
    errors = [
        r.getMessage()
        for r in api_logs.records
        if r.levelno == logging.ERROR and "redirect" in r.getMessage()
    ]
    assert len(errors) == 1, api_logs.text
    assert str(status) in errors[0]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_forked_mid_delivery_and_its_parent_each_deliver_their_events_once(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI]
) -> None:
    parent = sample_workflow_record()
    parent_id = parent.workflow_id

    def slow_parent_updates(request: RecordedRequest) -> Action | None:
        return (
            Action(delay=0.5) if request.method == "PATCH" and parent_id in request.path else None
        )

    fake.always(slow_parent_updates)
    provider = make_provider(fake.url)
    provider.create_workflow(parent)
    for task_id in (1, 2, 3):
        provider.create_task(sample_task_record(parent_id, task_id))
    assert fake.wait_for(lambda: len(fake.requests) == 4 and fake.in_flight == 0)
    # The task creates went at once, on several connections, now idle in the pool; one
    # slow update takes one of them.
    provider.update_task(sample_task_record(parent_id, 1, TaskStatus.COMPLETED))
    assert fake.wait_for(lambda: fake.in_flight >= 1)  # the parent's worker is sending now
    assert provider.delivery().pending(parent_id) > 0

    pid = os.fork()
    if pid == 0:  # the child: report a workflow of its own with the same provider
        code = 1
        try:
            run = DotFlow(providers=[provider])
            run.task.add(ok)
            run.task.add(ok)
            run.start()
            code = 0 if provider.delivery().pending() == 0 else 3
            provider.shutdown(5)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    provider.shutdown(5)  # the parent's worker still delivers its own queue

    repeated = Counter((r.method, r.path, r.body) for r in fake.requests)
    assert [key for key, count in repeated.items() if count > 1] == []
    created = [r.json["id"] for r in fake.requests if r.line == "POST /api/v1/workflows"]
    assert len(created) == 2 and parent_id in created, created
    (child_id,) = {*created} - {parent_id}

    def task_creates(workflow_id: str) -> list[int]:
        path = f"/api/v1/workflows/{workflow_id}/tasks"
        return sorted(r.json["id"] for r in fake.requests if r.line == f"POST {path}")

    assert task_creates(parent_id) == [1, 2, 3]
    assert task_creates(child_id) == [1, 2]
    parents = [r for r in fake.requests if parent_id in r.path or parent_id.encode() in r.body]
    assert len(parents) == 5, [r.line for r in parents]
    # The child opened connections of its own: a socket shared with the parent would
    # interleave two processes' requests and answers.
    childs = [r for r in fake.requests if child_id in r.path or child_id.encode() in r.body]
    assert not {r.client_port for r in parents} & {r.client_port for r in childs}
    assert fake.delivered_state(child_id) == {
        "status": "Completed",
        "tasks": {1: "Completed", 2: "Completed"},
    }
