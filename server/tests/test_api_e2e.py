"""The real ``dotflow-api serve`` process over real HTTP on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from dotflow_api.process import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.both_backends]

TOKEN = "e2e-token-" + "s3cr3t" * 4
OTHER_TOKEN = "e2e-other-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RUNNER = Path(__file__).with_name("api_runner.py")


def _command() -> list[str]:
    script = Path(sys.executable).with_name("dotflow-api")
    assert script.exists(), f"console script not installed next to {sys.executable}"
    return [str(script)]


def start_server(tmp_path: Path, database_url: str, *extra: str, name: str) -> ServerProcess:
    workdir = tmp_path / name
    workdir.mkdir()
    return ServerProcess.start(
        database_url, [TOKEN, OTHER_TOKEN], workdir=workdir, extra_args=extra
    )


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[ServerProcess]:
    running = start_server(tmp_path, database_url, name="server")
    yield running
    running.stop(signal.SIGKILL)


def test_refuses_to_start_without_tokens(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "DOTFLOW_API_TOKENS"}
    result = subprocess.run(
        [*_command(), "serve", "--port", "0", "--port-file", str(tmp_path / "port")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "DOTFLOW_API_TOKENS" in lines[0] and "--tokens-file" in lines[0]
    assert not (tmp_path / "port").exists()


def test_serves_over_http_and_stops_cleanly_on_sigterm(server: ServerProcess) -> None:
    port = server.base_url.rsplit(":", 1)[1]
    assert requests.get(f"{server.base_url}/healthz", timeout=10).json() == {"status": "ok"}
    assert requests.get(f"{server.base_url}/workflows", timeout=10).status_code == 401

    tasks = f"{server.base_url}/workflows/a%2Fb%20c/tasks"
    body = {"id": 1, "name": "n", "status": "Completed"}
    assert requests.post(tasks, json=body, headers=AUTH, timeout=10).status_code == 201
    assert requests.post(tasks, json=body, headers=AUTH, timeout=10).status_code == 200
    listed = requests.get(tasks, headers=AUTH, timeout=10).json()
    assert [(task["workflow_id"], task["id"]) for task in listed["items"]] == [("a/b c", 1)]
    next_id = requests.get(f"{tasks}/next-id", headers=AUTH, timeout=10).json()
    assert next_id == {"next_id": 2, "last_id": 1}

    too_big = b"x" * 6_000_001
    response = requests.post(
        tasks, data=too_big, headers={**AUTH, "content-type": "application/json"}, timeout=30
    )
    assert response.status_code == 413

    assert server.stop(signal.SIGTERM) == 0
    out = server.stdout.read_text(encoding="utf-8").splitlines()
    assert out == [f"dotflow-api listening on http://127.0.0.1:{port}"]
    logs = server.stderr.read_text(encoding="utf-8")
    assert TOKEN not in logs and "s3cr3t" not in logs


def test_sigint_also_exits_zero(server: ServerProcess) -> None:
    assert requests.get(f"{server.base_url}/healthz", timeout=10).status_code == 200
    assert server.stop(signal.SIGINT) == 0


def test_concurrent_runners_lose_and_duplicate_nothing(
    tmp_path: Path, server: ServerProcess, database_url: str
) -> None:
    """Ten runner processes (two threads each) write one workflow through two servers
    sharing one SQLite file, while next-id is polled; every task arrives exactly once."""
    second = start_server(tmp_path, database_url, "--no-access-log", name="second")
    try:
        bases = f"{server.base_url},{second.base_url}"
        runners, per_runner = 10, 12
        workflow_id = "shared/flow"
        next_id_url = f"{server.base_url}/workflows/shared%2Fflow/tasks/next-id"
        observed: list[int] = []
        stop_polling = threading.Event()

        def poll() -> None:
            session = requests.Session()
            while not stop_polling.is_set():
                response = session.get(next_id_url, headers=AUTH, timeout=30)
                observed.append(response.json()["next_id"])

        poller = threading.Thread(target=poll)
        poller.start()
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(RUNNER),
                    bases,
                    TOKEN,
                    workflow_id,
                    str(index + 1),
                    str(runners),
                    str(per_runner),
                    "2",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for index in range(runners)
        ]
        outputs = [process.communicate(timeout=120)[0] for process in processes]
        stop_polling.set()
        poller.join(timeout=30)
        for process, output in zip(processes, outputs, strict=True):
            assert process.returncode == 0, output

        total = runners * per_runner
        tasks = requests.get(
            f"{second.base_url}/workflows/shared%2Fflow/tasks",
            headers=AUTH,
            timeout=30,
        ).json()
        assert tasks["total"] == total
        assert [task["id"] for task in tasks["items"]] == list(range(1, total + 1))
        assert all(task["status"] == "Completed" for task in tasks["items"])
        assert all(task["current_context"] == {"task": task["id"]} for task in tasks["items"])

        assert observed, "next-id was never polled"
        assert observed == sorted(observed), "next-id went backwards while runners wrote"
        final = requests.get(next_id_url, headers=AUTH, timeout=30).json()
        assert final == {"next_id": total + 1, "last_id": total}
        # The other token sees none of it.
        other = requests.get(
            next_id_url, headers={"Authorization": f"Bearer {OTHER_TOKEN}"}, timeout=30
        ).json()
        assert other == {"next_id": 1, "last_id": None}
    finally:
        assert second.stop() == 0
