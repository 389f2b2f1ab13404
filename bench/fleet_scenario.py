"""One scenario of ``bench_fleet.py``: N ``dotflow start`` runners at once against a
``dotflow-api serve`` process, then what the server stored, checked against what the
runners produced.

Measured from three places, each named in the report:

- the server's ``--timing-log`` (:mod:`dotflow_api.timing`): every request's status
  and its time in the application (p50/p99; queueing before the application is not
  in it), and the end of the last request, which closes the ingestion window;
- each runner's own summary line (``dotflow-server-api: N event(s) delivered ... in
  R request(s), S spooled ..., D dropped``, logged at INFO with ``-v``) and exit code;
- the runners' outboxes after they exited (events spooled at exit, one line each),
  and the server's tasks and runs read back through its API.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import requests
from dotflow_api.process import ServerProcess

TOKEN = "bench-fleet-token-0123456789"
DOTFLOW = Path(sys.executable).with_name("dotflow")
FLOW_MODULE = textwrap.dedent(
    '''
    """bench_fleet's workflow: FLEET_TASKS no-op tasks."""
    import os

    from dotflow_core import DotFlow, action


    @action
    def noop():
        return None


    def build():
        flow = DotFlow()
        for _ in range(int(os.environ["FLEET_TASKS"])):
            flow.task.add(step=noop)
        return flow
    '''
)
SUMMARY = re.compile(
    r"dotflow-server-api: (\d+) event\(s\) delivered to \S+ in (\d+) request\(s\), "
    r"(\d+) spooled.*, (\d+) dropped"
)

WAITING = re.compile(r"(\d+) event\(s\) in (\d+) file\(s\)")
#: The summary line's counts, in its order.
COUNTS = ("delivered", "client_requests", "spooled", "dropped")


@attrs.frozen
class Scenario:
    backend: str  # "sqlite" or "postgresql"
    path: str  # "batch" or "single" (serve --no-batch)
    ids: str  # "shared" (one WORKFLOW_ID) or "distinct" (one per runner)
    runners: int
    tasks: int
    server_workers: int = 1
    flush_timeout: float = 5.0

    @property
    def name(self) -> str:
        return f"{self.backend}, {self.path}, {self.ids} id"

    def workflow_id(self, runner: int) -> str:
        return "fleet" if self.ids == "shared" else f"fleet-{runner}"

    @property
    def events_per_runner(self) -> int:
        return 2 + 3 * self.tasks  # workflow start and end; per task: created, started, done


def run(scenario: Scenario, database_url: str, workdir: Path) -> dict[str, Any]:
    """Run the scenario on a fresh server over ``database_url``; its figures."""
    timing_log = workdir / "timing.jsonl"
    extra = ["--no-access-log", "--timing-log", str(timing_log)]
    extra += ["--workers", str(scenario.server_workers)]
    if scenario.path == "single":
        extra.append("--no-batch")
    flow_dir = workdir / "flow"
    flow_dir.mkdir(parents=True)
    (flow_dir / "fleetflow.py").write_text(FLOW_MODULE)
    with ServerProcess.start(database_url, [TOKEN], workdir=workdir, extra_args=extra) as server:
        timing_log.write_text("")  # start-up requests are not the fleet's
        began = time.time()
        finished = _run_runners(scenario, server.base_url, flow_dir, workdir)
        ended = time.time()
        result = _server_figures(timing_log, began)
        result.update(_runner_figures(finished, workdir, scenario))
        result.update(stored_figures(server.base_url, scenario))
        if result["spooled_in_outbox"]:
            _flush_outboxes(scenario, server.base_url, flow_dir, workdir)
            after = stored_figures(server.base_url, scenario)
            result.update({f"after_flush_{key}": value for key, value in after.items()})
    result["wall"] = ended - began
    return result


def _environment(scenario: Scenario, base_url: str, home: Path, runner: int) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SERVER_", "DOTFLOW_", "WORKFLOW_ID"))
    }
    environment.update(
        SERVER_BASE_URL=base_url,
        SERVER_USER_TOKEN=TOKEN,
        SERVER_FLUSH_TIMEOUT=f"{scenario.flush_timeout:g}",
        DOTFLOW_HOME=str(home),
        WORKFLOW_ID=scenario.workflow_id(runner),
        FLEET_TASKS=str(scenario.tasks),
    )
    return environment


def _run_runners(
    scenario: Scenario, base_url: str, flow_dir: Path, workdir: Path
) -> list[tuple[int, str]]:
    """Start every runner at once (each with its own home, as on its own machine)."""
    command = [str(DOTFLOW), "start", "-w", "fleetflow:build", "--provider", "api"]
    command += ["--log-format", "json", "-v"]
    processes = []
    for runner in range(scenario.runners):
        home = workdir / f"home-{runner}"
        home.mkdir()
        with (home / "stderr.log").open("wb") as stderr:  # a pipe could fill and stall it
            processes.append(
                subprocess.Popen(
                    command,
                    cwd=flow_dir,
                    env=_environment(scenario, base_url, home, runner),
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
            )
    codes = [process.wait(timeout=900) for process in processes]
    return [
        (code, (workdir / f"home-{runner}" / "stderr.log").read_text(errors="replace"))
        for runner, code in enumerate(codes)
    ]


def _server_figures(timing_log: Path, began: float) -> dict[str, Any]:
    lines = [json.loads(line) for line in timing_log.read_text().splitlines() if line]
    seconds = sorted(line["seconds"] for line in lines)
    last_end = max((line["start"] + line["seconds"] for line in lines), default=began)
    statuses = Counter(line["status"] for line in lines)
    return {
        "requests": len(lines),
        "batch_requests": sum(line["path"].endswith("/events") for line in lines),
        "p50": percentile(seconds, 0.50),
        "p99": percentile(seconds, 0.99),
        "ingest_window": max(last_end - began, 1e-9),
        "http_errors": {status: n for status, n in sorted(statuses.items()) if status >= 400},
    }


def percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of an ascending list (0.0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def _runner_figures(
    finished: list[tuple[int, str]], workdir: Path, scenario: Scenario
) -> dict[str, Any]:
    counts = Counter[str]()
    warnings = 0
    for _, stderr in finished:
        for line in stderr.splitlines():
            event = json.loads(line) if line.startswith("{") else {}
            match = SUMMARY.search(str(event.get("message", "")))
            if match:
                for key, value in zip(COUNTS, match.groups(), strict=True):
                    counts[key] += int(value)
            elif event.get("level") in ("warning", "error"):
                warnings += 1
    waiting = [_outbox_waiting(scenario, workdir, runner) for runner in range(scenario.runners)]
    return {
        "produced": scenario.runners * scenario.events_per_runner,
        **{key: counts[key] for key in COUNTS},
        "runner_failures": sum(code != 0 for code, _ in finished),
        "runner_warnings": warnings,
        "spooled_in_outbox": sum(events for events, _ in waiting),
        "outbox_files": sum(files for _, files in waiting),
    }


def _outbox_waiting(scenario: Scenario, workdir: Path, runner: int) -> tuple[int, int]:
    """Events and files waiting in a runner's outbox, as ``dotflow outbox list`` says."""
    home = workdir / f"home-{runner}"
    if not (home / "outbox").exists():
        return 0, 0
    listed = subprocess.run(
        [str(DOTFLOW), "outbox", "list"],
        env=_environment(scenario, "http://127.0.0.1:9", home, runner),
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = WAITING.search(listed.stdout)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def stored_figures(base_url: str, scenario: Scenario) -> dict[str, int]:
    """What the server holds, checked run by run against what each runner produced."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    workflow_ids = sorted({scenario.workflow_id(runner) for runner in range(scenario.runners)})
    tasks = [task for wid in workflow_ids for task in _all_tasks(session, base_url, wid)]
    runs: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        runs.setdefault(str(task.get("run_id")), []).append(task)
    counts = [len(run_tasks) for run_tasks in runs.values()]
    counts += [0] * max(0, scenario.runners - len(runs))  # runs with no task stored
    expected = scenario.runners * scenario.tasks
    finished = [
        _get(session, f"{base_url}/workflows/{wid}/runs?limit=1000") for wid in workflow_ids
    ]
    completed_runs = sum(
        run["status"] == "Completed" and run["completed_count"] == scenario.tasks
        for page in finished
        for run in page["items"]
    )
    return {
        "stored": len(tasks),
        "expected": expected,
        "missing": sum(max(0, scenario.tasks - count) for count in counts),
        "duplicated": sum(max(0, count - scenario.tasks) for count in counts),
        "not_completed": sum(task["status"] != "Completed" for task in tasks),
        "runs_stored": len(runs),
        "runs_completed": completed_runs,
    }


def _all_tasks(session: requests.Session, base_url: str, workflow_id: str) -> list[Any]:
    tasks: list[Any] = []
    while True:
        url = f"{base_url}/workflows/{workflow_id}/tasks?limit=1000&offset={len(tasks)}"
        page = _get(session, url)
        tasks += page["items"]
        if len(tasks) >= page["total"] or not page["items"]:
            return tasks


def _get(session: requests.Session, url: str) -> Any:
    response = session.get(url, timeout=120)
    if response.status_code == 404:
        return {"items": [], "total": 0}
    response.raise_for_status()
    return response.json()


def _flush_outboxes(scenario: Scenario, base_url: str, flow_dir: Path, workdir: Path) -> None:
    """``dotflow outbox flush`` in every runner's home, one after the other."""
    for runner in range(scenario.runners):
        home = workdir / f"home-{runner}"
        if not (home / "outbox").exists():
            continue
        subprocess.run(
            [str(DOTFLOW), "outbox", "flush", "--timeout", "120"],
            cwd=flow_dir,
            env=_environment(scenario, base_url, home, runner),
            capture_output=True,
            timeout=600,
        )
