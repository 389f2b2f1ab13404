"""What the ``dotflow`` command does in a process it owns: SIGTERM handling, GC tuning.

SIGTERM (what CI runners, systemd and Kubernetes send to stop a job) ends a
run the way Ctrl-C does: it raises :class:`Terminated`, a ``KeyboardInterrupt``,
in the main thread, so running tasks are reported ``Failed``, providers get
their bounded shutdown (the api provider spools what it could not send), and
the command exits with 143 instead of dying with its queued events.

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
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

#: The exit code after SIGTERM (128 + the signal's number, as shells report it).
EXIT_TERMINATED = 128 + signal.SIGTERM

_owned = False


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: the run ends as on Ctrl-C, with exit code 143."""


def _on_sigterm(owner: int) -> Callable[[int, FrameType | None], None]:
    def handle(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:  # a forked worker inherited this: end as SIGTERM ends it
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated(f"terminated (signal {signum})")

    return handle


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` while the command runs, unless someone else set it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:  # e.g. ignored by the caller
        yield
        return
    signal.signal(signal.SIGTERM, _on_sigterm(os.getpid()))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def owned() -> Iterator[None]:
    """Wrap the whole command in a process that ``dotflow`` owns."""
    global _owned
    was_enabled = gc.isenabled()
    _owned = True
    gc.disable()
    try:
        with _sigterm_interrupts():
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
