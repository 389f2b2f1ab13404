"""Shared by the benchmarks: a private virtualenv with dotflow==1.0.1, the peer we compare with."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
DOTFLOW_VENV = BENCH_DIR / ".venv-dotflow"
DOTFLOW_REQUIREMENT = "dotflow==1.0.1"


def dotflow_python() -> Path:
    """The interpreter of a virtualenv with dotflow 1.0.1, created and filled on first use."""
    python = DOTFLOW_VENV / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    if not python.exists():
        print(f"creating {DOTFLOW_VENV} with {DOTFLOW_REQUIREMENT} ...", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(DOTFLOW_VENV)
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('dotflow'))"],
        capture_output=True,
        text=True,
    )
    if probe.stdout.strip() != DOTFLOW_REQUIREMENT.split("==")[1]:
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", DOTFLOW_REQUIREMENT], check=True
        )
    return python
