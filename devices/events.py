"""The normalised event: what every ingress path turns a device's message into.

A phone's panic over MQTT, the same panic printed by an alarm receiver on a
serial port, and a checkpoint's plate read all become one `Event` value, so the
core (dedup, routing, escalation) never looks at a wire format. `event` is the
contract's normalised ingress map (CONTRACT.md, "A dispatched alarm"), carried
verbatim into every dispatch.

`Event` is a frozen dataclass; building one the usual way costs an
`object.__setattr__` per field (1.2 µs for its eighteen), and every message
builds one. The hot paths build it with `new_event`, which takes the same
arguments and gives the same immutable value in a fifth of the time
(`protocols.payloads.unfrozen_builder` says how).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from config.model import Priority
from protocols.payloads import unfrozen_builder

__all__ = [
    "Category",
    "Event",
    "Kind",
    "Source",
    "Stage",
    "Transport",
    "new_event",
]


class Source(enum.StrEnum):
    """Who raised the event (the contract's `source` key and a metric label)."""

    PHONE = "phone"
    CHECKPOINT = "checkpoint"
    GATEWAY = "gateway"


class Transport(enum.StrEnum):
    """How it reached the gateway (the `transport` metric label)."""

    MQTT = "mqtt"
    SERIAL = "serial"
    INTERNAL = "internal"


class Kind(enum.StrEnum):
    """What happened, in the contract's vocabulary (the alarm's `kind`)."""

    PANIC = "panic"
    DURESS = "duress"
    FIRE = "fire"
    MEDICAL = "medical"
    GAS = "gas"
    CARBON_MONOXIDE = "carbon_monoxide"
    BURGLARY = "burglary"
    ALARM = "alarm"
    TAMPER = "tamper"
    TROUBLE = "trouble"
    DEVICE_OFFLINE = "device_offline"
    WATCHLIST_HIT = "watchlist_hit"
    CHECKPOINT_FAULT = "checkpoint_fault"
    INTERCEPTION = "interception"
    """A checkpoint called to staff for an interception (gateway/core/interception.py)."""
    OPEN_CLOSE = "open_close"
    BYPASS = "bypass"
    TEST = "test"
    HEARTBEAT = "heartbeat"
    PASS = "pass"  # noqa: S105 - a vehicle pass, not a password
    OTHER = "other"


class Category(enum.StrEnum):
    """Which routing rule applies (the keys of config's `[routing]`)."""

    LIFE_SAFETY = "life_safety"
    PROPERTY = "property"
    TROUBLE = "trouble"
    INFO = "info"
    DEVICE_OFFLINE = "device_offline"
    CHECKPOINT_FAULT = "checkpoint_fault"
    WATCHLIST = "watchlist"
    INTERCEPTION = "interception"
    """A staffing request to a checkpoint's unit; routed by the interception policy."""
    PASS = "pass"  # noqa: S105 - a vehicle pass, not a password
    HEARTBEAT = "heartbeat"
    """Feeds supervision only; never dispatched."""


class Stage(enum.StrEnum):
    """Contact ID qualifier, in words: a restore or a repeat is not a new alarm."""

    NEW = "new"
    RESTORE = "restore"
    STATUS = "status"


@dataclass(frozen=True, slots=True)
class Event:
    """One accepted device message, normalised and placed in the district.

    `dedup_key` identifies the event itself (a retransmission has the same one);
    `content_key`, when present, identifies what happened independently of the
    path (a receiver record carries no sequence number), so the same alarm
    arriving by MQTT and by serial is recognised.
    """

    source: Source
    transport: Transport
    device_id: str
    kind: Kind
    category: Category
    priority: Priority
    stage: Stage
    dedup_key: str
    content_key: str | None
    device_ts: float | None
    ingress_ts: float
    township: str
    village: str | None = None
    group: str | None = None
    household: str | None = None
    checkpoint: str | None = None
    event: Mapping[str, object] | None = None
    """The contract's normalised ingress map (seq, q, code, zone, part / id, plate...)."""
    sequenced: bool = True
    """False when the path gives the event no identity of its own (receiver records):
    then a repeat of the same content is a duplicate even on the same path."""

    @property
    def alarm_id(self) -> str:
        """Stable across retransmissions, paths, retries and escalations."""
        return self.dedup_key


new_event = unfrozen_builder(Event)
"""`Event(...)` for the hot path: the same parameters and the same value, built faster."""
