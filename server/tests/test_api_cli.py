"""The ``dotflow-api`` command in-process: argument errors, configuration, helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dotflow_api.cli import main, write_port_file
from dotflow_api.db import safe_url


@pytest.fixture(autouse=True)
def _no_env_tokens(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DOTFLOW_API_TOKENS", raising=False)
    monkeypatch.chdir(tmp_path)  # the default database file lands here


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_no_tokens_refuses_to_start(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "0"]) == 2
    line = _one_line_error(capsys)
    assert "DOTFLOW_API_TOKENS" in line and "--tokens-file" in line


def test_empty_tokens_file_counts_as_no_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# only a comment\n\n", encoding="utf-8")
    assert main(["serve", "--tokens-file", str(tokens)]) == 2
    assert "no API tokens" in _one_line_error(capsys)


@pytest.mark.parametrize("port", ["70000", "-1", "http", "80.5"])
def test_bad_port(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--port", port])
    assert exit_info.value.code == 2
    assert repr(port) in _one_line_error(capsys)


def test_bad_max_body_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--max-body-bytes", "lots"])
    assert exit_info.value.code == 2
    assert "'lots'" in _one_line_error(capsys)


def test_unwritable_timing_log_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOTFLOW_API_TOKENS", "a-token-0123456789")
    target = tmp_path / "no-such-dir" / "timing.jsonl"
    assert main(["serve", "--port", "0", "--timing-log", str(target)]) == 2
    line = _one_line_error(capsys)
    assert f"cannot open --timing-log '{target}'" in line and "writable file path" in line
    assert "a-token-0123456789" not in line


def test_unreadable_tokens_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing-tokens"
    assert main(["serve", "--tokens-file", str(missing)]) == 2
    line = _one_line_error(capsys)
    assert str(missing) in line


def test_bad_database_url_names_it_without_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOTFLOW_API_TOKENS", "secret-token-value")
    assert main(["serve", "--port", "0", "--database", "not a url"]) == 2
    line = _one_line_error(capsys)
    assert "'not a url'" in line and "e.g. sqlite:///dotflow-api.sqlite3" in line
    assert "secret-token-value" not in line

    assert main(["serve", "--port", "0", "--database", "nosuchdb://u:hunter2@h/x"]) == 2
    line = _one_line_error(capsys)
    assert "nosuchdb" in line and "hunter2" not in line and "dialect[+driver]://" in line


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("sqlite:///{tmp}/x.db?timeout=abc", "'abc'"),
        ("sqlite:///{tmp}/x.db?check_same_thread=maybe", "'maybe'"),
        ("sqlite:///{tmp}/x.db?cached_statements=abc", "'abc'"),
        ("sqlite+aiosqlite:///{tmp}/x.db", "asyncio driver"),
        ("postgresql+asyncpg://u:hunter2@h/db", "asyncio driver"),
    ],
)
def test_unusable_database_url_is_one_line_exit_2(
    url: str,
    named: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DOTFLOW_API_TOKENS", "t")
    assert main(["serve", "--port", "0", "--database", url.format(tmp=tmp_path)]) == 2
    line = _one_line_error(capsys)
    assert "cannot use database URL" in line and named in line and "hunter2" not in line


def test_token_that_is_not_utf8_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # What os.environ holds for DOTFLOW_API_TOKENS=$'ok,tok\xff' (surrogate escape).
    monkeypatch.setenv("DOTFLOW_API_TOKENS", "ok,secret-tok\udcff")
    assert main(["serve", "--port", "0"]) == 2
    line = _one_line_error(capsys)
    assert "token #2 is not valid UTF-8" in line and "secret-tok" not in line


def test_unopenable_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOTFLOW_API_TOKENS", "t")
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.sqlite3'}"
    assert main(["serve", "--port", "0", "--database", url]) == 2
    assert "cannot open database" in _one_line_error(capsys)


def test_no_command_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2


def test_openapi_command_prints_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["openapi"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["openapi"].startswith("3.")
    assert "/workflows/{workflow_id}/tasks/next-id" in document["paths"]
    assert "bearerAuth" in document["components"]["securitySchemes"]


def test_port_file_is_written_whole(tmp_path: Path) -> None:
    path = tmp_path / "port"
    write_port_file(path, 12345)
    assert path.read_text(encoding="ascii").strip() == "12345"
    write_port_file(path, 2)
    assert int(path.read_text(encoding="ascii")) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["port"]


def test_safe_url_masks_passwords() -> None:
    assert "hunter2" not in safe_url("postgresql://user:hunter2@db.example/app")
    assert "user" in safe_url("postgresql://user:hunter2@db.example/app")
    for unparseable in ("postgresql://user:hunter2@host:port/db", "user:hunter2@host", "x:@y@z"):
        assert "hunter2" not in safe_url(unparseable)
    assert (
        safe_url("postgresql://user:hunter2@host:port/db") == "postgresql://user:***@host:port/db"
    )


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://u@h/db?password=hunter2",
        "postgresql+psycopg://u@h/db?sslmode=require&PASSWORD=hunter2&x=1",
        "postgresql+psycopg://u@h/db?sslpassword=hunter2",
        "mysql://u@h/db?passwd=hunter2;charset=utf8",
        "postgresql+psycopg://u@h:port/db?password=hunter2",  # unparseable port
        "u@h/db?Password=hunter2#frag",
        "postgresql://u@h:port/db?password=hun@ter2",
    ],
)
def test_safe_url_masks_password_query_parameters(url: str) -> None:
    masked = safe_url(url)
    assert "hunter2" not in masked and "ter2" not in masked and "***" in masked
    assert "u" in masked and "@h" in masked


def test_password_in_query_is_not_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOTFLOW_API_TOKENS", "t")
    assert main(["serve", "--port", "0", "--database", "nosuchdb://u@h/db?password=hunter2"]) == 2
    line = _one_line_error(capsys)
    assert "nosuchdb" in line and "hunter2" not in line


def test_tokens_file_that_is_not_utf8_is_one_line_without_token_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_bytes(b"ok\nsecret\xfe\n")
    assert main(["serve", "--port", "0", "--tokens-file", str(tokens)]) == 2
    line = _one_line_error(capsys)
    assert "not valid UTF-8" in line and "0xfe" not in line and "secret" not in line


@pytest.mark.parametrize("host", ["no-such-host.invalid", "300.1.1.1", "a..b"])
def test_bad_host_says_what_is_valid(
    host: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOTFLOW_API_TOKENS", "t")
    assert main(["serve", "--port", "0", "--host", host]) == 2
    line = _one_line_error(capsys)
    assert repr(host) in line and "e.g. 127.0.0.1" in line and "Errno" not in line


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:"])
def test_in_memory_database_is_refused(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOTFLOW_API_TOKENS", "t")
    assert main(["serve", "--port", "0", "--database", url]) == 2
    line = _one_line_error(capsys)
    assert "database URL 'sqlite://" in line and "in-memory" in line
    assert "e.g. sqlite:///dotflow-api.sqlite3" in line
