"""A stand-in runner process for the end-to-end tests (run as a script).

Usage: python api_runner.py BASE_URLS TOKEN WORKFLOW_ID FIRST_ID STEP COUNT THREADS

Each of THREADS threads takes every THREADS-th id of the sequence FIRST_ID, FIRST_ID +
STEP, ... (COUNT ids in all) and, per task id, does what a runner with retries does:
POST the task, POST it again (a retry after a lost response), PATCH it to Completed.
BASE_URLS is a comma-separated list of servers, used in turn. Exits 1 on any
unexpected status, printing it.
"""

from __future__ import annotations

import sys
import threading
from urllib.parse import quote

import requests


def run_thread(
    bases: list[str], token: str, workflow_id: str, ids: list[int], failures: list[str]
) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    tasks = f"/workflows/{quote(workflow_id, safe='')}/tasks"
    for number, task_id in enumerate(ids):
        base = bases[number % len(bases)]
        body = {"id": task_id, "name": f"step-{task_id}", "status": "In progress"}
        for expected in ((201,), (200,)):
            response = session.post(base + tasks, json=body, timeout=60)
            if response.status_code not in expected:
                failures.append(f"POST {task_id}: {response.status_code} {response.text}")
        done = {**body, "status": "Completed", "current_context": {"task": task_id}}
        response = session.patch(f"{base}{tasks}/{task_id}", json=done, timeout=60)
        if response.status_code != 200:
            failures.append(f"PATCH {task_id}: {response.status_code} {response.text}")


def main(argv: list[str]) -> int:
    bases_arg, token, workflow_id, first, step, count, threads = argv
    bases = bases_arg.split(",")
    ids = [int(first) + index * int(step) for index in range(int(count))]
    failures: list[str] = []
    workers = [
        threading.Thread(
            target=run_thread,
            args=(bases, token, workflow_id, ids[index :: int(threads)], failures),
        )
        for index in range(int(threads))
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for failure in failures:
        print(failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
