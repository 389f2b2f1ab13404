"""``dotflow providers new NAME``: the generated package installs, runs and passes its tests."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import Project, Result, run_dotflow

from dotflow_core.cli import scaffold

Dotflow = Callable[..., Result]
NAME = "acme-audit"
PACKAGE = f"dotflow-server-{NAME}"
MODULE = "dotflow_server_acme_audit"


def test_the_scaffold_installs_runs_and_passes_its_own_tests(
    dotflow: Dotflow, project: Project, tmp_path: Path
) -> None:
    created = dotflow("providers", "new", NAME)
    assert created.returncode == 0, created
    package = project.path / PACKAGE
    assert f"pip install -e ./{PACKAGE}" in created.stdout
    assert {str(p.relative_to(package)) for p in package.rglob("*") if p.is_file()} == {
        "pyproject.toml",
        "README.md",
        f"src/{MODULE}/__init__.py",
        f"src/{MODULE}/py.typed",
        f"tests/test_{MODULE}.py",
    }

    # Install it for real, without touching this environment: into a directory of its own.
    pytest.importorskip("setuptools", reason="pip --no-build-isolation needs setuptools here")
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), str(package)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    env = {
        **project.env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
    }

    listed = run_dotflow("providers", "--json", cwd=project.path, env=env)
    assert listed.returncode == 0, listed
    rows = {row["name"]: row for row in json.loads(listed.stdout)["providers"]}
    assert rows[NAME]["distribution"] == PACKAGE
    assert rows[NAME]["error"] is None

    ran = run_dotflow(
        "start", "--provider", NAME, "-s", "flow.extract", "-s", "flow.transform",
        "--workflow-id", "wf-scaffold", cwd=project.path, env=env,
    )  # fmt: skip
    assert ran.returncode == 0, ran
    assert ran.lines[-1].endswith(f"providers: {NAME} (flag)")

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "--rootdir", str(package), "-c", str(package / "pyproject.toml"), str(package / "tests")],
        cwd=package, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert " passed" in tests.stdout and "failed" not in tests.stdout


def test_the_module_implements_every_hook_of_the_specs_in_order(tmp_path: Path) -> None:
    target = scaffold.scaffold("every-hook", tmp_path)
    source = (target / "src" / "dotflow_server_every_hook" / "__init__.py").read_text()
    tree = ast.parse(source)
    [cls] = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    methods = [node for node in cls.body if isinstance(node, ast.FunctionDef)]
    specs = [hook.__name__ for hook in scaffold.hook_specs()]
    assert [method.name for method in methods] == specs
    assert len(specs) >= 8
    for method in methods:
        assert [ast.unparse(d) for d in method.decorator_list] == ["hookimpl"]
        assert ast.get_docstring(method), method.name
    for spec in scaffold.hook_specs():
        assert f"def {spec.__name__}(self, " in source
    assert "# What to do:" in source and "# Fires" in source
    compile(source, "generated", "exec")


def test_every_hook_has_guidance() -> None:
    missing = {hook.__name__ for hook in scaffold.hook_specs()} - set(scaffold.GUIDANCE)
    assert not missing, f"add 'what to do' guidance to scaffold.GUIDANCE for {sorted(missing)}"


def test_the_generated_code_passes_ruff(tmp_path: Path) -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed")
    target = scaffold.scaffold("lint-me", tmp_path)
    for command in (
        [ruff, "check", "--no-cache", "."],
        [ruff, "format", "--check", "--no-cache", "."],
    ):
        checked = subprocess.run(command, cwd=target, capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("name", ["Acme", "1acme", "acme-", "ac me", "acme.audit", "", "none"])
def test_an_invalid_name_exits_2_and_creates_nothing(
    dotflow: Dotflow, project: Project, name: str
) -> None:
    before = set(project.path.iterdir())
    result = dotflow("providers", "new", name)
    assert result.returncode == 2, result
    assert len(result.lines) == 1 and result.lines[0].startswith("dotflow: error: provider name")
    assert repr(name) in result.lines[0]
    assert set(project.path.iterdir()) == before


@pytest.mark.parametrize(
    ("name", "installed"),
    [("fake", "dotflow-server-fake 0.0.1"), ("broken", "dotflow-server-fake")],
)
def test_the_name_of_an_installed_provider_exits_2_and_creates_nothing(
    dotflow: Dotflow, project: Project, name: str, installed: str
) -> None:
    before = set(project.path.iterdir())
    result = dotflow("providers", "new", name)
    assert result.returncode == 2, result
    assert result.lines == [
        f"dotflow: error: a provider named {name!r} is already installed ({installed}); "
        "installing this package would replace it or clash with it: choose another name"
    ]
    assert set(project.path.iterdir()) == before


def test_an_existing_directory_is_never_overwritten(dotflow: Dotflow, project: Project) -> None:
    existing = project.path / PACKAGE
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    result = dotflow("providers", "new", NAME)
    assert result.returncode == 2
    assert "already exists" in result.stderr and PACKAGE in result.stderr
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
