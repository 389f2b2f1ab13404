"""A task's contexts as JSON for its bodies: each within its own cap, each value encoded once.

Records share the step's values by reference (the engine never copies them), so
the ``previous_context`` of task N+1 is the very object that was the
``current_context`` of task N, and every event of a task carries the same
objects. :class:`ContextEncoder` remembers the JSON of each value it encoded, by
identity, so a context is walked once however many bodies carry it. The walk is
:func:`dotflow_core.serialize.to_json_safe`'s: bounded by the cap, never by the
data. It runs where bodies are built: on the delivery workers (or the outbox
spooling them), never on the workflow's thread.
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from collections import OrderedDict
from typing import Any, Final

from dotflow_core.plugin import DEFAULT_MAX_BYTES, JsonSafe

#: Largest JSON one context takes in a body; a bigger one becomes a ``truncated`` marker
#: with a preview (see :mod:`dotflow_core.serialize`).
CONTEXT_MAX_BYTES: Final = DEFAULT_MAX_BYTES
#: Most encoded bytes remembered at once; the oldest are forgotten first.
CACHE_MAX_BYTES: Final = 64_000_000
#: Values cheaper to encode than to look up.
_CHEAP: Final = (type(None), bool, int, float)
_CHEAP_TEXT: Final = 256


def encode(value: Any) -> bytes:
    """Compact JSON bytes; ASCII-escaped so that even lone surrogates encode."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def encode_within(value: Any, budget: int) -> bytes:
    """The JSON of ``value`` in at most ``budget`` bytes (a marker with a preview if need be)."""
    budget = max(budget, 0)
    while True:
        data = encode(JsonSafe(budget).convert(value))
        if len(data) <= budget or budget == 0:
            return data
        budget //= 2  # not expected (the walk counts exactly); never loop long


class _Entry:
    __slots__ = ("data", "lock", "value", "workflow_id")

    def __init__(self, value: Any, workflow_id: str) -> None:
        self.value = value  # held, so that its id cannot be reused while remembered
        self.workflow_id = workflow_id
        self.lock = threading.Lock()
        self.data: bytes | None = None


class ContextEncoder:
    """Encodes contexts within a byte budget, each value once (by identity).

    Thread-safe: two workers building bodies that carry the same value wait for
    one encoding. :attr:`encodings` counts the walks made (for tests and
    diagnostics). What a workflow's values encoded to is kept until
    :meth:`forget` (the provider calls it when the workflow is flushed), or
    until :data:`CACHE_MAX_BYTES` makes room for newer ones.
    """

    def __init__(self, max_bytes: int = CACHE_MAX_BYTES) -> None:
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._bytes = 0
        self.encodings = 0
        _ENCODERS.add(self)

    def encode(self, value: Any, budget: int, workflow_id: str) -> bytes:
        """The JSON of ``value`` within ``budget`` bytes, reused when it was encoded before."""
        if type(value) in _CHEAP or (type(value) is str and len(value) <= _CHEAP_TEXT):
            return encode_within(value, budget)
        with self._lock:
            entry = self._entries.get(id(value))
            if entry is None or entry.value is not value:
                entry = self._entries[id(value)] = _Entry(value, workflow_id)
            else:
                self._entries.move_to_end(id(value))
        with entry.lock:
            data = entry.data
            if data is not None and len(data) <= budget:
                return data
            data = encode_within(value, budget)
            previous = len(entry.data) if entry.data is not None else 0
            entry.data = data
        with self._lock:
            self.encodings += 1
            if self._entries.get(id(value)) is entry:
                self._bytes += len(data) - previous
            while self._bytes > self._max_bytes and len(self._entries) > 1:
                _, oldest = self._entries.popitem(last=False)
                self._bytes -= len(oldest.data or b"")
        return data

    def forget(self, workflow_id: str) -> None:
        """Drop what the values of ``workflow_id`` encoded to (and the references to them)."""
        with self._lock:
            for key in [k for k, e in self._entries.items() if e.workflow_id == workflow_id]:
                self._bytes -= len(self._entries.pop(key).data or b"")

    def __len__(self) -> int:
        return len(self._entries)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._entries = OrderedDict()
        self._bytes = 0


_ENCODERS: weakref.WeakSet[ContextEncoder] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for encoder in list(_ENCODERS):
        encoder._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
