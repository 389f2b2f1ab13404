"""Shared by the benchmarks: the two installations compared, each in a private virtualenv.

Both sides are measured as users run them, installed from wheels (regular,
non-editable installs with compiled bytecode):

- ``bench/.venv-dotflow``: ``dotflow==1.0.1``, the peer, from the package index;
- ``bench/.venv-ours``: dotflow-core and dotflow-server-api built from this
  working tree, reinstalled at every call so that the figures are the code's
  as it is now. (The development ``.venv`` holds editable installs, whose
  import hooks cost every process time that no user pays.)

Creating either needs the package index once; later runs only rebuild ours.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
DOTFLOW_VENV = BENCH_DIR / ".venv-dotflow"
DOTFLOW_REQUIREMENT = "dotflow==1.0.1"
OURS_VENV = BENCH_DIR / ".venv-ours"
#: What bench/.venv-ours holds: the core and the api provider, from this tree.
OURS_PROJECTS = (REPO_DIR, REPO_DIR / "plugins" / "dotflow-server-api")


def _python(environment: Path) -> Path:
    return environment / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def _create(environment: Path) -> Path:
    python = _python(environment)
    if not python.exists():
        print(f"creating {environment} ...", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(environment)
    return python


def _pip(python: Path, *arguments: str) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *arguments],
        check=True,
    )


def dotflow_python() -> Path:
    """The interpreter of a virtualenv with dotflow 1.0.1, created and filled on first use."""
    python = _create(DOTFLOW_VENV)
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('dotflow'))"],
        capture_output=True,
        text=True,
    )
    if probe.stdout.strip() != DOTFLOW_REQUIREMENT.split("==")[1]:
        _pip(python, DOTFLOW_REQUIREMENT)
    return python


def ours_python() -> Path:
    """The interpreter of a virtualenv with this tree's core and api provider, freshly installed."""
    python = _create(OURS_VENV)
    projects = [str(project) for project in OURS_PROJECTS]
    probe = subprocess.run(
        [str(python), "-c", "import dotflow_core, dotflow_server_api"], capture_output=True
    )
    if probe.returncode != 0:
        _pip(python, *projects)  # dependencies too, the first time
    print(f"installing this tree into {OURS_VENV} ...", file=sys.stderr)
    _pip(python, "--no-deps", "--force-reinstall", *projects)
    return python
