"""What the templates draw: durations and times as text, and a run's timeline.

Pure functions over plain rows (dicts), so the geometry is tested without a browser.
Positions are percentages of the drawing's width: the SVG scales to any screen
without a script and without inline styles (the pages' CSP allows none).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

#: Statuses after which nothing changes any more (the page stops refreshing).
FINAL_STATUSES: Final = frozenset({"Completed", "Failed"})
#: Narrowest bar drawn, in percent, so an instant task stays visible and clickable.
MIN_BAR_PERCENT: Final = 0.6
#: Characters of a context shown on a task's page before it is cut.
CONTEXT_PREVIEW_CHARS: Final = 4000

_STATUS_CLASSES: Final = {
    "Completed": "completed",
    "Failed": "failed",
    "In progress": "progress",
    "Retry": "retry",
    "Not started": "waiting",
    "Paused": "waiting",
}


def status_class(status: str | None) -> str:
    """The CSS class suffix of a status (``st-<suffix>``)."""
    return _STATUS_CLASSES.get(status or "", "other")


def is_final(status: str | None) -> bool:
    """True once a workflow or run cannot change any more."""
    return status in FINAL_STATUSES


def format_duration(seconds: float | None) -> str:
    """``0.25 s``, ``12.0 s``, ``3 min 05 s``, ``2 h 04 min``; an en dash when unknown."""
    if seconds is None:
        return "\u2013"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_time(value: datetime | None) -> str:
    """A UTC timestamp to the second, ``2026-12-03 08:01:02 UTC``; an en dash when unknown."""
    if value is None:
        return "\u2013"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def preview(value: Any, limit: int = CONTEXT_PREVIEW_CHARS) -> tuple[str, bool]:
    """A context as indented JSON text, cut at ``limit`` characters; and whether it was cut."""
    if value is None:
        return "null", False
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)
    if len(text) <= limit:
        return text, False
    return text[:limit], True


def first_line(text: str | None, limit: int = 200) -> str:
    """The first non-blank line of ``text``, cut at ``limit`` characters."""
    for line in (text or "").splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 1] + "\u2026"
    return ""


def attempt_errors(value: Any) -> list[dict[str, Any]]:
    """A task's stored errors, one per failed attempt, in attempt order (others skipped)."""
    if not isinstance(value, list):
        return []
    errors = [item for item in value if isinstance(item, dict)]
    return sorted(errors, key=lambda item: item.get("attempt") or 0)


#: The timeline's geometry, in pixels.
ROW_HEIGHT: Final = 26
BAR_HEIGHT: Final = 18
LANE_HEADER: Final = 20
AXIS_HEIGHT: Final = 20


@dataclass(frozen=True)
class Bar:
    """One task on the timeline."""

    task_id: int
    name: str
    status: str
    css: str
    lane: int
    row: int
    left: float
    width: float
    retries: int
    duration: str
    started: str

    @property
    def label(self) -> str:
        """What a screen reader and the tooltip say about the bar."""
        retry = (
            f", {self.retries} retr{'y' if self.retries == 1 else 'ies'}" if self.retries else ""
        )
        return f"Task {self.task_id} {self.name}: {self.status}, {self.duration}{retry}"


@dataclass(frozen=True)
class Lane:
    """A group's lane: its name, its first row and how many rows its bars need."""

    name: str
    first_row: int
    rows: int


@dataclass(frozen=True)
class Timeline:
    """A run's tasks as bars in lanes (one lane per group), over ``span`` seconds."""

    lanes: list[Lane]
    bars: list[Bar]
    span: float
    unplaced: int
    ticks: list[tuple[float, str]]

    @property
    def rows(self) -> int:
        """Rows in the drawing, over all lanes."""
        return sum(lane.rows for lane in self.lanes)

    def lane_y(self, index: int) -> int:
        """Top of lane ``index`` in pixels (its name is drawn there)."""
        return self.lanes[index].first_row * ROW_HEIGHT + index * LANE_HEADER + AXIS_HEIGHT

    def bar_y(self, bar: Bar) -> int:
        """Top of ``bar`` in pixels."""
        lane = self.lanes[bar.lane]
        return self.lane_y(bar.lane) + LANE_HEADER + (bar.row - lane.first_row) * ROW_HEIGHT

    @property
    def height(self) -> int:
        """The drawing's height in pixels: axis, lane headers and rows."""
        return AXIS_HEIGHT + len(self.lanes) * LANE_HEADER + self.rows * ROW_HEIGHT + 4


def timeline(tasks: Sequence[dict[str, Any]], now: datetime) -> Timeline:
    """Place each started task from its start to its finish (or ``now`` while it runs).

    Tasks of one group share a lane, each on its own row in the order they started, so
    no bar or label hides another.
    """
    started = sorted(
        (task for task in tasks if task.get("started_at") is not None),
        key=lambda task: (task["started_at"], task["task_id"]),
    )
    if not started:
        return Timeline(lanes=[], bars=[], span=0.0, unplaced=len(tasks), ticks=[])
    origin = min(task["started_at"] for task in started)
    ends = [_end(task, now) for task in started]
    span = max((end - origin).total_seconds() for end in ends) or 1e-3
    groups: dict[str, list[int]] = {}  # per group: its tasks' ids, by start
    for task in started:
        groups.setdefault(task.get("group_name") or "default", []).append(task["task_id"])
    lanes, first = [], 0
    row_of: dict[int, int] = {}
    for name, ids in groups.items():
        lanes.append(Lane(name=name, first_row=first, rows=len(ids)))
        row_of.update((task_id, first + offset) for offset, task_id in enumerate(ids))
        first += len(ids)
    lane_of = {lane.name: index for index, lane in enumerate(lanes)}
    bars = []
    for task, end in sorted(zip(started, ends, strict=True), key=lambda pair: pair[0]["task_id"]):
        left = (task["started_at"] - origin).total_seconds() / span * 100
        width = max((end - task["started_at"]).total_seconds() / span * 100, MIN_BAR_PERCENT)
        left = min(left, 100 - MIN_BAR_PERCENT)
        lane = lane_of[task.get("group_name") or "default"]
        bars.append(
            Bar(
                task_id=int(task["task_id"]),
                name=str(task.get("name") or ""),
                status=str(task.get("status") or ""),
                css=status_class(task.get("status")),
                lane=lane,
                row=row_of[task["task_id"]],
                left=round(left, 3),
                width=round(min(width, 100 - left), 3),
                retries=int(task.get("retry_count") or 0),
                duration=format_duration(_seconds(task, end)),
                started=format_time(task["started_at"]),
            )
        )
    return Timeline(
        lanes=lanes,
        bars=bars,
        span=span,
        unplaced=len(tasks) - len(started),
        ticks=_ticks(span),
    )


def _end(task: dict[str, Any], now: datetime) -> datetime:
    finished: datetime | None = task.get("finished_at")
    if finished is not None and finished >= task["started_at"]:
        return finished
    return max(now, task["started_at"])


def _seconds(task: dict[str, Any], end: datetime) -> float:
    duration = task.get("duration")
    if isinstance(duration, (int, float)):
        return float(duration)
    return (end - task["started_at"]).total_seconds()


def _ticks(span: float, count: int = 4) -> list[tuple[float, str]]:
    """Evenly spaced axis labels: (percent, text)."""
    return [
        (index * 100 / count, format_duration(span * index / count)) for index in range(count + 1)
    ]
