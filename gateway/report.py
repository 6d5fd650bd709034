"""The monthly safety report (平安报表): what each township and village did with its alarms.

`alarmgw report --config FILE --month 2026-11` reads the store (read-only: a
running gateway is not disturbed) and writes, per township and per village:
alarms by kind, acknowledgement latency percentiles, the share acknowledged
within the deadline (the red lamp, 超时亮灯), escalations, the false-alarm rate
(from the dispositions operators record when they close an alarm) and device
availability; then the league table of townships, the district's monthly
ranking. As CSV (UTF-8 with a byte-order mark, so a spreadsheet shows the
Chinese names) and as one printable HTML page with its plots inline
(`gateway/report_render.py`).

This module is the arithmetic, pure: alarm records (`gateway/core/records.py`)
in, figures out. The definitions, which the test checks against an independent
count of a simulated month:

* **An alarm of the month**: a new (not restore, not status) alarm raised
  within the month, in the district's time zone (`[district] timezone`), of any
  kind but the gateway's own interception staffing requests. It belongs to its
  household's village and township, a checkpoint's alarm to its township.
* **Acknowledgement latency**: from the first confirmed dispatch (or, if none
  was recorded, the raising) to the first acknowledgement, over the
  acknowledged alarms; percentiles by nearest rank (the smallest value with at
  least p % of values at or below it).
* **In time**: of the alarms that had a deadline, those acknowledged at most
  the deadline after they were raised.
* **Escalated**: alarms escalated at least once; `escalations` counts every climb.
* **False-alarm rate**: of the alarms closed with a disposition, those closed
  as `false_alarm`; none closed: no rate.
* **Availability**: 1 - (time the supervisor had the devices offline within
  the month) / (devices * the month), per village over its households' phones,
  per township over its phones and checkpoints. An offline period runs from a
  `device_offline` alarm's moment to its device's restore, or to the end of
  the month.
* **The league table** ranks townships by the share in time (highest first),
  then the median acknowledgement latency (lowest first), then escalations per
  alarm (fewest first); a township without an alarm with a deadline ranks last.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from config.model import Config

__all__ = [
    "Fact",
    "Figures",
    "MonthlyReport",
    "OfflinePeriod",
    "facts_from_records",
    "month_bounds",
    "monthly_report",
    "nearest_rank",
]

_NOT_COUNTED_KINDS = frozenset({"interception"})
_COUNTED_STAGES = frozenset({"new"})


@dataclass(frozen=True, slots=True)
class Fact:
    """One alarm, reduced to what the report needs."""

    alarm_id: str
    kind: str
    priority: int
    township: str
    village: str | None
    raised_at: float
    dispatched_at: float | None
    acknowledged_at: float | None
    deadline_s: float | None
    escalations: int
    disposition: str | None = None

    @property
    def ack_latency_s(self) -> float | None:
        """From the first dispatch (or the raising) to the first acknowledgement."""
        if self.acknowledged_at is None:
            return None
        start = self.dispatched_at if self.dispatched_at is not None else self.raised_at
        return max(0.0, self.acknowledged_at - start)

    @property
    def in_time(self) -> bool | None:
        """Acknowledged within its deadline (None: it had no deadline)."""
        if self.deadline_s is None:
            return None
        return (
            self.acknowledged_at is not None
            and self.acknowledged_at - self.raised_at <= self.deadline_s
        )


@dataclass(frozen=True, slots=True)
class OfflinePeriod:
    """A device the supervisor had offline, from `start` to `end` (None: not back)."""

    device_id: str
    start: float
    end: float | None


def facts_from_records(
    records: Iterable[Mapping[str, object]],
) -> tuple[list[Fact], list[OfflinePeriod]]:
    """The alarms (any month) and the devices' offline periods in the alarm records."""
    facts: list[Fact] = []
    offline: dict[str, list[tuple[float, bool]]] = {}
    for record in records:
        if record.get("t") is not None:  # an activation, not an alarm
            continue
        event = record.get("event")
        if not isinstance(event, Mapping):
            continue
        kind = str(event.get("kind"))
        stage = str(event.get("stage"))
        if kind == "device_offline":
            inner = event.get("event")
            at = inner.get("at") if isinstance(inner, Mapping) else None
            if isinstance(at, int | float):
                device = str(event.get("device_id"))
                offline.setdefault(device, []).append((float(at), stage == "new"))
        if stage not in _COUNTED_STAGES or kind in _NOT_COUNTED_KINDS:
            continue
        disposition = record.get("disposition")
        facts.append(
            Fact(
                alarm_id=str(event.get("dedup_key")),
                kind=kind,
                priority=_integer(event.get("priority"), 4),
                township=str(event.get("township") or ""),
                village=_text(event.get("village")),
                raised_at=_number(record.get("raised_at")) or 0.0,
                dispatched_at=_number(record.get("dispatched_at")),
                acknowledged_at=_number(record.get("acknowledged_at")),
                deadline_s=_number(record.get("deadline_s")),
                escalations=_integer(record.get("escalations"), 0),
                disposition=disposition if isinstance(disposition, str) else None,
            )
        )
    periods: list[OfflinePeriod] = []
    for device, changes in offline.items():
        start: float | None = None
        for at, went_offline in sorted(changes):
            if went_offline:
                if start is None:
                    start = at
            elif start is not None:
                periods.append(OfflinePeriod(device, start, at))
                start = None
        if start is not None:
            periods.append(OfflinePeriod(device, start, None))
    return facts, periods


def month_bounds(month: str, timezone: str) -> tuple[float, float]:
    """The month `YYYY-MM` in `timezone`, as Unix times [start, end); ValueError if bad."""
    try:
        first = dt.datetime.strptime(month, "%Y-%m").replace(tzinfo=ZoneInfo(timezone))
    except ValueError:
        raise ValueError(f"{month!r} is not a month (YYYY-MM, e.g. 2026-11)") from None
    following = (
        first.replace(year=first.year + 1, month=1)
        if first.month == 12
        else (first.replace(month=first.month + 1))
    )
    return first.timestamp(), following.timestamp()


def nearest_rank(values: Sequence[float], percent: float) -> float | None:
    """The smallest value with at least `percent` % of `values` at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100.0 * len(ordered)))
    return ordered[rank - 1]


@dataclass(slots=True)
class Figures:
    """One township's or village's month."""

    level: str
    """`township` or `village`."""
    id: str
    name: str
    township: str
    alarms: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    acknowledged: int = 0
    ack_p50_s: float | None = None
    ack_p90_s: float | None = None
    ack_p99_s: float | None = None
    with_deadline: int = 0
    in_time: int = 0
    escalated: int = 0
    escalations: int = 0
    closed: int = 0
    false_alarms: int = 0
    devices: int = 0
    offline_s: float = 0.0
    availability: float | None = None
    rank: int | None = None

    @property
    def in_time_share(self) -> float | None:
        """Acknowledged in time, of those with a deadline."""
        return self.in_time / self.with_deadline if self.with_deadline else None

    @property
    def false_alarm_rate(self) -> float | None:
        """False alarms, of those closed with a disposition."""
        return self.false_alarms / self.closed if self.closed else None

    @property
    def escalations_per_alarm(self) -> float | None:
        return self.escalations / self.alarms if self.alarms else None


@dataclass(frozen=True, slots=True)
class MonthlyReport:
    """The month's figures: per township (in league order) and per village."""

    district: str
    month: str
    timezone: str
    start: float
    end: float
    townships: tuple[Figures, ...]
    """In league-table order, rank 1 first."""
    villages: tuple[Figures, ...]
    kinds: tuple[str, ...]
    """Every kind seen in the month, most frequent first: the columns of "by kind"."""
    alarms: int


def monthly_report(
    config: Config,
    facts: Iterable[Fact],
    offline: Iterable[OfflinePeriod],
    month: str,
    *,
    timezone: str,
) -> MonthlyReport:
    """Every figure of the month `YYYY-MM` (see the module docstring for definitions)."""
    start, end = month_bounds(month, timezone)
    townships = {t.id: Figures("township", t.id, t.name, t.id) for t in config.townships}
    villages = {v.id: Figures("village", v.id, v.name, v.township) for v in config.villages}
    latencies: dict[str, list[float]] = {key: [] for key in (*townships, *villages)}
    kinds: Counter[str] = Counter()
    counted = 0
    for fact in facts:
        if not start <= fact.raised_at < end:
            continue
        counted += 1
        kinds[fact.kind] += 1
        units = [townships.get(fact.township)]
        if fact.village is not None:
            units.append(villages.get(fact.village))
        for unit in units:
            if unit is None:
                continue
            _count(unit, fact, latencies[unit.id])
    for unit in (*townships.values(), *villages.values()):
        values = latencies[unit.id]
        unit.ack_p50_s = nearest_rank(values, 50)
        unit.ack_p90_s = nearest_rank(values, 90)
        unit.ack_p99_s = nearest_rank(values, 99)
    _availability(config, townships, villages, offline, start=start, end=end)
    league = sorted(townships.values(), key=_league_key)
    for rank, unit in enumerate(league, start=1):
        unit.rank = rank
    return MonthlyReport(
        district=config.district_name,
        month=month,
        timezone=timezone,
        start=start,
        end=end,
        townships=tuple(league),
        villages=tuple(sorted(villages.values(), key=lambda v: (v.township, v.id))),
        kinds=tuple(kind for kind, _ in kinds.most_common()),
        alarms=counted,
    )


def _count(unit: Figures, fact: Fact, latencies: list[float]) -> None:
    unit.alarms += 1
    unit.by_kind[fact.kind] += 1
    latency = fact.ack_latency_s
    if latency is not None:
        unit.acknowledged += 1
        latencies.append(latency)
    in_time = fact.in_time
    if in_time is not None:
        unit.with_deadline += 1
        unit.in_time += in_time
    if fact.escalations:
        unit.escalated += 1
        unit.escalations += fact.escalations
    if fact.disposition is not None:
        unit.closed += 1
        unit.false_alarms += fact.disposition == "false_alarm"


def _availability(
    config: Config,
    townships: Mapping[str, Figures],
    villages: Mapping[str, Figures],
    offline: Iterable[OfflinePeriod],
    *,
    start: float,
    end: float,
) -> None:
    """Availability per village (its phones) and per township (phones and checkpoints)."""
    home_of: dict[str, tuple[str, str | None]] = {}
    for household in config.households:
        home_of[household.id] = (household.township, household.village)
        townships[household.township].devices += 1
        villages[household.village].devices += 1
    for site in config.checkpoints:
        home_of[site.id] = (site.township, None)
        townships[site.township].devices += 1
    for period in offline:
        place = home_of.get(period.device_id)
        if place is None:
            continue
        stop = end if period.end is None else min(period.end, end)
        seconds = max(0.0, stop - max(period.start, start))
        if not seconds:
            continue
        township, village = place
        townships[township].offline_s += seconds
        if village is not None:
            villages[village].offline_s += seconds
    span = end - start
    for unit in (*townships.values(), *villages.values()):
        if unit.devices:
            unit.availability = 1.0 - unit.offline_s / (unit.devices * span)


def _league_key(unit: Figures) -> tuple[int, float, float, float, str]:
    share = unit.in_time_share
    median = unit.ack_p50_s
    per_alarm = unit.escalations_per_alarm
    return (
        share is None,
        -(share or 0.0),
        median if median is not None else math.inf,
        per_alarm if per_alarm is not None else math.inf,
        unit.id,
    )


def _integer(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
