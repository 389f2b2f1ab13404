"""``dotflow start``: runs, progress, summary, formats, contexts, ids, modes and exit codes."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import Project, Result, needs_default, popen_dotflow

SUMMARY = re.compile(
    r"^dotflow: workflow (?P<id>\S+) (?P<outcome>Completed|Failed|interrupted) in [\d.]+ s: "
    r"(?P<completed>\d+) completed, (?P<failed>\d+) failed, (?P<not_run>\d+) not run "
    r"of (?P<tasks>\d+) tasks?; providers: (?P<providers>.+)$"
)

Dotflow = Callable[..., Result]


def summary_of(result: Result, line: int = -1) -> re.Match[str]:
    match = SUMMARY.match(result.lines[line]) if result.lines else None
    assert match, f"stderr line {line} is not the summary\n{result}"
    return match


def started_until_a_step_runs(
    project: Project, tmp_path: Path, *arguments: str
) -> subprocess.Popen[str]:
    """``dotflow start ARGUMENTS``, returned once a slow step has written its marker."""
    marker = tmp_path / "slow.started"
    process = popen_dotflow("start", *arguments, cwd=project.path, env=project.env)
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the slow step never started"
        time.sleep(0.02)
    return process


def task_updates(project: Project) -> list[tuple[int, str]]:
    return [
        (event["record"]["task_id"], event["record"]["status"])
        for event in project.events()
        if event["hook"] == "update_task"
    ]


def test_steps_next_to_flow_py_run_in_order_and_every_hook_reaches_the_provider(
    dotflow: Dotflow, project: Project
) -> None:
    result = dotflow("start", "--step", "flow.extract", "--step", "flow.transform", "-p", "fake")

    assert result.returncode == 0, result
    assert result.stdout == ""
    hooks = project.hooks()
    assert hooks[0] == "configure"
    assert hooks[1:4] == ["create_workflow", "create_task", "create_task"]
    flushed = hooks.index("flush")
    assert hooks[flushed - 1] == "update_workflow"
    # the run's link is asked for once it ended; then one shutdown, from the CLI: the
    # core's exit handler leaves a shut-down provider alone
    assert hooks[flushed + 1 :] == ["run_link", "shutdown"]
    assert task_updates(project) == [
        (1, "In progress"),
        (1, "Completed"),
        (2, "In progress"),
        (2, "Completed"),
    ]
    finished = [e for e in project.events() if e["hook"] == "update_task"][-1]["record"]
    assert finished["current_context"]["got"]["input"] is None  # no --initial-context
    first_shutdown = next(e for e in project.events() if e["hook"] == "shutdown")
    assert first_shutdown["timeout"] is None


def test_progress_shows_each_task_start_finish_status_and_duration(dotflow: Dotflow) -> None:
    result = dotflow("start", "-s", "flow.extract", "-s", "flow.transform", "-p", "fake")

    assert result.returncode == 0, result
    lines = result.lines
    assert re.match(
        r"^dotflow: workflow \S+ started: 2 tasks, mode sequential, providers: ", lines[0]
    )
    assert "dotflow: task 1 flow.extract: In progress" in lines
    assert any(
        re.match(r"^dotflow: task 1 flow\.extract: Completed in [\d.]+ s$", x) for x in lines
    )
    assert any(
        re.match(r"^dotflow: task 2 flow\.transform: Completed in [\d.]+ s$", x) for x in lines
    )


def test_the_summary_line_names_workflow_providers_counts_and_time(dotflow: Dotflow) -> None:
    result = dotflow("start", "-s", "flow.extract", "-s", "flow.transform", "-p", "fake")

    summary = summary_of(result)
    assert summary["outcome"] == "Completed"
    assert (summary["completed"], summary["failed"], summary["tasks"]) == ("2", "0", "2")
    assert summary["providers"] == "fake (flag)"


def test_a_provider_s_run_link_is_the_last_line(dotflow: Dotflow, project: Project) -> None:
    link = "http://127.0.0.1:8000/ui/workflows/{workflow_id}/runs/r1"
    result = dotflow("start", "-s", "flow.explode", "-p", "fake", env={"FAKE_RUN_LINK": link})

    assert result.returncode == 1, result
    workflow_id = summary_of(result, line=-2)["id"]
    assert result.lines[-1] == f"dotflow: see the run at {link.format(workflow_id=workflow_id)}"
    hooks = project.hooks()
    assert hooks.index("run_link") < hooks.index("shutdown")  # asked before shutting down
    assert project.events()[hooks.index("run_link")]["status"] == "Failed"  # the final state

    as_json = dotflow(
        "start", "-s", "flow.extract", "-p", "fake", "--log-format", "json",
        env={"FAKE_RUN_LINK": "not a url {workflow_id}"},
    )  # fmt: skip
    assert as_json.json_lines()[-1]["links"] == []  # not an http(s) URL: ignored
    plain = dotflow("start", "-s", "flow.extract", "-p", "fake")
    assert "see the run" not in plain.stderr  # no link, no line


def test_a_failed_task_exits_1_and_is_shown_once(dotflow: Dotflow, project: Project) -> None:
    result = dotflow("start", "-s", "flow.explode", "-s", "flow.extract", "-p", "fake")

    assert result.returncode == 1, result
    failed = [line for line in result.lines if "flow.explode: Failed" in line]
    assert len(failed) == 1, result
    assert "after 2 attempts: ValueError: exploded on purpose" in failed[0]
    assert any("flow.explode: Retry: attempt 1 failed with ValueError" in x for x in result.lines)
    assert not any("failed after" in line for line in result.lines), "engine warning duplicated"
    summary = summary_of(result)
    assert summary["outcome"] == "Failed"
    assert (summary["completed"], summary["failed"], summary["not_run"]) == ("0", "1", "1")
    assert (2, "In progress") not in task_updates(project)
    assert "Traceback" not in result.stderr


def test_a_step_calling_sys_exit_fails_its_task_not_the_run(
    dotflow: Dotflow, project: Project
) -> None:
    result = dotflow(
        "start", "-s", "flow.exits", "-s", "flow.extract", "-p", "fake", "--keep-going"
    )

    assert result.returncode == 1, result  # sys.exit(0) must not turn a failure into success
    assert any("flow.exits: Failed" in line and "SystemExit: 0" in line for line in result.lines)
    summary = summary_of(result)
    assert (summary["outcome"], summary["completed"], summary["failed"]) == ("Failed", "1", "1")
    assert (1, "Failed") in task_updates(project) and (2, "Completed") in task_updates(project)
    assert "Traceback" not in result.stderr


def test_verbose_shows_where_a_failed_task_raised(dotflow: Dotflow) -> None:
    quiet = dotflow("start", "-s", "flow.explode")
    assert "Traceback" not in quiet.stderr

    text = dotflow("start", "-s", "flow.explode", "-v")
    assert text.returncode == 1, text
    failed = text.lines.index(next(line for line in text.lines if "flow.explode: Failed" in line))
    assert text.lines[failed + 1] == "    Traceback (most recent call last):", text
    assert 'raise ValueError("exploded on purpose")' in text.stderr
    assert text.lines[-3] == "    ValueError: exploded on purpose", text
    # The summary names the failed task (the line before it), also with -q.
    assert text.lines[-2] == "dotflow: failed: task 1 flow.explode: ValueError: exploded on purpose"

    json_run = dotflow("start", "-s", "flow.explode", "-v", "--log-format", "json")
    failure = next(e for e in json_run.json_lines() if e["event"] == "task_failed")
    assert failure["error"]["traceback"].startswith("Traceback (most recent call last):")
    assert failure["error"]["traceback"].rstrip().endswith("ValueError: exploded on purpose")


def test_keep_going_runs_the_rest_and_still_exits_1(dotflow: Dotflow) -> None:
    result = dotflow("start", "-s", "flow.explode", "-s", "flow.extract", "--keep-going")

    assert result.returncode == 1, result
    summary = summary_of(result)
    assert (summary["completed"], summary["failed"], summary["not_run"]) == ("1", "1", "0")


def test_quiet_shows_only_the_summary(dotflow: Dotflow) -> None:
    result = dotflow("start", "-s", "flow.extract", "-s", "flow.transform", "-q", "-p", "fake")

    assert result.returncode == 0, result
    assert len(result.lines) == 1, result
    summary_of(result)


def test_json_log_format_is_one_object_per_line_with_stable_keys(dotflow: Dotflow) -> None:
    result = dotflow(
        "start", "-s", "flow.extract", "-s", "flow.explode", "--keep-going",
        "-p", "fake", "--log-format", "json",
    )  # fmt: skip

    assert result.returncode == 1, result
    events = result.json_lines()
    kinds = [event["event"] for event in events]
    assert kinds[0] == "workflow_started"
    assert kinds[-1] == "summary"
    assert kinds.count("task_started") == 3  # extract once, explode twice
    assert kinds.count("task_retry") == 1
    assert kinds.count("task_completed") == 1
    assert kinds.count("task_failed") == 1
    task_keys = {
        "event", "time", "workflow_id", "task_id", "name", "group",
        "status", "attempt", "duration", "error",
    }  # fmt: skip
    for event in events:
        if event["event"].startswith("task_"):
            assert set(event) == task_keys, event
    failed = next(event for event in events if event["event"] == "task_failed")
    assert failed["error"] == {"type": "ValueError", "message": "exploded on purpose"}
    assert failed["attempt"] == 2 and failed["duration"] >= 0
    summary = events[-1]
    assert summary["workflow_id"] == events[0]["workflow_id"]
    assert summary["providers"] == ["fake"] and summary["provider_source"] == "flag"
    assert (summary["completed"], summary["failed"], summary["not_run"]) == (1, 1, 0)
    assert summary["exit_code"] == 1 and summary["status"] == "Failed"
    assert summary["duration"] > 0


def test_json_log_format_reports_errors_and_warnings_as_objects(dotflow: Dotflow) -> None:
    bad = dotflow("start", "-s", "flow.nope", "--log-format", "json")
    assert bad.returncode == 2, bad
    [error] = bad.json_lines()
    assert error["event"] == "error" and error["exit_code"] == 2
    assert "flow.nope" in error["message"]

    warned = dotflow(
        "start", "-s", "flow.extract", "--log-format", "json",
        env={"SERVER_BASE_URL": "http://127.0.0.1:9", "SERVER_USER_TOKEN": "t"},
    )  # fmt: skip
    logs = [event for event in warned.json_lines() if event["event"] == "log"]
    if "api" not in json.dumps(warned.json_lines()[-1]["providers"]):
        assert len(logs) == 1, warned
        assert logs[0]["level"] == "warning" and "not installed" in logs[0]["message"]


def test_initial_context_as_json_reaches_every_step(dotflow: Dotflow, project: Project) -> None:
    result = dotflow("start", "-s", "flow.extract", "-p", "fake", "-i", '{"rows": [1, 2], "n": 3}')

    assert result.returncode == 0, result
    created = next(e for e in project.events() if e["hook"] == "create_task")["record"]
    assert created["initial_context"] == {"rows": [1, 2], "n": 3}
    done = [e for e in project.events() if e["hook"] == "update_task"][-1]["record"]
    assert done["current_context"]["input"] == {"rows": [1, 2], "n": 3}


def test_initial_context_from_a_file(dotflow: Dotflow, project: Project) -> None:
    (project.path / "context.json").write_text('["from", "a", "file"]')

    result = dotflow(
        "start", "-s", "flow.extract", "-p", "fake", "--initial-context", "@context.json"
    )

    assert result.returncode == 0, result
    done = [e for e in project.events() if e["hook"] == "update_task"][-1]["record"]
    assert done["current_context"]["input"] == ["from", "a", "file"]


def assert_usage_error(result: Result, *fragments: str) -> None:
    assert result.returncode == 2, result
    assert len(result.lines) == 1, result
    assert result.lines[0].startswith("dotflow: error: "), result
    for fragment in fragments:
        assert fragment in result.lines[0], result


@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        ("{bad", ("--initial-context", "line 1 column 2", "offset 1")),
        ('["unclosed"', ("--initial-context", "invalid JSON", "offset 11")),
        ("@missing.json", ("@missing.json", "No such file")),
        ("@", ("no file name",)),
    ],
)
def test_a_bad_initial_context_exits_2_before_anything_is_reported(
    dotflow: Dotflow, project: Project, value: str, fragments: tuple[str, ...]
) -> None:
    result = dotflow("start", "-s", "flow.extract", "-p", "fake", "-i", value)

    assert_usage_error(result, *fragments)
    assert project.events() == []


def test_an_initial_context_file_with_bad_json_names_the_file(
    dotflow: Dotflow, project: Project
) -> None:
    (project.path / "bad.json").write_text('{"a": 1,}')
    result = dotflow("start", "-s", "flow.extract", "-i", "@bad.json")
    assert_usage_error(result, "@bad.json", "invalid JSON", "line 1")


@pytest.mark.parametrize(
    ("step", "fragments"),
    [
        ("flow.undecorated", ("'flow.undecorated'", "@action")),
        ("flow.nope", ("'flow.nope'", "no attribute 'nope'")),
        ("nosuchmodule.extract", ("'nosuchmodule.extract'", "no module named 'nosuchmodule'")),
        ("badimport.step", ("'badimport.step'", "RuntimeError", "fails at import")),
        ("extract", ("'extract'", "not an import path", "'module:function'")),
    ],
)
def test_a_step_that_cannot_be_used_exits_2_and_no_event_is_reported(
    dotflow: Dotflow, project: Project, step: str, fragments: tuple[str, ...]
) -> None:
    result = dotflow("start", "-s", "flow.extract", "-s", step, "-p", "fake")

    assert_usage_error(result, *fragments)
    assert project.events() == [], "no provider may hear of a run that cannot start"


def test_an_unknown_provider_exits_2_listing_the_installed_ones(dotflow: Dotflow) -> None:
    result = dotflow("start", "-s", "flow.extract", "--provider", "nope")
    assert_usage_error(result, "unknown provider 'nope'", "fake", "broken")


def test_a_provider_that_fails_to_import_exits_2_naming_it_and_the_cause(dotflow: Dotflow) -> None:
    result = dotflow("start", "-s", "flow.extract", "--provider", "fake,broken")
    assert_usage_error(result, "'broken'", "ImportError", "broken on purpose")


def test_a_provider_with_a_bad_hook_signature_exits_2(dotflow: Dotflow) -> None:
    result = dotflow("start", "-s", "flow.extract", "--provider", "badsig")
    assert_usage_error(result, "'badsig'", "verbose")


def test_settings_rejected_in_configure_exit_2_before_the_workflow_exists(
    dotflow: Dotflow, project: Project
) -> None:
    result = dotflow("start", "-s", "flow.extract", "-p", "fake", env={"FAKE_REJECT": "1"})

    assert_usage_error(result, "FAKE_REJECT=1")
    assert "create_workflow" not in project.hooks()
    assert project.hooks()[0] == "configure"


def test_a_strict_get_next_task_id_failure_exits_2_and_shuts_down(
    dotflow: Dotflow, project: Project
) -> None:
    result = dotflow(
        "start", "-s", "flow.extract", "-p", "fake", "--workflow-id", "wf-strict",
        env={"FAKE_STRICT_FAIL": "1"},
    )  # fmt: skip

    assert_usage_error(result, "unreachable", "wf-strict")
    hooks = project.hooks()
    assert "create_task" not in hooks and "update_task" not in hooks
    assert hooks[:2] == ["configure", "get_next_task_id"]
    assert "shutdown" in hooks


def test_a_provider_loaded_for_a_refused_run_hears_nothing(
    dotflow: Dotflow, project: Project
) -> None:
    """Not even shutdown at exit: the run it was loaded for never started."""
    assert_usage_error(dotflow("start", "-s", "flow.extract", "-p", "fake,nosuch"), "nosuch")
    assert project.hooks() == []


@pytest.mark.parametrize(
    ("files", "env", "fragment"),
    [
        ({"dotflow.toml": "provider = [broken"}, {}, "invalid TOML"),
        ({}, {"DOTFLOW_CONFIG": "/nonexistent/dotflow.toml"}, "DOTFLOW_CONFIG"),
        ({"dotflow.toml": 'provider = ""'}, {}, "not a provider list"),
        ({"dotflow.toml": "provider = 42"}, {}, "42 is not a provider list"),
        ({"dotflow.toml": "provider = true"}, {}, "true is not a provider list"),
        ({"dotflow.toml": "provider = {fake = 1}"}, {}, "a table is not a provider list"),
        ({"dotflow.toml": 'provider = ["fake", 3]'}, {}, "not a provider list"),
    ],
)
def test_a_bad_config_file_exits_2(
    dotflow: Dotflow, project: Project, files: dict[str, str], env: dict[str, str], fragment: str
) -> None:
    for name, text in files.items():
        (project.path / name).write_text(text)
    assert_usage_error(dotflow("start", "-s", "flow.extract", env=env), fragment)


def test_a_pyproject_whose_tool_is_not_a_table_exits_2(dotflow: Dotflow, project: Project) -> None:
    (project.path / "dotflow.toml").unlink()
    (project.path / "pyproject.toml").write_text("tool = 5\n")
    assert_usage_error(dotflow("start", "-s", "flow.extract"), "[tool] must be a table, not 5")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("start",), "one of the arguments -s/--step -w/--workflow is required"),
        (("start", "-s", "flow.extract", "--mode", "sideways"), "invalid choice: 'sideways'"),
        (("start", "-s", "flow.extract", "--log-format", "xml"), "invalid choice: 'xml'"),
        (("start", "-s", "flow.extract", "--no-such-flag"), "unrecognized arguments"),
        (("providers", "--no-such-flag"), "unrecognized arguments"),
        (("nosuchcommand",), "invalid choice: 'nosuchcommand'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    dotflow: Dotflow, args: tuple[str, ...], fragment: str
) -> None:
    command = "dotflow" if args[0] == "nosuchcommand" else f"dotflow {args[0]}"
    assert_usage_error(dotflow(*args), fragment, f"see '{command} --help'")


def test_a_blank_workflow_id_names_where_it_came_from(dotflow: Dotflow) -> None:
    result = dotflow("start", "-s", "flow.extract", env={"WORKFLOW_ID": " "})
    assert_usage_error(result, "WORKFLOW_ID=' ': must be a non-empty string")
    result = dotflow("start", "-s", "flow.extract", "--workflow-id", " ")
    assert_usage_error(result, "--workflow-id=' ': must be a non-empty string")


def test_a_usage_error_is_a_json_event_when_json_is_asked_for(dotflow: Dotflow) -> None:
    result = dotflow("start", "--log-format", "json", "-s", "flow.extract", "-m", "turbo")
    assert result.returncode == 2, result
    (line,) = result.lines
    event = json.loads(line)
    assert event["event"] == "error" and event["exit_code"] == 2
    assert "invalid choice: 'turbo'" in event["message"]


def test_no_command_prints_the_help_and_exits_2(dotflow: Dotflow) -> None:
    result = dotflow()
    assert result.returncode == 2, result
    assert "usage: dotflow" in result.stderr and "Traceback" not in result.stderr


def test_workflow_id_flag_continues_the_numbering_the_provider_gives(
    dotflow: Dotflow, project: Project
) -> None:
    result = dotflow(
        "start", "-s", "flow.extract", "-s", "flow.transform", "-p", "fake",
        "--workflow-id", "wf-42", env={"FAKE_NEXT_TASK_ID": "5", "WORKFLOW_ID": "wf-env"},
    )  # fmt: skip

    assert result.returncode == 0, result
    assert "create_workflow" not in project.hooks()  # the id came from outside
    asked = next(e for e in project.events() if e["hook"] == "get_next_task_id")
    assert asked["workflow_id"] == "wf-42"
    assert task_updates(project) == [
        (5, "In progress"),
        (5, "Completed"),
        (6, "In progress"),
        (6, "Completed"),
    ]
    assert "dotflow: task 5 flow.extract: In progress" in result.lines
    assert summary_of(result)["id"] == "wf-42"


def test_workflow_id_from_the_environment(dotflow: Dotflow, project: Project) -> None:
    result = dotflow("start", "-s", "flow.extract", "-p", "fake", env={"WORKFLOW_ID": "wf-env"})

    assert result.returncode == 0, result
    assert summary_of(result)["id"] == "wf-env"
    assert {e["record"]["workflow_id"] for e in project.events() if "record" in e} == {"wf-env"}
    assert task_updates(project)[0] == (1, "In progress")


@needs_default()
def test_next_to_default_the_provider_that_knows_the_next_id_wins(
    dotflow: Dotflow, project: Project
) -> None:
    result = dotflow(
        "start", "-s", "flow.extract", "-p", "default,fake", "--workflow-id", "wf-7",
        env={"FAKE_NEXT_TASK_ID": "7"},
    )  # fmt: skip

    assert result.returncode == 0, result
    assert task_updates(project)[0] == (7, "In progress")


def test_parallel_mode_reports_progress_of_tasks_run_in_worker_processes(
    dotflow: Dotflow, project: Project
) -> None:
    result = dotflow(
        "start", "-m", "parallel", "-s", "flow.extract", "-s", "flow.extract",
        "-s", "flow.explode", "-p", "fake", "--log-format", "json",
    )  # fmt: skip

    assert result.returncode == 1, result
    events = result.json_lines()
    assert events[0]["event"] == "workflow_started" and events[0]["mode"] == "parallel"
    finished = {
        e["task_id"]: e["event"] for e in events if e["event"] in ("task_completed", "task_failed")
    }
    assert finished == {1: "task_completed", 2: "task_completed", 3: "task_failed"}
    cli_pid = project.events()[0]["pid"]
    step_pids = {
        e["record"]["current_context"]["pid"]
        for e in project.events()
        if e["hook"] == "update_task" and e["record"]["status"] == "Completed"
    }
    assert cli_pid not in step_pids, "parallel steps should run in worker processes"
    assert {e["pid"] for e in project.events()} == {cli_pid}, "hooks run in the CLI process"


def test_background_mode_waits_for_the_end(dotflow: Dotflow, project: Project) -> None:
    result = dotflow("start", "-m", "background", "-s", "flow.extract", "-s", "flow.transform")

    assert result.returncode == 0, result
    assert summary_of(result)["completed"] == "2"
    assert "mode background" in result.lines[0]


def test_callback_runs_after_each_task(dotflow: Dotflow, project: Project) -> None:
    (project.path / "hooks_cb.py").write_text(
        "import sys\n\ndef report(task):\n    sys.stderr.write(f'callback {task.task_id}\\n')\n"
    )
    result = dotflow("start", "-s", "flow.extract", "-s", "flow.transform", "-c", "hooks_cb.report")
    assert result.returncode == 0, result
    assert "callback 1" in result.lines and "callback 2" in result.lines


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
@pytest.mark.parametrize(
    ("stop", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"]
)
def test_ctrl_c_or_sigterm_exits_after_failing_the_running_task_and_flushing(
    project: Project, tmp_path: Path, mode: str, stop: signal.Signals, exit_code: int
) -> None:
    process = started_until_a_step_runs(
        project, tmp_path, "-s", "flow.slow", "-s", "flow.extract", "-p", "fake", "-m", mode
    )
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == exit_code, stderr
    assert "Traceback" not in stderr
    assert re.search(r"^dotflow: workflow \S+ interrupted in ", stderr, re.MULTILINE), stderr
    assert (1, "Failed") in task_updates(project)
    hooks = project.hooks()
    final = [e for e in project.events() if e["hook"] == "update_workflow"][-1]["record"]
    assert final["status"] == "Failed"
    assert hooks.index("flush") > hooks.index("update_workflow")
    shutdowns = [e["timeout"] for e in project.events() if e["hook"] == "shutdown"]
    assert shutdowns == [5.0]  # a bounded chance to deliver, and no unbounded one after it


def test_sigterm_ends_a_parallel_run_whose_workers_are_busy_in_c_code_at_once(
    project: Project, tmp_path: Path
) -> None:
    """Workers get one grace period together, then die on terminate() whatever they run."""
    process = started_until_a_step_runs(
        project, tmp_path, *["-s", "flow.crunch"] * 4, "-p", "fake", "-m", "parallel", "-q"
    )
    time.sleep(0.3)  # the others start too
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    # one 1 s grace for all four, not 1 s each; and terminate() kills a worker in C code
    assert time.monotonic() - signalled < 3, "workers were waited for one by one, or not killed"
    assert summary_of(Result((), 143, "", stderr))["failed"] == "4"


def test_verbose_shows_library_debug_logs(dotflow: Dotflow) -> None:
    quiet = dotflow("start", "-s", "flow.extract", "-p", "default")
    chatty = dotflow("start", "-s", "flow.extract", "-p", "default", "-vv")
    if quiet.returncode != 0 or chatty.returncode != 0:
        pytest.skip("the default provider is not installed")
    assert not any(line.startswith("dotflow: debug:") for line in quiet.lines)
    assert any("dotflow: debug: update_task" in line for line in chatty.lines), chatty


def test_trace_hooks_env_prints_every_hook_call(dotflow: Dotflow) -> None:
    result = dotflow("start", "-s", "flow.extract", "-p", "fake", env={"DOTFLOW_TRACE_HOOKS": "1"})
    assert result.returncode == 0, result
    assert any(line.startswith("dotflow-trace update_task(") for line in result.lines)
    summary_of(result)  # still the last line: nothing is left to call at exit
    assert [line for line in result.lines if "shutdown(" in line] == [
        next(line for line in result.lines if line.startswith("dotflow-trace shutdown("))
    ]


@pytest.mark.parametrize(
    ("stop", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"]
)
def test_ctrl_c_or_sigterm_in_background_mode_exits_after_a_bounded_shutdown(
    project: Project, tmp_path: Path, stop: signal.Signals, exit_code: int
) -> None:
    process = started_until_a_step_runs(
        project, tmp_path, "-s", "flow.slow", "-p", "fake", "-m", "background",
        "--log-format", "json",
    )  # fmt: skip
    started = time.monotonic()
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == exit_code, stderr
    assert time.monotonic() - started < 10, "the step's thread must not hold the exit"
    summary = json.loads(stderr.splitlines()[-1])
    assert summary["event"] == "summary" and summary["interrupted"] is True
    assert summary["failed"] == 1 and summary["unfinished"] == 0
    assert summary["exit_code"] == exit_code
    events = project.events()
    # the running task and the workflow are reported Failed before the bounded shutdown
    last_task = [e["record"] for e in events if e["hook"] == "update_task"][-1]
    assert last_task["status"] == "Failed"
    assert last_task["errors"][-1]["type"] == (
        "Terminated" if stop == signal.SIGTERM else "KeyboardInterrupt"
    )
    hooks = [e["hook"] for e in events]
    assert hooks[-4:] == ["update_workflow", "flush", "run_link", "shutdown"]
    assert [e["record"]["status"] for e in events if e["hook"] == "update_workflow"][-1] == "Failed"
    assert [e["timeout"] for e in events if e["hook"] == "shutdown"] == [5.0]


def test_the_readme_quick_start_runs_as_a_script_and_as_steps(
    dotflow: Dotflow, project: Project
) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", readme, re.DOTALL)
    assert snippet, "README.md lost its quick-start python block"
    (project.path / "flow.py").write_text(snippet.group(1))
    script = subprocess.run(
        [sys.executable, "flow.py"], cwd=project.path, env=project.env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert script.returncode == 0, script.stderr
    assert script.stdout.strip().endswith("[[3, 1, 2], [1, 2, 3]]"), script.stdout
    project.log.unlink(missing_ok=True)

    result = dotflow("start", "--step", "flow.extract", "--step", "flow.transform", "-p", "fake")
    assert result.returncode == 0, result
    assert result.stdout == ""  # importing the steps ran no workflow of its own
    assert (
        project.hooks().count("create_workflow") + project.hooks().count("update_workflow") == 3
    ), project.hooks()  # one workflow: created, started, ended
