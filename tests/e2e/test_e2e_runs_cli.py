"""``dotflow runs``: the api provider's command against the real reference server."""

from __future__ import annotations

import json
import socket
import subprocess

from .conftest import DOTFLOW, TOKEN, Api, Runner

WORKFLOW = "nightly/etl"


def runs(runner: Runner, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``dotflow runs ARGS`` with the runner's settings (``env`` overrides them)."""
    token = env.pop("token", TOKEN)
    return subprocess.run(
        [str(DOTFLOW), "runs", *args],
        env={**runner.environment(token=token), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _two_runs(runner: Runner, api: Api) -> tuple[str, str]:
    """A completed run, then a failed one (a step failing both of its attempts)."""
    assert runner.run(WORKFLOW_ID=WORKFLOW).returncode == 0
    failed = runner.run(("e2eflow.extract", "e2eflow.fails"), WORKFLOW_ID=WORKFLOW)
    assert failed.returncode == 1, failed.stderr
    listed = api.get("/workflows/nightly%2Fetl/runs")["items"]
    return listed[1]["run_id"], listed[0]["run_id"]


def test_runs_lists_a_workflow_s_runs_and_shows_one_run_s_tasks(runner: Runner, api: Api) -> None:
    completed, failed = _two_runs(runner, api)

    table = runs(runner, WORKFLOW_ID=WORKFLOW)  # the workflow id from the environment
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == "Runs of workflow 'nightly/etl' (2, newest first):"
    assert lines[1].split() == ["RUN", "ID", "STATUS", "STARTED", "DURATION", "DONE/FAILED/TASKS"]
    assert lines[2].split()[:2] == [failed, "Failed"] and lines[2].endswith("1/1/2")
    assert lines[3].split()[:2] == [completed, "Completed"] and lines[3].endswith("3/0/3")

    as_json = runs(runner, WORKFLOW, "--json")
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["workflow_id"] == WORKFLOW and document["total"] == 2
    assert [run["run_id"] for run in document["items"]] == [failed, completed]
    assert runs(runner, WORKFLOW, "--limit", "1", "--json").stdout.count('"run_id"') == 1

    shown = runs(runner, "show", failed)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"Run {failed} of workflow 'nightly/etl': Failed, ")
    assert lines[0].endswith("1 done, 1 failed, 2 tasks")
    assert lines[1].split() == ["ID", "NAME", "STATUS", "RETRIES", "DURATION"]
    assert lines[2].split()[:4] == ["4", "e2eflow.extract", "Completed", "0"]
    assert lines[3].split()[:4] == ["5", "e2eflow.fails", "Failed", "1"]  # retry=2: 2 attempts
    assert [line.strip() for line in lines[4:]] == [
        f"attempt {attempt}: ValueError: e2e failure" for attempt in (1, 2)
    ]
    detail = json.loads(runs(runner, "show", completed, "--json").stdout)
    assert detail["run"]["status"] == "Completed"
    assert [task["id"] for task in detail["tasks"]] == [1, 2, 3]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_runs_errors_are_one_line_naming_the_bad_value(runner: Runner, api: Api) -> None:
    runner.run(WORKFLOW_ID="known")
    cases = [
        ((), {}, 2, "no workflow id: give one (dotflow runs WORKFLOW_ID) or set WORKFLOW_ID"),
        (("nope",), {}, 1, "workflow 'nope' not found on "),
        (("show", "0000-no-such-run"), {}, 1, "run '0000-no-such-run' not found on "),
        (("show", "x" * 65), {}, 2, "is not a run id: 1 to 64 characters"),
        (("known", "--limit", "0"), {}, 2, "'0' is not a whole number from 1 to 1000"),
        (("known",), {"token": "not-the-token-1234"}, 2, "refused the token (HTTP 401)"),
        (("known",), {"SERVER_BASE_URL": "ftp://127.0.0.1:1"}, 2, "SERVER_BASE_URL='ftp://"),
        (
            ("known",),
            {"SERVER_BASE_URL": f"http://127.0.0.1:{_free_port()}"},
            1,
            "cannot reach the server at SERVER_BASE_URL='http://127.0.0.1:",
        ),
    ]
    for args, env, code, message in cases:
        result = runs(runner, *args, **env)
        assert result.returncode == code, (args, env, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr  # one line
        assert result.stderr.startswith("dotflow: error: ") and message in result.stderr, args
        assert "not-the-token-1234" not in result.stderr and TOKEN not in result.stderr
        assert result.stdout == ""
