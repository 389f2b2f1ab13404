"""The garbage-collector tuning of the ``dotflow`` process (dotflow_core/cli/process.py).

Start-up runs with the collector off, user steps with it on, and whatever a
run leaves unreachable is still finalised before the process ends. Code that
calls ``main()`` in its own process keeps its collector untouched.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

from cli_helpers import Project, Result

from dotflow_core.cli import main

Dotflow = Callable[..., Result]

STEPS_PY = """\
import gc
import os
import pathlib

from dotflow_core import action

OUT = pathlib.Path(os.environ["GC_PROBE_DIR"])
IMPORTED_WITH_COLLECTOR = gc.isenabled()


class Finaliser:
    def __del__(self):
        (OUT / "finalised").write_text("yes")


@action
def probe():
    (OUT / "state").write_text(f"{IMPORTED_WITH_COLLECTOR} {gc.isenabled()}")
    cycle = Finaliser()
    cycle.self = cycle  # unreachable garbage that only the cyclic collector can free
    del cycle
    gc.disable()  # and a step may even switch the collector off
"""


def test_steps_run_with_the_collector_on_and_their_garbage_is_finalised(
    dotflow: Dotflow, project: Project, tmp_path: Path
) -> None:
    (project.path / "gcprobe.py").write_text(STEPS_PY)
    result = dotflow(
        "start", "-s", "gcprobe.probe", "-p", "none", env={"GC_PROBE_DIR": str(tmp_path)}
    )
    assert result.returncode == 0, result
    assert (tmp_path / "state").read_text() == "True True"
    assert (tmp_path / "finalised").read_text() == "yes"


def test_main_called_in_process_leaves_the_collector_alone(capsys: object) -> None:
    frozen = gc.get_freeze_count()
    assert main(["--version"]) == 0
    assert main(["start", "--no-such-option"]) == 2
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen
