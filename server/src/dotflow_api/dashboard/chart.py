"""A workflow's runs as a small bar chart of their durations, oldest to newest.

Pure geometry over plain rows (dicts), drawn by ``_chart.html`` as inline SVG: no
script, no library. Positions across are percentages of the drawing's width, heights
are pixels, so the chart scales to any screen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from dotflow_api.dashboard.views import format_duration, format_time, status_class

#: Height of the chart's drawing area, in pixels (bars grow up from its bottom).
CHART_HEIGHT: Final = 120
#: Lowest bar drawn, in pixels, so a run of no (or unknown) duration stays visible.
MIN_BAR_HEIGHT: Final = 2.0


@dataclass(frozen=True)
class ChartBar:
    """One run in the durations chart."""

    run_id: str
    left: float
    width: float
    height: float
    failed: bool
    css: str
    label: str
    href: str

    @property
    def middle(self) -> float:
        """The bar's centre across, in percent (where a failure's mark is drawn)."""
        return round(self.left + self.width / 2, 3)


@dataclass(frozen=True)
class Chart:
    """The bars, and what the axes say: the longest duration, the first and last start."""

    bars: list[ChartBar]
    longest: str
    first: str
    last: str
    failed: int


def duration_chart(runs: Sequence[dict[str, Any]], href: Callable[[dict[str, Any]], str]) -> Chart:
    """Runs oldest to newest, left to right; a bar's height is its run's duration.

    ``runs`` come newest first (as listed); ``href(run)`` gives each bar's link.
    """
    ordered = list(runs)[::-1]
    longest = max((run.get("duration") or 0.0 for run in ordered), default=0.0)
    slot = 100 / len(ordered) if ordered else 100.0
    bars = []
    for index, run in enumerate(ordered):
        duration = run.get("duration")
        status = str(run.get("status") or "")
        height = (duration or 0.0) / (longest or 1.0) * CHART_HEIGHT
        bars.append(
            ChartBar(
                run_id=str(run.get("run_id") or ""),
                left=round(index * slot + slot * 0.15, 3),
                width=round(slot * 0.7, 3),
                height=round(max(height, MIN_BAR_HEIGHT), 2),
                failed=status == "Failed",
                css=status_class(status),
                label=f"Run started {format_time(run.get('started_at'))}: {status}, "
                f"{format_duration(duration)}",
                href=href(run),
            )
        )
    return Chart(
        bars=bars,
        longest=format_duration(longest) if ordered else "",
        first=format_time(ordered[0].get("started_at")) if ordered else "",
        last=format_time(ordered[-1].get("started_at")) if ordered else "",
        failed=sum(bar.failed for bar in bars),
    )
