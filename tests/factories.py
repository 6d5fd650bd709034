"""Shared fixtures for the core's tests: a small district built in code, and event makers.

The district is built straight from `config.model`'s dataclasses, so these tests
do not depend on the loader. It has two townships, so that "the township of this
event" is never the only township there is:

    township t-east (station s-east)          township t-west (no station)
      village v-east-1                          village v-west-1
        group g-east-1                            group g-west-1
          household h-0001 (account 1234)           household h-0002 (account BEEF)
          household h-0003 (no account)
      checkpoints cp-a (A, unit station/s-east), cp-c (C, unit station/s-east)
                                                checkpoints cp-b (B, unit bureau/b-1)

The bureau is `b-1`; the watchlist holds `苏A12345` (written with spaces and a
lower-case letter, as an operator might type it).
"""

from __future__ import annotations

import dataclasses

from config.model import (
    Checkpoint,
    CheckpointClass,
    Config,
    DedupSettings,
    EscalationPolicy,
    Group,
    Household,
    Priority,
    Sink,
    SinkRef,
    SupervisionSettings,
    Township,
    Village,
)
from devices.checkpoint import normalise_checkpoint
from devices.events import Event, Transport
from devices.phone import normalise_phone, normalise_receiver_event
from protocols.contact_id import Qualifier
from protocols.payloads import CheckpointEventType, CheckpointMessage, PhoneMessage
from protocols.reasons import Rejected
from protocols.receiver import ReceiverDecoder, ReceiverEvent, build_record

__all__ = [
    "ACCOUNT",
    "BUREAU",
    "CP_A",
    "CP_B",
    "CP_C",
    "GROUP",
    "HOUSEHOLD",
    "HOUSEHOLD_NO_ACCOUNT",
    "HOUSEHOLD_WEST",
    "STATION",
    "T0",
    "TOWNSHIP",
    "TOWNSHIP_WEST",
    "VILLAGE",
    "VILLAGE_WEST",
    "WATCHED_PLATE",
    "checkpoint_event",
    "checkpoint_message",
    "make_config",
    "phone_event",
    "phone_message",
    "receiver_event",
    "receiver_record",
]

T0 = 1_700_000_000.0
"""A fixed "now" to start from: every test passes time explicitly."""

TOWNSHIP = "t-east"
TOWNSHIP_WEST = "t-west"
STATION = "s-east"
BUREAU = "b-1"
VILLAGE = "v-east-1"
VILLAGE_WEST = "v-west-1"
GROUP = "g-east-1"
GROUP_WEST = "g-west-1"
HOUSEHOLD = "h-0001"
HOUSEHOLD_WEST = "h-0002"
HOUSEHOLD_NO_ACCOUNT = "h-0003"
ACCOUNT = "1234"
ACCOUNT_WEST = "BEEF"
CP_A = "cp-a"
CP_B = "cp-b"
CP_C = "cp-c"
WATCHED_PLATE = "苏A12345"

_TIMEOUTS = SupervisionSettings(
    phone_timeout_s=900.0, checkpoint_timeout_s=180.0, receiver_timeout_s=90.0
)


def make_config(**changes: object) -> Config:
    """The test district; keyword arguments replace top-level `Config` fields."""
    config = Config(
        source="<tests/factories.py>",
        district_id="d-test",
        district_name="Test district",
        bureau=BUREAU,
        dedup=DedupSettings(window_s=3600.0, max_entries=10_000),
        supervision=_TIMEOUTS,
        escalation=EscalationPolicy(
            chain=("village", "township", "bureau"),
            deadline_s={
                Priority.LIFE_SAFETY: 60.0,
                Priority.PROPERTY: 300.0,
                Priority.TROUBLE: None,
                Priority.INFO: None,
            },
        ),
        townships=(
            Township(TOWNSHIP, "East township", station=STATION),
            Township(TOWNSHIP_WEST, "West township"),
        ),
        villages=(
            Village(VILLAGE, "East village", TOWNSHIP),
            Village(VILLAGE_WEST, "West village", TOWNSHIP_WEST),
        ),
        groups=(Group(GROUP, VILLAGE), Group(GROUP_WEST, VILLAGE_WEST)),
        households=(
            Household(HOUSEHOLD, VILLAGE, TOWNSHIP, GROUP, accounts=(ACCOUNT,)),
            Household(
                HOUSEHOLD_WEST, VILLAGE_WEST, TOWNSHIP_WEST, GROUP_WEST, accounts=(ACCOUNT_WEST,)
            ),
            Household(HOUSEHOLD_NO_ACCOUNT, VILLAGE, TOWNSHIP, GROUP),
        ),
        checkpoints=(
            Checkpoint(
                CP_A, "Ring 1 north", CheckpointClass.A, 1, TOWNSHIP, SinkRef("station", STATION)
            ),
            Checkpoint(
                CP_B, "Ring 2 west", CheckpointClass.B, 2, TOWNSHIP_WEST, SinkRef("bureau", BUREAU)
            ),
            Checkpoint(
                CP_C, "Ring 2 east", CheckpointClass.C, 2, TOWNSHIP, SinkRef("station", STATION)
            ),
        ),
        sinks=(
            Sink("station", STATION, "East police station"),
            Sink("bureau", BUREAU, "District bureau"),
        ),
        watchlist=frozenset({"苏a 12345"}),
    )
    return dataclasses.replace(config, **changes) if changes else config  # type: ignore[arg-type]


def phone_message(
    household: str = HOUSEHOLD,
    *,
    seq: int = 1,
    ts: float = T0 - 0.5,
    q: int = 1,
    code: int = 120,
    zone: int = 1,
    part: int = 1,
) -> PhoneMessage:
    """A phone's contract message (default: a new panic in zone 1)."""
    return PhoneMessage(household, seq, ts, q, code, zone, part)


def phone_event(
    config: Config,
    household: str = HOUSEHOLD,
    *,
    transport: Transport = Transport.MQTT,
    ingress_ts: float = T0,
    seq: int = 1,
    ts: float = T0 - 0.5,
    q: int = 1,
    code: int = 120,
    zone: int = 1,
    part: int = 1,
) -> Event:
    """A normalised phone event for a known household."""
    message = phone_message(household, seq=seq, ts=ts, q=q, code=code, zone=zone, part=part)
    event = normalise_phone(message, config.topology, transport=transport, ingress_ts=ingress_ts)
    assert isinstance(event, Event), event
    return event


def receiver_record(
    account: str = ACCOUNT,
    *,
    q: int = 1,
    code: int = 120,
    group: int = 1,
    zone: int = 1,
) -> ReceiverEvent:
    """A receiver record, printed by `build_record` and read back by the real decoder."""
    items = ReceiverDecoder().receive_data(
        build_record("01", "100", account, Qualifier(q), code, group, zone)
    )
    assert len(items) == 1
    record = items[0]
    assert isinstance(record, ReceiverEvent), record
    return record


def receiver_event(
    config: Config,
    account: str = ACCOUNT,
    *,
    ingress_ts: float = T0,
    q: int = 1,
    code: int = 120,
    group: int = 1,
    zone: int = 1,
) -> Event:
    """A normalised receiver event for a known account."""
    record = receiver_record(account, q=q, code=code, group=group, zone=zone)
    event = normalise_receiver_event(record, config.topology, ingress_ts=ingress_ts)
    assert isinstance(event, Event), event
    return event


def checkpoint_message(
    checkpoint: str = CP_A,
    *,
    record_id: str = "r-1",
    type: CheckpointEventType = CheckpointEventType.PASS,
    ts: float = T0 - 0.2,
    plate: str | None = "苏B67890",
    conf: float | None = 0.93,
    fault: str | None = None,
) -> CheckpointMessage:
    """A checkpoint's contract message (default: a pass of an unwatched plate)."""
    if type is not CheckpointEventType.PASS:
        plate = conf = None
    if type is CheckpointEventType.FAULT and fault is None:
        fault = "lens obscured"
    return CheckpointMessage(checkpoint, record_id, type, ts, plate=plate, conf=conf, fault=fault)


def checkpoint_event(
    config: Config,
    checkpoint: str = CP_A,
    *,
    transport: Transport = Transport.MQTT,
    ingress_ts: float = T0,
    record_id: str = "r-1",
    type: CheckpointEventType = CheckpointEventType.PASS,
    plate: str | None = "苏B67890",
) -> Event:
    """A normalised checkpoint event for a known checkpoint."""
    message = checkpoint_message(checkpoint, record_id=record_id, type=type, plate=plate)
    event = normalise_checkpoint(
        message, config.topology, transport=transport, ingress_ts=ingress_ts
    )
    assert not isinstance(event, Rejected), event
    return event
