"""Steps for the executor tests: importable by name in pool and Dask worker processes.

Dask's workers (spawned by the session's LocalCluster) import this module from
the same ``sys.path`` as the test session, so it holds only steps and the
standard library.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from dotflow_core import Context, action


@action
def first() -> list[str]:
    return ["first"]


@action
def second(previous_context: Context) -> list[str]:
    return [*previous_context.storage, "second"]


@action
def echo(initial_context: Context, previous_context: Context) -> dict[str, Any]:
    return {
        "initial": initial_context.storage,
        "previous": previous_context.storage,
        "previous_task": previous_context.task_id,
        "pid": os.getpid(),
    }


@action
def boom() -> None:
    raise ValueError("boom on purpose")


@action
def lock() -> Any:
    return threading.Lock()


@action(retry=3, retry_delay=0.05, backoff=True)
def flaky(initial_context: Context) -> int:
    """Fails twice, then succeeds: counts its attempts in the file it is given."""
    path = Path(initial_context.storage)
    attempts = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempts))
    if attempts < 3:
        raise ConnectionError(f"attempt {attempts} failed on purpose")
    return attempts


@action(timeout=0.5)
def sleeps_past_its_timeout() -> str:
    time.sleep(2)
    return "too late"


@action
def killed() -> None:
    """Kills the worker process that runs it, as the kernel's OOM killer would."""
    os.kill(os.getpid(), signal.SIGKILL)


@action
def held(initial_context: Context) -> str:
    """Writes ``<dir>/started``, then waits (20 s at most) for ``<dir>/release``."""
    directory = Path(initial_context.storage)
    (directory / "started").write_text(str(os.getpid()))
    for _ in range(200):
        if (directory / "release").exists():
            return "released"
        time.sleep(0.1)
    return "gave up waiting"
