"""Turning records and step values into JSON-safe data, for results and for providers.

``to_json_safe`` never raises: values JSON cannot carry become ISO strings
(dates), lists (tuples, sets), or a capped ``repr`` (anything else).

A layer below the engine: it imports nothing of it. A type that stands for
another value (the engine's ``Context`` stands for its ``storage``) says so
with a ``__json_safe__()`` method, converted in its place.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

import attrs

#: Longest ``repr`` kept for a value JSON cannot carry.
REPR_LIMIT = 2000
_MAX_DEPTH = 64


def to_json_safe(value: Any, *, repr_limit: int = REPR_LIMIT) -> Any:
    """A copy of ``value`` that ``json.dumps`` accepts (strict JSON: no NaN or infinity)."""
    return _convert(value, repr_limit, 0, set())


def record_to_dict(record: Any, *, repr_limit: int = REPR_LIMIT) -> dict[str, Any]:
    """A ``TaskRecord`` / ``WorkflowRecord`` (or any attrs instance) as a JSON-safe dict."""
    return {
        field.name: _convert(getattr(record, field.name), repr_limit, 0, set())
        for field in attrs.fields(type(record))
    }


def capped_repr(value: Any, limit: int = REPR_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters; never raises."""
    try:
        text = repr(value)
    except Exception as error:
        text = f"<unrepresentable {type(value).__name__}: {type(error).__name__}>"
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def _convert(value: Any, limit: int, depth: int, active: set[int]) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, enum.Enum):
        return _convert(value.value, limit, depth, active)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if depth >= _MAX_DEPTH or id(value) in active:
        return capped_repr(value, limit)
    stand_in = getattr(type(value), "__json_safe__", None)
    if stand_in is not None:
        try:
            substitute = stand_in(value)
        except Exception:
            return capped_repr(value, limit)
        return _convert(substitute, limit, depth + 1, active)
    active.add(id(value))
    try:
        if isinstance(value, Mapping):
            return {
                key if isinstance(key, str) else capped_repr(key, limit): _convert(
                    item, limit, depth + 1, active
                )
                for key, item in value.items()
            }
        if isinstance(value, (list, tuple, set, frozenset)):
            return [_convert(item, limit, depth + 1, active) for item in value]
        if attrs.has(type(value)):
            return {
                field.name: _convert(getattr(value, field.name), limit, depth + 1, active)
                for field in attrs.fields(type(value))
            }
        return capped_repr(value, limit)
    except Exception:
        return capped_repr(value, limit)
    finally:
        active.discard(id(value))
