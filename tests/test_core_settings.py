"""Settings, config-file discovery, secrets and provider selection."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from dotflow_core import ConfigurationError, Secret, Settings, read_secret_file, user_dir
from dotflow_core.discovery import AutoRule, parse_auto_rule
from dotflow_core.messages import forget_warnings
from dotflow_core.selection import parse_names, select_providers
from dotflow_core.settings import find_config


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_nearest_pyproject_with_a_dotflow_table_wins(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.dotflow]\nprovider = "outer"\n')
    write(tmp_path / "pkg" / "pyproject.toml", '[project]\nname = "no-dotflow-table"\n')
    deep = tmp_path / "pkg" / "src"
    deep.mkdir()
    path, table = find_config(deep, environ={})
    assert path == tmp_path / "pyproject.toml" and table["provider"] == "outer"


def test_dotflow_toml_wins_over_pyproject_in_the_same_directory(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.dotflow]\nprovider = "from-pyproject"\n')
    write(tmp_path / "dotflow.toml", 'provider = "from-dotflow-toml"\n[server]\nbase_url = "u"\n')
    settings = Settings.load(tmp_path, environ={})
    assert settings.config["provider"] == "from-dotflow-toml"
    assert settings.section("server")["base_url"] == "u"
    assert settings.config_path == tmp_path / "dotflow.toml"


def test_dotflow_config_points_at_a_file_explicitly(tmp_path: Path) -> None:
    config = write(tmp_path / "elsewhere.toml", 'provider = "explicit"\n')
    settings = Settings.load(tmp_path, environ={"DOTFLOW_CONFIG": str(config)})
    assert settings.config["provider"] == "explicit"
    with pytest.raises(ConfigurationError, match=r"DOTFLOW_CONFIG='/nope\.toml': no such file"):
        Settings.load(tmp_path, environ={"DOTFLOW_CONFIG": "/nope.toml"})


def test_keys_of_a_dotflow_toml_are_named_as_written_there(tmp_path: Path) -> None:
    config = write(tmp_path / "dotflow.toml", 'providr = "x"\n[server]\ntoken = "t"\n')
    settings = Settings.load(tmp_path, environ={})
    assert settings.origin("providr") == f"providr of {config}"
    with pytest.raises(ConfigurationError) as caught:
        settings.secret("token", env="SERVER_USER_TOKEN", section="server")
    assert str(caught.value).startswith(f"token in [server] of {config}: secrets are not read")


def test_dotflow_config_naming_a_directory_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.load(tmp_path, environ={"DOTFLOW_CONFIG": str(tmp_path)})
    assert str(caught.value) == (
        f"DOTFLOW_CONFIG={str(tmp_path)!r}: is a directory; "
        "expected a pyproject.toml or a dotflow.toml file"
    )


@pytest.mark.parametrize("name", ["dotflow.toml", "ci.toml"])
def test_a_tool_dotflow_table_outside_pyproject_is_refused_with_the_fix(
    tmp_path: Path, name: str
) -> None:
    config = write(tmp_path / name, '[tool.dotflow]\nprovider = "none"\n')
    environ = {"DOTFLOW_CONFIG": str(config)} if name != "dotflow.toml" else {}
    with pytest.raises(ConfigurationError) as caught:
        Settings.load(tmp_path, environ=environ)
    assert str(caught.value) == (
        f"{config}: found [tool.dotflow], which only a pyproject.toml has; in this file "
        "write its keys at the top level (provider = ..., [server] ...)"
    )


@pytest.mark.parametrize("key", ["providr", "providers", "Provider"])
def test_a_misspelt_provider_key_warns_and_names_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, key: str
) -> None:
    config = write(tmp_path / "pyproject.toml", f'[tool.dotflow]\n{key} = "none"\n')
    settings = Settings.load(tmp_path, environ={})
    with caplog.at_level(logging.WARNING, logger="dotflow"):
        chosen = select_providers(settings, installed=["default"])
    assert chosen.source == "default"
    assert [record.getMessage() for record in caplog.records] == [
        f"{key} in [tool.dotflow] of {config}: unknown key, ignored; did you mean 'provider'?"
    ]


def test_other_top_level_keys_and_sections_do_not_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(
        tmp_path / "pyproject.toml", "[tool.dotflow]\nretention = 3\n[tool.dotflow.server]\nx = 1\n"
    )
    with caplog.at_level(logging.WARNING, logger="dotflow"):
        select_providers(Settings.load(tmp_path, environ={}), installed=["default"])
    assert caplog.records == []


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    write(tmp_path / "dotflow.toml", "provider = \n")
    with pytest.raises(ConfigurationError, match=r"invalid TOML in .*dotflow.toml"):
        Settings.load(tmp_path, environ={})


def test_no_config_file_gives_empty_settings(tmp_path: Path) -> None:
    assert find_config(tmp_path, environ={}) == (None, {})
    settings = Settings.load(tmp_path, environ={})
    assert settings.config_path is None and dict(settings.config) == {}
    assert settings.lookup("base_url", env="SERVER_BASE_URL", section="server") is None


def test_lookup_prefers_a_non_empty_environment_variable() -> None:
    settings = Settings(
        config={"server": {"read_timeout": 7}},
        environ={"SERVER_READ_TIMEOUT": "12", "EMPTY": ""},
    )
    assert settings.lookup("read_timeout", env="SERVER_READ_TIMEOUT", section="server") == "12"
    assert settings.lookup("read_timeout", env="EMPTY", section="server") == 7
    assert settings.lookup("missing", section="server", default=3) == 3


def test_origin_names_where_lookup_found_the_value() -> None:
    settings = Settings(
        config={"server": {"read_timeout": 7}, "colour": "never"},
        config_path=Path("/project/pyproject.toml"),
        environ={"SERVER_READ_TIMEOUT": "12", "EMPTY": ""},
    )
    assert settings.origin("read_timeout", env="SERVER_READ_TIMEOUT", section="server") == (
        "SERVER_READ_TIMEOUT"
    )
    assert settings.origin("read_timeout", env="EMPTY", section="server") == (
        "read_timeout in [tool.dotflow.server] of /project/pyproject.toml"
    )
    assert settings.origin("colour") == "colour in [tool.dotflow] of /project/pyproject.toml"
    assert settings.origin("missing", env="SERVER_MISSING", section="server") == "SERVER_MISSING"
    assert settings.origin("missing", section="server") == "missing in [tool.dotflow.server]"


def test_settings_are_read_only_and_hide_the_environment_from_repr() -> None:
    settings = Settings(config={"server": {"x": [1]}}, environ={"SERVER_USER_TOKEN": "s3cret"})
    assert "s3cret" not in repr(settings)
    with pytest.raises(TypeError):
        settings.config["server"]["x"] = 2  # type: ignore[index]


def test_a_secret_never_shows_itself() -> None:
    secret = Secret("tok-123")
    assert secret.reveal() == "tok-123"
    for text in (repr(secret), str(secret), f"{secret}", f"{[secret]}"):
        assert "tok-123" not in text
    assert secret == Secret("tok-123") and secret != Secret("other") and not Secret("")
    with pytest.raises(TypeError, match="cannot be pickled"):
        import pickle

        pickle.dumps(secret)


def test_secrets_come_from_the_environment_or_a_private_file(tmp_path: Path) -> None:
    token_file = write(tmp_path / "token", "from-file\n")
    os.chmod(token_file, 0o600)
    from_env = Settings(config={}, environ={"SERVER_USER_TOKEN": "from-env"})
    assert from_env.secret("token", env="SERVER_USER_TOKEN").reveal() == "from-env"
    via_env_file = Settings(config={}, environ={"SERVER_USER_TOKEN_FILE": str(token_file)})
    assert via_env_file.secret("token", env="SERVER_USER_TOKEN").reveal() == "from-file"
    via_config = Settings(config={"server": {"token_file": str(token_file)}}, environ={})
    secret = via_config.secret("token", env="SERVER_USER_TOKEN", section="server")
    assert secret is not None and secret.reveal() == "from-file"
    assert Settings(config={}, environ={}).secret("token", env="SERVER_USER_TOKEN") is None


def test_a_secret_written_into_the_config_file_is_refused() -> None:
    settings = Settings(
        config={"server": {"token": "oops"}},
        config_path=Path("/project/pyproject.toml"),
        environ={},
    )
    with pytest.raises(ConfigurationError, match="secrets are not read from config") as caught:
        settings.secret("token", env="SERVER_USER_TOKEN", section="server")
    assert "oops" not in str(caught.value)
    # The key as the user writes it, as Settings.origin() names it.
    assert str(caught.value).startswith(
        "token in [tool.dotflow.server] of /project/pyproject.toml: "
    )


def test_config_file_errors_name_keys_and_tables_as_the_user_writes_them(tmp_path: Path) -> None:
    where = tmp_path / "pyproject.toml"
    missing = Settings(config={"server": {"token_file": str(tmp_path / "none")}}, config_path=where)
    with pytest.raises(ConfigurationError, match="cannot read secret file") as caught:
        missing.secret("token", env="SERVER_USER_TOKEN", section="server")
    assert str(caught.value).startswith(f"token_file in [tool.dotflow.server] of {where}: ")
    not_a_table = Settings(config={"server": 5}, config_path=where)
    with pytest.raises(ConfigurationError, match="must be a table") as caught:
        not_a_table.section("server")
    assert str(caught.value).startswith(f"[tool.dotflow.server] of {where} must be a table")


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_a_secret_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    token_file = write(tmp_path / "token", "t")
    os.chmod(token_file, 0o644)
    with pytest.raises(ConfigurationError, match=r"mode 0644; .*chmod 600"):
        read_secret_file(token_file, setting="token_file")
    os.chmod(token_file, 0o600)
    empty = write(tmp_path / "empty", "  \n")
    os.chmod(empty, 0o600)
    with pytest.raises(ConfigurationError, match="is empty"):
        read_secret_file(empty, setting="token_file")
    with pytest.raises(ConfigurationError, match="cannot read secret file"):
        read_secret_file(tmp_path / "missing", setting="token_file")


def test_user_dir_follows_dotflow_home(tmp_path: Path) -> None:
    assert user_dir({"DOTFLOW_HOME": str(tmp_path)}) == tmp_path
    assert user_dir({}) == Path.home() / ".dotflow"


@pytest.mark.parametrize(
    "value, names",
    [("api", ("api",)), (" api , default ,api", ("api", "default")), ("none", ()), (["a"], ("a",))],
)
def test_provider_lists_are_parsed(value: object, names: tuple[str, ...]) -> None:
    assert parse_names(value, "--provider") == names  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["", "api,,default", "none,api", [1], []])
def test_bad_provider_lists_are_one_line_errors(value: object) -> None:
    with pytest.raises(ConfigurationError, match="--provider"):
        parse_names(value, "--provider")  # type: ignore[arg-type]


def settings_with(config: dict | None = None, **environ: str) -> Settings:
    return Settings(config=config or {}, environ=environ)


MANAGED = {"SERVER_BASE_URL": "http://127.0.0.1:1", "SERVER_USER_TOKEN": "t"}


def test_selection_precedence() -> None:
    installed = {"api", "default", "fake"}
    config = {"provider": "fake"}
    both = settings_with(config, DOTFLOW_PROVIDER="default", **MANAGED)
    assert select_providers(both, installed, flag="api,fake").source == "flag"
    assert select_providers(both, installed).names == ("default",)
    assert select_providers(both, installed).source == "env"
    from_config = select_providers(settings_with(config, **MANAGED), installed)
    assert (from_config.names, from_config.source) == (("fake",), "config")
    auto = select_providers(settings_with(**MANAGED), installed)
    assert (auto.names, auto.source) == (("api",), "auto")
    default = select_providers(settings_with(), installed)
    assert (default.names, default.source) == (("default",), "default")
    nothing = select_providers(settings_with(), set())
    assert (nothing.names, nothing.source, nothing.describe()) == ((), "none", "none (none)")


API_RULES = (
    AutoRule("api", ("SERVER_BASE_URL", "SERVER_USER_TOKEN")),
    AutoRule("api", ("SERVER_BASE_URL", "SERVER_USER_TOKEN_FILE")),
)


def test_auto_selection_follows_the_declared_rules_only() -> None:
    installed = {"api", "default"}
    token_file = settings_with(SERVER_BASE_URL="u", SERVER_USER_TOKEN_FILE="/t")
    assert select_providers(token_file, installed, auto=API_RULES).names == ("api",)
    assert select_providers(settings_with(**MANAGED), installed, auto=()).names == ("default",)
    # A rule of a provider that is not installed selects nothing.
    assert select_providers(settings_with(**MANAGED), {"default"}, auto=API_RULES).names == (
        "default",
    )
    other = (AutoRule("audit", ("AUDIT_URL",)),)
    both = select_providers(
        settings_with(AUDIT_URL="x", **MANAGED), {"api", "audit"}, auto=API_RULES + other
    )
    assert (both.names, both.source) == (("api", "audit"), "auto")


def test_half_configured_auto_selection_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    forget_warnings()
    blank_token = settings_with(SERVER_BASE_URL="u", SERVER_USER_TOKEN="")
    with caplog.at_level(logging.WARNING, logger="dotflow"):
        first = select_providers(blank_token, {"api", "default"}, auto=API_RULES)
        select_providers(blank_token, {"api", "default"}, auto=API_RULES)
    assert first.names == ("default",)
    assert "SERVER_BASE_URL set but not SERVER_USER_TOKEN or SERVER_USER_TOKEN_FILE" in (
        first.notice or ""
    )
    assert caplog.text.count("is not selected") == 1
    nothing_set = select_providers(settings_with(), {"api", "default"}, auto=API_RULES)
    assert nothing_set.notice is None


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        (
            "api",
            "SERVER_BASE_URL.SERVER_USER_TOKEN",
            ("api", ("SERVER_BASE_URL", "SERVER_USER_TOKEN")),
        ),
        ("api.file", "A", ("api", ("A",))),
        ("api", "not a variable", None),
        ("api", "A..B", None),
    ],
)
def test_auto_rules_are_parsed_from_entry_point_text(
    name: str, value: str, rule: tuple[str, tuple[str, ...]] | None
) -> None:
    parsed = parse_auto_rule(name, value)
    assert (parsed and (parsed.provider, parsed.variables)) == rule
