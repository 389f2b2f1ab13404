"""``dotflow providers``, ``--version``, ``--help`` and contributed ``dotflow.commands``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata

from cli_helpers import INSTALLED, Project, Result, base_env

import dotflow_core

Dotflow = Callable[..., Result]

#: Engine modules --help may import: leaves that import nothing heavy (the modes' names).
LEAF_MODULES = {"dotflow_core.engine", "dotflow_core.engine.modes"}


def rows_of(result: Result) -> dict[str, list[str]]:
    """The table of ``dotflow providers``: name -> [distribution, version, status]."""
    rows: dict[str, list[str]] = {}
    for line in result.stdout.splitlines()[1:]:
        if not line.strip():
            break
        name, distribution, version, status = line.split(None, 3)
        rows[name] = [distribution, version, status]
    return rows


def test_providers_lists_installed_active_and_broken(dotflow: Dotflow, project: Project) -> None:
    result = dotflow("providers", env={"DOTFLOW_PROVIDER": "fake"})

    assert result.returncode == 0, result
    assert result.stdout.splitlines()[0].split() == ["NAME", "DISTRIBUTION", "VERSION", "STATUS"]
    rows = rows_of(result)
    assert set(INSTALLED) <= set(rows)
    version = metadata.version("dotflow-server-fake")
    assert rows["fake"] == ["dotflow-server-fake", version, "active"]
    assert rows["broken"][2].startswith("error: provider 'broken' failed to load: ImportError:")
    assert "broken on purpose" in rows["broken"][2]
    assert rows["badsig"][2].startswith("error: provider 'badsig' failed to load:")
    assert "verbose" in rows["badsig"][2]
    assert "active: fake (env): DOTFLOW_PROVIDER=fake" in result.stdout
    # Checking a provider does not run it: the active one only has its settings checked.
    assert [event["hook"] for event in project.events()] == ["configure"]


def test_providers_explains_the_default_choice(dotflow: Dotflow) -> None:
    result = dotflow("providers")
    assert result.returncode == 0, result
    if "default" in INSTALLED:
        assert rows_of(result)["default"][2] == "active"
        assert re.search(r"^active: default \(default\): nothing chosen", result.stdout, re.M)


def test_providers_quotes_the_config_setting_as_written(dotflow: Dotflow, project: Project) -> None:
    (project.path / "dotflow.toml").write_text('provider = ["fake"]\n')
    result = dotflow("providers")
    assert result.returncode == 0, result
    expected = f"active: fake (config): provider = ['fake'] in {project.path / 'dotflow.toml'}"
    assert expected in result.stdout, result


def test_providers_json_document(dotflow: Dotflow, project: Project) -> None:
    (project.path / "dotflow.toml").write_text('provider = "fake"\n')

    result = dotflow("providers", "--json")

    assert result.returncode == 0, result
    document = json.loads(result.stdout)
    by_name = {row["name"]: row for row in document["providers"]}
    assert set(INSTALLED) <= set(by_name)
    for row in document["providers"]:
        assert set(row) == {"name", "distribution", "version", "entry_point", "active", "error"}
    assert by_name["fake"]["active"] is True and by_name["fake"]["error"] is None
    assert by_name["fake"]["distribution"] == "dotflow-server-fake"
    assert by_name["broken"]["active"] is False and "ImportError" in by_name["broken"]["error"]
    assert "verbose" in by_name["badsig"]["error"]
    selection = document["selection"]
    assert selection["names"] == ["fake"] and selection["source"] == "config"
    assert str(project.path / "dotflow.toml") in selection["reason"]
    assert selection["error"] is None


def test_providers_reports_a_selected_provider_that_is_not_installed(dotflow: Dotflow) -> None:
    result = dotflow("providers", "--json", env={"DOTFLOW_PROVIDER": "fake,nope"})
    assert result.returncode == 0, result
    selection = json.loads(result.stdout)["selection"]
    assert selection["names"] == ["fake", "nope"]
    assert "'nope' not installed" in selection["error"]


def test_providers_with_an_unreadable_config_exits_2_but_still_lists(
    dotflow: Dotflow, project: Project
) -> None:
    (project.path / "dotflow.toml").write_text("provider = [")
    result = dotflow("providers")
    assert result.returncode == 2
    assert len(result.lines) == 1 and result.lines[0].startswith("dotflow: error: invalid TOML")
    assert "fake" in rows_of(result)


def test_version_lists_core_and_providers_from_metadata(dotflow: Dotflow) -> None:
    result = dotflow("--version")

    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"dotflow-core {dotflow_core.__version__} ")
    for name, entry_point in INSTALLED.items():
        assert entry_point.dist is not None
        expected = rf"^  {re.escape(name)}\s+{entry_point.dist.metadata['Name']} "
        assert re.search(expected + re.escape(entry_point.dist.version), result.stdout, re.M)
    assert "broken on purpose" not in result.stdout + result.stderr


def test_help_lists_commands_and_imports_no_provider(project: Project) -> None:
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "dotflow_core.cli", "--help"],
        cwd=project.path,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert re.search(r"^\s+start\s", completed.stdout, re.M)
    assert re.search(r"^\s+providers\s", completed.stdout, re.M)
    assert re.search(r"^\s+fake-echo\s+\(from dotflow-server-fake\)", completed.stdout, re.M)
    imported = {
        line.split("|")[-1].strip()
        for line in completed.stderr.splitlines()
        if line.startswith("import time:")
    }
    heavy = {
        module
        for module in imported
        if module.split(".")[0] in ("pluggy", "attr", "attrs")
        or module.startswith(("dotflow_core.engine", "dotflow_core.manager", "dotflow_server_"))
    } - LEAF_MODULES
    assert not heavy, f"--help imported {sorted(heavy)}"
    assert "broken on purpose" not in completed.stderr


def test_subcommand_help_works(dotflow: Dotflow) -> None:
    for command in (("start",), ("providers",), ("providers", "new")):
        result = dotflow(*command, "--help")
        assert result.returncode == 0, result
        assert result.stdout.startswith(f"usage: dotflow {' '.join(command)}")


def test_a_contributed_command_gets_its_arguments_and_exit_code(dotflow: Dotflow) -> None:
    result = dotflow("fake-echo", "3", "--help", "x")
    assert result.returncode == 3, result
    assert json.loads(result.stdout) == {"command": "fake-echo", "argv": ["3", "--help", "x"]}


def test_a_contributed_command_that_fails_to_import_exits_2(dotflow: Dotflow) -> None:
    result = dotflow("fake-broken")
    assert result.returncode == 2
    assert result.lines == [
        "dotflow: error: command 'fake-broken' (from dotflow-server-fake) failed to load: "
        "ImportError: dotflow_server_fake.broken is broken on purpose (test fixture)"
    ]
