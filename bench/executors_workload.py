"""The steps of bench_executors.py: CPU work of a calibrated length, or a sleep.

A module of its own, so that pool and Dask worker processes import the steps
by name, as they would a user's.
"""

from __future__ import annotations

import time

from dotflow_core import Context, action


def spin(loops: int | float) -> int:
    """Pure-Python CPU work (holds the GIL, as most user code does): ``loops`` iterations.

    A float is a sleep of that many seconds instead (``--work sleep``: the engine's
    scheduling measured on a machine whose CPUs are busy with something else).
    """
    if isinstance(loops, float):
        time.sleep(loops)
        return 0
    total = 0
    for number in range(loops):
        total += number * number % 7
    return total


@action
def burn(initial_context: Context) -> int:
    """A task of the ``default`` group: independent of every other."""
    return spin(initial_context.storage)


@action
def burn_after(initial_context: Context, previous_context: Context) -> int:
    """A task of the named group: receives the previous one's value, as a chain does."""
    spin(initial_context.storage)
    return (previous_context.storage or 0) + 1


def spin_after(loops: int, previous: int | None) -> int:
    """``burn_after`` without the engine, for Dask's own ``client.submit`` chain."""
    spin(loops)
    return (previous or 0) + 1
