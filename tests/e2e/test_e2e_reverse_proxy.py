"""Managed mode through the documented nginx config (server/deploy/nginx.conf).

A real nginx terminates TLS on a free loopback port in front of a real server, and
``dotflow start`` reports to ``https://127.0.0.1:PORT/api/v1``, as runners would to
``https://dotflow.example.com/api/v1``. Without nginx the tests skip, saying why;
with ``CI=true`` they fail instead.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from dotflow_api.process import ServerProcess
from dotflow_api.testing import unavailable

from .conftest import STEPS, Api, Run, Runner
from .nginx import DOCUMENTED_CONFIG, NginxProxy, NginxUnavailable, find_nginx

pytestmark = pytest.mark.slow

#: A step failing 200 times with a long error. Even with each error's message and
#: traceback cut to 20,000 characters, 200 attempts make about 8 MB, over the 6,000,000
#: bytes nginx (like the server) accepts: the api client keeps the first and the latest
#: attempts within its 5,000,000-byte cap and says how many it omitted.
HUGE_ERROR_MODULE = textwrap.dedent(
    '''
    """A step whose failure report does not fit in one request body."""
    from dotflow_core import action


    @action(retry=200, retry_delay=0)
    def huge_failure():
        raise ValueError("x" * 30_000)
    '''
)


#: Steps whose last task carries two contexts of 900,000 bytes each: one body of 1.8 MB,
#: over a proxy limit of 1,000,000 bytes (close to nginx's default of 1 MB).
BIG_CONTEXT_MODULE = textwrap.dedent(
    '''
    """Steps with large contexts, each within the client's 1 MB context cap."""
    from dotflow_core import action


    @action
    def big():
        return "x" * 900_000


    @action
    def same(previous_context):
        return previous_context.storage
    '''
)
NARROW_LIMIT = 1_000_000


def _proxy(
    server: ServerProcess, prefix: Path, max_body: int | None = None
) -> Iterator[NginxProxy]:
    try:
        binary = find_nginx()
    except NginxUnavailable as error:
        unavailable("nginx", error)
    proxy = NginxProxy(binary, prefix, server.port, max_body=max_body)
    checked = proxy.check()
    assert checked.returncode == 0, f"nginx -t refused the documented config:\n{checked.stderr}"
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def proxy(server: ServerProcess, tmp_path: Path) -> Iterator[NginxProxy]:
    """nginx with the documented config in front of ``server``, checked by ``nginx -t``."""
    yield from _proxy(server, tmp_path / "nginx")


@pytest.fixture
def narrow_proxy(server: ServerProcess, tmp_path: Path) -> Iterator[NginxProxy]:
    """The documented config with ``client_max_body_size`` lowered to ``NARROW_LIMIT``."""
    yield from _proxy(server, tmp_path / "narrow", max_body=NARROW_LIMIT)


@pytest.fixture
def proxied(server: ServerProcess, proxy: NginxProxy, tmp_path: Path) -> Runner:
    """A runner whose SERVER_BASE_URL is the proxy's, trusting its certificate."""
    return Runner(server, tmp_path, base_url=proxy.base_url)


def _run_through(
    runner: Runner, proxy: NginxProxy, steps: tuple[str, ...], workflow_id: str
) -> Run:
    """``dotflow start`` of ``steps`` through the proxy, trusting its certificate."""
    return runner.run(steps, WORKFLOW_ID=workflow_id, SERVER_CA_BUNDLE=str(proxy.certificate))


def test_a_managed_run_through_nginx_stores_every_task_and_the_workflow(
    proxied: Runner, proxy: NginxProxy, api: Api
) -> None:
    run = _run_through(proxied, proxy, STEPS, "behind/nginx")
    assert run.returncode == 0, run.stderr
    assert run.logs("ERROR") == [] and run.logs("WARNING") == [], run.stderr

    workflow = api.workflow("behind/nginx")  # read from the server itself, not the proxy
    assert workflow["status"] == "Completed"
    assert (workflow["task_count"], workflow["completed_count"]) == (3, 3)
    tasks = api.tasks("behind/nginx")
    assert [task["id"] for task in tasks] == [1, 2, 3]
    assert [task["name"] for task in tasks] == list(STEPS)
    assert [task["status"] for task in tasks] == ["Completed"] * 3
    assert tasks[1]["current_context"] == 6 and tasks[2]["current_context"] == {"loaded": 6}
    assert proxied.outbox_files() == []

    # The requests went through nginx, the encoded workflow id intact (the tasks
    # rode in one batch, the server offers batches through the proxy too) ...
    access = (proxy.prefix / "access.log").read_text()
    assert '"POST /api/v1/workflows/behind%2Fnginx/events HTTP/1.1" 200' in access
    assert '"PATCH /api/v1/workflows/behind%2Fnginx HTTP/1.1" 200' in access
    # ... and the run's link is on the proxy's scheme, host and port (Host and
    # X-Forwarded-Proto reached the server, its Dotflow-Dashboard header came back).
    run_id = api.get("/workflows/behind%2Fnginx/runs")["items"][0]["run_id"]
    page = f"https://127.0.0.1:{proxy.port}/ui/workflows/behind%2Fnginx/runs/{run_id}"
    assert run.summary["links"] == [page]
    # The batch offer passes too, as the server sent it.
    through = requests.get(f"{proxy.base_url}/healthz", verify=str(proxy.certificate), timeout=10)
    direct = requests.get(f"{proxied.server.base_url}/healthz", timeout=10)
    assert through.headers["Dotflow-Batch"] == direct.headers["Dotflow-Batch"]
    assert through.headers["Dotflow-Batch"] == "max-events=1000, max-bytes=6000000"


def test_a_failure_report_too_big_for_one_body_reaches_the_server_through_nginx(
    proxied: Runner, proxy: NginxProxy, api: Api
) -> None:
    (proxied.flow_dir / "proxyflow.py").write_text(HUGE_ERROR_MODULE)
    run = _run_through(proxied, proxy, ("e2eflow.extract", "proxyflow.huge_failure"), "too-big")
    assert run.returncode == 1, run.stderr[-2000:]  # the step failed, as it should
    assert not [line for line in run.logs("ERROR") if "HTTP 413" in line], run.stderr[-3000:]
    assert "too large body" not in proxy.error_log()

    workflow = api.workflow("too-big")
    assert workflow["status"] == "Failed"
    first, failed = api.tasks("too-big")
    assert first["status"] == "Completed" and failed["status"] == "Failed"
    errors = failed["errors"]
    assert errors[0]["attempt"] == 1 and errors[-1]["attempt"] == 200
    assert errors[1]["type"] == "dotflow.ErrorsOmitted"
    assert "failed attempt(s) omitted, from attempt 2 to" in errors[1]["message"]
    assert proxied.outbox_files() == []


def test_a_proxy_that_takes_less_than_the_client_cap_still_gets_every_task_cut_to_fit(
    server: ServerProcess, narrow_proxy: NginxProxy, api: Api, tmp_path: Path
) -> None:
    runner = Runner(server, tmp_path, base_url=narrow_proxy.base_url)
    (runner.flow_dir / "bigflow.py").write_text(BIG_CONTEXT_MODULE)
    steps = ("e2eflow.extract", "bigflow.big", "bigflow.same")
    run = _run_through(runner, narrow_proxy, steps, "narrow")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.logs("ERROR") == [], run.stderr[-3000:]
    warnings = run.logs("WARNING")
    assert len(warnings) == 1 and "HTTP 413" in warnings[0], warnings
    assert "client_max_body_size" in warnings[0]
    assert "too large body" in narrow_proxy.error_log()  # nginx did refuse one

    workflow = api.workflow("narrow")
    assert workflow["status"] == "Completed"
    tasks = api.tasks("narrow")
    assert [task["status"] for task in tasks] == ["Completed"] * 3
    assert tasks[1]["current_context"] == "x" * 900_000  # its body fitted: kept whole
    last = tasks[2]
    cut = [last[name] for name in ("current_context", "previous_context")]
    assert any(isinstance(value, dict) and value.get("truncated") for value in cut), cut
    assert runner.outbox_files() == []  # nothing spooled, and (no ERROR) nothing dropped


def test_the_readme_shows_the_tested_config() -> None:
    readme = (DOCUMENTED_CONFIG.parents[1] / "README.md").read_text(encoding="utf-8")
    config = DOCUMENTED_CONFIG.read_text(encoding="utf-8")
    assert f"```nginx\n{config}```\n" in readme, (
        "server/README.md must quote server/deploy/nginx.conf verbatim in its "
        "'Behind a reverse proxy' section"
    )
