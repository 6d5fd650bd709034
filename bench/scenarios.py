"""The benchmark's scenarios (issue 13): loads that do not flatter the gateway. Pure.

The main benchmark's mix is 60 % heartbeats and 5 % alarms. Three scenarios
load what a district fears instead; each runs on the durable gateway and on
the bare gmqtt relay in the same way (`bench.scenario_run`):

* `alarm-heavy`: 1,000 households and 100 checkpoints, a seeded subset of the
  district's (`AlarmHeavy`). Half the events are phone events (panic 120: 20 %,
  burglary 130: 30 %, heartbeat 602: 50 %), half vehicle passes at checkpoints
  of every class, all routed (`[routing.passes]` A, B and C, QoS 1). An acker
  (`bench.acker`) acknowledges every alarm 2 ms after it arrives; escalation
  deadlines stay on (life safety 60 s, property 300 s), so nothing should
  escalate. A sweep of rates, as the main benchmark's.
* `power-cut`: every phone (130,000) reports AC loss (301 q=1) once, spread
  over the first `half_s` (60 s), then its restore (301 q=3) once over the next
  `half_s` (`PowerCut`), while other phones send 20 panics/s throughout from a
  generator of their own (`Trickle`). Troubles and restores go to the village
  room (a restore is routed like its family, at info priority:
  devices/phone.py). `PowerCut(phones=...)` scales it down.
* `panic-storm`: 2,000 panics/s for 10 s from households drawn uniformly
  (`Trickle` over the whole district). The gateway's life-safety deadline is
  short (15 s); the acker acknowledges the panics with an even event number,
  and each of the others is owed exactly one escalation: to the bureau
  (`escalations_owed`), since a life-safety alarm already reached the village
  and the township, the chain's first two levels.

Every event number is unique in the run (`id_base + index`, as in
`bench.load`), so a phone's `seq` never repeats. What each send owes comes from
this module's statement of the routing (`bench.load.phone_topics` and
`pass_topic` with every class routed), never from the gateway's router.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import msgpack

from bench.district import ConfigVariant
from bench.load import (
    HEARTBEAT_CODE,
    PANIC_CODE,
    Home,
    Kind,
    Planned,
    Population,
    Site,
    StepSpec,
    pass_topic,
    phone_topics,
)
from simulators.plates import PlateGenerator

__all__ = [
    "AC_LOSS_CODE",
    "ALARM_HEAVY",
    "ALL_CLASSES",
    "BURGLARY_CODE",
    "NAMES",
    "PANIC_STORM",
    "POWER_CUT",
    "AlarmHeavy",
    "PowerCut",
    "Trickle",
    "arrivals",
    "escalations_owed",
    "variant",
]

ALARM_HEAVY: Final = "alarm-heavy"
POWER_CUT: Final = "power-cut"
PANIC_STORM: Final = "panic-storm"
NAMES: Final = (ALARM_HEAVY, POWER_CUT, PANIC_STORM)

AC_LOSS_CODE: Final = 301
BURGLARY_CODE: Final = 130
ALL_CLASSES: Final = frozenset({"A", "B", "C"})
_RESTORE_Q: Final = 3


def variant(name: str, *, storm_deadline_s: float = 15.0) -> ConfigVariant:
    """The gateway configuration a scenario runs with (`bench.district`)."""
    if name == ALARM_HEAVY:
        # Deadlines on, as deployed (config.generate): every alarm is acked in ms.
        return ConfigVariant(name, life_safety_s=60.0, property_s=300.0, route_c_passes=True)
    if name == POWER_CUT:
        return ConfigVariant(name)
    if name == PANIC_STORM:
        return ConfigVariant(name, life_safety_s=storm_deadline_s)
    raise ValueError(f"unknown scenario {name!r}; known: {', '.join(NAMES)}")


def arrivals(rate: float, duration_s: float, t0: float, rng: random.Random) -> list[float]:
    """Poisson arrival times at `rate` per second over [t0, t0 + duration_s)."""
    times: list[float] = []
    at = 0.0
    while True:
        at += rng.expovariate(rate)
        if at >= duration_s:
            return times
        times.append(t0 + at)


def _phone(
    base: str, home: Home, number: int, t: float, *, code: int, kind: Kind, q: int = 1
) -> Planned:
    payload = {
        "v": 1,
        "seq": number,
        "ts": t,
        "q": q,
        "code": code,
        "zone": 0 if code == HEARTBEAT_CODE else 1 + number % 8,
        "part": 1,
    }
    return Planned(
        t,
        kind,
        f"{base}/in/phone/{home.id}",
        msgpack.packb(payload),
        home.id,
        number,
        phone_topics(base, home, code),
    )


def _pass(base: str, site: Site, number: int, t: float, plate: str) -> Planned:
    payload = {
        "v": 1,
        "id": str(number),
        "type": "pass",
        "ts": t,
        "plate": plate,
        "conf": 0.93,
        "lane": 1 + number % 3,
        "dir": "in" if number % 2 else "out",
        "speed": 42.5,
    }
    topic = pass_topic(base, site, ALL_CLASSES)
    return Planned(
        t,
        Kind.PASS,
        f"{base}/in/checkpoint/{site.id}",
        msgpack.packb(payload),
        site.id,
        number,
        () if topic is None else (topic,),
    )


@dataclass(frozen=True, slots=True)
class AlarmHeavy:
    """Half phone events (panic 20 %, burglary 30 %, heartbeat 50 %), half passes at
    checkpoints of every class, all routed; from a seeded subset of the district."""

    households: int = 1000
    checkpoints: int = 100
    phone_share: float = 0.5
    panic_share: float = 0.2
    burglary_share: float = 0.3

    def devices(self, population: Population, seed: int) -> tuple[list[Home], list[Site]]:
        """The households and checkpoints of the scenario (the same for every step)."""
        rng = random.Random(f"{seed}/{ALARM_HEAVY}/devices")
        homes = rng.sample(population.homes, min(self.households, len(population.homes)))
        sites = rng.sample(population.sites, min(self.checkpoints, len(population.sites)))
        return homes, sites

    def sends(self, spec: StepSpec, population: Population) -> list[Planned]:
        """Poisson arrivals at `spec.rate` for `spec.duration_s` (see the class docstring)."""
        homes, sites = self.devices(population, spec.seed)
        rng = random.Random(f"{spec.seed}/{spec.name}/{spec.id_base}")
        plates = PlateGenerator(random.Random(spec.seed))
        plate_pool = [plates.plate() for _ in range(997)]
        base = population.base_topic
        panic_to = self.panic_share
        burglary_to = panic_to + self.burglary_share
        planned: list[Planned] = []
        for index, t in enumerate(arrivals(spec.rate, spec.duration_s, spec.t0, rng)):
            number = spec.id_base + index
            if rng.random() >= self.phone_share:
                site = rng.choice(sites)
                planned.append(_pass(base, site, number, t, plate_pool[number % 997]))
                continue
            home = rng.choice(homes)
            draw = rng.random()
            if draw < panic_to:
                planned.append(_phone(base, home, number, t, code=PANIC_CODE, kind=Kind.PANIC))
            elif draw < burglary_to:
                planned.append(_phone(base, home, number, t, code=BURGLARY_CODE, kind=Kind.ALARM))
            else:
                beat = _phone(base, home, number, t, code=HEARTBEAT_CODE, kind=Kind.HEARTBEAT)
                planned.append(beat)
        return planned


@dataclass(frozen=True, slots=True)
class PowerCut:
    """Each of the first `phones` households (config order; all of them when None)
    reports AC loss once in [t0, t0 + half_s), then its restore once in
    [t0 + half_s, t0 + 2 half_s), at uniformly random moments.

    `warm`: instead, one heartbeat from each of those phones, evenly spaced over
    the step (the gateway's supervision sees every phone before the cut, as it
    would in the field)."""

    phones: int | None = None
    half_s: float = 60.0
    warm: bool = False

    def homes(self, population: Population) -> Sequence[Home]:
        """The phones that lose power."""
        return population.homes if self.phones is None else population.homes[: self.phones]

    def sends(self, spec: StepSpec, population: Population) -> list[Planned]:
        """Troubles then restores (or the warm-up heartbeats), in time order."""
        homes = self.homes(population)
        base = population.base_topic
        if self.warm:
            gap = spec.duration_s / max(1, len(homes))
            return [
                _phone(
                    base,
                    h,
                    spec.id_base + i,
                    spec.t0 + i * gap,
                    code=HEARTBEAT_CODE,
                    kind=Kind.HEARTBEAT,
                )
                for i, h in enumerate(homes)
            ]
        rng = random.Random(f"{spec.seed}/{spec.name}/{spec.id_base}")
        moments: list[tuple[float, int, int]] = []
        for offset, q in ((0.0, 1), (self.half_s, _RESTORE_Q)):
            moments.extend(
                (spec.t0 + offset + rng.random() * self.half_s, index, q)
                for index in range(len(homes))
            )
        moments.sort()
        planned: list[Planned] = []
        for number_index, (t, index, q) in enumerate(moments):
            kind = Kind.TROUBLE if q == 1 else Kind.RESTORE
            number = spec.id_base + number_index
            planned.append(_phone(base, homes[index], number, t, code=AC_LOSS_CODE, kind=kind, q=q))
        return planned


@dataclass(frozen=True, slots=True)
class Trickle:
    """Panics (Contact ID 120) at `spec.rate`, Poisson, from households drawn
    uniformly among those after the first `skip` (all of them if none are left)."""

    skip: int = 0

    def sends(self, spec: StepSpec, population: Population) -> list[Planned]:
        """The panics, in time order."""
        homes = population.homes[self.skip :] or population.homes
        rng = random.Random(f"{spec.seed}/{spec.name}/{spec.id_base}")
        base = population.base_topic
        return [
            _phone(base, rng.choice(homes), spec.id_base + i, t, code=PANIC_CODE, kind=Kind.PANIC)
            for i, t in enumerate(arrivals(spec.rate, spec.duration_s, spec.t0, rng))
        ]


def escalations_owed(
    planned: Iterable[Planned], bureau_topic: str, acked: Iterable[int] = ()
) -> list[tuple[str, str, int]]:
    """The escalated copies a panic storm owes: one to the bureau for each panic
    whose number is not in `acked` (a life-safety alarm reached the village and
    the township already, so the chain's next level is the bureau)."""
    skip = set(acked)
    return [
        (bureau_topic, p.device, p.number)
        for p in planned
        if p.kind is Kind.PANIC and p.number not in skip
    ]
