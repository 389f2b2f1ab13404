"""How long to wait before retrying: exponential backoff with full jitter, and ``Retry-After``."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Final

#: First backoff ceiling (seconds); doubles with every consecutive failure.
BASE_DELAY: Final = 0.5
#: Largest backoff ceiling (seconds).
MAX_DELAY: Final = 30.0
#: Longest wait a server's ``Retry-After`` can impose (seconds).
MAX_RETRY_AFTER: Final = 300.0


def backoff_delay(
    failures: int,
    *,
    base: float = BASE_DELAY,
    cap: float = MAX_DELAY,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after ``failures`` consecutive failures (>= 1): full jitter.

    A uniform draw from ``[0, min(cap, base * 2 ** (failures - 1))]``, so that
    many clients recovering from one outage do not retry in lockstep.
    """
    exponent = min(max(failures, 1) - 1, 32)
    ceiling = min(cap, base * float(2**exponent))
    return ceiling * rand()


def parse_retry_after(
    value: str | None,
    *,
    now: Callable[[], float] = time.time,
    cap: float = MAX_RETRY_AFTER,
) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or HTTP-date), capped.

    :returns: ``None`` when the header is absent or unreadable (use the backoff then).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return min(float(int(text)), cap)
    from email.utils import parsedate_to_datetime  # only servers that send a date pay for it

    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:  # older Pythons return None
        return None  # type: ignore[unreachable]
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    try:
        seconds = when.timestamp() - now()
    except (OverflowError, OSError, ValueError):
        return None
    return min(max(seconds, 0.0), cap)


def retry_delay(
    failures: int,
    retry_after: str | None,
    *,
    rand: Callable[[], float] = random.random,
    now: Callable[[], float] = time.time,
) -> float:
    """The wait before the next attempt: the server's ``Retry-After`` if readable, else backoff."""
    asked = parse_retry_after(retry_after, now=now)
    if asked is not None:
        return asked
    return backoff_delay(failures, rand=rand)


def http_date(moment: datetime) -> str:
    """``moment`` as an HTTP-date (for tests and fake servers)."""
    from email.utils import format_datetime

    return format_datetime(moment.astimezone(timezone.utc), usegmt=True)
