"""Garbage-collector tuning the ``dotflow`` command applies in a process it owns.

A short ``dotflow`` run spends tens of milliseconds in the cyclic garbage
collector for nothing: start-up imports allocate tens of thousands of
long-lived objects and the collector walks them dozens of times, then
interpreter teardown runs several full collections over everything still
alive. So, only in a process started as ``dotflow`` (never when other code
calls :func:`dotflow_core.cli.main`):

- the collector is off while the command starts up (imports, argument parsing);
- when start-up is over, before any user step is imported, the objects it made
  are frozen (:func:`gc.freeze`: left out of later collections) and collection
  resumes, so user code runs with the collector as usual;
- at exit, one full collection finalises whatever the run left unreachable,
  then the survivors are frozen so that teardown does not walk them again
  (they are still freed as modules are cleared; Python never promised to
  finalise cycles that are alive at exit).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_owned = False


@contextmanager
def owned() -> Iterator[None]:
    """Wrap the whole command in a process that ``dotflow`` owns."""
    global _owned
    was_enabled = gc.isenabled()
    _owned = True
    gc.disable()
    try:
        yield
    finally:
        _owned = False
        gc.collect()  # runs whether or not the collector is enabled
        gc.freeze()
        if was_enabled:
            gc.enable()


def startup_finished() -> None:
    """Freeze start-up's objects and resume collection (no-op unless the process is owned)."""
    if _owned and not gc.isenabled():
        gc.freeze()
        gc.enable()
