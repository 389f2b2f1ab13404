"""Turning records and step values into JSON-safe data, for results and for providers.

``to_json_safe`` never raises, and its work is bounded by its byte cap, never
by the data: it walks a value only until the JSON of what it kept would pass
``max_bytes`` (compact separators, ASCII-escaped, as :func:`json.dumps` with
``separators=(",", ":")`` writes it), then stops. A value that does not fit
becomes a marker that keeps a preview::

    {"truncated": true, "type": "list", "length": 2000000, "preview": [{"i": 0}, ...]}

``type`` is the value's type name, ``length`` its ``len()`` (for containers,
strings and bytes, where ``len()`` is cheap), ``preview`` its first items or
characters (at most :data:`PREVIEW_BYTES`, and only what fits the cap). A
container whose first items show that the whole cannot fit goes straight to
its preview, so a list of millions of rows costs a preview's work. A value
nested deeper than :data:`MAX_DEPTH` levels, or holding itself, becomes a
marker with ``"reason": "depth"`` or ``"reason": "cycle"``.

Values JSON cannot carry become ISO strings (dates), lists (tuples, sets),
their ``value`` (enums) or a capped ``repr`` (anything else; ``bytes`` are cut
before their ``repr`` is taken). Nothing here copies the data it is given
beyond what it returns.

A layer below the engine: it imports nothing of it. A type that stands for
another value (the engine's ``Context`` stands for its ``storage``) says so
with a ``__json_safe__()`` method, converted in its place.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from datetime import date, datetime
from json.encoder import encode_basestring_ascii as _json_string
from typing import Any, Final

import attrs

#: Longest ``repr`` kept for a value JSON cannot carry.
REPR_LIMIT: Final = 2000
#: Default byte cap of :func:`to_json_safe` (and of each field in :func:`record_to_dict`).
DEFAULT_MAX_BYTES: Final = 1_000_000
#: Most bytes the preview of a value that does not fit keeps.
PREVIEW_BYTES: Final = 16_000
#: Deepest nesting walked; deeper values become a ``"reason": "depth"`` marker. Markers
#: nest their preview one level down, so the output is at most about twice as deep.
MAX_DEPTH: Final = 60
#: Items of a container walked before estimating whether the whole can fit.
_SAMPLE: Final = 8
#: The marker of a value for which not even a preview fits.
_BARE_MARKER: Final = {"truncated": True}
_BARE_MARKER_BYTES: Final = len('{"truncated":true}')
_SKIP: Final = object()
#: What ``_derived_scalar`` answers for a value that is no scalar.
_NOT_SCALAR: Final = object()
_SEQUENCES: Final = (list, tuple, set, frozenset)


def to_json_safe(
    value: Any, *, repr_limit: int = REPR_LIMIT, max_bytes: int = DEFAULT_MAX_BYTES
) -> Any:
    """A JSON-safe form of ``value`` whose compact JSON takes at most ``max_bytes`` bytes.

    Strict JSON (no NaN or infinity). Containers are new; strings and numbers are
    the values given. Costs O(``max_bytes``) whatever the size of ``value``.
    """
    return JsonSafe(max_bytes, repr_limit).convert(value)


def record_to_dict(
    record: Any, *, repr_limit: int = REPR_LIMIT, max_bytes: int = DEFAULT_MAX_BYTES
) -> dict[str, Any]:
    """A ``TaskRecord`` / ``WorkflowRecord`` (or any attrs instance) as a JSON-safe dict.

    Each field is capped at ``max_bytes`` on its own: a huge ``previous_context``
    leaves ``current_context`` whole.
    """
    return {
        field.name: JsonSafe(max_bytes, repr_limit).convert(getattr(record, field.name))
        for field in attrs.fields(type(record))
    }


def capped_repr(value: Any, limit: int = REPR_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters; never raises.

    Strings and bytes are cut before their ``repr`` is taken (cost O(``limit``));
    any other object's ``repr`` is its own code's cost.
    """
    try:
        if isinstance(value, (str, bytes, bytearray)) and len(value) > limit:
            value = value[:limit]
        elif isinstance(value, memoryview) and value.nbytes > limit:
            value = value.tobytes()[:limit]
        text = repr(value)
    except Exception as error:
        text = f"<unrepresentable {type(value).__name__}: {type(error).__name__}>"
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def json_size(text: str) -> int:
    """Bytes ``text`` takes as a JSON string (quotes and ASCII escapes included)."""
    return len(_json_string(text))


def _marker_bytes(type_name: str, length: int | None, preview: bool) -> int:
    """Bytes of ``{"truncated":true,"type":T[,"length":N][,"preview":<empty>]}``."""
    size = len('{"truncated":true,"type":}') + json_size(type_name)
    if length is not None:
        size += len(',"length":') + len(str(length))
    if preview:
        size += len(',"preview":') + 2
    return size


class JsonSafe:
    """One bounded walk: converts values while ``left`` bytes of budget remain.

    :attr:`visited` counts the values looked at (for diagnostics and tests of
    the bound); :attr:`complete` is False once anything was cut.
    """

    __slots__ = ("_active", "_exhausted", "_keys", "_left", "_repr_limit", "complete", "visited")

    def __init__(self, max_bytes: int, repr_limit: int = REPR_LIMIT) -> None:
        self._left = max(int(max_bytes), _BARE_MARKER_BYTES)
        self._repr_limit = repr_limit
        self._exhausted = False
        self._active: set[int] = set()
        self._keys: dict[str, int] = {}
        self.complete = True
        self.visited = 0

    def convert(self, value: Any) -> Any:
        """The JSON-safe form of ``value`` within the remaining budget; never raises."""
        try:
            converted = self._value(value, 0)
        except Exception:  # a hostile __len__, items() or iterator: say so, never raise
            converted = _SKIP
        if converted is _SKIP:
            self.complete = False
            return dict(_BARE_MARKER)
        return converted

    # -- scalars -------------------------------------------------------------

    def _value(self, value: Any, depth: int) -> Any:
        """``value`` converted and its bytes charged, or ``_SKIP`` when it does not fit."""
        self.visited += 1
        kind = type(value)
        if kind is str:
            return self._text(value)
        if kind is int and -(10**18) < value < 10**18:  # the hot path, inlined
            size = len(repr(value))
            if size <= self._left:
                self._left -= size
                return value
            self._exhausted = True
            return _SKIP
        if kind is dict:
            return self._mapping(value, depth, "dict")
        if kind is list or kind is tuple:
            return self._sequence(value, depth, kind.__name__)
        if kind is float:
            return self._float(value)
        if value is None or value is True:
            return self._charge(value, 4)
        if value is False:
            return self._charge(value, 5)
        return self._other(value, depth)

    def _charge(self, converted: Any, size: int) -> Any:
        if size > self._left:
            self._exhausted = True
            return _SKIP
        self._left -= size
        return converted

    def _text(self, text: str) -> Any:
        left = self._left
        if len(text) + 2 <= left:
            size = len(_json_string(text))  # O(len(text)), and len(text) is within budget
            if size <= left:
                self._left = left - size
                return text
        return self._cut_text(text, "str")

    def _cut_text(self, text: str, type_name: str) -> Any:
        """The marker of a string over the budget: its first characters that fit."""
        self.complete = False
        overhead = _marker_bytes(type_name, len(text), preview=True)
        room = self._left - overhead
        if room < PREVIEW_BYTES:
            self._exhausted = True  # the budget, not the preview's own cap, cut it
        room = min(room, PREVIEW_BYTES)
        if room < 2:
            return self._bare()
        keep = room - 2
        preview = text[:keep]
        size = json_size(preview)
        while size > room and preview:  # escapes made it longer: keep fewer characters
            keep = max(keep * (room - 2) // max(size - 2, 1), 0) if keep > 1 else 0
            preview = preview[:keep]
            size = json_size(preview)
        self._left -= overhead - 2 + size
        return {"truncated": True, "type": type_name, "length": len(text), "preview": preview}

    def _bare(self) -> Any:
        self._exhausted = True
        if self._left < _BARE_MARKER_BYTES:
            return _SKIP
        self._left -= _BARE_MARKER_BYTES
        return dict(_BARE_MARKER)

    def _number(self, number: int) -> Any:
        if -(10**18) < number < 10**18 or number.bit_length() < 10_000:
            return self._charge(int(number), len(repr(int(number))))
        return self._text(f"<int of {number.bit_length()} bits>")  # str() would raise

    def _float(self, number: float) -> Any:
        if math.isfinite(number):
            return self._charge(float(number), len(repr(float(number))))
        return self._text(repr(number))

    def _other(self, value: Any, depth: int) -> Any:
        """A value whose exact type :meth:`_value` does not know: a subclass, or anything."""
        converted = self._derived_scalar(value, depth)
        if converted is not _NOT_SCALAR:
            return converted
        stand_in = getattr(type(value), "__json_safe__", None)
        if stand_in is not None:  # a type that stands for another value (the engine's Context)
            return self._stand_in(value, stand_in, depth)
        if isinstance(value, Mapping):
            return self._mapping(value, depth, type(value).__name__)
        if isinstance(value, _SEQUENCES):
            return self._sequence(value, depth, type(value).__name__)
        if attrs.has(type(value)):
            guarded = self._guarded(value, depth)
            if guarded is not None:
                return guarded
            fields = {field.name: getattr(value, field.name) for field in attrs.fields(type(value))}
            return self._mapping(fields, depth, type(value).__name__, identity=id(value))
        return self._text(capped_repr(value, self._repr_limit))

    def _derived_scalar(self, value: Any, depth: int) -> Any:
        """An enum member, a subclass of str, int, float or bool, a date; else _NOT_SCALAR."""
        if isinstance(value, enum.Enum):
            return self._value(value.value, depth)
        if isinstance(value, str):
            return self._text(str(value))
        if isinstance(value, bool):
            return self._charge(bool(value), 4 if value else 5)
        if isinstance(value, int):
            return self._number(value)
        if isinstance(value, float):
            return self._float(value)
        if isinstance(value, (datetime, date)):
            return self._text(value.isoformat())
        return _NOT_SCALAR

    def _stand_in(self, value: Any, stand_in: Any, depth: int) -> Any:
        """The value that ``value.__json_safe__()`` stands for, converted in its place."""
        if depth >= MAX_DEPTH:
            return self._text(capped_repr(value, self._repr_limit))
        try:
            substitute = stand_in(value)
        except Exception:
            return self._text(capped_repr(value, self._repr_limit))
        return self._value(substitute, depth + 1)

    # -- containers ------------------------------------------------------------

    def _guarded(self, value: Any, depth: int) -> Any:
        """The marker for a container too deep or holding itself; None when it is neither."""
        if depth >= MAX_DEPTH:
            reason = "depth"
        elif id(value) in self._active:
            reason = "cycle"
        else:
            return None
        self.complete = False
        marker = {"truncated": True, "type": type(value).__name__, "reason": reason}
        size = _marker_bytes(type(value).__name__, None, False) + len(',"reason":""') + len(reason)
        return self._charge(marker, size)

    def _sequence(self, value: Any, depth: int, type_name: str) -> Any:
        guarded = self._guarded(value, depth)
        if guarded is not None:
            return guarded
        walk = _Container(self, len(value), type_name)
        if walk.refused:
            return walk.refused
        items: list[Any] = []
        costs = walk.costs
        self._active.add(id(value))
        try:
            for item in value:
                comma = 1 if items else 0
                if self._left <= comma or self._exhausted:
                    self._exhausted = True
                    break
                before = self._left
                self._left -= comma
                converted = self._value(item, depth + 1)
                if converted is _SKIP:
                    self._left = before
                    break
                items.append(converted)
                costs.append(before - self._left)
                if len(items) == _SAMPLE:
                    walk.sampled()
        finally:
            self._active.discard(id(value))
        return walk.closed(items, items.pop)

    def _new_key(self, key: str) -> int:
        """Bytes of ``"key":``, remembered for the next mappings (common keys only)."""
        size = json_size(key) + 1  # and its colon
        if len(self._keys) < 4096 and len(key) <= 256:
            self._keys[key] = size
        return size

    def _mapping(self, value: Any, depth: int, type_name: str, identity: int | None = None) -> Any:
        key_id = id(value) if identity is None else identity
        if identity is None:
            guarded = self._guarded(value, depth)
            if guarded is not None:
                return guarded
        walk = _Container(self, len(value), type_name)
        if walk.refused:
            return walk.refused
        items: dict[str, Any] = {}
        costs = walk.costs
        key_bytes = self._keys.get
        self._active.add(key_id)
        try:
            for key, item in value.items():
                if type(key) is not str:
                    key = self._key(key)
                key_size = key_bytes(key) or self._new_key(key)
                if items:
                    key_size += 1  # the comma before it
                if self._left <= key_size or self._exhausted:
                    self._exhausted = True
                    break
                before = self._left
                self._left -= key_size
                converted = self._value(item, depth + 1)
                if converted is _SKIP:
                    self._left = before
                    break
                items[key] = converted
                costs.append(before - self._left)
                if len(items) == _SAMPLE:
                    walk.sampled()
        finally:
            self._active.discard(key_id)
        return walk.closed(items, items.popitem)

    def _key(self, key: Any) -> str:
        if isinstance(key, enum.Enum) and isinstance(key.value, str):
            return str(key.value)
        if isinstance(key, str):
            return str(key)
        return capped_repr(key, self._repr_limit)


class _Container:
    """The budget of one container being walked: its brackets, preview cap and marker.

    A container is charged its brackets and its items as they are walked, so that
    one that fits is kept whole. One that does not becomes a marker: the last items
    are given back until the marker's own bytes fit.
    """

    __slots__ = ("costs", "length", "refused", "start", "type_name", "walk", "withheld")

    def __init__(self, walk: JsonSafe, length: int, type_name: str) -> None:
        self.walk = walk
        self.length = length
        self.type_name = type_name
        self.start = walk._left
        self.withheld = 0
        self.costs: list[int] = []
        self.refused: Any = None
        if walk._left < 2:
            self.refused = walk._bare() if walk._left >= _BARE_MARKER_BYTES else _SKIP
        else:
            walk._left -= 2

    def sampled(self) -> None:
        """After the first items: if they show the whole cannot fit, cap it at a preview."""
        walk, used = self.walk, sum(self.costs)
        if self.withheld or self.length <= _SAMPLE or used * self.length <= self.start * _SAMPLE:
            return
        withheld = walk._left - max(PREVIEW_BYTES - used, 0)
        if withheld > 0:
            walk._left -= withheld
            self.withheld = withheld

    def closed(self, items: Any, pop: Any) -> Any:
        """``items`` when whole, else the marker holding as many of them as fit."""
        walk = self.walk
        walk._left += self.withheld
        if self.withheld:
            walk._exhausted = False  # only the preview's own cap ran out
        if len(items) == self.length:
            return items
        walk.complete = False
        extra = _marker_bytes(self.type_name, self.length, preview=True) - 2
        costs = self.costs
        while walk._left < extra and costs:
            pop()
            walk._left += costs.pop()
            walk._exhausted = True
        if walk._left < extra:
            walk._left = self.start
            return walk._bare()
        walk._left -= extra
        return {"truncated": True, "type": self.type_name, "length": self.length, "preview": items}
