"""The typed settings and topology of one district: what the loader produces.

Everything here is a frozen value. `config.loader` is the only code that reads
the deployment file and the only code that builds a `Config` from one; the rest
of the gateway (devices/, gateway/, simulators/) reads these values and never a
raw TOML table. Defaults live here, on the dataclasses, so the loader, the tests
and a hand-built `Config` agree on them.

The topology mirrors DESIGN.md's district: households (each with an alarm phone,
identified on the receiver path by Contact ID accounts, PROTOCOLS.md) belong to
ten-household joint-defence groups (十户联防), groups to villages (村居, each with a
police room), villages to townships (镇区, each with a monitoring centre and
usually a police station). Checkpoints (卡口) are A/B/C-class, in rings 1-3, and
each is managed by a unit. Each destination of an alarm is a sink `kind/id`
(CONTRACT.md, "Egress"): `village/<id>`, `township/<id>` and `group/<id>` exist
for every village, township and group; stations and the bureau are declared.

`Config.topology` is the lookup index (DESIGN.md habit 9, "routing is a pure
index ... built once from the config"): dicts keyed by id, built on first use and
kept, so that looking up a household by id or by account is one dict access.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "DEFAULT_DEADLINES_S",
    "DEFAULT_ROUTES",
    "INTERCEPTION_ALARM_KINDS",
    "RINGS",
    "ROUTE_KEYS",
    "TARGETS",
    "Checkpoint",
    "CheckpointClass",
    "Config",
    "DedupSettings",
    "EscalationPolicy",
    "Group",
    "Household",
    "HttpSettings",
    "InterceptionPolicy",
    "MqttSettings",
    "Priority",
    "RoutingPolicy",
    "SerialPort",
    "Sink",
    "SinkRef",
    "StoreSettings",
    "SupervisionSettings",
    "Topology",
    "Township",
    "Village",
]


class Priority(enum.IntEnum):
    """An alarm's priority (CONTRACT.md `priority`: 1 life safety ... 4 info)."""

    LIFE_SAFETY = 1
    PROPERTY = 2
    TROUBLE = 3
    INFO = 4

    @property
    def key(self) -> str:
        """The config key for this priority: `life_safety`, `property`, `trouble`, `info`."""
        return self.name.lower()


class CheckpointClass(enum.StrEnum):
    """Checkpoint class (DESIGN.md): A bureau-run and manned 24 h, B station-run, C as needed."""

    A = "A"
    B = "B"
    C = "C"


# The routing table's keys: one per priority, plus the two kinds of alarm the
# gateway raises itself (a device gone silent, a checkpoint reporting a fault).
ROUTE_KEYS: tuple[str, ...] = (
    "life_safety",
    "property",
    "trouble",
    "info",
    "device_offline",
    "checkpoint_fault",
)

# The names a routing list or the escalation chain may use. Each resolves, per
# alarm, to one sink: `village`, `township`, `group` -> the household's (or the
# checkpoint's township's) implicit sinks; `station` -> the township's declared
# station; `bureau` -> the district's bureau; `unit` -> a checkpoint's managing
# unit. A name that does not apply to an alarm (e.g. `group` for a checkpoint)
# resolves to nothing for it.
TARGETS: tuple[str, ...] = ("village", "township", "group", "station", "bureau", "unit")

DEFAULT_ROUTES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "life_safety": ("village", "township", "group"),
        "property": ("village", "township"),
        "trouble": ("village",),
        "info": (),
        "device_offline": ("village",),
        "checkpoint_fault": ("unit",),
    }
)

# Seconds an alarm may stay unacknowledged before it escalates; None = never.
DEFAULT_DEADLINES_S: Mapping[Priority, float | None] = MappingProxyType(
    {
        Priority.LIFE_SAFETY: 60.0,
        Priority.PROPERTY: 300.0,
        Priority.TROUBLE: None,
        Priority.INFO: None,
    }
)

_DEFAULT_PASSES: Mapping[CheckpointClass, bool] = MappingProxyType(
    {CheckpointClass.A: True, CheckpointClass.B: True, CheckpointClass.C: False}
)


# ------------------------------------------------------------------ topology


@dataclass(frozen=True, slots=True)
class SinkRef:
    """A reference to a sink; its text form `kind/id` is the egress topic's middle."""

    kind: str
    id: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.id}"


@dataclass(frozen=True, slots=True)
class Sink:
    """A destination of alarms and passes: `alarmgw/out/<kind>/<id>/...` (CONTRACT.md)."""

    kind: str
    id: str
    name: str

    @property
    def ref(self) -> SinkRef:
        """This sink as a `SinkRef`."""
        return SinkRef(self.kind, self.id)


@dataclass(frozen=True, slots=True)
class Township:
    """A township (镇区) with its monitoring centre; `station` is its police station sink id."""

    id: str
    name: str
    station: str | None = None


@dataclass(frozen=True, slots=True)
class Village:
    """A village or community (村居) with its police room, in one township."""

    id: str
    name: str
    township: str


@dataclass(frozen=True, slots=True)
class Group:
    """A ten-household joint-defence group (十户联防) in one village."""

    id: str
    village: str


@dataclass(frozen=True, slots=True)
class Household:
    """A household with an alarm phone; `village` and `township` are derived from the group.

    `accounts` are the Contact ID accounts its phone reports under on the
    receiver path (PROTOCOLS.md: 4-6 characters of 0-9 and B-F), unique in the
    district; a phone that only speaks MQTT may have none.
    """

    id: str
    village: str
    township: str
    group: str
    accounts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A vehicle checkpoint (卡口); its class, ring and unit come from here, never the payload."""

    id: str
    name: str
    cls: CheckpointClass
    ring: int
    township: str
    unit: SinkRef


@dataclass(frozen=True, slots=True)
class Topology:
    """The lookup index over a config's topology; build it with `Config.topology`."""

    households: Mapping[str, Household]
    by_account: Mapping[str, Household]
    villages: Mapping[str, Village]
    townships: Mapping[str, Township]
    groups: Mapping[str, Group]
    checkpoints: Mapping[str, Checkpoint]
    sinks: Mapping[tuple[str, str], Sink]


# ------------------------------------------------------------------ settings


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """How to reach the broker. Secrets are resolved at load and kept out of `repr`."""

    broker_url: str = "embedded"
    embedded: bool = True
    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    base_topic: str = "alarmgw"
    client_id: str = "alarmgw"
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 3600


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Where `/metrics`, `/healthz` and `/readyz` listen (port 0 = ephemeral)."""

    host: str = "127.0.0.1"
    port: int = 9108


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """The durable outbox (SQLite, WAL): absolute path, retention and group commit."""

    path: str = "alarmgw.sqlite"
    retention_h: float = 72.0
    alarm_retention_days: float = 400.0
    """How long alarms are kept (the monthly report, the record a centre must keep)."""
    commit_interval_ms: float = 2.0
    commit_max_batch: int = 512


@dataclass(frozen=True, slots=True)
class DedupSettings:
    """How long and how many event ids are remembered to drop duplicates."""

    window_s: float = 86400.0
    max_entries: int = 500_000


@dataclass(frozen=True, slots=True)
class SupervisionSettings:
    """A device silent for longer than its timeout is offline."""

    phone_timeout_s: float = 900.0
    checkpoint_timeout_s: float = 180.0
    receiver_timeout_s: float = 90.0


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """Which targets (`TARGETS`) each kind of alarm goes to, and which passes are published."""

    targets: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: DEFAULT_ROUTES)
    passes: Mapping[CheckpointClass, bool] = field(default_factory=lambda: _DEFAULT_PASSES)
    passes_qos: int = 0

    def targets_for(self, key: str | Priority) -> tuple[str, ...]:
        """The targets for a priority or a `ROUTE_KEYS` name (unknown names route nowhere)."""
        name = key.key if isinstance(key, Priority) else key
        return self.targets.get(name, ())


@dataclass(frozen=True, slots=True)
class EscalationPolicy:
    """Unacknowledged alarms climb `chain` after `deadline_s[priority]` (None = never)."""

    chain: tuple[str, ...] = ("village", "township", "bureau")
    deadline_s: Mapping[Priority, float | None] = field(default_factory=lambda: DEFAULT_DEADLINES_S)


RINGS: tuple[int, ...] = (1, 2, 3)
"""The interception rings (三道堵控圈): 1 around the main town, 2 the district's
borders, 3 the emergency checkpoints on the main bridges (DESIGN.md)."""

INTERCEPTION_ALARM_KINDS: tuple[str, ...] = (
    "panic",
    "duress",
    "burglary",
    "alarm",
    "fire",
    "medical",
    "gas",
    "carbon_monoxide",
)
"""Household alarm kinds `[interception] alarm_kinds` may name (devices.events.Kind values)."""

_DEFAULT_ON_HIT: Mapping[int, tuple[int, ...]] = MappingProxyType(
    {1: (1, 2, 3), 2: (2, 3), 3: (3,)}
)


@dataclass(frozen=True, slots=True)
class InterceptionPolicy:
    """`[interception]`: which rings close around a watchlist hit or an alarm, and
    how their B and C checkpoints are called to staff (gateway/core/interception.py).

    `on_hit[r]`: the rings whose B and C checkpoints a watchlist hit at a ring-`r`
    checkpoint activates (by default that ring and every ring outside it).
    `alarm_kinds`: household alarm kinds (e.g. panic, duress: a robbery in
    progress) that also activate the rings whose `encloses` lists the household's
    township; empty: alarms activate nothing. `staff_deadline_s`: how long a
    checkpoint's unit has to confirm it is staffed before the request climbs
    `chain` (None: never). `duration_s`: how long an activation lasts unless
    ended sooner.
    """

    enabled: bool = True
    on_hit: Mapping[int, tuple[int, ...]] = field(default_factory=lambda: _DEFAULT_ON_HIT)
    alarm_kinds: frozenset[str] = frozenset()
    encloses: Mapping[int, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    staff_deadline_s: float | None = 300.0
    duration_s: float = 1800.0
    chain: tuple[str, ...] = ("unit", "station", "bureau")


@dataclass(frozen=True, slots=True)
class SerialPort:
    """One serial line: an alarm receiver's output or a native-frame device bus."""

    name: str
    device: str
    baud: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1.0
    protocol: str = "receiver"
    receiver_timeout_s: float | None = None
    township: str | None = None
    """Whose monitoring centre hears that this line went silent (None: the bureau's)."""


# ------------------------------------------------------------------ the whole


@dataclass(frozen=True, slots=True, repr=False)
class Config:
    """One district's deployment: settings, policy and topology, all validated.

    `sinks` holds the declared sinks and the implicit ones (every township,
    village and group). `source` is the absolute path of the file it came from.
    """

    source: str
    district_id: str
    district_name: str
    bureau: str
    timezone: str = "Asia/Shanghai"
    """The district's time zone (IANA name): where a month begins, for the report."""
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    dedup: DedupSettings = field(default_factory=DedupSettings)
    supervision: SupervisionSettings = field(default_factory=SupervisionSettings)
    routing: RoutingPolicy = field(default_factory=RoutingPolicy)
    escalation: EscalationPolicy = field(default_factory=EscalationPolicy)
    interception: InterceptionPolicy = field(default_factory=InterceptionPolicy)
    townships: tuple[Township, ...] = ()
    villages: tuple[Village, ...] = ()
    groups: tuple[Group, ...] = ()
    households: tuple[Household, ...] = ()
    checkpoints: tuple[Checkpoint, ...] = ()
    sinks: tuple[Sink, ...] = ()
    serial: tuple[SerialPort, ...] = ()
    watchlist: frozenset[str] = frozenset()
    operators: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    """Sink (`kind/id`) → the operators who may acknowledge its alarms (`[operators]`);
    empty: acknowledgements are not checked against names (the broker's ACL still
    decides who may publish on a sink's ack topic)."""
    # The index, built on first use; `dataclasses.replace` starts it afresh.
    _topology: Topology | None = field(default=None, init=False, repr=False, compare=False)

    def __repr__(self) -> str:
        # A district has 130,000 households: a repr that lists them helps nobody.
        return (
            f"Config(source={self.source!r}, district_id={self.district_id!r}, "
            f"townships={len(self.townships)}, villages={len(self.villages)}, "
            f"groups={len(self.groups)}, households={len(self.households)}, "
            f"checkpoints={len(self.checkpoints)}, sinks={len(self.sinks)}, "
            f"serial={len(self.serial)}, mqtt={self.mqtt!r})"
        )

    @property
    def topology(self) -> Topology:
        """The lookup index over the topology, built once on first use."""
        topology = self._topology
        if topology is None:
            topology = _index(self)
            # Frozen: the cache is the one field set after construction.
            object.__setattr__(self, "_topology", topology)
        return topology


def _index(config: Config) -> Topology:
    households = {h.id: h for h in config.households}
    by_account = {account: h for h in config.households for account in h.accounts}
    return Topology(
        households=MappingProxyType(households),
        by_account=MappingProxyType(by_account),
        villages=MappingProxyType({v.id: v for v in config.villages}),
        townships=MappingProxyType({t.id: t for t in config.townships}),
        groups=MappingProxyType({g.id: g for g in config.groups}),
        checkpoints=MappingProxyType({c.id: c for c in config.checkpoints}),
        sinks=MappingProxyType({(s.kind, s.id): s for s in config.sinks}),
    )
