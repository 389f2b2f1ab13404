"""Misconfiguration fails loudly, and strict delivery fails the run (``dotflow start``).

- a 404 to a run's first request: one ERROR naming SERVER_BASE_URL, the URL and the prefix;
- a URL requests could not send: exit 2 before any task;
- a WORKFLOW_ID over the contract's 255 characters: exit 2 naming the limit, escaped;
- ``SERVER_STRICT_DELIVERY=1``: events left undelivered at exit make it exit 3.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fake_api import TOKEN
from serverapi_helpers import free_port
from stdlib_server import StdlibServer

from dotflow_core.cli import EXIT_UNDELIVERED

STEPS = textwrap.dedent(
    """
    from pathlib import Path
    from dotflow_core import action

    @action
    def step(initial_context):
        (Path(__file__).parent / "step-ran").write_text("yes")
        return 1
    """
)


def dotflow_start(project: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    (project / "steps_module.py").write_text(STEPS)
    command = shutil.which("dotflow", path=str(Path(sys.executable).parent))
    assert command is not None
    environment = {
        **os.environ,
        "SERVER_USER_TOKEN": TOKEN,
        "SERVER_FLUSH_TIMEOUT": "1",
        "DOTFLOW_OUTBOX_DIR": str(project / "outbox"),
        **variables,
    }
    return subprocess.run(
        [command, "start", "--provider", "api", "--step", "steps_module.step"],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.split(":", 2)[1]]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("server_prefix", "url_prefix", "cause"),
    [("", "/api/v1", "'/api/v1' (a prefix too many?)"), ("/api/v1", "", "'/api/v1' (missing?)")],
)
@pytest.mark.parametrize("resumed", [False, True], ids=["new", "resumed"])
def test_a_404_to_the_first_request_is_one_error_naming_the_base_url(
    tmp_path: Path, server_prefix: str, url_prefix: str, cause: str, resumed: bool
) -> None:
    with StdlibServer(prefix=server_prefix, protocol="HTTP/1.1") as server:
        url = server.root_url + url_prefix
        variables = {"SERVER_BASE_URL": url}
        if resumed:
            variables["WORKFLOW_ID"] = "nightly"
        finished = dotflow_start(tmp_path, **variables)
        # A resumed run asks for a reservation first; without one (404 here, as on a
        # seed-contract server) the next-id lookup follows, and the error names it.
        first = next(sent.path for sent in server.requests if not sent.path.endswith("/reserve"))
    assert finished.returncode == 0, finished.stderr  # the workflow itself ran
    (line,) = errors(finished.stderr)
    assert f"SERVER_BASE_URL={url} looks wrong" in line
    assert f"{url}{first.removeprefix(url_prefix)}" in line and "HTTP 404" in line
    assert cause in line
    assert TOKEN not in finished.stdout + finished.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://a b", "' '"),
        ("http://%00/", "'%00' is not a valid host name"),
        ("http://exa mple.com/api/v1", "' '"),
        ("http://[::1x]/", "expected an absolute http(s) URL"),
    ],
)
def test_a_url_that_cannot_be_sent_is_a_configuration_error(
    tmp_path: Path, url: str, named: str
) -> None:
    finished = dotflow_start(tmp_path, SERVER_BASE_URL=url)
    assert finished.returncode == 2, finished.stderr
    (line,) = finished.stderr.splitlines()
    assert line.startswith("dotflow: error: SERVER_BASE_URL=") and named in line
    assert not (tmp_path / "step-ran").exists()


@pytest.mark.slow
def test_a_workflow_id_over_the_contract_limit_is_a_configuration_error(tmp_path: Path) -> None:
    with StdlibServer(protocol="HTTP/1.1") as server:
        workflow_id = "\x1b[31mred" + "x" * 300
        finished = dotflow_start(tmp_path, SERVER_BASE_URL=server.url, WORKFLOW_ID=workflow_id)
        assert server.requests == []
    assert finished.returncode == 2, finished.stderr
    (line,) = finished.stderr.splitlines()
    assert "at most 255" in line and f"is {len(workflow_id)} characters long" in line
    assert "\x1b" not in finished.stderr and "\\x1b[31mred" in line
    assert not (tmp_path / "step-ran").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strict", "server_up", "code"),
    [("1", False, EXIT_UNDELIVERED), ("0", False, 0), ("1", True, 0)],
    ids=["strict-down", "lenient-down", "strict-up"],
)
def test_strict_delivery_fails_a_run_whose_events_were_not_delivered(
    tmp_path: Path, strict: str, server_up: bool, code: int
) -> None:
    with StdlibServer(protocol="HTTP/1.1") as server:
        url = server.url if server_up else f"http://127.0.0.1:{free_port()}"
        finished = dotflow_start(
            tmp_path,
            SERVER_BASE_URL=url,
            SERVER_STRICT_DELIVERY=strict,
            SERVER_FLUSH_TIMEOUT="10" if server_up else "1",  # a loaded machine: time to deliver
        )
    assert finished.returncode == code, finished.stderr
    assert (tmp_path / "step-ran").exists()  # the workflow ran first
    if code == EXIT_UNDELIVERED:
        assert "SERVER_STRICT_DELIVERY is on" in finished.stderr
        assert "left in the outbox" in finished.stderr
