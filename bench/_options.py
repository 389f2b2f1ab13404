"""Shared by the benchmarks: command-line values checked before anything runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def at_least(minimum: float, kind: Callable[[str], Any] = int) -> Callable[[str], Any]:
    """An argparse ``type``: a number of ``kind`` no lower than ``minimum``.

    A bad value ends the benchmark with one line naming it and what is valid,
    before any virtualenv is built or process started.
    """

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if kind is int else 'a number'}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is below the minimum, {minimum:g}")
        return value

    return parse


def some_of(*allowed: str) -> Callable[[str], tuple[str, ...]]:
    """An argparse ``type``: a comma-separated, non-empty selection of ``allowed``."""

    def parse(text: str) -> tuple[str, ...]:
        chosen = tuple(part.strip() for part in text.split(",") if part.strip())
        wrong = [part for part in chosen if part not in allowed]
        if wrong or not chosen:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a comma-separated list of {', '.join(allowed)}"
            )
        return tuple(dict.fromkeys(chosen))

    return parse
