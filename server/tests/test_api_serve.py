"""``dotflow-api serve`` under abuse and at scale: idle and slow-header connections,
a 413 that urllib clients can read, and ``--workers N``."""

from __future__ import annotations

import json
import resource
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from api_helpers import task_body
from dotflow_api.process import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.both_backends]

TOKEN = "serve-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CROWD = 1000


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'api.sqlite3'}"


def _open_sockets(port: int, count: int, first_bytes: bytes = b"") -> list[socket.socket]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 500), hard))
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if first_bytes:
            sock.sendall(first_bytes)
        sockets.append(sock)
    return sockets


@pytest.mark.parametrize("kind", ["idle", "slow-header"])
def test_a_crowd_of_silent_connections_cannot_lock_out_a_real_request(
    tmp_path: Path, sqlite_url: str, kind: str
) -> None:
    """1,000 connections that send nothing (or half a request head) to a server whose
    process may open only 256 files: a real request is still answered at once."""
    head = b"POST /workflows HTTP/1.1\r\nHost: x\r\nX-Slow: " if kind == "slow-header" else b""
    with ServerProcess.start(
        sqlite_url, [TOKEN], workdir=tmp_path, max_open_files=256, extra_args=["--no-access-log"]
    ) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        crowd = _open_sockets(port, CROWD, head)
        try:
            started = time.monotonic()
            response = requests.get(f"{server.base_url}/workflows", headers=AUTH, timeout=10)
            took = time.monotonic() - started
            assert response.status_code == 200
            print(f"answered in {took:.3f} s with {CROWD} {kind} connections open")
        finally:
            for sock in crowd:
                sock.close()
        assert (
            "closed" in server.stderr.read_text() and "sent no request" in server.stderr.read_text()
        )


def test_a_connection_that_never_finishes_its_head_is_closed(
    tmp_path: Path, sqlite_url: str
) -> None:
    with ServerProcess.start(
        sqlite_url, [TOKEN], workdir=tmp_path, extra_args=["--header-timeout", "1"]
    ) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        (sock,) = _open_sockets(port, 1, b"GET /healthz HTTP/1.1\r\n")
        sock.settimeout(30)
        started = time.monotonic()
        for _ in range(3):  # a byte now and then does not keep it open
            time.sleep(0.2)
            try:
                sock.sendall(b"X")
            except OSError:
                break
        assert sock.recv(100) == b""  # closed by the server, nothing answered
        assert time.monotonic() - started < 25
        sock.close()
        # a request sent at a normal pace is served, and its keep-alive connection too
        with requests.Session() as session:
            for _ in range(3):
                assert session.get(f"{server.base_url}/healthz", timeout=10).status_code == 200


def test_a_413_reaches_a_client_that_writes_its_whole_body_first(
    tmp_path: Path, sqlite_url: str
) -> None:
    with ServerProcess.start(
        sqlite_url, [TOKEN], workdir=tmp_path, extra_args=["--max-body-bytes", "1000"]
    ) as server:
        for size in (5_000, 4_000_000):
            request = urllib.request.Request(
                f"{server.base_url}/workflows/w/tasks",
                data=b"[" + b" " * size + b"]",
                headers={**AUTH, "Content-Type": "application/json"},
                method="POST",
            )
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(request, timeout=30)
            assert caught.value.code == 413, size
            assert b"larger than the limit of 1000 bytes" in caught.value.read()


@pytest.fixture
def workers(tmp_path: Path, database_url: str) -> Iterator[ServerProcess]:
    server = ServerProcess.start(
        database_url, [TOKEN], workdir=tmp_path, extra_args=["--workers", "3", "--no-access-log"]
    )
    yield server
    server.stop(signal.SIGKILL)


def test_workers_share_the_socket_and_the_database(workers: ServerProcess) -> None:
    base = workers.base_url

    def reserve(index: int) -> tuple[int, int]:
        response = requests.post(
            f"{base}/workflows/fleet/runs/run-{index}/reserve",
            json={"count": 5},
            headers=AUTH,
            timeout=60,
        )
        assert response.status_code == 200, response.text
        return response.json()["first_id"], response.json()["last_id"]

    with ThreadPoolExecutor(max_workers=12) as pool:
        blocks = sorted(pool.map(reserve, range(40)))
    assert [task_id for first, last in blocks for task_id in range(first, last + 1)] == list(
        range(1, 201)
    )
    assert (
        requests.get(f"{base}/api/v1/workflows/fleet/runs", headers=AUTH, timeout=30).json()[
            "total"
        ]
        == 40
    )
    deadline = time.monotonic() + 60
    while workers.stderr.read_text().count("Started server process") < 3:
        assert time.monotonic() < deadline, workers.stderr.read_text()[-2000:]
        time.sleep(0.2)
    assert workers.stop(signal.SIGTERM) == 0
    assert workers.stdout.read_text().count("listening on") == 1


@pytest.mark.parametrize("workers", ["1", "2"])
def test_no_batch_serves_single_requests_only(
    tmp_path: Path, sqlite_url: str, workers: str
) -> None:
    """``--no-batch``: no ``Dotflow-Batch`` header on any answer, 404 at the batch
    endpoint with nothing written, the single requests as usual (every worker)."""
    task = task_body(1, run_id="run-1")
    with ServerProcess.start(
        sqlite_url,
        [TOKEN],
        workdir=tmp_path,
        extra_args=["--no-batch", "--workers", workers, "--no-access-log"],
    ) as server:
        base = server.base_url
        batch = requests.post(
            f"{base}/workflows/w/events",
            json={"events": [{"op": "create_task", "body": task}]},
            headers=AUTH,
            timeout=30,
        )
        answers = [
            batch,
            requests.post(f"{base}/api/v1/workflows/w/events", json={}, headers=AUTH, timeout=30),
            requests.get(f"{base}/workflows/w", headers=AUTH, timeout=30),
            requests.get(f"{base}/healthz", timeout=30),
            requests.get(f"{base}/workflows", timeout=30),  # 401
        ]
        assert [answer.status_code for answer in answers] == [404, 404, 404, 200, 401]
        for _ in range(2 * int(workers)):  # answers from every worker, most likely
            answers.append(
                requests.post(f"{base}/workflows/w/tasks", json=task, headers=AUTH, timeout=30)
            )
        assert {answer.status_code for answer in answers[5:]} <= {200, 201}
        assert not [answer for answer in answers if "Dotflow-Batch" in answer.headers]
        document = requests.get(f"{base}/openapi.json", timeout=30).json()
        assert "/workflows/{workflow_id}/events" not in document["paths"]
        assert "Dotflow-Batch" not in json.dumps(document)
        stored = requests.get(f"{base}/workflows/w/tasks", headers=AUTH, timeout=30).json()
        assert [item["id"] for item in stored["items"]] == [1]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_timing_log_has_a_line_per_request(tmp_path: Path, sqlite_url: str, workers: str) -> None:
    log = tmp_path / "timing.jsonl"
    before = time.time()
    with ServerProcess.start(
        sqlite_url,
        [TOKEN],
        workdir=tmp_path,
        extra_args=["--timing-log", str(log), "--workers", workers, "--no-access-log"],
    ) as server:
        base = server.base_url
        sent = [
            requests.post(
                f"{base}/workflows/a%2Fb/tasks", json=task_body(1), headers=AUTH, timeout=30
            ),
            requests.get(f"{base}/workflows/a%2Fb/tasks?status=Failed", headers=AUTH, timeout=30),
            requests.get(f"{base}/workflows", timeout=30),  # 401
            *(requests.get(f"{base}/healthz", timeout=30) for _ in range(4)),
        ]
        assert [answer.status_code for answer in sent] == [201, 200, 401, 200, 200, 200, 200]
        after = time.time()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(line["method"], line["path"], line["status"]) for line in lines] == [
        ("POST", "/workflows/a%2Fb/tasks", 201),
        ("GET", "/workflows/a%2Fb/tasks", 200),
        ("GET", "/workflows", 401),
        *[("GET", "/healthz", 200)] * 4,
    ]
    assert all(line["seconds"] > 0 for line in lines)
    starts = [line["start"] for line in lines]  # Unix times, in the order sent
    assert starts == sorted(starts) and before <= starts[0] and starts[-1] <= after
