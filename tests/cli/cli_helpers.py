"""Helpers for the CLI tests: the real ``dotflow`` command in a subprocess.

Every test runs ``python -m dotflow_core.cli`` (what the ``dotflow`` console
script runs) in a fresh project directory, against the providers really
installed in this environment: the ``fake`` test provider
(tests/fixtures/dotflow-server-fake) and ``dotflow-server-default``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from dotflow_core.testing import without_dotflow_variables

INSTALLED = {ep.name: ep for ep in metadata.entry_points(group="dotflow.server")}
FAKE_INSTALL_HINT = (
    "the 'fake' provider is not installed; run: "
    "pip install -e tests/fixtures/dotflow-server-fake plugins/dotflow-server-default"
)

#: Steps written into every test project as flow.py.
FLOW_PY = """\
import hashlib
import os
import pathlib
import time

from dotflow_core import action


@action
def extract(initial_context):
    return {"input": initial_context.storage, "pid": os.getpid()}


@action
def transform(previous_context):
    return {"got": previous_context.storage}


@action(retry=2, retry_delay=0)
def explode():
    raise ValueError("exploded on purpose")


@action
def slow():
    pathlib.Path(os.environ["SLOW_MARKER"]).write_text("started")
    for _ in range(600):
        time.sleep(0.1)


@action
def crunch():
    pathlib.Path(os.environ["SLOW_MARKER"]).write_text("started")
    hashlib.pbkdf2_hmac("sha256", b"key", b"salt", 2**31 - 1)  # minutes in C, no signal checks


@action
def exits(initial_context):
    import sys

    sys.exit(0)


def undecorated():
    return 1
"""

#: A step module that cannot be imported.
BROKEN_STEPS_PY = 'raise RuntimeError("this steps module fails at import")\n'

#: The fake provider's own variables: never inherited either.
_FAKE_PREFIX = "FAKE_"


@dataclass
class Result:
    """A finished ``dotflow`` run."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        """The stderr lines."""
        return self.stderr.splitlines()

    def json_lines(self) -> list[dict[str, Any]]:
        """Every stderr line parsed as JSON (fails the test on a line that is not)."""
        return [json.loads(line) for line in self.lines]

    def __str__(self) -> str:
        return (
            f"dotflow {' '.join(self.args)} -> {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
        )


@dataclass
class Project:
    """A project directory with flow.py, and the fake provider's hook log."""

    path: Path
    log: Path
    env: dict[str, str]

    def events(self) -> list[dict[str, Any]]:
        """The hook calls the fake provider received, in order ([] when none)."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def hooks(self) -> list[str]:
        return [event["hook"] for event in self.events()]


def base_env(**overrides: str) -> dict[str, str]:
    """The test's environment without dotflow's or the fake provider's variables.

    ``DOTFLOW_HOME`` stays: the test session's private user dir, never the real one.
    """
    env = {
        name: value
        for name, value in without_dotflow_variables(os.environ).items()
        if not name.startswith(_FAKE_PREFIX)
    }
    env["DOTFLOW_HOME"] = os.environ["DOTFLOW_HOME"]
    env.update(overrides)
    return env


def run_dotflow(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 60, isolated: bool = False
) -> Result:
    """Run the CLI; ``isolated`` skips site-packages (see :func:`isolated_env`)."""
    flags = ["-S"] if isolated else []
    completed = subprocess.run(
        [sys.executable, *flags, "-m", "dotflow_core.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Result(args, completed.returncode, completed.stdout, completed.stderr)


def popen_dotflow(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start ``dotflow`` with SIGINT handled normally, even if this process ignores it."""
    return subprocess.Popen(
        [sys.executable, "-m", "dotflow_core.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def needs_default() -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        "default" not in INSTALLED,
        reason="not installed: pip install -e plugins/dotflow-server-default",
    )
