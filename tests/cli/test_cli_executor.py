"""``dotflow start --mode parallel --executor``: specs, precedence, Dask missing, interrupts."""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import Project, Result, popen_dotflow

from dotflow_core.cli import main

Dotflow = Callable[..., Result]
TESTS = Path(__file__).resolve().parents[1]

WHERE_PY = """\
import multiprocessing
import threading

from dotflow_core import action


@action
def where():
    return {"process": multiprocessing.current_process().name,
            "thread": threading.current_thread().name}
"""


def task_records(project: Project) -> dict[int, list[dict[str, Any]]]:
    records: dict[int, list[dict[str, Any]]] = {}
    for event in project.events():
        if event["hook"] in ("create_task", "update_task"):
            records.setdefault(event["record"]["task_id"], []).append(event["record"])
    return records


def ran_where(project: Project) -> dict[str, str]:
    (final,) = [r for r in task_records(project)[1] if r["status"] == "Completed"]
    return final["current_context"]


@pytest.fixture
def where(project: Project) -> Project:
    (project.path / "where.py").write_text(WHERE_PY)
    return project


def test_a_parallel_run_on_a_process_pool_reports_every_event(
    dotflow: Dotflow, project: Project
) -> None:
    result = dotflow(
        "start", "-s", "flow.extract", "-s", "flow.transform", "-s", "flow.explode",
        "-p", "fake", "--mode", "parallel", "--executor", "processes:2", "-i", '"rows"',
    )  # fmt: skip
    assert result.returncode == 1, result  # explode fails, after its retry
    records = task_records(project)
    assert [r["status"] for r in records[1]] == ["Not started", "In progress", "Completed"]
    assert records[1][-1]["current_context"]["input"] == "rows"
    assert [r["status"] for r in records[3]] == [
        "Not started", "In progress", "Retry", "In progress", "Failed",
    ]  # fmt: skip
    hooks = project.hooks()
    assert hooks.index("flush") > hooks.index("update_workflow")
    assert "1 failed" in result.lines[-1]


def test_the_flag_beats_the_environment_which_beats_the_config_file(
    dotflow: Dotflow, where: Project
) -> None:
    (where.path / "dotflow.toml").write_text('executor = "threads:1"\n')
    args = ("start", "-s", "where.where", "-p", "fake", "--mode", "parallel")

    assert dotflow(*args).returncode == 0
    assert ran_where(where)["thread"].startswith("ThreadPoolExecutor")
    where.log.unlink()
    assert dotflow(*args, env={"DOTFLOW_EXECUTOR": "processes:1"}).returncode == 0
    assert ran_where(where)["process"] != "MainProcess"
    where.log.unlink()
    result = dotflow(*args, "--executor", "threads", env={"DOTFLOW_EXECUTOR": "processes:1"})
    assert result.returncode == 0, result
    assert ran_where(where)["process"] == "MainProcess"


def test_the_settings_apply_to_parallel_runs_only(dotflow: Dotflow, where: Project) -> None:
    result = dotflow("start", "-s", "where.where", "-p", "fake", env={"DOTFLOW_EXECUTOR": "dask"})
    assert result.returncode == 0, result
    assert ran_where(where)["thread"] == "MainThread"  # sequential, as asked


def test_the_flag_without_parallel_mode_is_a_usage_error(dotflow: Dotflow) -> None:
    result = dotflow("start", "-s", "flow.extract", "-p", "fake", "--executor", "threads")
    assert result.returncode == 2
    assert result.lines == [
        "dotflow: error: --executor threads: executors run tasks in parallel mode only; "
        "add --mode parallel"
    ]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DOTFLOW_EXECUTOR": "spark://x:1"}, "DOTFLOW_EXECUTOR='spark://x:1'"),
        ({}, "--executor='dask://nohost'"),
    ],
)
def test_a_bad_spec_is_one_line_and_exit_2_before_any_event(
    dotflow: Dotflow, project: Project, env: dict[str, str], named: str
) -> None:
    flag = [] if env else ["--executor", "dask://nohost"]
    result = dotflow("start", "-s", "flow.extract", "-p", "fake", "-m", "parallel", *flag, env=env)
    assert result.returncode == 2
    assert len(result.lines) == 1 and result.lines[0].startswith(f"dotflow: error: {named}: ")
    assert "create_workflow" not in project.hooks()


def test_dask_without_distributed_names_the_extra_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if it were not installed
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dotflow.toml").write_text("")
    (tmp_path / "flow.py").write_text(WHERE_PY)
    code = main(["start", "-s", "flow.where", "-p", "none", "-m", "parallel", "--executor", "dask"])
    assert code == 2
    assert capsys.readouterr().err == (
        "dotflow: error: --executor='dask' needs Dask, which is not installed: "
        'pip install "dotflow-core[dask]"\n'
    )


def interrupted(
    project: Project, tmp_path: Path, stop: signal.Signals, *arguments: str
) -> tuple[int, str]:
    """Run ``executor_steps.held``; stop the command once it runs."""
    process = popen_dotflow(
        "start", "-s", "executor_steps.held", "-p", "fake",
        "-m", "parallel", "-i", json.dumps(str(tmp_path)), *arguments,
        cwd=project.path, env={**project.env, "PYTHONPATH": str(TESTS)},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the held step never started"
            time.sleep(0.02)
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=60)
    finally:
        (tmp_path / "release").write_text("")  # a remote worker finishes the attempt
    return process.returncode, stderr


@pytest.mark.parametrize(
    ("stop", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"]
)
def test_ctrl_c_or_sigterm_on_a_process_pool(
    project: Project, tmp_path: Path, stop: signal.Signals, exit_code: int
) -> None:
    code, stderr = interrupted(project, tmp_path, stop, "--executor", "processes:2")
    assert_interrupted(project, code, stderr, exit_code)


def test_sigterm_on_a_dask_scheduler(project: Project, tmp_path: Path, dask_client: Any) -> None:
    address = dask_client.scheduler.address.replace("tcp://", "dask://")
    code, stderr = interrupted(project, tmp_path, signal.SIGTERM, "--executor", address)
    assert_interrupted(project, code, stderr, 143)


def assert_interrupted(project: Project, code: int, stderr: str, exit_code: int) -> None:
    assert code == exit_code, stderr
    assert "Traceback" not in stderr
    records = task_records(project)
    assert records[1][-1]["status"] == "Failed"
    assert records[1][-1]["errors"][-1]["type"] in ("KeyboardInterrupt", "Terminated")
    hooks = project.hooks()
    assert hooks[-4:] == ["update_workflow", "flush", "run_link", "shutdown"]
    final = [e for e in project.events() if e["hook"] == "update_workflow"][-1]["record"]
    assert final["status"] == "Failed"
