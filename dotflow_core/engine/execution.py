"""Execution modes: where the groups of a workflow run.

Tasks are grouped by ``group_name``; groups run concurrently and the tasks
of a group run in order, each receiving the previous one's context.

- ``sequential``: in the calling thread (one thread per group when there are several);
- ``background``: the same, in a background thread, so ``start()`` returns at once;
- ``parallel``: in worker processes: every task of the ``default`` group in a
  process of its own, every named group in one process, at most
  ``max_workers`` processes at a time. Workers report each event to the parent
  through a pipe, so the parent's providers see the whole run. That machinery
  lives in :mod:`dotflow_core.engine.processes`, imported only by this mode.
  With ``executor=`` (any ``concurrent.futures`` executor, Dask's included) the
  attempts run there instead and the lifecycle stays here:
  :mod:`dotflow_core.engine.executors`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from dotflow_core.engine.events import Events
from dotflow_core.engine.modes import (
    BACKGROUND,
    MODES,
    PARALLEL,
    SEQUENTIAL,
    SIGNAL_CHECK_INTERVAL,
    check_mode,
    default_max_workers,
)
from dotflow_core.engine.runner import RunControl, run_group
from dotflow_core.engine.task import Task

logger = logging.getLogger("dotflow.engine")

__all__ = [
    "BACKGROUND",
    "MODES",
    "PARALLEL",
    "SEQUENTIAL",
    "check_mode",
    "default_max_workers",
    "execute",
    "groups_of",
]


def groups_of(tasks: Sequence[Task]) -> list[list[Task]]:
    """The tasks split by ``group_name``, in order of each group's first task."""
    groups: dict[str, list[Task]] = {}
    for task in tasks:
        groups.setdefault(task.group_name, []).append(task)
    return list(groups.values())


def execute(
    mode: str,
    tasks: Sequence[Task],
    events: Events,
    control: RunControl,
    *,
    keep_going: bool,
    max_workers: int | None = None,
    executor: Any = None,
) -> None:
    """Run every task in the given mode; returns when all have ended (or raises on Ctrl-C)."""
    if mode == PARALLEL and executor is not None:
        from dotflow_core.engine.executors import run_on_executor

        run_on_executor(executor, tasks, events, control, keep_going, max_workers)
    elif mode == PARALLEL:
        from dotflow_core.engine.processes import run_in_processes

        run_in_processes(tasks, events, control, keep_going, max_workers or default_max_workers())
    else:
        _run_in_threads(groups_of(tasks), events, control, keep_going)


def _run_in_threads(
    groups: list[list[Task]], events: Events, control: RunControl, keep_going: bool
) -> None:
    if len(groups) <= 1:
        for group in groups:
            run_group(group, events, control, keep_going=keep_going)
        return
    errors: list[BaseException] = []

    def run(group: list[Task]) -> None:
        try:
            run_group(group, events, control, keep_going=keep_going)
        except BaseException as error:
            errors.append(error)
            control.stop.set()

    threads = [
        threading.Thread(target=run, args=(group,), name=f"dotflow-group-{group[0].group_name}")
        for group in groups
    ]
    try:
        for thread in threads:
            thread.daemon = True  # so that Ctrl-C is not held up by a step that never returns
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(SIGNAL_CHECK_INTERVAL)
    except BaseException as error:
        control.stop.set()
        control.abandon([task for group in groups for task in group], events, error)
        raise
    if errors:
        raise errors[0]
