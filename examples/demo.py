"""The main job, end to end on one machine: managed mode against the reference server.

1. starts ``dotflow-api serve`` on a free loopback port with an embedded SQLite file;
2. runs the example ETL workflow twice through ``dotflow start --provider api``
   with the same ``WORKFLOW_ID``, so the second run's task ids continue the first's;
3. prints the tasks the server recorded;
4. stops the server.

Run it with ``make demo`` (which installs everything into .venv first).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from dotflow_api.process import ServerProcess

EXAMPLES = Path(__file__).resolve().parent
SCRIPTS = Path(sys.executable).parent
STEPS = ["etl.extract", "etl.transform", "etl.load"]


def run_workflow(base_url: str, token: str, workflow_id: str, home: Path, run: int) -> None:
    print(f"\n== run {run}: dotflow start --provider api (WORKFLOW_ID={workflow_id})", flush=True)
    command = [str(SCRIPTS / "dotflow"), "start", "--provider", "api"]
    for step in STEPS:
        command += ["--step", step]
    environment = {
        **os.environ,
        "SERVER_BASE_URL": base_url,
        "SERVER_USER_TOKEN": token,
        "WORKFLOW_ID": workflow_id,
        "DOTFLOW_HOME": str(home),
    }
    exit_code = subprocess.call(command, cwd=EXAMPLES, env=environment)
    if exit_code != 0:
        raise SystemExit(f"demo: run {run} exited with code {exit_code}")


def recorded_tasks(base_url: str, token: str, workflow_id: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        f"{base_url}/workflows/{urllib.request.quote(workflow_id, safe='')}/tasks",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.load(response)
    return body["items"]


def print_table(tasks: list[dict[str, Any]]) -> None:
    headers = ("task id", "step", "status", "retries", "duration", "finished at (UTC)")
    rows = [
        (
            str(task["id"]),
            task["name"],
            task["status"],
            str(task.get("retry_count", 0)),
            f"{task['duration'] * 1000:.1f} ms" if task.get("duration") is not None else "-",
            (task.get("finished_at") or "-")[:19].replace("T", " "),
        )
        for task in tasks
    ]
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=False)]
    line = "  ".join(f"{{:<{width}}}" for width in widths)
    print(line.format(*headers))
    print(line.format(*("-" * width for width in widths)))
    for row in rows:
        print(line.format(*row))


def main() -> int:
    token = secrets.token_urlsafe(24)
    workflow_id = f"demo-etl-{time.strftime('%Y%m%d-%H%M%S')}"
    with tempfile.TemporaryDirectory(prefix="dotflow-demo-") as tmp:
        workdir = Path(tmp)
        database = workdir / "dotflow-api.sqlite3"
        server = ServerProcess.start(f"sqlite:///{database}", [token], workdir=workdir)
        base_url = server.base_url
        print(f"reference server: {base_url} (SQLite file {database})")
        try:
            for run in (1, 2):
                run_workflow(base_url, token, workflow_id, workdir / "home", run)
            tasks = recorded_tasks(base_url, token, workflow_id)
            print(f"\n== the server holds {len(tasks)} tasks for workflow {workflow_id}")
            print_table(tasks)
        finally:
            server.stop()
    ids = [task["id"] for task in tasks]
    if ids != list(range(1, 2 * len(STEPS) + 1)):
        print(f"demo: expected task ids 1..{2 * len(STEPS)}, got {ids}", file=sys.stderr)
        return 1
    print("\nthe second run went on numbering where the first stopped: ids 1-3, then 4-6")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
