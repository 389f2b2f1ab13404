"""The outbox is untrusted input: poisoned lines are set aside, never sent; nothing blocks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from dotflow_server_api.delivery import Delivery
from dotflow_server_api.outbox import Entry, Outbox
from dotflow_server_api.payloads import MAX_BODY_BYTES, create_task, create_workflow
from dotflow_server_api.settings import token_fingerprint
from fake_api import TOKEN
from serverapi_helpers import config_for
from stdlib_server import StdlibServer, listener

from dotflow_core import Secret
from dotflow_core.testing import sample_task_record, sample_workflow_record


def dotflow(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = shutil.which("dotflow", path=str(Path(sys.executable).parent))
    assert command is not None
    return subprocess.run(
        [command, *arguments], env=env, capture_output=True, text=True, timeout=60
    )


def environment(url: str, outbox_dir: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SERVER_", "DOTFLOW_"))},
        "SERVER_BASE_URL": url,
        "SERVER_USER_TOKEN": TOKEN,
        "DOTFLOW_OUTBOX_DIR": str(outbox_dir),
    }


def good_lines(workflow_id: str | None = None) -> tuple[str, list[str]]:
    record = sample_workflow_record()
    entries = [Entry(request=create_workflow(record), first_enqueued_at=time.time())]
    entries.append(
        Entry(
            request=create_task(sample_task_record(record.workflow_id, 1)),
            first_enqueued_at=time.time(),
        )
    )
    return record.workflow_id, [entry.to_line() for entry in entries]


def poisoned(template: str, port: int) -> dict[str, dict[str, Any]]:
    """Each way to tamper with a valid task-create line, by name."""
    base = json.loads(template)
    workflow_path = f"/workflows/{base['workflow_id']}"

    def changed(**fields: Any) -> dict[str, Any]:
        return {**base, **fields}

    return {
        "@ in the path": changed(path=f"@127.0.0.1:{port}/stolen"),
        "scheme in the path": changed(path=f"http://127.0.0.1:{port}/stolen"),
        "// in the path": changed(path=f"//127.0.0.1:{port}/stolen"),
        "dot segments": changed(path=f"{workflow_path}/tasks/../../../../stolen"),
        "not a template": changed(path=f"{workflow_path}/tasks/1/extra"),
        "wrong method": changed(method="DELETE"),
        "GET": changed(method="GET", path=f"{workflow_path}/tasks/next-id"),
        "body not an object": changed(body=["a", "list"]),
        "body over the cap": changed(body={"blob": "x" * (MAX_BODY_BYTES + 10)}),
        "kind and path disagree": changed(kind="create_workflow"),
        "workflow id over the limit": changed(workflow_id="w" * 256),
    }


@pytest.mark.slow
def test_poisoned_outbox_lines_are_kept_aside_never_sent_and_the_rest_is(
    tmp_path: Path,
) -> None:
    outbox_dir = tmp_path / "outbox"
    with StdlibServer(protocol="HTTP/1.1") as server, listener() as elsewhere:
        port = int(elsewhere.root_url.rsplit(":", 1)[1])
        workflow_id, lines = good_lines()
        attacks = poisoned(lines[1], port)
        outbox = Outbox(outbox_dir, server.url, token_fingerprint(Secret(TOKEN)))
        path = outbox.write(workflow_id, [])
        text = "".join(lines) + "".join(json.dumps(line) + "\n" for line in attacks.values())
        path.write_text(text + "{not json\n")

        flushed = dotflow("outbox", "flush", env=environment(server.url, outbox_dir))

        assert elsewhere.requests == [], "a replay reached another port"
        assert all(r.authorization in (None, f"Bearer {TOKEN}") for r in server.requests)
        assert server.delivered(workflow_id)["tasks"] == {1: "Not started"}
        assert len(server.requests) == 2, [r.path for r in server.requests]
    assert flushed.returncode == 1, flushed.stdout + flushed.stderr
    (kept,) = (path.parent / "rejected").glob("*.rejected.jsonl")
    rejected = [json.loads(line) for line in kept.read_text().splitlines()]
    assert len(rejected) == len(attacks) + 1
    assert all(entry["reason"] for entry in rejected)
    assert [json.loads(entry["line"]) for entry in rejected[:-1]] == list(attacks.values())
    assert "Stuck" in flushed.stdout and str(kept) in flushed.stdout

    listed = dotflow("outbox", env=environment(server.url, outbox_dir))
    assert listed.returncode == 0
    assert f"{kept} ({len(attacks) + 1} line(s)): rejected, never sent" in listed.stdout


@pytest.mark.slow
def test_a_directory_named_like_an_outbox_file_blocks_nothing(tmp_path: Path) -> None:
    outbox_dir = tmp_path / "outbox"
    with StdlibServer(protocol="HTTP/1.1") as server:
        outbox = Outbox(outbox_dir, server.url, token_fingerprint(Secret(TOKEN)))
        workflow_id, lines = good_lines()
        outbox.write(workflow_id, [Entry.from_line(line) for line in lines])
        (outbox.directory / "x.jsonl").mkdir()

        listed = dotflow("outbox", env=environment(server.url, outbox_dir))
        assert "x.jsonl: not a regular file" in listed.stdout
        assert f"{workflow_id}" in listed.stdout

        flushed = dotflow("outbox", "flush", env=environment(server.url, outbox_dir))
        assert server.delivered(workflow_id)["tasks"] == {1: "Not started"}
    assert flushed.returncode == 1  # something (the directory) could not be sent
    assert "x.jsonl: not a regular file" in flushed.stdout
    assert (outbox.directory / "x.jsonl").is_dir()  # left as it was


def test_an_unreadable_outbox_file_is_given_back_not_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dotflow_server_api import outbox as outbox_module

    outbox_dir = tmp_path / "outbox"
    with StdlibServer(protocol="HTTP/1.1") as server:
        config = config_for(server.url, outbox_dir)
        outbox = Outbox(outbox_dir, server.url, config.fingerprint)
        workflow_id, lines = good_lines()
        path = outbox.write(workflow_id, [Entry.from_line(line) for line in lines])
        original = outbox_module.read_file

        def unreadable(target: Path) -> Any:
            if target.name.startswith(path.name):
                raise PermissionError(13, "Permission denied", str(target))
            return original(target)

        monkeypatch.setattr(outbox_module, "read_file", unreadable)
        delivery = Delivery(config)
        assert delivery.replay() == 0
        delivery.close(5)
        assert server.requests == []
    assert path.exists(), "an unreadable file must stay where it was"
    assert path.read_text() == "".join(lines)
