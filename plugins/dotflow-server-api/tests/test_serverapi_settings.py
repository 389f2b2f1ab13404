"""Settings: one mechanism (configure), env > config file > default, clear errors."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dotflow_server_api import ServerAPI
from dotflow_server_api.settings import load_settings, outbox_root, token_fingerprint

from dotflow_core import ConfigurationError, DotFlow, Secret, Settings
from dotflow_core.plugin import forget_warnings


def settings(environ: dict[str, str] | None = None, **server: Any) -> Settings:
    env = {name: value for name, value in os.environ.items() if name.startswith("DOTFLOW_")}
    env.update(SERVER_BASE_URL="https://dotflow.example.com/api/v1", SERVER_USER_TOKEN="tok")
    env.update(environ or {})
    return Settings(config={"server": server} if server else {}, environ=env)


def test_defaults(outbox_dir: Path) -> None:
    config = load_settings(settings())
    assert config.base_url == "https://dotflow.example.com/api/v1"
    assert config.token == Secret("tok")
    assert (config.connect_timeout, config.read_timeout, config.flush_timeout) == (3.0, 10.0, 5.0)
    assert (config.max_queue, config.max_in_flight) == (10_000, 32)
    assert config.strict is False
    assert config.verify is True
    assert config.outbox_dir == outbox_dir  # DOTFLOW_OUTBOX_DIR from the conftest


def test_outbox_defaults_to_the_user_dir(tmp_path: Path) -> None:
    config = load_settings(
        settings({"DOTFLOW_HOME": str(tmp_path), "DOTFLOW_OUTBOX_DIR": ""}, outbox_dir="")
    )
    assert config.outbox_dir == tmp_path / "outbox"


def test_the_outbox_is_not_created_before_something_is_spooled(tmp_path: Path) -> None:
    outbox = tmp_path / "not" / "yet"
    assert load_settings(settings({"DOTFLOW_OUTBOX_DIR": str(outbox)})).outbox_dir == outbox
    assert not (tmp_path / "not").exists()


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A directory this user cannot write to (for root, one of /proc's)."""
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        directory = tmp_path / "read-only"
        directory.mkdir(mode=0o500)
        yield directory
        directory.chmod(0o700)
        return
    directory = Path("/proc/sys/kernel")
    if not directory.is_dir() or os.access(directory, os.W_OK):
        pytest.skip("no directory here that this user cannot write to")
    yield directory


@pytest.mark.parametrize("inside", ["", "outbox"], ids=["the directory", "its parent"])
def test_an_outbox_that_cannot_be_written_is_refused(read_only: Path, inside: str) -> None:
    outbox = read_only / inside if inside else read_only
    with pytest.raises(ConfigurationError, match="not writable") as raised:
        load_settings(settings({"DOTFLOW_OUTBOX_DIR": str(outbox)}))
    assert f"DOTFLOW_OUTBOX_DIR={str(outbox)!r}" in str(raised.value)


def test_a_default_outbox_that_cannot_be_written_only_warns(
    read_only: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A container with a read-only home still runs; only an outage's leftovers are lost."""
    monkeypatch.setenv("HOME", str(read_only))
    caplog.set_level(logging.WARNING, logger="dotflow.server.api")
    for _ in range(2):
        config = load_settings(settings({"DOTFLOW_HOME": "", "DOTFLOW_OUTBOX_DIR": ""}))
    assert config.outbox_dir == read_only / ".dotflow" / "outbox"
    (warning,) = [r.getMessage() for r in caplog.records if "outbox" in r.getMessage()]
    assert "not writable" in warning and "will be lost" in warning
    assert "set DOTFLOW_OUTBOX_DIR to a writable directory" in warning


def test_listing_the_outbox_needs_only_read_access(read_only: Path) -> None:
    environ = {"DOTFLOW_OUTBOX_DIR": str(read_only)}
    assert outbox_root(Settings(config={}, environ=environ)) == read_only


def test_an_outbox_path_with_a_nul_character_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"ServerAPI\(outbox_dir=...\)=.*NUL"):
        load_settings(settings(), {"outbox_dir": "out\0box"})


def test_environment_wins_over_the_config_file_which_wins_over_defaults() -> None:
    config = load_settings(
        settings(
            {"SERVER_READ_TIMEOUT": "7.5", "SERVER_STRICT": "yes"},
            read_timeout=99,
            connect_timeout=1.5,
            max_in_flight=12,
            strict=False,
        )
    )
    assert config.read_timeout == 7.5
    assert config.strict is True
    assert config.connect_timeout == 1.5
    assert config.max_in_flight == 12


def test_constructor_arguments_win_over_settings() -> None:
    provider = ServerAPI(base_url="http://127.0.0.1:9/x/", token="explicit", max_queue=5)
    provider.configure(settings({"SERVER_MAX_QUEUE": "50"}))
    assert provider.config.base_url == "http://127.0.0.1:9/x"
    assert provider.config.token == Secret("explicit")
    assert provider.config.max_queue == 5


def test_the_trailing_slash_is_dropped_and_the_prefix_kept() -> None:
    config = load_settings(settings({"SERVER_BASE_URL": " https://h:8443/api/v1/ "}))
    assert config.base_url == "https://h:8443/api/v1"


@pytest.mark.parametrize(
    "url",
    [
        "dotflow.example.com",
        "ftp://host/api",
        "https://",
        "http:///path",
        "/api/v1",
        "https://h:x/",
    ],
)
def test_a_base_url_that_is_not_absolute_http_is_rejected(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"SERVER_BASE_URL.*absolute http"):
        load_settings(settings({"SERVER_BASE_URL": url}))


def test_a_base_url_with_credentials_is_rejected_without_echoing_them() -> None:
    with pytest.raises(ConfigurationError, match="credentials") as raised:
        load_settings(settings({"SERVER_BASE_URL": "https://me:pa55word@host/api"}))
    assert "pa55word" not in str(raised.value)


def test_a_missing_base_url_names_the_variable_and_the_config_key() -> None:
    with pytest.raises(ConfigurationError, match="SERVER_BASE_URL is not set") as raised:
        load_settings(Settings(config={}, environ={"SERVER_USER_TOKEN": "tok"}))
    assert "base_url in [tool.dotflow.server]" in str(raised.value)


def test_hints_name_a_dotflow_toml_s_keys_as_written_there(tmp_path: Path) -> None:
    standalone = Settings(config={}, config_path=tmp_path / "dotflow.toml", environ={})
    with pytest.raises(ConfigurationError) as raised:
        load_settings(standalone)
    assert str(raised.value).endswith("(or base_url in [server])")
    environ = {"SERVER_BASE_URL": "https://h/api"}
    with pytest.raises(ConfigurationError) as raised:
        load_settings(Settings(config={}, config_path=tmp_path / "dotflow.toml", environ=environ))
    assert "or token_file in [server] naming a file" in str(raised.value)


@pytest.mark.parametrize("token", [None, "", "   "])
def test_a_missing_or_empty_token_names_the_variable(token: str | None) -> None:
    environ = {"SERVER_BASE_URL": "https://h/api"}
    if token is not None:
        environ["SERVER_USER_TOKEN"] = token
    with pytest.raises(ConfigurationError, match="SERVER_USER_TOKEN"):
        load_settings(Settings(config={}, environ=environ))


def test_a_malformed_token_is_rejected_without_echoing_it() -> None:
    with pytest.raises(ConfigurationError, match="SERVER_USER_TOKEN") as raised:
        load_settings(settings({"SERVER_USER_TOKEN": "abc def\nsecret-part"}))
    assert "secret-part" not in str(raised.value)


def test_the_token_can_come_from_a_private_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("from-file\n")
    secret_file.chmod(0o600)
    config = load_settings(
        Settings(
            config={},
            environ={
                "SERVER_BASE_URL": "https://h/api",
                "SERVER_USER_TOKEN_FILE": str(secret_file),
            },
        )
    )
    assert config.token == Secret("from-file")
    config = load_settings(
        Settings(
            config={"server": {"token_file": str(secret_file)}},
            environ={"SERVER_BASE_URL": "https://h/api"},
        )
    )
    assert config.token == Secret("from-file")


def test_a_token_in_the_config_file_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="not read from config files"):
        load_settings(
            Settings(
                config={"server": {"token": "in-the-repo"}},
                environ={"SERVER_BASE_URL": "https://h/api"},
            )
        )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("SERVER_CONNECT_TIMEOUT", "abc", "number of seconds > 0"),
        ("SERVER_READ_TIMEOUT", "0", "number of seconds > 0"),
        ("SERVER_READ_TIMEOUT", "nan", "number of seconds > 0"),
        ("SERVER_FLUSH_TIMEOUT", "-1", "number of seconds >= 0"),
        ("SERVER_MAX_QUEUE", "0", "integer >= 1"),
        ("SERVER_MAX_QUEUE", "1.5", "integer >= 1"),
        ("SERVER_MAX_IN_FLIGHT", "65", "integer from 1 to 64"),
        ("SERVER_MAX_IN_FLIGHT", "zero", "integer from 1 to 64"),
        ("SERVER_STRICT", "maybe", "true/false"),
        ("SERVER_CA_BUNDLE", "/no/such/bundle.pem", "no such file"),
    ],
)
def test_bad_values_name_the_variable_and_what_is_valid(
    variable: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_settings(settings({variable: value}))
    assert variable in str(raised.value)
    assert expected in str(raised.value)


def test_bad_values_from_the_config_file_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"read_timeout in \[tool.dotflow.server\]"):
        load_settings(settings(read_timeout="slow"))
    with pytest.raises(ConfigurationError, match="max_queue"):
        load_settings(settings(max_queue=True))


@pytest.mark.parametrize(("value", "strict"), [("ON", True), (" off ", False), (True, True)])
def test_strict_reads_every_flag_word(value: Any, strict: bool) -> None:
    assert load_settings(settings(strict=value)).strict is strict


def test_an_unknown_key_in_the_section_warns_once_with_the_likely_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dotflow.server.api")
    config = Settings(
        config={"server": {"flush_timout": 0.5, "zzz": 1}},
        config_path=tmp_path / "pyproject.toml",
        environ=settings().environ,
    )
    for _ in range(2):
        assert load_settings(config).flush_timeout == 5.0  # the misspelt key changed nothing
    messages = [record.getMessage() for record in caplog.records]
    known = (
        "base_url, ca_bundle, connect_timeout, flush_timeout, max_in_flight, max_queue, "
        "outbox_dir, read_timeout, strict, strict_delivery, token, token_file"
    )
    assert messages == [
        f"flush_timout in [tool.dotflow.server] of {tmp_path / 'pyproject.toml'}: unknown key, "
        f"ignored (did you mean 'flush_timeout'?); the 'api' provider reads {known}",
        f"zzz in [tool.dotflow.server] of {tmp_path / 'pyproject.toml'}: unknown key, "
        f"ignored; the 'api' provider reads {known}",
    ]


def test_a_flush_timeout_of_zero_is_allowed() -> None:
    assert load_settings(settings({"SERVER_FLUSH_TIMEOUT": "0"})).flush_timeout == 0.0


def test_a_ca_bundle_is_passed_as_verify(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    config = load_settings(settings({"SERVER_CA_BUNDLE": str(bundle)}))
    assert config.verify == str(bundle)


def test_plain_http_to_a_remote_host_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="dotflow.server.api")
    for _ in range(3):
        load_settings(settings({"SERVER_BASE_URL": "http://remote.example.org/api"}))
    warnings = [r for r in caplog.records if "clear text" in r.getMessage()]
    assert len(warnings) == 1
    caplog.clear()
    for url in ("http://127.0.0.1:8000", "http://localhost/api", "http://[::1]:80", "https://a"):
        load_settings(settings({"SERVER_BASE_URL": url}))
    assert not [r for r in caplog.records if "clear text" in r.getMessage()]


@pytest.mark.parametrize(
    "url", ["http://10.0.0.5/api", "http://192.168.1.20:8000", "http://[fd00::1]/api"]
)
def test_plain_http_to_a_private_address_warns_too(
    url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only loopback keeps the token on the machine; a private network is still a network."""
    forget_warnings()
    caplog.set_level(logging.WARNING, logger="dotflow.server.api")
    load_settings(settings({"SERVER_BASE_URL": url}))
    warnings = [r.getMessage() for r in caplog.records if "clear text" in r.getMessage()]
    assert len(warnings) == 1 and url in warnings[0]


def test_the_fingerprint_is_salted_and_short() -> None:
    import hashlib

    expected = hashlib.sha256(b"dotflow-outbox\0tok").hexdigest()[:16]
    assert token_fingerprint(Secret("tok")) == expected
    assert token_fingerprint(Secret("other")) != expected


def test_repr_shows_the_base_url_only() -> None:
    provider = ServerAPI(base_url="https://h/api", token="very-secret-token")
    provider.configure(settings())
    assert repr(provider) == "ServerAPI(base_url='https://h/api')"
    assert "very-secret-token" not in repr(provider.config)
    assert "very-secret-token" not in str(provider.config)


def test_a_configuration_error_stops_the_workflow_before_it_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SERVER_BASE_URL", "not-a-url")
    monkeypatch.setenv("SERVER_USER_TOKEN", "tok")
    with pytest.raises(ConfigurationError, match="SERVER_BASE_URL"):
        DotFlow(providers=[ServerAPI()])


def test_the_entry_point_is_installed_and_auto_selected(monkeypatch: pytest.MonkeyPatch) -> None:
    from dotflow_core import installed_providers
    from dotflow_core.selection import select_providers

    installed = installed_providers()
    assert "api" in installed
    assert installed["api"].entry_point.value == "dotflow_server_api.provider:api"
    environ = {"SERVER_BASE_URL": "https://h/api", "SERVER_USER_TOKEN": "tok"}
    selection = select_providers(Settings(config={}, environ=environ), installed)
    assert selection.names == ("api",)
    assert os.environ.get("SERVER_BASE_URL") is None


def test_the_distribution_needs_dotflow_core_and_requests_and_offers_the_api_entry_point() -> None:
    from importlib.metadata import distribution

    dist = distribution("dotflow-server-api")
    runtime = [line for line in dist.requires or [] if "extra ==" not in line]
    names = {
        re.sub(r"[-_.]+", "-", re.split(r"[\s<>=!~;\[(]", line)[0]).lower() for line in runtime
    }
    assert {"dotflow-core", "requests"} <= names
    offered = dist.entry_points.select(group="dotflow.server")
    assert [(point.name, point.value) for point in offered] == [
        ("api", "dotflow_server_api.provider:api")
    ]
