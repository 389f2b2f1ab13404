"""Message helpers every layer shares: one-line text, and one WARNING per distinct message.

Settings are read on every ``DotFlow()``; a misconfiguration must be said once,
not once per workflow. Providers use these too (from :mod:`dotflow_core.plugin`).
A leaf module: it imports nothing of dotflow-core.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable


def one_line(text: object, limit: int | None = None) -> str:
    """``str(text)`` with every run of whitespace (newlines included) made one space.

    :param limit: at most this many characters, the cut marked by ``...`` (None: all).
    """
    flat = " ".join(str(text).split())
    if limit is None or len(flat) <= limit:
        return flat
    return flat[: max(limit - 3, 0)] + "..."


_warned: set[Hashable] = set()
_lock = threading.Lock()


def warn_once(logger: logging.Logger, message: str, *args: object, key: Hashable = None) -> bool:
    """Log ``message % args`` as a WARNING the first time this process meets ``key``.

    :param key: what makes two warnings the same (default: the logger and the message).
    :returns: True when it was logged now, False when it had been before.
    """
    about = (logger.name, message, args) if key is None else (logger.name, key)
    with _lock:
        if about in _warned:
            return False
        _warned.add(about)
    logger.warning(message, *args)
    return True


def forget_warnings() -> None:
    """Warn again about everything (for tests that check a warning is given)."""
    with _lock:
        _warned.clear()
