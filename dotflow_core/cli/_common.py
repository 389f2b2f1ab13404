"""What every ``dotflow`` command shares: the program name, exit codes, the error line.

A leaf of the CLI package: the facade (:mod:`dotflow_core.cli`) and every
command module import from here, never from each other's top, so no command
module imports the package that imports it.
"""

from __future__ import annotations

from typing import Final

from dotflow_core.cli import process
from dotflow_core.engine.modes import MODES
from dotflow_core.messages import one_line

PROG: Final = "dotflow"

#: Exit codes of every command (see docs/cli.md).
EXIT_OK: Final = 0
EXIT_TASK_FAILED: Final = 1
EXIT_USAGE: Final = 2
#: Strict delivery: the run's events were dropped or left undelivered (see docs/cli.md).
EXIT_UNDELIVERED: Final = 3
EXIT_INTERRUPTED: Final = 130
EXIT_TERMINATED: Final = process.EXIT_TERMINATED  # 143: SIGTERM, handled as Ctrl-C

#: Execution modes of ``dotflow start`` (the engine's own tuple).
START_MODES: Final = MODES
LOG_FORMATS: Final = ("text", "json")


class CliError(Exception):
    """A usage or configuration problem found by the CLI itself; exit code 2, one line."""


def error_line(message: str) -> str:
    """The one line every usage or configuration error prints on stderr."""
    return f"{PROG}: error: {one_line(message)}\n"


def interrupted_exit_code(interrupt: KeyboardInterrupt) -> int:
    """130 after Ctrl-C, 143 after SIGTERM (see :mod:`.process`)."""
    return EXIT_TERMINATED if isinstance(interrupt, process.Terminated) else EXIT_INTERRUPTED
