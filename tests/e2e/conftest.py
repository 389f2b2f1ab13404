"""End to end: the real ``dotflow`` command reporting to the real reference server.

Every test gets a fresh ``dotflow-api serve`` process on a free loopback port
with a temporary SQLite file, a directory holding the ``e2eflow`` steps, and a
private user directory (so outbox files of one test never meet another's).

Tests in modules marked ``both_backends`` run on PostgreSQL too (ids ``[sqlite]`` and
``[postgresql]``): a new database per test on one private cluster for the session
(``dotflow_api.testing.postgres_cluster``: without PostgreSQL the variant skips with
the reason; with ``CI=true`` it fails). The other modules run on SQLite only, since
each e2e test costs seconds of real processes.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import requests

pytest.importorskip("dotflow_api", reason="the reference server (server/) is not installed")
pytest.importorskip("dotflow_server_api", reason="the api provider is not installed")

from dotflow_api.pgcluster import PostgresCluster
from dotflow_api.process import ServerProcess
from dotflow_api.testing import postgres_cluster
from dotflow_server_api.payloads import segment

from dotflow_core.testing import without_dotflow_variables

TOKEN = "e2e-runner-token-5b0f1c2d9e8a7b6c"
STEPS = ("e2eflow.extract", "e2eflow.transform", "e2eflow.load")
DOTFLOW = Path(sys.executable).with_name("dotflow")

FLOW_MODULE = textwrap.dedent(
    '''
    """Steps for the end-to-end tests."""
    import os
    import pathlib
    import time

    from dotflow_core import action


    @action
    def extract(initial_context):
        return {"rows": [1, 2, 3]}


    @action
    def transform(previous_context):
        return sum(previous_context.storage["rows"])


    @action
    def load(previous_context):
        return {"loaded": previous_context.storage}


    @action(retry=2, retry_delay=0)
    def fails():
        raise ValueError("e2e failure")


    @action
    def gate():
        """Wait until the test opens the gate: the run is paused in a known place."""
        folder = pathlib.Path(os.environ["E2E_GATE_DIR"])
        (folder / "reached").touch()
        deadline = time.monotonic() + 60
        while not (folder / "open").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the test never opened the gate")
            time.sleep(0.02)
        return {"rows": [10, 20]}
    '''
)


@attrs.frozen
class Run:
    """One finished ``dotflow start``: exit code, stderr lines and the JSON summary."""

    returncode: int
    stderr: str

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stderr.splitlines() if line.startswith("{")]

    @property
    def summary(self) -> dict[str, Any]:
        summaries = [event for event in self.events if event["event"] == "summary"]
        assert summaries, f"no summary line in:\n{self.stderr}"
        return summaries[-1]

    def logs(self, level: str | None = None) -> list[str]:
        return [
            event["message"]
            for event in self.events
            if event["event"] == "log" and (level is None or event["level"] == level.lower())
        ]


@attrs.frozen
class Flush:
    """One ``dotflow outbox flush``: its exit code and its stderr log lines."""

    returncode: int
    stderr: str

    def logs(self, level: str) -> list[str]:
        prefix = f"{level} dotflow.server.api: "
        return [line[len(prefix) :] for line in self.stderr.splitlines() if line.startswith(prefix)]


class Runner:
    """Starts ``dotflow start --provider api --log-format json`` against one server."""

    def __init__(self, server: ServerProcess, workdir: Path, base_url: str | None = None) -> None:
        self.server = server
        #: The runners' ``SERVER_BASE_URL``: the server's own, or a proxy's in front of it.
        self.base_url = base_url or server.base_url
        self.flow_dir = workdir / "flow"
        self.home = workdir / "home"
        self.gate_dir = workdir / "gate"
        for folder in (self.flow_dir, self.home, self.gate_dir):
            folder.mkdir(parents=True, exist_ok=True)
        (self.flow_dir / "e2eflow.py").write_text(FLOW_MODULE)

    def environment(self, token: str = TOKEN, **extra: str) -> dict[str, str]:
        """The runners' environment; ``extra`` adds variables or overrides the defaults."""
        environment = without_dotflow_variables(os.environ)
        environment.update(
            SERVER_BASE_URL=self.base_url,
            SERVER_USER_TOKEN=token,
            SERVER_FLUSH_TIMEOUT="2",
            DOTFLOW_HOME=str(self.home),
            E2E_GATE_DIR=str(self.gate_dir),
        )
        environment.update(extra)
        return environment

    def command(self, steps: tuple[str, ...], *options: str) -> list[str]:
        command = [str(DOTFLOW), "start", "--provider", "api", "--log-format", "json"]
        for step in steps:
            command += ["--step", step]
        return [*command, *options]

    def popen(self, steps: tuple[str, ...] = STEPS, *options: str, **env: str) -> Any:
        return subprocess.Popen(
            self.command(steps, *options),
            cwd=self.flow_dir,
            env=self.environment(**env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, steps: tuple[str, ...] = STEPS, *options: str, **env: str) -> Run:
        process = self.popen(steps, *options, **env)
        _, stderr = process.communicate(timeout=120)
        return Run(process.returncode, stderr)

    def flush(self, **env: str) -> Flush:
        """``dotflow outbox flush`` with the runner's settings (its home, the server, the token)."""
        finished = subprocess.run(
            [str(DOTFLOW), "outbox", "flush", "--timeout", "30"],
            cwd=self.flow_dir,
            env=self.environment(**env),
            capture_output=True,
            text=True,
            timeout=120,
        )
        return Flush(finished.returncode, finished.stdout + finished.stderr)

    def outbox_files(self) -> list[Path]:
        """Spooled events waiting for replay (claimed or not); not the folder's metadata."""
        return sorted((self.home / "outbox").rglob("*.jsonl*"))


class Api:
    """Reads back what the server holds, as the runners' token sees it."""

    def __init__(self, server: ServerProcess, token: str = TOKEN) -> None:
        self.base_url = server.base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str) -> Any:
        response = self.session.get(f"{self.base_url}{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def workflows(self) -> list[dict[str, Any]]:
        return self.get("/workflows?limit=1000")["items"]

    def workflow(self, workflow_id: str) -> dict[str, Any]:
        return self.get(f"/workflows/{segment(workflow_id)}")

    def tasks(self, workflow_id: str) -> list[dict[str, Any]]:
        return self.get(f"/workflows/{segment(workflow_id)}/tasks")["items"]


BACKENDS = ("sqlite", "postgresql")
_database_numbers = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_backends: run on SQLite and on PostgreSQL")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    both = metafunc.definition.get_closest_marker("both_backends") is not None
    if both and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The server's database: ``sqlite`` unless the module is marked ``both_backends``."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database on ``backend`` for this test."""
    if backend == "postgresql":
        cluster: PostgresCluster = request.getfixturevalue("postgres")
        return cluster.create_database(f"e2e_{next(_database_numbers)}")
    return f"sqlite:///{tmp_path / 'api.sqlite3'}"


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    workdir = tmp_path / "server"
    workdir.mkdir()
    running = ServerProcess.start(
        database_url,
        [TOKEN],
        workdir=workdir,
        extra_args=["--no-access-log"],
    )
    yield running
    running.stop()


@pytest.fixture
def runner(server: ServerProcess, tmp_path: Path) -> Runner:
    return Runner(server, tmp_path)


@pytest.fixture
def api(server: ServerProcess) -> Api:
    return Api(server)
