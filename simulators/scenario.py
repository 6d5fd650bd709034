"""The pure scenario core: what simulated devices send, and when.

Theory of operation (DESIGN.md, "simulators/"; STYLE.md habit 5):

A scenario is a plain object built from the config's topology and an explicit
start time (Unix epoch seconds). `scenario.sends(rng)` yields a time-ordered,
lazy stream of `Send(at, topic, payload, meta)`: at `at` (wall-clock seconds,
the schedule), publish `payload` on `topic`. Nothing here reads a clock, sleeps
or touches the network; the transport drivers (`simulators.mqtt_driver`) do.
Every random choice comes from the `random.Random` passed in, and every device
gets its own child generator drawn from it, so the same seed and start give a
byte-identical stream (tests hold it to that), and streams can run for days
without materialising anything.

Payloads are the contract's ingress maps (CONTRACT.md, "Ingress"), built with
`protocols.payloads` and sent as MessagePack (the default) or JSON:

* **Phones** (`alarmgw/in/phone/<household>`) speak Contact ID semantics
  (PROTOCOLS.md, "Contact ID"): `PHONE_EVENTS` names the codes, and a restore is
  qualifier 3 on the code and zone of the phone's previous alarm. Each phone
  keeps one `seq` counter across all its events; it starts at the run's start
  time in microseconds, so a later run never reuses an earlier run's
  `(household, seq)`, which the gateway would drop as a duplicate.
* **Checkpoints** (`alarmgw/in/checkpoint/<id>`) report passes as independent
  Poisson processes per lane, at the per-lane rate of their class
  (`LANE_PROFILES`: A-class roads are the busiest), plates from
  `simulators.plates`, heartbeats every `heartbeat_interval` seconds and
  occasional faults. Record ids are unique per checkpoint and per run.
* **The district** (DESIGN.md's table) combines every household's periodic
  test (602), each phone at its own phase, so 130,000 phones every 900 s make
  about 145 heartbeats/s; real alarms at a district-wide Poisson rate, half of
  them restored some minutes later; and every checkpoint's traffic. `speed`
  multiplies every rate and divides every interval.

Timestamps (`ts`) are the scheduled times, rounded to the millisecond: the
device raised the event at `at`, so a driver that falls behind shows up as
device-to-ingress latency, as it would on a real, congested network.

Faults are composable transforms over a stream (`duplicate`, `corrupt`,
`clock_skew`, `burst`, `silence`), each with its own seeded generator, so adding
a fault never changes the rest of the stream. `corrupt` guarantees the payload
no longer decodes as a map, so the gateway must dead-letter it.

`expected_sinks` and `DispatchMatcher` support `alarmgw sim phone --wait`: the
sinks an alarm should reach under the config's `[routing]` (PROTOCOLS.md's
families; 137 tamper routes as a trouble; 602 heartbeats are never
dispatched), and the matching of dispatched alarms
(`<base>/out/<kind>/<id>/alarms`, CONTRACT.md "Egress") and dead letters to
what was sent, with the latency of every hop.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
import itertools
import json
import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Protocol

from config.model import Checkpoint, CheckpointClass, Config
from protocols.contact_id import Family, family
from protocols.payloads import (
    CheckpointEventType,
    CheckpointMessage,
    PhoneMessage,
    checkpoint_payload,
    decode_map,
    encode,
    phone_payload,
)
from protocols.reasons import Rejected
from protocols.topics import IngressKind, Topics
from simulators.plates import PlateGenerator

__all__ = [
    "DISTRICT_ALARM_MIX",
    "HEARTBEAT_CODE",
    "LANE_PROFILES",
    "PHONE_EVENTS",
    "Burst",
    "CheckpointScenario",
    "ClockSkew",
    "Corrupt",
    "DispatchMatcher",
    "DistrictScenario",
    "Duplicate",
    "Fault",
    "Hop",
    "LaneProfile",
    "PayloadFormat",
    "PhoneScenario",
    "Scenario",
    "Send",
    "SendMeta",
    "Silence",
    "WaitResult",
    "apply_faults",
    "burst",
    "clock_skew",
    "corrupt",
    "duplicate",
    "encode_map",
    "expected_sinks",
    "phone_code",
    "silence",
    "stream",
]

HEARTBEAT_CODE: Final = 602
"""Contact ID 602 periodic test: a phone's heartbeat (PROTOCOLS.md)."""

PHONE_EVENTS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "panic": 120,
        "duress": 121,
        "fire": 110,
        "medical": 100,
        "burglary": 130,
        "low_battery": 302,
        "ac_loss": 301,
        "tamper": 137,
        "heartbeat": HEARTBEAT_CODE,
    }
)
"""Event names a phone simulator understands, with their Contact ID codes.
`restore` is not here: it is qualifier 3 on the previous alarm's code."""

_RESTORE: Final = "restore"
_SYSTEM_CODES: Final = frozenset({301, 302, HEARTBEAT_CODE})  # zone 000 (PROTOCOLS.md)

DISTRICT_ALARM_MIX: Final[Mapping[str, float]] = MappingProxyType(
    {
        "burglary": 0.30,
        "panic": 0.15,
        "medical": 0.15,
        "low_battery": 0.12,
        "ac_loss": 0.10,
        "tamper": 0.08,
        "fire": 0.06,
        "duress": 0.04,
    }
)
"""Share of each kind among the district's real alarms and troubles."""

_RESTORE_SHARE: Final = 0.5  # of district alarms restored later
_RESTORE_DELAY_S: Final = (60.0, 600.0)


class PayloadFormat(enum.StrEnum):
    """How payloads are encoded: MessagePack (the contract's) or JSON (hand testing)."""

    MSGPACK = "msgpack"
    JSON = "json"


def encode_map(payload: Mapping[str, object], fmt: PayloadFormat) -> bytes:
    """Encode a contract map; JSON is compact UTF-8 and starts with `{` (CONTRACT.md)."""
    if fmt is PayloadFormat.JSON:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return encode(payload)


def phone_code(event: str) -> int:
    """The Contact ID code of an event name (`panic`, `low-battery`...) or a literal code."""
    name = event.strip().lower().replace("-", "_")
    if name in PHONE_EVENTS:
        return PHONE_EVENTS[name]
    if name.isdigit() and 100 <= int(name) <= 999:
        return int(name)
    known = ", ".join([*PHONE_EVENTS, _RESTORE])
    raise ValueError(f"unknown phone event {event!r}: use one of {known}, or a code 100-999")


# ------------------------------------------------------------------ sends


@dataclass(frozen=True, slots=True)
class SendMeta:
    """What a send is, for printing and matching; never on the wire."""

    kind: IngressKind
    device: str
    event: str
    """`panic`, `restore`, `heartbeat`, `pass`, `fault`, a code as text..."""
    message: PhoneMessage | CheckpointMessage
    """The message the payload encodes (before any corruption)."""
    fmt: PayloadFormat
    faults: tuple[str, ...] = ()
    """Faults applied to this send: `duplicate`, `corrupt`, `skew`, `burst`."""

    @property
    def corrupted(self) -> bool:
        """True when the payload was damaged on purpose: the gateway must dead-letter it."""
        return "corrupt" in self.faults


@dataclass(frozen=True, slots=True)
class Send:
    """Publish `payload` on `topic` at wall-clock time `at` (epoch seconds)."""

    at: float
    topic: str
    payload: bytes
    meta: SendMeta


class Scenario(Protocol):
    """Anything that yields a time-ordered stream of sends from a seeded generator."""

    @property
    def start(self) -> float:
        """When the scenario begins (epoch seconds)."""
        ...

    def sends(self, rng: random.Random) -> Iterator[Send]:
        """The stream; the same `rng` state gives the same sends."""
        ...


def _ms(value: float) -> float:
    return round(value, 3)


def _child(rng: random.Random) -> random.Random:
    return random.Random(rng.getrandbits(64))


@dataclass(frozen=True, slots=True)
class _PhoneIntent:
    at: float
    household: str
    event: str
    code: int
    q: int
    zone: int
    part: int


class _PhoneEncoder:
    """Gives each phone its `seq` counter, in time order, and encodes its sends."""

    __slots__ = ("_fmt", "_next", "_seq_start", "_topics")

    def __init__(self, topics: Topics, fmt: PayloadFormat, seq_start: int) -> None:
        self._topics = topics
        self._fmt = fmt
        self._seq_start = seq_start
        self._next: dict[str, int] = {}

    def send(self, intent: _PhoneIntent) -> Send:
        seq = self._next.get(intent.household, self._seq_start)
        self._next[intent.household] = seq + 1
        message = PhoneMessage(
            intent.household, seq, intent.at, intent.q, intent.code, intent.zone, intent.part
        )
        return Send(
            intent.at,
            self._topics.phone_in(intent.household),
            encode_map(phone_payload(message), self._fmt),
            SendMeta(IngressKind.PHONE, intent.household, intent.event, message, self._fmt),
        )


def _default_seq_start(start: float) -> int:
    # Microseconds of the start time: later runs start above earlier ones (see the
    # module docstring), and 2**63 is not reached before the year 292,000.
    return max(0, int(start * 1_000_000))


# ------------------------------------------------------------------ phones


class PhoneScenario:
    """Household phones sending named events: `events` in turn, `count` rounds.

    Send k of household h (k counts every event of every round) is scheduled at
    `start + k * interval + offset_h`, where `offset_h` is drawn once per
    household from [0, spread): spreading a round of many phones keeps their
    order per phone. A `restore` repeats the phone's previous alarm with q=3
    (or `restore_of` when it has none). `zone` None means 1 for alarms and 0 for
    system events (AC loss, low battery, periodic test: zone 000, PROTOCOLS.md).
    """

    def __init__(
        self,
        topics: Topics,
        households: Sequence[str],
        events: Sequence[str],
        *,
        start: float,
        count: int = 1,
        interval: float = 1.0,
        spread: float = 0.0,
        zone: int | None = None,
        part: int = 1,
        seq_start: int | None = None,
        restore_of: str = "burglary",
        fmt: PayloadFormat = PayloadFormat.MSGPACK,
    ) -> None:
        if not households:
            raise ValueError("at least one household is needed")
        if not events:
            raise ValueError("at least one event is needed")
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        if not (interval >= 0 and math.isfinite(interval)):
            raise ValueError(f"interval must be a finite number >= 0, got {interval}")
        if not (spread >= 0 and math.isfinite(spread)):
            raise ValueError(f"spread must be a finite number >= 0, got {spread}")
        steps = count * len(events)
        if steps > 1 and spread > interval:
            raise ValueError("spread may not exceed interval when a phone sends more than once")
        if zone is not None and not 0 <= zone <= 999:
            raise ValueError(f"zone must be 0-999, got {zone}")
        if not 0 <= part <= 99:
            raise ValueError(f"part must be 0-99, got {part}")
        self._names = tuple(e.strip().lower().replace("-", "_") for e in events)
        self._codes = tuple(None if name == _RESTORE else phone_code(name) for name in self._names)
        self._restore_of = phone_code(restore_of)
        for household in households:
            topics.phone_in(household)  # raises ValueError for an id that is no topic level
        self._topics = topics
        self._households = tuple(households)
        self._start = start
        self._count = count
        self._interval = interval
        self._spread = spread
        self._zone = zone
        self._part = part
        self._seq_start = _default_seq_start(start) if seq_start is None else seq_start
        self._fmt = fmt

    @property
    def start(self) -> float:
        """When the first round begins (epoch seconds)."""
        return self._start

    def __len__(self) -> int:
        return len(self._households) * self._count * len(self._names)

    def _zone_for(self, code: int) -> int:
        if self._zone is not None:
            return self._zone
        return 0 if code in _SYSTEM_CODES else 1

    def sends(self, rng: random.Random) -> Iterator[Send]:
        """Every household's events, in time order (ties: in the order households were given)."""
        offsets = sorted(
            (rng.uniform(0.0, self._spread) if self._spread else 0.0, index)
            for index in range(len(self._households))
        )
        encoder = _PhoneEncoder(self._topics, self._fmt, self._seq_start)
        previous: dict[str, tuple[int, int]] = {}  # household -> (code, zone) of its last alarm
        steps = self._count * len(self._names)
        for step in range(steps):
            name = self._names[step % len(self._names)]
            code = self._codes[step % len(self._names)]
            base = self._start + step * self._interval
            for offset, index in offsets:
                household = self._households[index]
                if code is None:  # restore
                    restored = previous.get(household)
                    if restored is None:
                        restored = (self._restore_of, self._zone_for(self._restore_of))
                    intent = _PhoneIntent(
                        _ms(base + offset), household, name, restored[0], 3, restored[1], self._part
                    )
                else:
                    zone = self._zone_for(code)
                    if code != HEARTBEAT_CODE:
                        previous[household] = (code, zone)
                    intent = _PhoneIntent(
                        _ms(base + offset), household, name, code, 1, zone, self._part
                    )
                yield encoder.send(intent)


# ------------------------------------------------------------------ checkpoints


@dataclass(frozen=True, slots=True)
class LaneProfile:
    """Traffic at one class of checkpoint: lanes, vehicles per hour per lane, speeds."""

    lanes: int
    vehicles_per_hour: float
    speed_kmh: float
    speed_sd_kmh: float


LANE_PROFILES: Final[Mapping[CheckpointClass, LaneProfile]] = MappingProxyType(
    {
        # A: trunk roads into the town and the bridges, manned 24 h.
        CheckpointClass.A: LaneProfile(6, 360.0, 60.0, 15.0),
        # B: county roads at the station's checkpoints.
        CheckpointClass.B: LaneProfile(4, 180.0, 50.0, 12.0),
        # C: village roads on the district border, manned when needed.
        CheckpointClass.C: LaneProfile(2, 60.0, 40.0, 10.0),
    }
)
"""Per-class lane counts and per-lane rates: about 0.6, 0.2 and 0.03 passes/s each."""

_VEHICLE_TYPES: Final = ("car", "suv", "van", "truck", "bus", "motorcycle")
_VEHICLE_WEIGHTS: Final = (58, 20, 8, 8, 3, 3)
_COLOURS: Final = ("white", "black", "silver", "grey", "red", "blue", "brown", "green")
_COLOUR_WEIGHTS: Final = (30, 22, 16, 12, 7, 7, 3, 3)
_FAULTS: Final = (
    "video loss",
    "lens obscured",
    "fill light failure",
    "storage full",
    "network packet loss",
    "plate engine restarted",
    "radar speed sensor no data",
)


class CheckpointScenario:
    """Checkpoints' passes, heartbeats and faults for `duration` seconds (None: forever).

    Passes at each lane are a Poisson process at the class's rate times
    `rate_scale` and `speed`; heartbeats every `heartbeat_interval / speed`
    seconds from a random phase; faults at `fault_rate_per_h * speed` per hour.
    Lanes in the first half of a checkpoint are inbound, the rest outbound.
    """

    def __init__(
        self,
        topics: Topics,
        checkpoints: Sequence[Checkpoint],
        *,
        start: float,
        duration: float | None,
        rate_scale: float = 1.0,
        speed: float = 1.0,
        heartbeat_interval: float = 60.0,
        fault_rate_per_h: float = 0.2,
        unread_rate: float = 0.03,
        new_energy_share: float = 0.10,
        fmt: PayloadFormat = PayloadFormat.MSGPACK,
    ) -> None:
        if not checkpoints:
            raise ValueError("at least one checkpoint is needed")
        if duration is not None and not (duration >= 0 and math.isfinite(duration)):
            raise ValueError(f"duration must be a finite number >= 0, got {duration}")
        for name, value in (("rate_scale", rate_scale), ("fault_rate_per_h", fault_rate_per_h)):
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be a finite number > 0, got {speed}")
        if not (heartbeat_interval > 0 and math.isfinite(heartbeat_interval)):
            raise ValueError(f"heartbeat_interval must be > 0, got {heartbeat_interval}")
        for checkpoint in checkpoints:
            topics.checkpoint_in(checkpoint.id)
        self._topics = topics
        self._checkpoints = tuple(checkpoints)
        self._start = start
        self._end = math.inf if duration is None else start + duration
        self._rate_scale = rate_scale
        self._speed = speed
        self._heartbeat = heartbeat_interval / speed
        self._fault_rate = fault_rate_per_h * speed / 3600.0
        self._unread_rate = unread_rate
        self._new_energy_share = new_energy_share
        self._fmt = fmt
        self._run_tag = format(max(0, int(start * 1000)), "x")

    @property
    def start(self) -> float:
        """When the traffic begins (epoch seconds)."""
        return self._start

    def pass_rate(self, checkpoint: Checkpoint) -> float:
        """Passes per second at one checkpoint, all lanes together."""
        profile = LANE_PROFILES[checkpoint.cls]
        return profile.lanes * profile.vehicles_per_hour / 3600.0 * self._rate_scale * self._speed

    def total_pass_rate(self) -> float:
        """Passes per second over all the scenario's checkpoints."""
        return sum(self.pass_rate(checkpoint) for checkpoint in self._checkpoints)

    def sends(self, rng: random.Random) -> Iterator[Send]:
        """Every checkpoint's records, merged in time order."""
        streams = [self._one(checkpoint, _child(rng)) for checkpoint in self._checkpoints]
        return heapq.merge(*streams, key=_at)

    def _one(self, checkpoint: Checkpoint, rng: random.Random) -> Iterator[Send]:
        profile = LANE_PROFILES[checkpoint.cls]
        plates = PlateGenerator(
            rng, unread_rate=self._unread_rate, new_energy_share=self._new_energy_share
        )
        topic = self._topics.checkpoint_in(checkpoint.id)
        pass_rate = self.pass_rate(checkpoint)
        fault_rate = self._fault_rate
        counter = itertools.count(1)
        start, end = self._start, self._end
        next_pass = start + rng.expovariate(pass_rate) if pass_rate > 0 else math.inf
        next_heartbeat = start + rng.uniform(0.0, self._heartbeat)
        next_fault = start + rng.expovariate(fault_rate) if fault_rate > 0 else math.inf
        while True:
            at = min(next_pass, next_heartbeat, next_fault)
            if at >= end:
                return
            record_id = f"{self._run_tag}-{next(counter)}"
            ts = _ms(at)
            if at == next_heartbeat:
                message = CheckpointMessage(
                    checkpoint.id, record_id, CheckpointEventType.HEARTBEAT, ts
                )
                next_heartbeat += self._heartbeat
            elif at == next_fault:
                message = CheckpointMessage(
                    checkpoint.id,
                    record_id,
                    CheckpointEventType.FAULT,
                    ts,
                    fault=rng.choice(_FAULTS),
                )
                next_fault += rng.expovariate(fault_rate)
            else:
                lane = rng.randint(1, profile.lanes)
                read = plates.read()
                speed = max(3.0, rng.gauss(profile.speed_kmh, profile.speed_sd_kmh))
                message = CheckpointMessage(
                    checkpoint.id,
                    record_id,
                    CheckpointEventType.PASS,
                    ts,
                    plate=read.plate,
                    conf=read.conf,
                    lane=lane,
                    dir="in" if lane <= (profile.lanes + 1) // 2 else "out",
                    speed=round(speed, 1),
                    vtype=rng.choices(_VEHICLE_TYPES, weights=_VEHICLE_WEIGHTS)[0],
                    color=rng.choices(_COLOURS, weights=_COLOUR_WEIGHTS)[0],
                    img=f"http://{checkpoint.id}.cam.invalid/img/{record_id}.jpg",
                )
                next_pass += rng.expovariate(pass_rate)
            yield Send(
                ts,
                topic,
                encode_map(checkpoint_payload(message), self._fmt),
                SendMeta(
                    IngressKind.CHECKPOINT,
                    checkpoint.id,
                    message.type.value,
                    message,
                    self._fmt,
                ),
            )


def _at(send: Send) -> float:
    return send.at


# ------------------------------------------------------------------ the district


class DistrictScenario:
    """The whole district of a config: heartbeats, real alarms, every checkpoint.

    Each household's phone sends a 602 periodic test every
    `heartbeat_interval / speed` seconds from its own random phase; real alarms
    arrive at `alarm_rate_per_min * speed` per minute across the district, from
    random households, in `DISTRICT_ALARM_MIX` proportions, and half of them are
    restored 1-10 minutes (divided by `speed`) later; checkpoints behave as in
    `CheckpointScenario`. `duration` None runs forever.
    """

    def __init__(
        self,
        topics: Topics,
        config: Config,
        *,
        start: float,
        duration: float | None,
        speed: float = 1.0,
        alarm_rate_per_min: float = 2.0,
        heartbeat_interval: float = 900.0,
        checkpoint_heartbeat_interval: float = 60.0,
        rate_scale: float = 1.0,
        fault_rate_per_h: float = 0.2,
        unread_rate: float = 0.03,
        seq_start: int | None = None,
        fmt: PayloadFormat = PayloadFormat.MSGPACK,
    ) -> None:
        if not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be a finite number > 0, got {speed}")
        if not (alarm_rate_per_min >= 0 and math.isfinite(alarm_rate_per_min)):
            raise ValueError(f"alarm rate must be a finite number >= 0, got {alarm_rate_per_min}")
        if not (heartbeat_interval > 0 and math.isfinite(heartbeat_interval)):
            raise ValueError(f"heartbeat_interval must be > 0, got {heartbeat_interval}")
        if duration is not None and not (duration >= 0 and math.isfinite(duration)):
            raise ValueError(f"duration must be a finite number >= 0, got {duration}")
        self._topics = topics
        self._households = tuple(h.id for h in config.households)
        self._start = start
        self._end = math.inf if duration is None else start + duration
        self._speed = speed
        self._alarm_rate = alarm_rate_per_min * speed / 60.0
        self._heartbeat = heartbeat_interval / speed
        self._seq_start = _default_seq_start(start) if seq_start is None else seq_start
        self._fmt = fmt
        self._checkpoints = (
            CheckpointScenario(
                topics,
                config.checkpoints,
                start=start,
                duration=duration,
                rate_scale=rate_scale,
                speed=speed,
                heartbeat_interval=checkpoint_heartbeat_interval,
                fault_rate_per_h=fault_rate_per_h,
                unread_rate=unread_rate,
                fmt=fmt,
            )
            if config.checkpoints
            else None
        )

    @property
    def start(self) -> float:
        """When the district starts sending (epoch seconds)."""
        return self._start

    def rates(self) -> dict[str, float]:
        """Expected sends per second: `heartbeats`, `alarms` (without restores), `passes`."""
        passes = 0.0 if self._checkpoints is None else self._checkpoints.total_pass_rate()
        return {
            "heartbeats": len(self._households) / self._heartbeat,
            "alarms": self._alarm_rate,
            "passes": passes,
        }

    def sends(self, rng: random.Random) -> Iterator[Send]:
        """Heartbeats, alarms and checkpoint traffic, merged in time order."""
        heartbeat_rng, alarm_rng, checkpoint_rng = _child(rng), _child(rng), _child(rng)
        encoder = _PhoneEncoder(self._topics, self._fmt, self._seq_start)
        intents = heapq.merge(
            self._heartbeats(heartbeat_rng), self._alarms(alarm_rng), key=_intent_at
        )
        phones = (encoder.send(intent) for intent in intents)
        if self._checkpoints is None:
            return phones
        return heapq.merge(phones, self._checkpoints.sends(checkpoint_rng), key=_at)

    def _heartbeats(self, rng: random.Random) -> Iterator[_PhoneIntent]:
        if not self._households:
            return
        interval = self._heartbeat
        phases = sorted(
            (rng.uniform(0.0, interval), index) for index in range(len(self._households))
        )
        for cycle in itertools.count():
            base = self._start + cycle * interval
            for phase, index in phases:
                at = base + phase
                if at >= self._end:
                    return
                yield _PhoneIntent(
                    _ms(at), self._households[index], "heartbeat", HEARTBEAT_CODE, 1, 0, 1
                )

    def _alarms(self, rng: random.Random) -> Iterator[_PhoneIntent]:
        if not self._households or self._alarm_rate <= 0:
            return
        names = tuple(DISTRICT_ALARM_MIX)
        weights = tuple(DISTRICT_ALARM_MIX.values())
        low, high = _RESTORE_DELAY_S
        restores: list[tuple[float, int, _PhoneIntent]] = []
        tiebreak = itertools.count()
        at = self._start + rng.expovariate(self._alarm_rate)
        while True:
            while restores and restores[0][0] <= at:
                restore = heapq.heappop(restores)[2]
                if restore.at >= self._end:
                    return
                yield restore
            if at >= self._end:
                if not restores:
                    return
                at = math.inf
                continue
            name = rng.choices(names, weights=weights)[0]
            code = PHONE_EVENTS[name]
            zone = 0 if code in _SYSTEM_CODES else rng.randint(1, 8)
            household = rng.choice(self._households)
            yield _PhoneIntent(_ms(at), household, name, code, 1, zone, 1)
            if rng.random() < _RESTORE_SHARE:
                later = _ms(at + rng.uniform(low, high) / self._speed)
                heapq.heappush(
                    restores,
                    (
                        later,
                        next(tiebreak),
                        _PhoneIntent(later, household, _RESTORE, code, 3, zone, 1),
                    ),
                )
            at += rng.expovariate(self._alarm_rate)


def _intent_at(intent: _PhoneIntent) -> float:
    return intent.at


# ------------------------------------------------------------------ faults


class Fault(Protocol):
    """A transform of a send stream; `origin` is the scenario's start."""

    @property
    def name(self) -> str:
        """A short name for the fault (also the tag it leaves in `SendMeta.faults`)."""
        ...

    def apply(self, sends: Iterator[Send], rng: random.Random, origin: float) -> Iterator[Send]:
        """The faulty stream, still in time order."""
        ...


def _tagged(send: Send, tag: str, *, at: float | None = None, payload: bytes | None = None) -> Send:
    meta = dataclasses.replace(send.meta, faults=(*send.meta.faults, tag))
    return Send(
        send.at if at is None else at,
        send.topic,
        send.payload if payload is None else payload,
        meta,
    )


def _check_rate(rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"a fault rate must be within 0-1, got {rate}")


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Each send is repeated, same bytes, with probability `rate`, `delay` seconds later."""

    rate: float
    delay: float = 0.0
    name: str = "duplicate"

    def apply(self, sends: Iterator[Send], rng: random.Random, origin: float) -> Iterator[Send]:
        """Originals pass through; copies are interleaved at their own time."""
        del origin
        pending: list[tuple[float, int, Send]] = []
        tiebreak = itertools.count()
        for send in sends:
            while pending and pending[0][0] <= send.at:
                yield heapq.heappop(pending)[2]
            if rng.random() < self.rate:
                copy = _tagged(send, self.name, at=_ms(send.at + self.delay))
                if self.delay <= 0:
                    yield send
                    yield copy
                    continue
                heapq.heappush(pending, (copy.at, next(tiebreak), copy))
            yield send
        while pending:
            yield heapq.heappop(pending)[2]


@dataclass(frozen=True, slots=True)
class Corrupt:
    """With probability `rate`, flip 1-3 random bytes so that the payload is no map.

    If the flips happen to leave a decodable map (a changed digit stays valid
    MessagePack), the first byte becomes 0xC1, which MessagePack never uses: the
    gateway must always dead-letter a corrupted send, never act on a changed one.
    """

    rate: float
    name: str = "corrupt"

    def apply(self, sends: Iterator[Send], rng: random.Random, origin: float) -> Iterator[Send]:
        """Damaged sends carry the `corrupt` tag; the rest pass through."""
        del origin
        for send in sends:
            if not send.payload or rng.random() >= self.rate:
                yield send
                continue
            data = bytearray(send.payload)
            for position in rng.sample(range(len(data)), min(len(data), rng.randint(1, 3))):
                data[position] ^= rng.randint(1, 255)
            if not isinstance(decode_map(bytes(data)), Rejected):
                data[0] = 0xC1
            yield _tagged(send, self.name, payload=bytes(data))


@dataclass(frozen=True, slots=True)
class ClockSkew:
    """The device clock is `seconds` off (ahead if positive): `ts` shifts, `at` does not.

    `devices` limits it to some devices (None: all). Corrupted sends are left alone.
    """

    seconds: float
    devices: frozenset[str] | None = None
    name: str = "skew"

    def apply(self, sends: Iterator[Send], rng: random.Random, origin: float) -> Iterator[Send]:
        """Skewed sends are re-encoded in their own format."""
        del rng, origin
        for send in sends:
            meta = send.meta
            if meta.corrupted or (self.devices is not None and meta.device not in self.devices):
                yield send
                continue
            message = dataclasses.replace(meta.message, ts=_ms(meta.message.ts + self.seconds))
            payload = encode_map(
                phone_payload(message)
                if isinstance(message, PhoneMessage)
                else checkpoint_payload(message),
                meta.fmt,
            )
            skewed = _tagged(send, self.name, payload=payload)
            yield dataclasses.replace(
                skewed, meta=dataclasses.replace(skewed.meta, message=message)
            )


@dataclass(frozen=True, slots=True)
class Burst:
    """The `n` sends due from `after` seconds on go out at once, at the first one's time.

    A device that buffered events while its link was down and flushes them together.
    """

    n: int
    after: float = 0.0
    name: str = "burst"

    def apply(self, sends: Iterator[Send], rng: random.Random, origin: float) -> Iterator[Send]:
        """Sends before `after` and after the burst pass through unchanged."""
        del rng
        threshold = origin + self.after
        held: list[Send] = []
        for send in sends:
            if len(held) >= self.n or (not held and send.at < threshold):
                yield send
                continue
            held.append(send)
            if len(held) == self.n:
                yield from self._flush(held)
        if len(held) < self.n:
            yield from self._flush(held)

    def _flush(self, held: list[Send]) -> Iterator[Send]:
        if held:
            at = held[0].at
            for send in held:
                yield _tagged(send, self.name, at=at)


@dataclass(frozen=True, slots=True)
class Silence:
    """Device `device` sends nothing from `after` seconds on (dead battery, cut cable)."""

    device: str
    after: float = 0.0
    name: str = "silence"

    def apply(self, sends: Iterator[Send], rng: random.Random, origin: float) -> Iterator[Send]:
        """Every other device's sends pass through."""
        del rng
        threshold = origin + self.after
        for send in sends:
            if send.meta.device == self.device and send.at >= threshold:
                continue
            yield send


def duplicate(rate: float, delay: float = 0.0) -> Duplicate:
    """Repeat sends with probability `rate`, `delay` seconds later (same bytes, same seq)."""
    _check_rate(rate)
    if not (delay >= 0 and math.isfinite(delay)):
        raise ValueError(f"a duplicate's delay must be >= 0, got {delay}")
    return Duplicate(rate, delay)


def corrupt(rate: float) -> Corrupt:
    """Damage payloads with probability `rate`; the gateway must dead-letter them."""
    _check_rate(rate)
    return Corrupt(rate)


def clock_skew(seconds: float, devices: Iterable[str] | None = None) -> ClockSkew:
    """Shift device timestamps by `seconds` (for `devices`, or all)."""
    if not math.isfinite(seconds):
        raise ValueError(f"a clock skew must be finite, got {seconds}")
    return ClockSkew(seconds, None if devices is None else frozenset(devices))


def burst(n: int, after: float = 0.0) -> Burst:
    """Send the `n` sends due from `after` seconds on all at once."""
    if n < 1:
        raise ValueError(f"a burst needs at least 1 send, got {n}")
    if not (after >= 0 and math.isfinite(after)):
        raise ValueError(f"a burst's start must be >= 0, got {after}")
    return Burst(n, after)


def silence(device: str, after: float = 0.0) -> Silence:
    """Make `device` go silent `after` seconds into the run."""
    if not (after >= 0 and math.isfinite(after)):
        raise ValueError(f"silence must start at >= 0 s, got {after}")
    return Silence(device, after)


def apply_faults(
    sends: Iterable[Send], faults: Sequence[Fault], *, seed: int, origin: float
) -> Iterator[Send]:
    """Apply `faults` in order; each draws from its own generator derived from `seed`."""
    stream_: Iterator[Send] = iter(sends)
    for index, fault in enumerate(faults):
        stream_ = fault.apply(stream_, random.Random(f"{seed}/fault/{index}/{fault.name}"), origin)
    return stream_


def stream(scenario: Scenario, *, seed: int, faults: Sequence[Fault] = ()) -> Iterator[Send]:
    """A scenario's sends for `seed`, with `faults` applied: the same seed, the same bytes."""
    sends = scenario.sends(random.Random(f"{seed}/scenario"))
    return apply_faults(sends, faults, seed=seed, origin=scenario.start)


# ------------------------------------------------------------------ --wait


_CATEGORY_BY_FAMILY: Final[Mapping[Family, str]] = MappingProxyType(
    {
        Family.LIFE_SAFETY: "life_safety",
        Family.PROPERTY: "property",
        Family.SUPERVISORY: "trouble",
        Family.TROUBLE: "trouble",
    }
)
_TAMPER: Final = 137


def expected_sinks(config: Config, household: str, code: int) -> tuple[str, ...]:
    """The sinks (`kind/id`) a phone event should reach under the config's `[routing]`.

    Families per PROTOCOLS.md (137 tamper counts as a trouble); a restore is
    routed like its family. 602 periodic tests are never dispatched; an unknown
    household's event is dead-lettered, not dispatched. If none of the routing
    roles applies, the gateway falls back to the township centre.
    """
    home = config.topology.households.get(household)
    if home is None or code == HEARTBEAT_CODE:
        return ()
    category = "trouble" if code == _TAMPER else _CATEGORY_BY_FAMILY.get(family(code), "info")
    roles = config.routing.targets_for(category)
    found: list[str] = []
    for role in roles:
        sink: str | None = None
        if role == "village":
            sink = f"village/{home.village}"
        elif role == "township":
            sink = f"township/{home.township}"
        elif role == "group":
            sink = f"group/{home.group}"
        elif role == "station":
            township = config.topology.townships.get(home.township)
            station = None if township is None else township.station
            sink = None if station is None else f"station/{station}"
        elif role == "bureau":
            sink = f"bureau/{config.bureau}"
        if sink is not None and sink not in found:
            found.append(sink)
    if not found and roles:
        found.append(f"township/{home.township}")
    return tuple(found)


@dataclass(frozen=True, slots=True)
class Hop:
    """One dispatch of a sent event, as a sink received it; times are epoch seconds."""

    sink: str
    device_ts: float | None
    ingress_ts: float | None
    dispatch_ts: float | None
    received_at: float
    escalated: bool = False

    @property
    def device_to_ingress(self) -> float | None:
        """Device clock to the gateway's ingress, seconds (includes any clock skew)."""
        return _diff(self.ingress_ts, self.device_ts)

    @property
    def ingress_to_dispatch(self) -> float | None:
        """Gateway ingress to its dispatch, seconds."""
        return _diff(self.dispatch_ts, self.ingress_ts)

    @property
    def dispatch_to_received(self) -> float | None:
        """Gateway dispatch to this simulator's receipt, seconds."""
        return _diff(self.received_at, self.dispatch_ts)


def _diff(later: float | None, earlier: float | None) -> float | None:
    return None if later is None or earlier is None else later - earlier


@dataclass(frozen=True, slots=True)
class WaitResult:
    """What became of one sent event: the sinks it reached, or its dead letter."""

    send: Send
    expected: tuple[str, ...]
    hops: tuple[Hop, ...]
    expect_deadletter: bool = False
    deadletter: str | None = None
    """The dead letter's reason, when one was matched."""

    @property
    def missing(self) -> tuple[str, ...]:
        """Expected sinks that never received it."""
        reached = {hop.sink for hop in self.hops}
        return tuple(sink for sink in self.expected if sink not in reached)

    @property
    def ok(self) -> bool:
        """True when everything expected arrived."""
        if self.expect_deadletter:
            return self.deadletter is not None
        return not self.missing


@dataclass(slots=True)
class _Expectation:
    send: Send
    expected: tuple[str, ...]
    deadletter: bool
    hops: dict[str, Hop] = dataclasses.field(default_factory=dict)
    reason: str | None = None

    @property
    def complete(self) -> bool:
        if self.deadletter:
            return self.reason is not None
        return all(sink in self.hops for sink in self.expected)


def _number(value: object) -> float | None:
    if type(value) is float or type(value) is int:
        return float(value)
    return None


class DispatchMatcher:
    """Matches dispatched alarms and dead letters to the phone events that were sent.

    `expect` each send with the sinks it should reach (see `expected_sinks`); a
    corrupted send expects a dead letter on `<base>/deadletter` carrying its
    bytes, and a send from a household the config does not know expects an
    `unknown_device` dead letter for its topic. `observe` every message heard on
    `<base>/out/+/+/alarms` and `<base>/deadletter`. A repeated send (same
    household and seq) is one expectation: the gateway dispatches it once.
    Only the first dispatch per sink counts; escalations are ignored.
    """

    def __init__(self, topics: Topics) -> None:
        self._out = f"{topics.base}/out/"
        self._deadletter = topics.deadletter
        self._order: list[_Expectation] = []
        self._by_key: dict[tuple[str, int], _Expectation] = {}
        self._dead: dict[str, list[_Expectation]] = {}
        self._pending = 0

    @property
    def pending(self) -> int:
        """How many expectations are not yet complete."""
        return self._pending

    def _add(self, item: _Expectation) -> None:
        self._order.append(item)
        if not item.complete:
            self._pending += 1

    def expect(self, send: Send, sinks: Sequence[str], *, known: bool = True) -> None:
        """Register a sent phone event; checkpoint sends are ignored."""
        message = send.meta.message
        if not isinstance(message, PhoneMessage):
            return
        if send.meta.corrupted or not known:
            item = _Expectation(send, (), deadletter=True)
            self._add(item)
            self._dead.setdefault(send.topic, []).append(item)
            return
        key = (message.household, message.seq)
        if key in self._by_key:
            return
        item = _Expectation(send, tuple(sinks), deadletter=False)
        self._by_key[key] = item
        self._add(item)

    def observe(self, topic: str, payload: bytes, received_at: float) -> bool:
        """Feed one message heard on an alarms or dead-letter topic; True if it matched."""
        body = decode_map(payload)
        if isinstance(body, Rejected):
            return False
        if topic == self._deadletter:
            return self._observe_deadletter(body)
        if not (topic.startswith(self._out) and topic.endswith("/alarms")):
            return False
        levels = topic[len(self._out) :].split("/")
        if len(levels) != 3:
            return False
        sink = f"{levels[0]}/{levels[1]}"
        event = body.get("event")
        household = body.get("household")
        if not isinstance(event, dict) or type(household) is not str:
            return False
        seq = event.get("seq")
        if type(seq) is not int:
            return False
        item = self._by_key.get((household, seq))
        if item is None or sink in item.hops:
            return False
        was_complete = item.complete
        item.hops[sink] = Hop(
            sink,
            _number(body.get("device_ts")),
            _number(body.get("ingress_ts")),
            _number(body.get("dispatch_ts")),
            received_at,
            body.get("escalated") is True,
        )
        if item.complete and not was_complete:
            self._pending -= 1
        return True

    def _observe_deadletter(self, body: Mapping[str, object]) -> bool:
        topic, raw, reason = body.get("topic"), body.get("raw"), body.get("reason")
        if type(topic) is not str or type(reason) is not str:
            return False
        waiting = [item for item in self._dead.get(topic, ()) if item.reason is None]
        for item in waiting:
            if item.send.payload == raw:
                item.reason = reason
                self._pending -= 1
                return True
        if reason == "unknown_device" and waiting:
            waiting[0].reason = reason
            self._pending -= 1
            return True
        return False

    def results(self) -> tuple[WaitResult, ...]:
        """One result per expectation, in the order they were registered.

        Hops are listed in policy order (the expected sinks), then any others by name.
        """
        out: list[WaitResult] = []
        for item in self._order:
            rank = {sink: index for index, sink in enumerate(item.expected)}
            order = sorted(item.hops, key=lambda sink: (rank.get(sink, len(rank)), sink))
            hops = tuple(item.hops[sink] for sink in order)
            out.append(WaitResult(item.send, item.expected, hops, item.deadletter, item.reason))
        return tuple(out)
