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
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

#: The exit code after SIGTERM (128 + the signal's number, as shells report it).
EXIT_TERMINATED = 128 + signal.SIGTERM

_owned = False


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: the run ends as on Ctrl-C, with exit code 143."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"terminated (signal {signum})")


def _default_sigterm_in_child() -> None:
    # A forked parallel-mode worker must die on its parent's terminate() even when
    # stuck where no Python code runs (a handler could not): the kernel's default.
    if _sigterm_owner not in (None, os.getpid()):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


#: The process whose SIGTERM raises Terminated (None outside a dotflow command).
_sigterm_owner: int | None = None
_fork_hook_registered = False


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` while the command runs, unless someone else set it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:  # e.g. ignored by the caller
        yield
        return
    global _sigterm_owner, _fork_hook_registered
    if not _fork_hook_registered:
        os.register_at_fork(after_in_child=_default_sigterm_in_child)
        _fork_hook_registered = True
    _sigterm_owner = os.getpid()
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _sigterm_owner = None


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
