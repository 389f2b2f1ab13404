"""Provider selection from the shell: flag > env > config file > auto > default > none."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from cli_helpers import INSTALLED, Project, Result, needs_default

Dotflow = Callable[..., Result]
MANAGED = {"SERVER_BASE_URL": "http://127.0.0.1:9", "SERVER_USER_TOKEN": "not-a-real-token"}


def providers_of(result: Result) -> str:
    """The ``providers: ...`` part of the summary line."""
    assert result.returncode == 0, result
    return result.lines[-1].rsplit("; providers: ", 1)[1]


@needs_default()
def test_nothing_chosen_selects_default(dotflow: Dotflow, project: Project) -> None:
    assert providers_of(dotflow("start", "-s", "flow.extract")) == "default (default)"
    assert project.events() == []


def test_the_config_file_selects_and_configures_the_provider(
    dotflow: Dotflow, project: Project
) -> None:
    app = project.path / "app"
    app.mkdir()
    (app / "pyproject.toml").write_text(
        '[project]\nname = "app"\n\n[tool.dotflow]\nprovider = "fake"\n\n'
        "[tool.dotflow.fake]\nnext_task_id = 3\n"
    )
    (app / "flow.py").write_text((project.path / "flow.py").read_text())

    result = dotflow("start", "-s", "flow.extract", "--workflow-id", "wf-c", cwd=app)

    assert providers_of(result) == "fake (config)"
    configure = project.events()[0]
    assert configure["hook"] == "configure"
    assert configure["config_path"] == str(app / "pyproject.toml")
    assert configure["section"] == {"next_task_id": 3}
    updates = [e["record"]["task_id"] for e in project.events() if e["hook"] == "update_task"]
    assert updates == [3, 3]


def test_a_dotflow_toml_selects_too(dotflow: Dotflow, project: Project) -> None:
    (project.path / "dotflow.toml").write_text('provider = "fake"\n')
    assert providers_of(dotflow("start", "-s", "flow.extract")) == "fake (config)"
    assert project.hooks()[0] == "configure"


def test_dotflow_config_points_at_a_file_elsewhere(dotflow: Dotflow, project: Project) -> None:
    elsewhere = project.path.parent / "shared.toml"
    elsewhere.write_text('provider = "fake"\n')
    result = dotflow("start", "-s", "flow.extract", env={"DOTFLOW_CONFIG": str(elsewhere)})
    assert providers_of(result) == "fake (config)"


@needs_default()
def test_the_environment_beats_the_config_file(dotflow: Dotflow, project: Project) -> None:
    (project.path / "dotflow.toml").write_text('provider = "fake"\n')
    result = dotflow("start", "-s", "flow.extract", env={"DOTFLOW_PROVIDER": "default"})
    assert providers_of(result) == "default (env)"
    assert project.events() == []


@needs_default()
def test_the_flag_beats_the_environment(dotflow: Dotflow, project: Project) -> None:
    result = dotflow(
        "start", "-s", "flow.extract", "--provider", "fake", env={"DOTFLOW_PROVIDER": "default"}
    )
    assert providers_of(result) == "fake (flag)"
    assert "configure" in project.hooks()


def test_several_providers_receive_every_event(dotflow: Dotflow, project: Project) -> None:
    result = dotflow("start", "-s", "flow.extract", env={"DOTFLOW_PROVIDER": "fake,default"})
    if "default" not in INSTALLED:
        assert result.returncode == 2
        return
    assert providers_of(result) == "fake,default (env)"
    assert "update_task" in project.hooks()


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (("-p", "none"), {"DOTFLOW_PROVIDER": "fake"}, "none (flag)"),
        ((), {"DOTFLOW_PROVIDER": "none"}, "none (env)"),
    ],
)
def test_none_selects_no_provider(
    dotflow: Dotflow,
    project: Project,
    args: tuple[str, ...],
    env: dict[str, str],
    expected: str,
) -> None:
    assert providers_of(dotflow("start", "-s", "flow.extract", *args, env=env)) == expected
    assert project.events() == []


def test_auto_selection_is_declared_by_the_provider_and_read_without_importing_it(
    dotflow: Dotflow, isolated_env: Callable[..., dict[str, str]]
) -> None:
    """The core names no provider: 'ghost' declares its variables in its metadata only."""
    env = isolated_env("default", "ghost")
    # Not asked for: its module (which does not exist) is never imported to find out.
    result = dotflow("start", "-s", "flow.extract", env=env, isolated=True)
    assert providers_of(result) == "default (default)"
    assert "ghost" not in result.stderr
    # Asked for by its declaration: selected, and only then imported (and that fails here).
    chosen = dotflow(
        "start",
        "-s",
        "flow.extract",
        env={**env, "GHOST_URL": "u", "GHOST_KEY": "k"},
        isolated=True,
    )
    assert chosen.returncode == 2, chosen
    assert "provider 'ghost' failed to load" in chosen.stderr
    listing = dotflow(
        "providers", "--json", env={**env, "GHOST_URL": "u", "GHOST_KEY": "k"}, isolated=True
    )
    selection = json.loads(listing.stdout)["selection"]
    assert (selection["names"], selection["source"]) == (["ghost"], "auto")
    assert "GHOST_URL and GHOST_KEY set" in selection["reason"]


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({"SERVER_BASE_URL": "http://127.0.0.1:9"}, "SERVER_USER_TOKEN or SERVER_USER_TOKEN_FILE"),
        (
            {"SERVER_BASE_URL": "http://127.0.0.1:9", "SERVER_USER_TOKEN": "  "},
            "SERVER_USER_TOKEN or SERVER_USER_TOKEN_FILE",
        ),
        ({"SERVER_USER_TOKEN": "not-a-real-token"}, "SERVER_BASE_URL"),
        ({"SERVER_USER_TOKEN_FILE": "/nonexistent/token"}, "SERVER_BASE_URL"),
    ],
)
def test_half_configured_managed_mode_is_said_once_and_listed(
    dotflow: Dotflow, given: dict[str, str], missing: str
) -> None:
    if "api" not in INSTALLED:
        pytest.skip("the 'api' provider declares the managed-mode variables; not installed here")
    result = dotflow("start", "-s", "flow.extract", env=given)
    assert result.returncode == 0, result
    warnings = [line for line in result.lines if line.startswith("dotflow: warning: ")]
    assert len(warnings) == 1, result
    assert f"but not {missing}: the 'api' provider is not selected" in warnings[0]
    assert "not-a-real-token" not in result.stderr
    listing = dotflow("providers", env=given)
    notices = [line for line in listing.stdout.splitlines() if line.startswith("notice: ")]
    assert len(notices) == 1 and f"but not {missing}" in notices[0], listing


def test_a_token_file_selects_managed_mode_like_the_token(
    dotflow: Dotflow, project: Project
) -> None:
    if "api" not in INSTALLED:
        pytest.skip("the 'api' provider is not installed here")
    token = project.path / "token"
    token.write_text("not-a-real-token\n")
    token.chmod(0o600)
    env = {"SERVER_BASE_URL": "http://127.0.0.1:9", "SERVER_USER_TOKEN_FILE": str(token)}
    selection = json.loads(dotflow("providers", "--json", env=env).stdout)["selection"]
    assert (selection["names"], selection["source"]) == (["api"], "auto")
    assert "SERVER_USER_TOKEN_FILE" in selection["reason"]
    assert selection["notice"] is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [("", "is empty"), (None, "cannot read secret file")],
    ids=["empty", "missing"],
)
def test_an_unusable_token_file_is_named_by_providers_and_refused_by_start(
    dotflow: Dotflow, project: Project, content: str | None, expected: str
) -> None:
    """Selected by its declaration, refused by its settings: both commands say why."""
    if "api" not in INSTALLED:
        pytest.skip("the 'api' provider is not installed here")
    token = project.path / "token"
    if content is not None:
        token.write_text(content)
        token.chmod(0o600)
    env = {"SERVER_BASE_URL": "http://127.0.0.1:9", "SERVER_USER_TOKEN_FILE": str(token)}
    started = dotflow("start", "-s", "flow.extract", env=env)
    assert started.returncode == 2, started
    refusal = [line for line in started.lines if line.startswith("dotflow: error: ")]
    assert len(refusal) == 1 and "SERVER_USER_TOKEN_FILE" in refusal[0], started
    assert expected in refusal[0]
    assert project.events() == []
    listing = dotflow("providers", env=env)
    assert listing.returncode == 0, listing
    problems = [line for line in listing.stdout.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 1, listing
    assert "SERVER_USER_TOKEN_FILE" in problems[0] and expected in problems[0]
    assert "'dotflow start' would exit with code 2" in problems[0]
    document = json.loads(dotflow("providers", "--json", env=env).stdout)
    assert expected in document["selection"]["error"]


def test_managed_mode_in_this_environment(dotflow: Dotflow) -> None:
    """Auto picks 'api' when it is installed here; otherwise the variables mean nothing."""
    result = dotflow("providers", "--json", env=MANAGED)
    selection = json.loads(result.stdout)["selection"]
    if "api" in INSTALLED:
        assert (selection["names"], selection["source"]) == (["api"], "auto")
    else:
        assert selection["source"] != "auto"
    assert "warning" not in result.stderr


def test_nothing_installed_selects_none(
    dotflow: Dotflow, isolated_env: Callable[..., dict[str, str]]
) -> None:
    result = dotflow("start", "-s", "flow.extract", env=isolated_env(), isolated=True)
    assert providers_of(result) == "none (none)"

    listing = dotflow("providers", "--json", env=isolated_env(), isolated=True)
    document = json.loads(listing.stdout)
    assert document["providers"] == []
    assert document["selection"]["source"] == "none"


def test_an_isolated_environment_sees_only_the_providers_asked_for(
    dotflow: Dotflow, project: Project, isolated_env: Callable[..., dict[str, str]]
) -> None:
    env = isolated_env("fake")
    unknown = dotflow("start", "-s", "flow.extract", "-p", "default", env=env, isolated=True)
    assert unknown.returncode == 2
    assert "installed providers: fake (or 'none'" in unknown.stderr
    assert providers_of(dotflow("start", "-s", "flow.extract", env=env, isolated=True)) == (
        "none (none)"
    )
    ran = dotflow("start", "-s", "flow.extract", "-p", "fake", env=env, isolated=True)
    assert providers_of(ran) == "fake (flag)"
    assert "update_task" in project.hooks()
