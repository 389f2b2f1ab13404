"""Work on a daemon thread, waited for up to a deadline and abandoned past it.

What a step's ``timeout`` and a provider's bounded request both need. Not an
executor: ``concurrent.futures`` joins its threads at interpreter exit, so one
call that never returns would hold the process open; a daemon thread that
overruns is left to end on its own, and the process can still exit.
A leaf module: it imports nothing of dotflow-core.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class DaemonCall(Generic[T]):
    """``work()`` started at once on a daemon thread named ``name``.

    ``call.wait(seconds)`` says whether it finished in time; then ``call.result()``
    returns its value or raises what it raised (any ``BaseException``, so that a
    step's ``SystemExit`` reaches the caller as it would without a thread).
    """

    def __init__(self, work: Callable[[], T], name: str) -> None:
        self._work = work
        self._finished = threading.Event()
        self._value: tuple[T] | None = None  # a tuple: None may be the value
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._value = (self._work(),)
        except BaseException as error:
            self._error = error
        finally:
            self._finished.set()

    def wait(self, seconds: float | None) -> bool:
        """Wait up to ``seconds`` (None: without limit, negative: not at all); True if done."""
        return self._finished.wait(None if seconds is None else max(seconds, 0.0))

    def result(self) -> T:
        """The value ``work`` returned, or its exception raised here.

        :raises RuntimeError: it has not finished (call :meth:`wait` first).
        """
        if not self._finished.is_set():
            raise RuntimeError(f"{self.thread.name} has not finished")
        if self._value is None:
            assert self._error is not None
            raise self._error
        return self._value[0]
