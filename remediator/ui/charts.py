"""The playbooks page's bar charts: a week of decisions per playbook, as geometry for an inline SVG.

Computed here, not in the template, so the template only places rectangles; and drawn as SVG
attributes (no ``style``), which the page's Content-Security-Policy allows without any inline style.
Each day's bar stacks the executions (``executed``) under everything else the playbook decided
(refusals, dry runs, approvals waiting): "did it act, and how often did it hold back".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from remediator.ports import DecisionCount

#: Days in a chart, today (UTC) included.
DAYS = 7
#: The chart's drawing area, in SVG user units (CSS pixels at scale 1).
HEIGHT = 40
BAR = 14
GAP = 4
WIDTH = DAYS * (BAR + GAP)

EXECUTED = "executed"


@dataclass(frozen=True)
class Bar:
    """One day: its counts, and where its two stacked rectangles go."""

    day: str
    executed: int
    other: int
    x: int
    executed_y: float
    executed_height: float
    other_y: float
    other_height: float

    @property
    def total(self) -> int:
        return self.executed + self.other


def first_day(now: datetime) -> datetime:
    """Midnight UTC of the chart's first day: what the grouped query counts from."""
    start = now.astimezone(UTC).date() - timedelta(days=DAYS - 1)
    return datetime(start.year, start.month, start.day, tzinfo=UTC)


def week(counts: Iterable[DecisionCount], today: date) -> dict[str, list[Bar]]:
    """Per playbook that decided anything in the week, its seven bars, oldest first, scaled to the
    busiest day of all the charts (so two playbooks' bars compare at a glance)."""
    days = [(today - timedelta(days=DAYS - 1 - i)).isoformat() for i in range(DAYS)]
    tally: dict[str, dict[str, list[int]]] = {}
    for c in counts:
        if c.day not in days:  # the query counts from the first day on; a later day is the clock's business
            continue
        executed_other = tally.setdefault(c.playbook, {}).setdefault(c.day, [0, 0])
        executed_other[0 if c.kind == EXECUTED else 1] += c.count
    busiest = max((e + o for per_day in tally.values() for e, o in per_day.values()), default=0)
    scale = HEIGHT / busiest if busiest else 0.0
    charts: dict[str, list[Bar]] = {}
    for playbook, per_day in tally.items():
        bars = []
        for i, day in enumerate(days):
            executed, other = per_day.get(day, [0, 0])
            eh, oh = executed * scale, other * scale
            bars.append(Bar(day, executed, other, i * (BAR + GAP), HEIGHT - eh, eh, HEIGHT - eh - oh, oh))
        charts[playbook] = bars
    return charts
