"""Bounded serialization: huge, deep, self-referencing and non-JSON values, within the cap."""

from __future__ import annotations

import enum
import json
from datetime import datetime, timezone
from typing import Any

import attrs
import pytest

from dotflow_core import TaskStatus
from dotflow_core.serialize import (
    MAX_DEPTH,
    PREVIEW_BYTES,
    JsonSafe,
    capped_repr,
    record_to_dict,
    to_json_safe,
)
from dotflow_core.testing import sample_task_record


def encoded(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


class Visits:
    """Counts the items the walk takes from the containers below."""

    count = 0


class CountedList(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        for item in super().__iter__():
            Visits.count += 1
            yield item


class CountedDict(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        for pair in super().items():
            Visits.count += 1
            yield pair


def rows(count: int) -> CountedList:
    return CountedList(CountedDict(i=i, name=f"row-{i}") for i in range(count))


@pytest.mark.parametrize("cap", [1_000, 100_000])
def test_the_walk_is_bounded_by_the_cap_not_by_the_data(cap: int) -> None:
    visited = []
    for count in (10_000, 100_000, 300_000):
        Visits.count = 0
        result = to_json_safe(rows(count), max_bytes=cap)
        visited.append(Visits.count)
        assert len(encoded(result)) <= cap
        assert result["truncated"] is True and result["length"] == count
    # each row takes at least 20 bytes of JSON, so at most cap / 20 rows fit (3 visits each)
    assert all(v <= 3 * (min(cap, PREVIEW_BYTES) // 20 + 16) for v in visited), visited
    assert visited[0] == visited[1] == visited[2]


def test_the_walk_counts_what_it_visits() -> None:
    walk = JsonSafe(500)
    result = walk.convert(list(range(1_000_000)))
    assert result["preview"] == list(range(len(result["preview"])))
    assert walk.visited <= 500 and not walk.complete


def test_a_value_that_fits_is_kept_whole() -> None:
    value = {"a": [1, 2.5, None, True, "é\u2028"], "b": {"c": "x" * 100}}
    size = len(encoded(value))
    assert to_json_safe(value, max_bytes=size) == value
    walk = JsonSafe(size)
    walk.convert(value)
    assert walk.complete
    assert to_json_safe(value, max_bytes=size - 1) != value


def test_a_huge_string_keeps_its_first_characters_type_and_length() -> None:
    text = "abc" * 10_000_000
    result = to_json_safe(text, max_bytes=10_000)
    assert (result["truncated"], result["type"], result["length"]) == (True, "str", 30_000_000)
    assert text.startswith(result["preview"]) and len(result["preview"]) > 9_000
    assert len(encoded(result)) <= 10_000


def test_a_capped_string_counts_its_escapes() -> None:
    result = to_json_safe("é" * 100_000, max_bytes=1_000)
    assert len(encoded(result)) <= 1_000
    assert set(result["preview"]) == {"é"}


def test_a_huge_value_beside_a_small_one_keeps_the_small_one() -> None:
    value = {"big": list(range(2_000_000)), "small": "kept"}
    result = to_json_safe(value, max_bytes=200_000)
    assert result["small"] == "kept"
    assert result["big"]["truncated"] is True and result["big"]["length"] == 2_000_000


def test_deep_values_stop_at_the_depth_limit() -> None:
    deep: list[Any] = []
    node = deep
    for _ in range(10_000):
        child: list[Any] = []
        node.append(child)
        node = child
    result = to_json_safe(deep)
    text = encoded(result)
    assert b'"reason":"depth"' in text
    depth, level = 0, result
    while isinstance(level, list) and level:
        depth, level = depth + 1, level[0]
    assert depth == MAX_DEPTH


def test_a_value_holding_itself_becomes_a_cycle_marker() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    table: dict[str, Any] = {"name": "t"}
    table["self"] = table
    assert to_json_safe(loop) == [1, {"truncated": True, "type": "list", "reason": "cycle"}]
    assert to_json_safe(table)["self"]["reason"] == "cycle"
    shared = [1, 2]
    assert to_json_safe([shared, shared]) == [[1, 2], [1, 2]]  # shared is not a cycle


class Colour(enum.Enum):
    RED = "red"


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


class Hostile:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class HostileLength(list):  # type: ignore[type-arg]
    def __len__(self) -> int:
        raise RuntimeError("no len")


@attrs.frozen
class Point:
    x: int
    y: int


def test_values_json_cannot_carry_are_converted_without_raising() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    value = {
        "when": when,
        "colour": Colour.RED,
        "status": TaskStatus.COMPLETED,
        "nan": float("nan"),
        "inf": float("-inf"),
        "tuple": (1, 2),
        "set": {3},
        "bytes": b"\x00" * 10_000_000,
        "opaque": Opaque(),
        "hostile": Hostile(),
        "point": Point(1, 2),
        "huge int": 10**10_000,
        1: "int key",
    }
    result = to_json_safe(value)
    encoded(result)  # strict JSON
    assert result["when"] == when.isoformat()
    assert (result["colour"], result["status"]) == ("red", "Completed")
    assert (result["nan"], result["inf"]) == ("nan", "-inf")
    assert (result["tuple"], result["set"]) == ([1, 2], [3])
    assert result["bytes"].startswith("b'\\x00") and len(result["bytes"]) <= 2000
    assert result["opaque"] == "<opaque>"
    assert result["hostile"].startswith("<unrepresentable Hostile")
    assert result["point"] == {"x": 1, "y": 2}
    assert result["huge int"].startswith("<int of")
    assert result["1"] == "int key"
    assert to_json_safe(HostileLength([1])) == {"truncated": True}


def test_capped_repr_cuts_bytes_and_strings_before_taking_their_repr() -> None:
    assert len(capped_repr(b"x" * 50_000_000, 100)) <= 100
    assert capped_repr("y" * 50_000_000, 10) == "'yyyyyy..."


def test_record_to_dict_caps_each_field_on_its_own() -> None:
    record = attrs.evolve(
        sample_task_record("w", status=TaskStatus.COMPLETED),
        previous_context=list(range(3_000_000)),
        current_context="seven b",
    )
    result = record_to_dict(record, max_bytes=50_000)
    assert result["current_context"] == "seven b"
    assert result["previous_context"]["truncated"] is True
    assert result["status"] == "Completed"
