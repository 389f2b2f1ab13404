"""kill -9 at random moments: every event older than 0.5 s is recovered, by the next run or a flush.

A runner process reports a long sequential workflow (20 ms steps); it is
killed with SIGKILL at a random moment, with the server down or up. Each step
first marks, in a file, that it started: from that moment the previous task's
last event exists. After the kill, the next run (or ``dotflow outbox flush``)
must deliver the final state of every task marked more than 0.5 s before the
kill.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fake_api import TOKEN, Action, FakeAPI
from serverapi_helpers import free_port
from stdlib_server import StdlibServer

#: Kills per scenario (the issue's target: 0 lost over 10).
KILLS = int(os.environ.get("DOTFLOW_KILLS", "10"))
#: Only events older than this before the kill must survive it.
DURABLE_AFTER = 0.5

RUNNER = textwrap.dedent(
    """
    import os, sys, time
    from dotflow_core import DotFlow, action

    marks = open(os.environ["MARKS"], "a", buffering=1)
    started = [0]

    @action
    def step(initial_context):
        started[0] += 1
        marks.write(f"{started[0]} {time.time()!r}\\n")
        time.sleep(0.02)
        return {"rows": started[0]}

    workflow = DotFlow()
    marks.write(f"workflow {workflow.workflow_id}\\n")
    for _ in range(400):
        workflow.task.add(step)
    workflow.start()
    """
)

NEXT_RUN = textwrap.dedent(
    """
    from dotflow_core import DotFlow, action

    @action
    def step(initial_context):
        return 1

    workflow = DotFlow()
    workflow.task.add(step)
    workflow.start()
    """
)


def environment(url: str, outbox_dir: Path, marks: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SERVER_", "DOTFLOW_"))},
        "SERVER_BASE_URL": url,
        "SERVER_USER_TOKEN": TOKEN,
        "DOTFLOW_OUTBOX_DIR": str(outbox_dir),
        "DOTFLOW_HOME": str(outbox_dir.parent),
        "MARKS": str(marks),
        "SERVER_FLUSH_TIMEOUT": "5",
    }


def run_and_kill(script: Path, env: dict[str, str], marks: Path) -> float:
    """Start the runner, SIGKILL it at a random moment after its first step; the kill's time."""
    runner = subprocess.Popen([sys.executable, str(script)], env=env, cwd=script.parent)
    try:
        deadline = time.monotonic() + 60
        while " " not in _first_step(marks) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(random.uniform(0.6, 2.5))
        killed_at = time.time()
        runner.send_signal(signal.SIGKILL)
    finally:
        runner.wait(30)
    return killed_at


def _first_step(marks: Path) -> str:
    lines = marks.read_text().splitlines() if marks.exists() else []
    return lines[1] if len(lines) > 1 else ""


def must_survive(marks: Path, killed_at: float) -> tuple[str, set[int]]:
    """The workflow id, and the tasks whose last event was produced before the kill - 0.5 s."""
    lines = marks.read_text().splitlines()
    workflow_id = lines[0].split()[1]
    done: set[int] = set()
    for line in lines[1:]:
        parts = line.split()
        if len(parts) == 2 and float(parts[1]) < killed_at - DURABLE_AFTER:
            done.add(int(parts[0]) - 1)  # this step's start: the previous task had ended
    done.discard(0)
    return workflow_id, done


def recover(how: str, env: dict[str, str], workdir: Path) -> None:
    if how == "next run":
        (workdir / "next_run.py").write_text(NEXT_RUN)
        subprocess.run([sys.executable, "next_run.py"], env=env, cwd=workdir, timeout=60)
    else:
        dotflow = shutil.which("dotflow", path=str(Path(sys.executable).parent))
        assert dotflow is not None
        subprocess.run(
            [dotflow, "outbox", "flush", "--timeout", "30"],
            env=env,
            cwd=workdir,
            timeout=60,
            capture_output=True,
        )


@pytest.mark.slow
@pytest.mark.parametrize("server_state", ["down", "up"])
def test_kill_9_at_random_moments_loses_no_event_older_than_half_a_second(
    server_state: str, tmp_path: Path
) -> None:
    lost: list[tuple[int, list[int]]] = []
    checked = 0
    for kill in range(KILLS):
        workdir = tmp_path / f"kill-{kill}"
        workdir.mkdir()
        outbox_dir = workdir / "outbox"
        marks = workdir / "marks"
        script = workdir / "runner.py"
        script.write_text(RUNNER)
        port = free_port()
        how = "next run" if kill % 2 else "dotflow outbox flush"
        env = environment(f"http://127.0.0.1:{port}", outbox_dir, marks)
        if server_state == "down":  # nothing listens while the runner runs
            killed_at = run_and_kill(script, env, marks)
            with StdlibServer(port=port, protocol="HTTP/1.1") as server:
                recover(how, env, workdir)
        else:
            with StdlibServer(port=port, delay=0.02, protocol="HTTP/1.1") as server:
                killed_at = run_and_kill(script, env, marks)
                recover(how, env, workdir)
        workflow_id, done = must_survive(marks, killed_at)
        tasks = server.delivered(workflow_id)["tasks"]
        missing = sorted(task for task in done if tasks.get(task) != "Completed")
        checked += len(done)
        if missing:
            lost.append((kill, missing))
    assert checked > KILLS * 10, "the runs were too short to show anything"
    assert lost == [], f"events lost (kill number, tasks): {lost}"


SHORT_RUNNER = textwrap.dedent(
    """
    import os
    from dotflow_core import DotFlow, action

    @action
    def step(initial_context):
        return {"rows": 1}

    workflow = DotFlow()  # a new workflow: its final status rides in the last batch
    with open(os.environ["MARKS"], "w") as marks:
        marks.write(workflow.workflow_id)
    for _ in range(20):
        workflow.task.add(step)
    workflow.start()
    """
)


@pytest.mark.slow
def test_kill_9_while_the_batch_with_the_final_status_is_in_flight_loses_nothing(
    tmp_path: Path,
) -> None:
    outbox_dir, marks, script = tmp_path / "outbox", tmp_path / "marks", tmp_path / "runner.py"
    script.write_text(SHORT_RUNNER)
    with FakeAPI(token=TOKEN, batch="max-events=1000, max-bytes=6000000") as server:
        server.script(Action(hang=True, match=r"/events$"))  # never applied, never answered
        env = environment(server.url, outbox_dir, marks)
        runner = subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path)
        try:
            assert server.wait_for(
                lambda: any(r.path.endswith("/events") for r in server.requests), timeout=30
            )
            time.sleep(DURABLE_AFTER + 0.1)  # every event is older than the durability bound
        finally:
            runner.send_signal(signal.SIGKILL)
            runner.wait(30)
        (batch,) = [r for r in server.requests if r.path.endswith("/events")]
        last = batch.json["events"][-1]
        assert (last["op"], last["body"]["status"]) == ("update_workflow", "Completed")
        recover("dotflow outbox flush", env, tmp_path)
        workflow_id = marks.read_text()
        assert server.delivered_state(workflow_id) == {
            "status": "Completed",
            "tasks": dict.fromkeys(range(1, 21), "Completed"),
        }
