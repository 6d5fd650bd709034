"""The benchmark's load: a seeded open-loop schedule and what each send must produce.

Pure (no clock, no I/O): the coordinator and the generator process both call
`schedule(spec, population)` and get the same events, so the coordinator knows
exactly which sink messages every send owes without being told by the
generator.

The mix (docs/benchmark.md, "Load"): of every 100 events, 60 are phone
heartbeats (Contact ID 602 periodic test: they feed supervision and are
dispatched nowhere), 30 are vehicle passes at A- or B-class checkpoints (to the
township's passes topic), 5 are passes at C-class checkpoints (dispatched
nowhere by default), and 5 are phone alarms: half life safety (panic 120, fire
110, medical 100, duress 121; to the village room, the township centre and the
ten-household group), a quarter property (burglary 130; village and township),
a quarter trouble (AC loss 301, low battery 302; the village room). That is
0.4125 sink messages per event. Arrivals are Poisson (many independent devices),
households and checkpoints drawn uniformly.

Expected sinks come from this module's own statement of the contract's routing
defaults (CONTRACT.md, config/examples/demo.toml `[routing]`), not from the
gateway's router: an independent oracle, which the bare relays use too.

Identity: every event gets a number `id_base + index`, unique across a whole
benchmark run; a phone sends it as `seq`, a checkpoint as its record `id`. The
sink reads it back from the dispatched map (`event.seq` / `event.id`), and
`step_of(number)` tells which step a late arrival belonged to.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

import msgpack

from config.model import CheckpointClass, Config
from simulators.plates import PlateGenerator

__all__ = [
    "ALARM_CODES",
    "DEFAULT_MIX",
    "HEARTBEAT_CODE",
    "ID_SPAN",
    "Home",
    "Kind",
    "Mix",
    "Planned",
    "Population",
    "Scenario",
    "Site",
    "StepSpec",
    "expected_count",
    "pass_topic",
    "phone_topics",
    "schedule",
    "step_of",
]

ID_SPAN: Final = 10_000_000
"""Event numbers of one step lie in [id_base, id_base + ID_SPAN)."""
HEARTBEAT_CODE: Final = 602
PANIC_CODE: Final = 120

# Contact ID code → routing roles under the default policy (PROTOCOLS.md code
# families; the project's policy: 100-129 life safety, 130-149 property but 137
# tamper is a trouble, 3xx trouble, 602 heartbeat).
_LIFE_SAFETY: Final = ("village", "township", "group")
_PROPERTY: Final = ("village", "township")
_TROUBLE: Final = ("village",)
_ROLES_BY_CODE: Final[Mapping[int, tuple[str, ...]]] = {
    100: _LIFE_SAFETY,
    110: _LIFE_SAFETY,
    120: _LIFE_SAFETY,
    121: _LIFE_SAFETY,
    130: _PROPERTY,
    301: _TROUBLE,
    302: _TROUBLE,
    HEARTBEAT_CODE: (),
}
ALARM_CODES: Final[tuple[tuple[int, int], ...]] = (
    # (code, weight out of 100): half life safety, a quarter property, a quarter trouble
    (120, 20),
    (110, 10),
    (100, 10),
    (121, 10),
    (130, 25),
    (301, 15),
    (302, 10),
)
_ROUTED_CLASSES: Final = frozenset({CheckpointClass.A.value, CheckpointClass.B.value})


class Kind(enum.StrEnum):
    """What an event is, for reporting latency and loss per kind."""

    HEARTBEAT = "heartbeat"
    PASS = "pass"  # noqa: S105 - a vehicle pass, not a password
    PASS_UNROUTED = "pass_unrouted"  # noqa: S105
    ALARM = "alarm"
    PANIC = "panic"
    TROUBLE = "trouble"
    """A trouble raised (the power cut's AC loss, Contact ID 301 q=1)."""
    RESTORE = "restore"
    """A trouble's restore (Contact ID 301 q=3)."""


@dataclass(frozen=True, slots=True)
class Home:
    """A household with an alarm phone and the places its alarms go."""

    id: str
    village: str
    township: str
    group: str


@dataclass(frozen=True, slots=True)
class Site:
    """A checkpoint: its township (passes go there) and class (A/B routed, C not)."""

    id: str
    township: str
    cls: str


@dataclass(frozen=True, slots=True)
class Population:
    """The district's devices, in config order."""

    homes: tuple[Home, ...]
    sites: tuple[Site, ...]
    base_topic: str = "alarmgw"

    @classmethod
    def from_config(cls, config: Config) -> Population:
        """Households and checkpoints of a loaded configuration."""
        homes = tuple(Home(h.id, h.village, h.township, h.group) for h in config.households)
        sites = tuple(Site(c.id, c.township, c.cls.value) for c in config.checkpoints)
        return cls(homes, sites, config.mqtt.base_topic)

    @property
    def routed_sites(self) -> tuple[Site, ...]:
        """Checkpoints whose passes are dispatched (A and B)."""
        return tuple(s for s in self.sites if s.cls in _ROUTED_CLASSES)

    @property
    def unrouted_sites(self) -> tuple[Site, ...]:
        """Checkpoints whose passes go nowhere by default (C)."""
        return tuple(s for s in self.sites if s.cls not in _ROUTED_CLASSES)


@dataclass(frozen=True, slots=True)
class Mix:
    """Shares of each kind of event; they need not sum to 1 (they are weights)."""

    heartbeat: float = 0.60
    routed_pass: float = 0.30
    unrouted_pass: float = 0.05
    alarm: float = 0.05
    panic: float = 0.0

    def __post_init__(self) -> None:
        weights = (self.heartbeat, self.routed_pass, self.unrouted_pass, self.alarm, self.panic)
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"mix weights must be >= 0 and not all 0: {weights}")

    def messages_per_event(self) -> float:
        """Sink messages one event produces on average."""
        total = self.heartbeat + self.routed_pass + self.unrouted_pass + self.alarm + self.panic
        weight = sum(w for _, w in ALARM_CODES)
        per_alarm = sum(len(_ROLES_BY_CODE[c]) * w for c, w in ALARM_CODES) / weight
        return (self.routed_pass + self.alarm * per_alarm + self.panic * 3) / total


DEFAULT_MIX: Final = Mix()


class Scenario(Protocol):
    """A load of its own (`bench.scenarios`): `schedule` then gives its sends instead of
    the mix's. Implementations are frozen dataclasses, so a `StepSpec` holding one
    still pickles to the generator process."""

    def sends(self, spec: StepSpec, population: Population) -> list[Planned]:
        """Every send of the step, in time order; the same spec gives the same list."""
        ...


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step of offered load: `rate` events/s for `duration_s` from epoch `t0`.

    `poisson` False spaces events evenly. `every_home_once` sends phone events to
    the households in config order, each once (the supervision warm-up).
    """

    name: str
    rate: float
    duration_s: float
    t0: float
    seed: int
    id_base: int
    mix: Mix = field(default=DEFAULT_MIX)
    poisson: bool = True
    every_home_once: bool = False
    scenario: Scenario | None = None
    """When set, the step's sends are the scenario's (`Scenario.sends`), not the mix's."""

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.duration_s <= 0:
            raise ValueError(f"rate and duration must be > 0: {self.rate}, {self.duration_s}")
        if self.id_base % ID_SPAN or self.id_base < 0:
            raise ValueError(f"id_base must be a multiple of {ID_SPAN}, got {self.id_base}")
        if self.rate * self.duration_s >= ID_SPAN:
            raise ValueError("a step may not hold more than ID_SPAN events")


@dataclass(frozen=True, slots=True)
class Planned:
    """One scheduled send and the sink messages it owes (topic names)."""

    t: float
    kind: Kind
    topic: str
    payload: bytes
    device: str
    number: int
    expected: tuple[str, ...]


def step_of(number: int) -> int:
    """Which step's `id_base` (divided by ID_SPAN) an event number belongs to."""
    return number // ID_SPAN


def phone_topics(base: str, home: Home, code: int) -> tuple[str, ...]:
    """The alarms topics a phone event with this code goes to (the default routing)."""
    places = {"village": home.village, "township": home.township, "group": home.group}
    return tuple(
        f"{base}/out/{role}/{places[role]}/alarms" for role in _ROLES_BY_CODE.get(code, ())
    )


def pass_topic(base: str, site: Site, routed: frozenset[str] = _ROUTED_CLASSES) -> str | None:
    """The passes topic of a checkpoint's passes, None where its class is not routed
    (`routed`: the classes whose passes are published, A and B by default)."""
    return f"{base}/out/township/{site.township}/passes" if site.cls in routed else None


def _times(spec: StepSpec, rng: random.Random) -> list[float]:
    count = max(1, round(spec.rate * spec.duration_s))
    if not spec.poisson:
        gap = 1.0 / spec.rate
        return [spec.t0 + i * gap for i in range(count)]
    times: list[float] = []
    at = 0.0
    while True:
        at += rng.expovariate(spec.rate)
        if at >= spec.duration_s:
            return times
        times.append(spec.t0 + at)


def _cumulative(weights: Iterable[float]) -> list[float]:
    total = 0.0
    out: list[float] = []
    for weight in weights:
        total += weight
        out.append(total)
    return out


def schedule(spec: StepSpec, population: Population) -> list[Planned]:
    """Every send of one step, in time order; the same spec gives the same list."""
    if spec.scenario is not None:
        return spec.scenario.sends(spec, population)
    rng = random.Random(f"{spec.seed}/{spec.name}/{spec.id_base}")
    base = population.base_topic
    homes = population.homes
    routed = population.routed_sites
    unrouted = population.unrouted_sites or routed
    mix = spec.mix
    kinds = (Kind.HEARTBEAT, Kind.PASS, Kind.PASS_UNROUTED, Kind.ALARM, Kind.PANIC)
    kind_cum = _cumulative(
        (mix.heartbeat, mix.routed_pass, mix.unrouted_pass, mix.alarm, mix.panic)
    )
    codes = [c for c, _ in ALARM_CODES]
    code_cum = _cumulative(w for _, w in ALARM_CODES)
    plates = PlateGenerator(random.Random(spec.seed))
    plate_pool = [plates.plate() for _ in range(997)]
    phone_in = f"{base}/in/phone/"
    checkpoint_in = f"{base}/in/checkpoint/"
    packb = msgpack.packb
    planned: list[Planned] = []
    for index, t in enumerate(_times(spec, rng)):
        number = spec.id_base + index
        kind = rng.choices(kinds, cum_weights=kind_cum)[0]
        if kind in (Kind.PASS, Kind.PASS_UNROUTED):
            site = rng.choice(routed if kind is Kind.PASS else unrouted)
            payload = {
                "v": 1,
                "id": str(number),
                "type": "pass",
                "ts": t,
                "plate": plate_pool[number % len(plate_pool)],
                "conf": 0.93,
                "lane": 1 + number % 3,
                "dir": "in" if number % 2 else "out",
                "speed": 42.5,
            }
            topic = pass_topic(base, site)
            planned.append(
                Planned(
                    t,
                    kind,
                    checkpoint_in + site.id,
                    packb(payload),
                    site.id,
                    number,
                    () if topic is None else (topic,),
                )
            )
            continue
        home = homes[index % len(homes)] if spec.every_home_once else rng.choice(homes)
        if kind is Kind.HEARTBEAT:
            code = HEARTBEAT_CODE
        elif kind is Kind.PANIC:
            code = PANIC_CODE
        else:
            code = rng.choices(codes, cum_weights=code_cum)[0]
        payload = {
            "v": 1,
            "seq": number,
            "ts": t,
            "q": 1,
            "code": code,
            "zone": 0 if code == HEARTBEAT_CODE else 1 + number % 8,
            "part": 1,
        }
        planned.append(
            Planned(
                t,
                kind,
                phone_in + home.id,
                packb(payload),
                home.id,
                number,
                phone_topics(base, home, code),
            )
        )
    return planned


def expected_count(planned: Iterable[Planned]) -> int:
    """Sink messages a list of sends owes."""
    return sum(len(p.expected) for p in planned)
