"""The monthly report (gateway/report.py, report_render.py, `alarmgw report`).

The main test simulates November 2026 in the district of `config.generate`
(20 townships, 270 villages, 130,000 households): seeded alarms of four kinds
from households all over it, operators acknowledging most of them after
varied delays (some past the deadline, some never), phones falling silent and
coming back (one since October, some never). The events go through the real
core and journal into a real SQLite store; `alarmgw report` reads it back.
Every figure is then checked against a count the test keeps itself, from what
it did, by the report's written definitions — not by its code.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from config.generate import generate_district
from config.loader import load_config
from config.model import Config, Priority
from gateway.adapters.journal import Journal
from gateway.adapters.outbox import MemoryOutbox
from gateway.adapters.store import Store
from gateway.cli import main
from gateway.core.pipeline import Core, Dispatch
from gateway.report import Fact, OfflinePeriod, month_bounds, monthly_report, nearest_rank
from tests.factories import phone_event

MONTH = "2026-11"
ZONE = "Asia/Shanghai"
KINDS = {120: "panic", 130: "burglary", 110: "fire", 301: "trouble"}
CONFIRM_S = 0.05
"""How long after its raising the broker confirms each dispatch."""


@dataclass
class Raised:
    """One alarm the simulation raised, and when (if ever) it was acknowledged."""

    alarm_id: str
    kind: str
    home: str
    at: float
    deadline: float | None
    ack: float | None = None


@dataclass
class Truth:
    """What the simulation did, kept by the test."""

    alarms: list[Raised] = field(default_factory=list)
    heard: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


@dataclass(frozen=True)
class Moment:
    """One thing the simulation does: an alarm, an ack, or a phone heard."""

    at: float
    what: str
    home: str
    seq: int = 0
    code: int = 0


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> Config:
    folder = tmp_path_factory.mktemp("district")
    toml, households = generate_district(seed=3)
    (folder / "district.toml").write_text(toml, encoding="utf-8")
    (folder / "households.csv").write_text(households, encoding="utf-8")
    return load_config(folder / "district.toml")


def _plan(config: Config, start: float, end: float, seed: int) -> list[Moment]:
    """The month's moments, in time order."""
    rng = random.Random(seed)
    homes = [h.id for h in config.households]
    moments: list[Moment] = []
    for seq in range(1, 701):
        at = rng.uniform(start - 2 * 86400, end + 86400)  # a few outside the month too
        home = rng.choice(homes)
        code = rng.choice(list(KINDS))
        moments.append(Moment(at, "alarm", home, seq, code))
        if rng.random() < 0.85:
            deadline = config.escalation.deadline_s.get(PRIORITIES[code]) or 300.0
            # Most in time, a fifth late; never exactly on the deadline.
            if rng.random() < 0.2:
                delay = rng.uniform(1.1, 3.0) * deadline
            else:
                delay = rng.uniform(2, 0.9 * deadline)
            moments.append(Moment(at + delay, "ack", home, seq))
    # Phones that fall silent and come back (one since October), or never do.
    timeout = config.supervision.phone_timeout_s
    for index in range(40):
        home = rng.choice(homes)
        first = start - 3 * 86400 if index == 0 else rng.uniform(start, end - 86400)
        moments.append(Moment(first, "heard", home))
        if index % 5 != 4:  # four in five come back
            moments.append(Moment(first + timeout + rng.uniform(600, 5 * 86400), "heard", home))
    return sorted(moments, key=lambda m: m.at)


PRIORITIES = {
    120: Priority.LIFE_SAFETY,
    110: Priority.LIFE_SAFETY,
    130: Priority.PROPERTY,
    301: Priority.TROUBLE,
}


async def _simulate(config: Config, store_path: Path, truth: Truth) -> None:
    start, end = month_bounds(MONTH, ZONE)
    core = Core(config)
    timeline = _plan(config, start, end, seed=11)
    async with Store(store_path) as store:
        journal = Journal(store, MemoryOutbox())
        wakeups: list[float] = []

        async def tick(now: float) -> None:
            outcome = core.tick(now)
            for dispatch in outcome.dispatches:
                core.dispatched(dispatch, now + CONFIRM_S)
            if outcome.alarms:
                await journal.record([], alarms=outcome.alarms, now=now)

        async def confirm(dispatches: tuple[Dispatch, ...], now: float) -> None:
            for dispatch in dispatches:
                core.dispatched(dispatch, now + CONFIRM_S)

        raised: dict[tuple[str, int], Raised] = {}
        for moment in timeline:
            at, home = moment.at, moment.home
            # Time alone first: offline devices and escalations due before this moment.
            while True:
                due = core.next_deadline()
                if due is None or due >= at:
                    break
                await tick(due)
            if moment.what == "alarm":
                event = phone_event(
                    config, home, seq=moment.seq, code=moment.code, ts=at, ingress_ts=at
                )
                outcome = core.accept(event, at)
                await journal.record([], seen=[event], alarms=outcome.alarms, now=at)
                await confirm(outcome.dispatches, at)
                truth.heard[home].append(at)
                deadline = config.escalation.deadline_s.get(event.priority)
                record = Raised(event.alarm_id, KINDS[moment.code], home, at, deadline)
                raised[(home, moment.seq)] = record
                truth.alarms.append(record)
            elif moment.what == "ack":
                record = raised[(home, moment.seq)]
                answer = core.acknowledge(record.alarm_id, "operator", at)
                assert answer.known
                alarm = core.find_alarm(record.alarm_id)
                assert alarm is not None
                await journal.record([], alarms=[alarm], now=at)
                record.ack = at
            else:
                seq = 10_000 + len(wakeups)
                heartbeat = phone_event(config, home, seq=seq, code=602, ts=at, ingress_ts=at)
                wakeups.append(at)
                outcome = core.accept(heartbeat, at)
                if outcome.alarms:
                    await journal.record([], alarms=outcome.alarms, now=at)
                await confirm(outcome.dispatches, at)
                truth.heard[home].append(at)
        # The rest of the month, and a day after it.
        while True:
            due = core.next_deadline()
            if due is None or due >= end + 86400:
                break
            await tick(due)


@dataclass
class Want:
    """One township's or village's figures, by the report's definitions."""

    alarms: int
    by_kind: Counter[str]
    acknowledged: int
    percentiles: dict[int, float | None]
    with_deadline: int
    in_time: int
    escalated: int
    devices: int
    availability: float


def _rank(ordered: list[float], percent: int) -> float | None:
    if not ordered:
        return None
    return ordered[max(1, math.ceil(percent / 100 * len(ordered))) - 1]


def _expected(config: Config, truth: Truth) -> dict[str, Want]:
    """The figures by the report's definitions, from the simulation's own record."""
    start, end = month_bounds(MONTH, ZONE)
    timeout = config.supervision.phone_timeout_s
    home_of = {h.id: h for h in config.households}
    alarms = list(truth.alarms)
    # Every silence longer than the timeout is a device_offline alarm when it began.
    offline: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for home, heard in truth.heard.items():
        times = sorted(heard)
        for before, after in zip(times, [*times[1:], math.inf], strict=True):
            if after - before > timeout:
                went = before + timeout
                offline[home].append((went, after))
                alarms.append(Raised(f"offline {home} {went}", "device_offline", home, went, None))
    units: dict[str, list[Raised]] = defaultdict(list)
    for alarm in alarms:
        if start <= alarm.at < end:
            household = home_of[alarm.home]
            units[household.township].append(alarm)
            units[household.village].append(alarm)
    devices: Counter[str] = Counter()
    down: defaultdict[str, float] = defaultdict(float)
    for household in config.households:
        devices[household.township] += 1
        devices[household.village] += 1
    for site in config.checkpoints:
        devices[site.township] += 1
    for home, periods in offline.items():
        for went, back in periods:
            seconds = max(0.0, min(back, end) - max(went, start))
            down[home_of[home].township] += seconds
            down[home_of[home].village] += seconds
    wants: dict[str, Want] = {}
    for unit in [t.id for t in config.townships] + [v.id for v in config.villages]:
        mine = units.get(unit, [])
        latencies = sorted(a.ack - (a.at + CONFIRM_S) for a in mine if a.ack is not None)
        with_deadline = [a for a in mine if a.deadline is not None]
        in_time = [
            a
            for a in with_deadline
            if a.ack is not None and a.deadline is not None and a.ack - a.at <= a.deadline
        ]
        # Life-safety and property alarms reach the township at once, so a late
        # or missing ack climbs once: to the bureau, at the deadline.
        wants[unit] = Want(
            alarms=len(mine),
            by_kind=Counter(a.kind for a in mine),
            acknowledged=len(latencies),
            percentiles={p: _rank(latencies, p) for p in (50, 90, 99)},
            with_deadline=len(with_deadline),
            in_time=len(in_time),
            escalated=len(with_deadline) - len(in_time),
            devices=devices[unit],
            availability=1 - down[unit] / (devices[unit] * (end - start)),
        )
    return wants


def _read(path: Path) -> dict[str, dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return {row["编号 id"]: row for row in csv.DictReader(handle)}


@pytest.mark.slow
def test_a_simulated_month_matches_an_independent_count(
    district: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_path = tmp_path / "store.sqlite"
    truth = Truth()
    asyncio.run(_simulate(district, store_path, truth))
    expected = _expected(district, truth)
    out = tmp_path / "report"
    code = main(
        ["report", "--config", district.source, "--month", MONTH, "--out", str(out),
         "--store", str(store_path)]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"report {MONTH} ({ZONE}" in printed
    townships, villages = _read(out / "townships.csv"), _read(out / "villages.csv")
    assert set(townships) == {t.id for t in district.townships}
    assert set(villages) == {v.id for v in district.villages}
    total = 0
    for unit, row in (*townships.items(), *villages.items()):
        want = expected[unit]
        assert int(row["警情 alarms"]) == want.alarms, unit
        for kind, count in want.by_kind.items():
            assert int(row[kind]) == count, (unit, kind)
        assert int(row["已确认 acknowledged"]) == want.acknowledged, unit
        for percent, value in want.percentiles.items():
            got = row[f"确认时长 p{percent} (s)"]
            if value is None:
                assert got == "", (unit, percent)
            else:
                assert float(got) == pytest.approx(value, abs=0.051), (unit, percent)
        assert int(row["限时警情 with a deadline"]) == want.with_deadline, unit
        assert int(row["按时确认 in time"]) == want.in_time, unit
        assert int(row["超时升级 escalated"]) == want.escalated, unit
        assert int(row["设备 devices"]) == want.devices, unit
        assert float(row["在线率 availability"]) == pytest.approx(want.availability, abs=1e-5)
        assert row["误报率 false-alarm rate"] == ""  # nobody closed an alarm with a disposition
        total += int(row["警情 alarms"]) if unit in townships else 0
    assert total == sum(expected[t].alarms for t in townships)
    # Most of the 700 alarms fall in November; each sender's phone then falls silent
    # (no heartbeats here), so device_offline troubles come on top.
    assert total > 500
    assert {k for e in expected.values() for k in e.by_kind} == {*KINDS.values(), "device_offline"}

    # The league table: by in-time share, then median ack time, then escalations per alarm.
    def key(unit: str) -> tuple[float, float]:
        want = expected[unit]
        share = want.in_time / want.with_deadline if want.with_deadline else -1.0
        median = want.percentiles[50]
        return (-share, median if median is not None else math.inf)

    order = sorted(townships, key=lambda unit: int(townships[unit]["排名 rank"]))
    assert [int(townships[u]["排名 rank"]) for u in order] == list(range(1, len(order) + 1))
    assert [key(u) for u in order] == sorted(key(u) for u in order)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "平安报表" in page
    assert "League table" in page
    assert page.count("data:image/png;base64,") == 3
    assert all(f">{t.name}<" in page for t in district.townships)


def test_false_alarm_rate_counts_the_closed_ones(district: Config) -> None:
    """Of the alarms closed with a disposition, the false ones; none closed: no rate."""
    start, _ = month_bounds(MONTH, ZONE)
    village = district.villages[0]
    facts = [
        Fact(f"a{n}", "burglary", 2, village.township, village.id, start + n, start + n, None,
             None, 0, disposition)
        for n, disposition in enumerate(["false_alarm", "real", "false_alarm", None, "test"])
    ]  # fmt: skip
    report = monthly_report(district, facts, [], MONTH, timezone=ZONE)
    (row,) = [v for v in report.villages if v.id == village.id]
    assert (row.closed, row.false_alarms, row.false_alarm_rate) == (4, 2, 0.5)
    other = next(v for v in report.villages if v.id != village.id)
    assert other.false_alarm_rate is None


def test_month_bounds_are_local_midnights() -> None:
    start, end = month_bounds("2026-12", ZONE)
    zone = ZoneInfo(ZONE)
    assert dt.datetime.fromtimestamp(start, zone) == dt.datetime(2026, 12, 1, tzinfo=zone)
    assert dt.datetime.fromtimestamp(end, zone) == dt.datetime(2027, 1, 1, tzinfo=zone)
    with pytest.raises(ValueError, match="not a month"):
        month_bounds("2026-13", ZONE)


def test_nearest_rank() -> None:
    assert nearest_rank([], 50) is None
    assert nearest_rank([3.0, 1.0, 2.0], 50) == 2.0
    assert nearest_rank([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert nearest_rank([1.0, 2.0, 3.0, 4.0], 99) == 4.0
    assert nearest_rank([5.0], 1) == 5.0


def test_offline_periods_are_clipped_to_the_month(district: Config) -> None:
    start, end = month_bounds(MONTH, ZONE)
    village = district.villages[0]
    home = next(h for h in district.households if h.village == village.id)
    periods = [
        OfflinePeriod(home.id, start - 3600, start + 3600),
        OfflinePeriod(home.id, end - 60, None),
    ]
    report = monthly_report(district, [], periods, MONTH, timezone=ZONE)
    (row,) = [v for v in report.villages if v.id == village.id]
    assert row.offline_s == 3600 + 60
    assert row.availability == pytest.approx(1 - 3660 / (row.devices * (end - start)))


def test_bad_month_and_missing_store_are_usage_errors(
    district: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--config", district.source, "--month", "11-2026"]) == 2
    assert "--month: '11-2026' is not a month" in capsys.readouterr().err
    missing = tmp_path / "nope.sqlite"
    args = ["report", "--config", district.source, "--month", MONTH, "--store", str(missing)]
    assert main(args) == 2
    assert "no store at" in capsys.readouterr().err
