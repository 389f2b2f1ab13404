"""Whole processes: bounded exit, no token anywhere at any log level, fork safety.

The fork tests fork a threaded process on purpose (that is what they check), so
Python 3.12+'s warning about it is silenced there.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from dotflow_server_api import ServerAPI, payloads
from dotflow_server_api.outbox import Entry, Outbox
from dotflow_server_api.settings import token_fingerprint
from fake_api import TOKEN, Action, FakeAPI
from serverapi_helpers import free_port

from dotflow_core import ConfigurationError, DotFlow, Secret, action
from dotflow_core.testing import sample_task_record, sample_workflow_record

SECRET = "tk_live_9f8e7d6c5b4a-SECRET"
FLUSH_DEADLINE = 2.0

SCRIPT = textwrap.dedent(
    """
    from dotflow_core import DotFlow, action

    @action
    def step(initial_context):
        return {"ok": True}

    workflow = DotFlow()
    for _ in range(5):
        workflow.task.add(step)
    workflow.start()
    """
)


@action
def ok(initial_context: Any) -> int:
    return 1


def child_environment(url: str, outbox_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SERVER_BASE_URL": url,
        "SERVER_USER_TOKEN": SECRET,
        "SERVER_FLUSH_TIMEOUT": str(FLUSH_DEADLINE),
        "DOTFLOW_OUTBOX_DIR": str(outbox_dir),
    }


def dotflow_command() -> str:
    command = shutil.which("dotflow", path=str(Path(sys.executable).parent))
    assert command is not None, "the dotflow console script is not installed"
    return command


def without_provider(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Seconds the same command takes with no provider: start-up, on this machine, now.

    The deadline is the provider's promise; the interpreter's start-up is not, and
    on a machine shared with other jobs it alone can take a second.
    """
    quiet = {**env, "DOTFLOW_PROVIDER": "none"}
    return min(run_timed(command, cwd, quiet)[1] for _ in range(2))


def run_timed(
    command: list[str], cwd: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``command`` to its end: its result, and how many seconds it took."""
    started = time.monotonic()
    finished = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=30)
    return finished, time.monotonic() - started


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["dotflow start", "script"])
def test_a_hanging_server_cannot_hold_the_process(
    entry: str, outbox_dir: Path, tmp_path: Path
) -> None:
    with FakeAPI(token=SECRET) as hanging:
        hanging.always(lambda r: Action(hang=True))
        (tmp_path / "steps_module.py").write_text(SCRIPT.split("workflow =")[0])
        (tmp_path / "run_workflow.py").write_text(SCRIPT)
        if entry == "script":
            command = [sys.executable, "run_workflow.py"]
        else:
            command = [dotflow_command(), "start", "--step", "steps_module.step", "-vv"]
            command += ["--step", "steps_module.step"]
        environ = child_environment(hanging.url, outbox_dir)
        baseline = without_provider(command, tmp_path, environ)
        finished, elapsed = run_timed(command, tmp_path, environ)
    assert finished.returncode == 0, finished.stderr
    overrun = elapsed - baseline
    assert overrun < FLUSH_DEADLINE + 1.0, f"{elapsed:.2f} s, {baseline:.2f} s without provider"
    assert SECRET not in finished.stdout + finished.stderr
    spooled = list(outbox_dir.glob("*/*.jsonl"))
    assert len(spooled) == 1
    assert SECRET not in spooled[0].read_text()


@pytest.mark.slow
@pytest.mark.parametrize("server", ["hanging", "down"])
def test_an_earlier_runs_outbox_adds_no_second_deadline(
    server: str, outbox_dir: Path, tmp_path: Path
) -> None:
    """Replayed requests the server does not take cannot make the exit wait again."""
    with FakeAPI(token=SECRET) as fake:
        fake.always(lambda r: Action(hang=True))
        url = fake.url if server == "hanging" else f"http://127.0.0.1:{free_port()}"
        earlier = sample_workflow_record()
        Outbox(outbox_dir, url, token_fingerprint(Secret(SECRET))).write(
            earlier.workflow_id,
            [
                Entry(request=payloads.create_workflow(earlier), first_enqueued_at=time.time()),
                Entry(
                    request=payloads.create_task(sample_task_record(earlier.workflow_id, 1)),
                    first_enqueued_at=time.time(),
                ),
            ],
        )
        (tmp_path / "steps_module.py").write_text(SCRIPT.split("workflow =")[0])
        command = [dotflow_command(), "start", "--step", "steps_module.step"]
        environ = child_environment(url, outbox_dir)
        baseline = without_provider(command, tmp_path, environ)
        finished, elapsed = run_timed(command, tmp_path, environ)
    assert finished.returncode == 0, finished.stderr
    overrun = elapsed - baseline
    assert overrun < FLUSH_DEADLINE + 1.0, f"{elapsed:.2f} s, {baseline:.2f} s without provider"
    spooled = [
        json.loads(line)
        for path in outbox_dir.glob("*/*.jsonl")
        for line in path.read_text().splitlines()
        if not line.startswith('{"ack"')
    ]
    workflows = {entry["workflow_id"] for entry in spooled}
    assert earlier.workflow_id in workflows, "the earlier run's requests were lost"
    assert len(workflows) == 2, "this run's requests were not spooled"


def test_the_token_appears_nowhere_at_debug_level(
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    make_provider: Callable[..., ServerAPI],
    outbox_dir: Path,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: ours, urllib3, requests, the engine
    for name in ("urllib3", "urllib3.connectionpool", "requests", "http.client"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    monkeypatch.setattr(http.client.HTTPConnection, "debuglevel", 1)  # would print headers
    seen: list[str] = []

    with FakeAPI(token=SECRET, prefix="/api") as server:
        server.script(
            Action(status=500),
            Action(status=400, body={"detail": f"echo {SECRET}"}, match="tasks"),
            Action(status=200, body={"next_id": "x"}, match="next-id"),
        )
        provider = make_provider(server.url, token=SECRET)
        run = DotFlow(providers=[provider])
        run.task.add(ok)
        run.task.add(ok)
        run.start()
        seen.append(repr(provider))
        DotFlow(workflow_id="resumed", providers=[provider])  # an unusable next id: a warning
        rejected = make_provider(server.url, token=SECRET + "-revoked")
        rejected.create_workflow(sample_workflow_record())
        rejected.shutdown(1.0)
        server.always(lambda r: Action(disconnect=True))
        provider.create_task(sample_task_record("resumed", 9))
        provider.flush("resumed", timeout=0.5)
        strict = make_provider(server.url, token=SECRET, strict=True)
        with pytest.raises(ConfigurationError) as raised:
            strict.get_next_task_id("resumed")
        seen.append(str(raised.value))
    down = make_provider(f"http://127.0.0.1:{free_port()}", token=SECRET, flush_timeout=0.3)
    DotFlow(providers=[down]).task.add(ok)
    down.shutdown(None)
    provider.shutdown(None)

    assert any(r.name.startswith("urllib3") for r in caplog.records)  # DEBUG really was on
    assert any("rejected the token" in r.getMessage() for r in caplog.records)
    out, err = capfd.readouterr()
    texts = [caplog.text, out, err, *seen]
    texts += [path.read_text() for path in outbox_dir.rglob("*") if path.is_file()]
    texts += [path.name for path in outbox_dir.rglob("*")]
    assert list(outbox_dir.rglob("*.jsonl")), "the scenario should have spooled something"
    for text in texts:
        assert SECRET not in text
    assert "********" in caplog.text  # the echoed token was masked


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_does_not_resend_the_parents_events(
    make_provider: Callable[..., ServerAPI], outbox_dir: Path
) -> None:
    with FakeAPI(token=TOKEN) as hanging:
        hanging.always(lambda r: Action(hang=True))
        provider = make_provider(hanging.url)
        workflow = sample_workflow_record()
        provider.create_workflow(workflow)
        for task_id in (1, 2, 3):
            provider.create_task(sample_task_record(workflow.workflow_id, task_id))
        assert hanging.wait_for(lambda: len(hanging.requests) == 1)
        assert provider.delivery().pending() == 4
        pid = os.fork()
        if pid == 0:  # the child: a fresh, empty queue, no worker of the parent
            try:
                delivery = provider.delivery()
                ok = delivery.pending() == 0 and delivery._pool.count == 0
                provider.shutdown(0)
                ok = ok and not [
                    path
                    for path in outbox_dir.glob("*/*.jsonl*")
                    if f".{os.getpid()}." in path.name
                ]
            finally:
                os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert provider.delivery().pending() == 4  # the parent still has them
        assert len(hanging.requests) == 1
        stats = provider.delivery().close(0)
        assert stats.spooled == 4


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_can_report_on_its_own(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI]
) -> None:
    provider = make_provider(fake.url)
    provider.create_workflow(sample_workflow_record())
    provider.shutdown(5)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            workflow = DotFlow(providers=[provider])
            workflow.task.add(ok)
            workflow.start()
            code = 0 if provider.stats().delivered == 6 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len([line for line in fake.lines() if line == "POST /api/v1/workflows"]) == 2


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_forked_while_another_thread_holds_the_provider_lock_can_use_it(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI]
) -> None:
    provider = make_provider(fake.url)
    provider.delivery()
    inside, leave = threading.Event(), threading.Event()

    def hold_the_lock() -> None:  # another thread of the parent is inside the provider
        with provider._lock:
            inside.set()
            leave.wait(10)

    holder = threading.Thread(target=hold_the_lock, daemon=True)
    holder.start()
    assert inside.wait(5)
    try:
        pid = os.fork()
        if pid == 0:  # the child: a deadlock ends it with SIGALRM instead of hanging the suite
            code = 1
            try:
                signal.signal(signal.SIGALRM, signal.SIG_DFL)  # not pytest-timeout's handler
                signal.alarm(2)
                code = 0 if provider.stats().delivered == 0 else 1
                provider.shutdown(0)
            finally:
                os._exit(code)
    finally:
        leave.set()
        holder.join(5)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child deadlocked on the provider lock"


def test_requests_is_not_imported_until_something_is_sent(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        from dotflow_core import DotFlow, Settings
        from dotflow_server_api import ServerAPI
        provider = ServerAPI(base_url="http://127.0.0.1:9", token="t", outbox_dir=sys.argv[1])
        provider.configure(Settings(config={}, environ={}))
        print("requests" in sys.modules)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert result.stdout.strip() == "False", result.stderr
    assert requests  # imported here, by the test itself
