"""The durable outbox: private files, replay first, atomic claims, and ``dotflow outbox``."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from dotflow_server_api import ServerAPI
from dotflow_server_api.cli import main
from dotflow_server_api.delivery import Delivery
from dotflow_server_api.outbox import CLAIM_MARK, Entry, Outbox, _host_tag
from dotflow_server_api.payloads import create_task, create_workflow, update_task
from dotflow_server_api.settings import ApiSettings, token_fingerprint
from fake_api import TOKEN, Action, FakeAPI
from serverapi_helpers import config_for, free_port

from dotflow_core import DotFlow, Secret, TaskStatus, action
from dotflow_core.testing import sample_task_record, sample_workflow_record


@action
def step(initial_context: Any) -> int:
    return 1


def run(provider: ServerAPI, tasks: int = 2) -> DotFlow:
    workflow = DotFlow(providers=[provider])
    for _ in range(tasks):
        workflow.task.add(step)
    workflow.start()
    return workflow


def files(outbox_dir: Path) -> list[Path]:
    return sorted(outbox_dir.glob("*/*.jsonl*")) if outbox_dir.exists() else []


def spool(url: str, outbox_dir: Path, workflows: int, tasks: int = 2) -> list[str]:
    """Write one outbox file per workflow (its create and its task creates)."""
    config = config_for(url, outbox_dir)
    outbox = Outbox(outbox_dir, url, config.fingerprint)
    ids = []
    for _ in range(workflows):
        record = sample_workflow_record()
        entries = [Entry(request=create_workflow(record), first_enqueued_at=time.time())]
        entries += [
            Entry(
                request=create_task(sample_task_record(record.workflow_id, task_id)),
                first_enqueued_at=time.time(),
            )
            for task_id in range(1, tasks + 1)
        ]
        outbox.write(record.workflow_id, entries)
        ids.append(record.workflow_id)
    return ids


def test_undelivered_events_are_spooled_privately_and_without_the_token(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI], outbox_dir: Path
) -> None:
    fake.always(lambda r: Action(status=503))
    provider = make_provider(fake.url, flush_timeout=0.3)
    workflow = run(provider)
    (path,) = files(outbox_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(outbox_dir.stat().st_mode) == 0o700
    for item in [path, *path.parent.iterdir()]:
        assert TOKEN not in item.name
        assert TOKEN not in item.read_text()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert {"method", "path", "body", "first_enqueued_at", "attempts"} <= set(lines[0])
    assert (lines[0]["method"], lines[0]["path"]) == ("POST", "/workflows")
    assert lines[0]["body"]["id"] == workflow.workflow_id
    assert lines[0]["attempts"] >= 1
    assert [line["method"] for line in lines[1:3]] == ["POST", "POST"]  # tasks, coalesced
    assert lines[-1]["body"]["status"] == "Completed"
    meta = json.loads((path.parent / "destination.json").read_text())
    assert meta["base_url"] == fake.url
    assert stat.S_IMODE((path.parent / "destination.json").stat().st_mode) == 0o600


def test_the_next_run_replays_the_outbox_first(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI], outbox_dir: Path
) -> None:
    fake.always(lambda r: Action(status=503))
    earlier = make_provider(fake.url, flush_timeout=0.2)
    first = run(earlier, tasks=3)
    earlier.shutdown(0)  # that run ends: its journal is left for the next one
    assert len(files(outbox_dir)) == 1
    fake.always(None)
    seen = len(fake.requests)
    provider = make_provider(fake.url)
    second = run(provider)
    replayed = fake.requests[seen:]
    assert replayed[0].line == "POST /api/v1/workflows"
    assert replayed[0].json["id"] == first.workflow_id
    # The second run's flush waits for its own workflow only; the replayed one's
    # last requests may still be in flight until shutdown waits for everything.
    provider.shutdown(None)
    for workflow in (first, second):
        assert fake.delivered_state(workflow.workflow_id) == {
            "status": "Completed",
            "tasks": {task.task_id: "Completed" for task in workflow.result_task()},
        }
    assert files(outbox_dir) == []


def test_this_runs_requests_wait_until_the_outbox_has_been_sent(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI], outbox_dir: Path
) -> None:
    (earlier,) = spool(fake.url, outbox_dir, workflows=1)
    fake.always(  # the replayed create is slow to answer; its tasks wait for it
        lambda r: Action(delay=0.3) if r.method == "POST" and r.json.get("id") == earlier else None
    )
    provider = make_provider(fake.url)
    run(provider, tasks=1)
    provider.shutdown(5)

    def replayed(request: Any) -> bool:
        return f"/workflows/{earlier}" in request.path or (request.json or {}).get("id") == earlier

    (create,) = [r for r in fake.requests if replayed(r) and r.path.endswith("/workflows")]
    assert len([r for r in fake.requests if replayed(r) and r.status == 201]) == 3
    ours = [r for r in fake.requests if not replayed(r)]
    assert ours, "this run sent nothing"
    assert all(r.at >= create.done_at for r in ours), [r.line for r in ours]
    assert files(outbox_dir) == []


def test_another_server_or_token_never_gets_the_events(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI], outbox_dir: Path
) -> None:
    spool("http://127.0.0.1:9/elsewhere", outbox_dir, workflows=1)
    Outbox(outbox_dir, fake.url, config_for(fake.url, outbox_dir).fingerprint)
    other = ApiSettings(base_url=fake.url, token=Secret("another-token"), outbox_dir=outbox_dir)
    spool_dir = Outbox(outbox_dir, fake.url, other.fingerprint)
    record = sample_workflow_record()
    spool_dir.write(
        record.workflow_id, [Entry(request=create_workflow(record), first_enqueued_at=0.0)]
    )
    run(make_provider(fake.url), tasks=1)
    assert len(files(outbox_dir)) == 2
    assert all(r.json.get("id") != record.workflow_id for r in fake.requests if r.json)


def test_an_outbox_for_another_port_of_the_same_host_is_not_replayed(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI], outbox_dir: Path
) -> None:
    elsewhere = fake.url.replace(f":{fake.port}/", f":{free_port()}/")  # only the port differs
    assert elsewhere != fake.url
    (stranger,) = spool(elsewhere, outbox_dir, workflows=1)
    run(make_provider(fake.url), tasks=1)
    assert not [
        r for r in fake.requests if stranger in r.path or (r.json or {}).get("id") == stranger
    ]
    (left,) = files(outbox_dir)
    assert left.name.startswith(stranger) and left.name.endswith(".jsonl")
    assert json.loads((left.parent / "destination.json").read_text())["base_url"] == elsewhere


def test_ten_runners_at_once_never_replay_a_file_twice(fake: FakeAPI, outbox_dir: Path) -> None:
    ids = spool(fake.url, outbox_dir, workflows=20)
    environ = {
        **os.environ,
        "SERVER_BASE_URL": fake.url,
        "SERVER_USER_TOKEN": TOKEN,
        "DOTFLOW_OUTBOX_DIR": str(outbox_dir),
    }
    code = "import sys; from dotflow_server_api.cli import main; sys.exit(main(['flush']))"
    runners = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(10)
    ]
    codes = [runner.wait(timeout=60) for runner in runners]
    assert codes == [0] * 10
    creates = [r.json["id"] for r in fake.requests if r.line == "POST /api/v1/workflows"]
    assert sorted(creates) == sorted(ids)  # each exactly once
    task_posts = [r for r in fake.requests if r.method == "POST" and "tasks" in r.path]
    assert len(task_posts) == 40
    assert files(outbox_dir) == []


def test_a_claim_whose_owner_died_is_taken_over(fake: FakeAPI, outbox_dir: Path) -> None:
    dead_id, live_id = spool(fake.url, outbox_dir, workflows=2)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for workflow_id, pid in ((dead_id, gone.pid), (live_id, os.getppid())):
        (path,) = [p for p in files(outbox_dir) if p.name.startswith(workflow_id)]
        path.rename(
            path.with_name(f"{path.name}{CLAIM_MARK}{_host_tag()}.{pid}.{int(time.time())}")
        )
    delivery = Delivery(config_for(fake.url, outbox_dir))
    assert delivery.replay() == 3
    stats = delivery.close(10)
    assert stats.delivered == 3 and stats.spooled == 0
    assert {r.json["id"] for r in fake.requests if r.line == "POST /api/v1/workflows"} == {dead_id}
    (left,) = files(outbox_dir)
    assert left.name.startswith(live_id) and f".{os.getppid()}." in left.name


def test_replay_counts_what_it_queued_even_when_already_sent(
    fake: FakeAPI, outbox_dir: Path
) -> None:
    # The workers start sending as soon as the outbox is queued; `dotflow outbox flush`
    # must not report "nothing waits" because they were quicker than replay() returned.
    spool(fake.url, outbox_dir, workflows=1)

    class QuickWorkers(Delivery):
        def _replay_if_first(self, generation: int | None = None) -> int:
            queued = super()._replay_if_first(generation)
            if generation is None:  # the caller's thread: let the workers finish first
                assert fake.wait_for(lambda: len(fake.requests) == 3)
                assert fake.wait_for(lambda: self.pending() == 0)
            return queued

    delivery = QuickWorkers(config_for(fake.url, outbox_dir), start_delay=0)
    assert delivery.replay() == 3
    assert delivery.close(10).delivered == 3


def test_unreadable_lines_are_set_aside_with_their_reason_and_the_rest_is_sent(
    fake: FakeAPI, outbox_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool(fake.url, outbox_dir, workflows=1, tasks=1)
    (path,) = files(outbox_dir)
    path.write_text(path.read_text() + "{not json\n" + '{"kind": "nope"}\n')
    delivery = Delivery(config_for(fake.url, outbox_dir))
    assert delivery.replay() == 2
    stats = delivery.close(10)
    assert stats.delivered == 2 and stats.rejected_lines == 2
    assert "2 line(s) fail the wire contract and are never sent" in caplog.text
    (kept,) = path.parent.glob("rejected/*.rejected.jsonl")
    reasons = [json.loads(line) for line in kept.read_text().splitlines()]
    assert [(r["line_number"], r["line"]) for r in reasons] == [
        (3, "{not json"),
        (4, '{"kind": "nope"}'),
    ]
    assert "not JSON" in reasons[0]["reason"] and "unknown request kind" in reasons[1]["reason"]
    assert files(outbox_dir) == []  # the replayed file is gone; the rejected lines are kept


def test_replayed_updates_are_coalesced_with_this_run(fake: FakeAPI, outbox_dir: Path) -> None:
    config = config_for(fake.url, outbox_dir)
    record = sample_task_record("w", 1, TaskStatus.IN_PROGRESS)
    Outbox(outbox_dir, fake.url, config.fingerprint).write(
        "w",
        [
            Entry(
                request=create_task(attrs.evolve(record, status=TaskStatus.NOT_STARTED)),
                first_enqueued_at=0.0,
            ),
            Entry(request=update_task(record), first_enqueued_at=0.0),
        ],
    )
    delivery = Delivery(config)
    assert delivery.replay() == 1  # the create carries the update
    delivery.submit(update_task(attrs.evolve(record, status=TaskStatus.COMPLETED)))
    stats = delivery.close(10)
    assert stats.delivered == 3
    assert fake.tasks[("w", 1)]["status"] == "Completed"


# -- dotflow outbox ------------------------------------------------------------------


def test_list_an_empty_outbox(outbox_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "The outbox is empty" in capsys.readouterr().out


def test_list_what_is_waiting(
    fake: FakeAPI, outbox_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = spool(fake.url, outbox_dir, workflows=2)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert fake.url in out
    for workflow_id in ids:
        assert workflow_id in out
    assert "6 event(s) in 2 file(s)" in out
    assert TOKEN not in out


def test_flush_needs_the_server_settings(
    outbox_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["flush"]) == 2
    assert "SERVER_BASE_URL" in capsys.readouterr().err


def test_flush_sends_what_waits(
    fake: FakeAPI, outbox_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = spool(fake.url, outbox_dir, workflows=3)
    monkeypatch.setenv("SERVER_BASE_URL", fake.url)
    monkeypatch.setenv("SERVER_USER_TOKEN", TOKEN)
    assert main(["flush"]) == 0
    assert {r.json["id"] for r in fake.requests if r.line == "POST /api/v1/workflows"} == set(ids)
    assert files(outbox_dir) == []
    assert main(["flush"]) == 0  # nothing left: still fine


def test_flush_keeps_what_the_server_does_not_take(
    fake: FakeAPI, outbox_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool(fake.url, outbox_dir, workflows=1)
    fake.always(lambda r: Action(status=503))
    monkeypatch.setenv("SERVER_BASE_URL", fake.url)
    monkeypatch.setenv("SERVER_USER_TOKEN", TOKEN)
    assert main(["flush", "--timeout", "0.5"]) == 1
    (left,) = files(outbox_dir)
    assert left.name.endswith(".jsonl")


def test_flush_mentions_events_waiting_under_another_token(
    fake: FakeAPI,
    outbox_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spool(fake.url, outbox_dir, workflows=2)  # under TOKEN
    monkeypatch.setenv("SERVER_BASE_URL", fake.url)
    monkeypatch.setenv("SERVER_USER_TOKEN", "rotated-token-0123456789")
    assert main(["flush"]) == 0
    out = capsys.readouterr().out
    assert "Nothing waits in the outbox" in out
    fingerprint = token_fingerprint(Secret(TOKEN))
    assert f"6 event(s) for {fake.url} wait under another token (fingerprint {fingerprint})" in out
    assert TOKEN not in out and "rotated-token" not in out
    assert not fake.requests  # never sent under the other token
    assert len(files(outbox_dir)) == 2


def test_the_dotflow_command_runs_it(fake: FakeAPI, outbox_dir: Path) -> None:
    spool(fake.url, outbox_dir, workflows=1)
    dotflow = shutil.which("dotflow", path=str(Path(sys.executable).parent))
    assert dotflow is not None
    listed = subprocess.run(
        [dotflow, "outbox"], capture_output=True, text=True, timeout=30, env=dict(os.environ)
    )
    assert listed.returncode == 0, listed.stderr
    assert "3 event(s) in 1 file(s)" in listed.stdout
    flushed = subprocess.run(
        [dotflow, "outbox", "flush"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "SERVER_BASE_URL": fake.url, "SERVER_USER_TOKEN": TOKEN},
    )
    assert flushed.returncode == 0, flushed.stderr
    assert files(outbox_dir) == []


def test_a_replayed_create_the_server_keeps_failing_does_not_hold_this_run(
    fake: FakeAPI, make_provider: Callable[..., ServerAPI], outbox_dir: Path
) -> None:
    (stuck,) = spool(fake.url, outbox_dir, workflows=1)
    fake.always(
        lambda r: Action(status=500) if r.method == "POST" and r.json.get("id") == stuck else None
    )
    provider = make_provider(fake.url, flush_timeout=3.0)
    started = time.monotonic()
    workflow = run(provider)
    assert time.monotonic() - started < 2.5  # this run's events did not wait for the stuck ones
    assert fake.delivered_state(workflow.workflow_id) == {
        "status": "Completed",
        "tasks": {1: "Completed", 2: "Completed"},
    }
    provider.shutdown(0.2)
    (left,) = files(outbox_dir)  # the stuck workflow waits for a later run
    assert left.name.endswith(".jsonl")


def test_a_create_in_doubt_keeps_its_mark_through_the_outbox_and_older_lines_have_none() -> None:
    request = create_task(sample_task_record("w", 3))
    line = Entry(request=request, first_enqueued_at=0.0, attempts=2, in_doubt=True).to_line()
    assert json.loads(line)["in_doubt"] is True
    assert Entry.from_line(line).in_doubt is True
    plain = Entry(request=request, first_enqueued_at=0.0).to_line()
    assert "in_doubt" not in json.loads(plain)  # lines stay as they were without it
    assert Entry.from_line(plain).in_doubt is False
