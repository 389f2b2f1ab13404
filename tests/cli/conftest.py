"""Fixtures for the CLI tests (helpers live in cli_helpers.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import (
    BROKEN_STEPS_PY,
    FAKE_INSTALL_HINT,
    FLOW_PY,
    INSTALLED,
    Project,
    Result,
    base_env,
    run_dotflow,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if "fake" in INSTALLED:
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason=FAKE_INSTALL_HINT)
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    """A directory with flow.py and an empty dotflow.toml (so no outer config applies)."""
    path = tmp_path / "project"
    path.mkdir()
    (path / "flow.py").write_text(FLOW_PY)
    (path / "badimport.py").write_text(BROKEN_STEPS_PY)
    (path / "dotflow.toml").write_text("# no dotflow settings: the selection falls through\n")
    log = tmp_path / "fake-provider.jsonl"
    env = base_env(FAKE_PROVIDER_LOG=str(log), SLOW_MARKER=str(tmp_path / "slow.started"))
    yield Project(path, log, env)


@pytest.fixture
def dotflow(project: Project) -> Callable[..., Result]:
    """Run ``dotflow ARGS`` in the project; ``env=`` adds variables, ``cwd=`` moves it,
    ``isolated=True`` runs without site-packages (pair it with ``isolated_env``)."""

    def run(
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        isolated: bool = False,
    ) -> Result:
        return run_dotflow(
            *args, cwd=cwd or project.path, env={**project.env, **(env or {})}, isolated=isolated
        )

    return run


def _write_dist_info(site: Path, distribution: str, version: str, entry_points: str) -> None:
    """Just enough metadata for importlib.metadata to see an installed distribution."""
    info = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n"
    )
    (info / "entry_points.txt").write_text(entry_points)


def _link_package(site: Path, module: Any) -> None:
    package = Path(module.__file__).parent
    (site / package.name).symlink_to(package, target_is_directory=True)


@pytest.fixture(scope="session")
def isolated_env(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., dict[str, str]]:
    """Environments that see ONLY the providers named, whatever else is installed here.

    Run with ``isolated=True`` (``python -S``): no site-packages; PYTHONPATH holds
    the repository (dotflow_core), pluggy and attrs, and a site directory with
    the requested providers' packages and their metadata. ``ghost`` is a provider
    that exists in metadata only (its module does not), declaring auto-selection
    on ``GHOST_URL`` and ``GHOST_KEY``.
    """
    import attr
    import attrs
    import pluggy

    root = Path(__file__).resolve().parents[2]
    made: dict[tuple[str, ...], Path] = {}

    def make(*providers: str) -> dict[str, str]:
        key = tuple(sorted(providers))
        if key not in made:
            site = tmp_path_factory.mktemp("isolated-site")
            for module in (pluggy, attr, attrs):
                _link_package(site, module)
            if sys.version_info < (3, 11):
                import tomli

                _link_package(site, tomli)
            if "default" in key:
                import dotflow_server_default

                _link_package(site, dotflow_server_default)
                _write_dist_info(
                    site,
                    "dotflow-server-default",
                    metadata.version("dotflow-server-default"),
                    "[dotflow.server]\ndefault = dotflow_server_default:provider\n",
                )
            if "fake" in key:
                import dotflow_server_fake

                _link_package(site, dotflow_server_fake)
                _write_dist_info(
                    site,
                    "dotflow-server-fake",
                    metadata.version("dotflow-server-fake"),
                    "[dotflow.server]\nfake = dotflow_server_fake:provider\n",
                )
            if "ghost" in key:  # declared in metadata only: its module does not exist
                _write_dist_info(
                    site,
                    "dotflow-server-ghost",
                    "1.0",
                    "[dotflow.server]\nghost = no_such_module_anywhere:provider\n\n"
                    "[dotflow.server.auto]\nghost = GHOST_URL.GHOST_KEY\n",
                )
            made[key] = site
        return base_env(PYTHONPATH=os.pathsep.join([str(root), str(made[key])]))

    return make
