"""The execution modes' names and the checks on them: a leaf module.

The CLI lists the modes from here (without importing the engine), and both
:mod:`.execution` and :mod:`.processes` read the shared constants from here, so
neither imports the other at module level.
"""

from __future__ import annotations

import os
from typing import Final

from dotflow_core.errors import ConfigurationError

SEQUENTIAL: Final = "sequential"
BACKGROUND: Final = "background"
PARALLEL: Final = "parallel"
MODES: Final = (SEQUENTIAL, BACKGROUND, PARALLEL)

#: Blocking waits wake up this often, so that Ctrl-C reaches the main thread promptly
#: even when the signal was delivered to another thread.
SIGNAL_CHECK_INTERVAL: Final = 0.1


def check_mode(mode: object) -> str:
    """``mode`` when it names an execution mode.

    :raises ConfigurationError: it does not (dotflow's ``sequential_group`` gets a hint).
    """
    if mode not in MODES:
        hint = (
            " (dotflow's sequential_group ran each group in a process of its own: use "
            "parallel, with group_name= on the tasks)"
            if mode == "sequential_group"
            else ""
        )
        raise ConfigurationError(f"mode={mode!r}: expected one of {', '.join(MODES)}{hint}")
    return str(mode)


def default_max_workers() -> int:
    """Worker processes at most, by default, in parallel mode (as ``concurrent.futures``)."""
    return min(32, (os.cpu_count() or 1) + 4)
