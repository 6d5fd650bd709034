"""What a household alarm phone's message means.

Phones speak Contact ID semantics (PROTOCOLS.md, "Contact ID"), whether the
event came as a contract map over MQTT, a native serial frame, or a record an
alarm receiver printed. This module turns any of them into one `Event`:

* the event code gives the kind and the family; the family gives the routing
  category and the priority (PROTOCOLS.md: "100-129, 151 and 162 are life
  safety; 130-149 property; 3xx trouble; 6xx test" — 137 tamper is a trouble
  for routing, as the gateway issue asks);
* the qualifier gives the stage: 3 restore and 6 "previously reported" are
  forwarded as such, never as new alarms, so they never escalate;
* 602 periodic test is the phone's heartbeat and only feeds supervision.
"""

from __future__ import annotations

from config.model import Household, Priority, Topology
from devices.events import Category, Event, Kind, Source, Stage, Transport, new_event
from protocols.contact_id import Family, family
from protocols.payloads import PhoneFields, PhoneMessage
from protocols.reasons import Reason, Rejected
from protocols.receiver import ReceiverEvent

__all__ = [
    "HEARTBEAT_CODE",
    "classify",
    "content_key",
    "normalise_phone",
    "normalise_receiver_event",
    "phone_event",
]

HEARTBEAT_CODE = 602
"""Contact ID 602 periodic test: the reporting path's heartbeat (PROTOCOLS.md)."""

_STAGES = {1: Stage.NEW, 3: Stage.RESTORE, 6: Stage.STATUS}

# Enum members the hot path uses, read once: in Python 3.11 `Enum.MEMBER` goes
# through the enum metaclass's __getattr__ hook (50 ns); a module global is 8 ns.
_PHONE = Source.PHONE

# Exact codes first, then families. PROTOCOLS.md "Event code families".
_KIND_BY_CODE: dict[int, Kind] = {
    100: Kind.MEDICAL,
    101: Kind.MEDICAL,
    120: Kind.PANIC,
    121: Kind.DURESS,
    122: Kind.PANIC,
    123: Kind.PANIC,
    137: Kind.TAMPER,
    151: Kind.GAS,
    162: Kind.CARBON_MONOXIDE,
}

_BY_FAMILY: dict[Family, tuple[Kind, Category, Priority]] = {
    Family.LIFE_SAFETY: (Kind.ALARM, Category.LIFE_SAFETY, Priority.LIFE_SAFETY),
    Family.PROPERTY: (Kind.BURGLARY, Category.PROPERTY, Priority.PROPERTY),
    Family.SUPERVISORY: (Kind.TROUBLE, Category.TROUBLE, Priority.TROUBLE),
    Family.TROUBLE: (Kind.TROUBLE, Category.TROUBLE, Priority.TROUBLE),
    Family.OPEN_CLOSE: (Kind.OPEN_CLOSE, Category.INFO, Priority.INFO),
    Family.BYPASS: (Kind.BYPASS, Category.INFO, Priority.INFO),
    Family.TEST: (Kind.TEST, Category.INFO, Priority.INFO),
    Family.OTHER: (Kind.OTHER, Category.INFO, Priority.INFO),
}


def classify(code: int) -> tuple[Kind, Category, Priority]:
    """Kind, routing category and priority of a Contact ID event code (100-999)."""
    if code == HEARTBEAT_CODE:
        return Kind.HEARTBEAT, Category.HEARTBEAT, Priority.INFO
    kind, category, priority = _BY_FAMILY[family(code)]
    if 110 <= code <= 118:
        kind = Kind.FIRE
    elif 140 <= code <= 199 and code not in _KIND_BY_CODE:
        kind = Kind.ALARM  # general and 24-hour non-burglary alarms
    kind = _KIND_BY_CODE.get(code, kind)
    if kind is Kind.TAMPER:
        category, priority = Category.TROUBLE, Priority.TROUBLE
    return kind, category, priority


def content_key(household: str, q: int, code: int, zone: int, part: int) -> str:
    """What happened, independent of the path: used to recognise cross-path duplicates."""
    return f"{household}/{q}/{code}/{zone}/{part}"


_Meaning = tuple[Kind, Category, Priority, Stage]


def _meaning(q: int, code: int) -> _Meaning:
    kind, category, priority = classify(code)
    stage = _STAGES[q]
    if stage is not Stage.NEW and category is not Category.HEARTBEAT:
        # A restore or a repeat is news, not an alarm: routed like its family,
        # but at info priority so it never escalates and never jumps the queue.
        priority = Priority.INFO
    return kind, category, priority, stage


# Every qualifier and event code, classified once: a message then costs two dict
# lookups instead of a classification. Anything else (only our own misuse: the
# decoders admit no other values) goes through `_meaning` and fails there.
_MEANINGS: dict[int, dict[int, _Meaning]] = {
    q: {code: _meaning(q, code) for code in range(100, 1000)} for q in _STAGES
}


def _event(
    home: Household,
    topology: Topology,
    *,
    transport: Transport,
    dedup_key: str,
    q: int,
    code: int,
    zone: int,
    part: int,
    device_ts: float | None,
    ingress_ts: float,
    extra: dict[str, object],
    sequenced: bool = True,
) -> Event:
    try:
        kind, category, priority, stage = _MEANINGS[q][code]
    except KeyError:
        kind, category, priority, stage = _meaning(q, code)
    village = topology.villages[home.village]
    return new_event(
        source=Source.PHONE,
        transport=transport,
        device_id=home.id,
        kind=kind,
        category=category,
        priority=priority,
        stage=stage,
        dedup_key=dedup_key,
        content_key=content_key(home.id, q, code, zone, part),
        device_ts=device_ts,
        ingress_ts=ingress_ts,
        township=village.township,
        village=home.village,
        group=home.group,
        household=home.id,
        event={**extra, "q": q, "code": code, "zone": zone, "part": part},
        sequenced=sequenced,
    )


def normalise_phone(
    message: PhoneMessage, topology: Topology, *, transport: Transport, ingress_ts: float
) -> Event | Rejected:
    """A phone's contract message (MQTT or native frame) as an `Event`."""
    home = topology.households.get(message.household)
    if home is None:
        return Rejected(
            Reason.UNKNOWN_DEVICE,
            message.household.encode(),
            f"household {message.household!r} is not in the configuration",
        )
    fields = (message.seq, message.ts, message.q, message.code, message.zone, message.part)
    return phone_event(home, fields, topology, transport, ingress_ts)


def phone_event(
    home: Household,
    fields: PhoneFields,
    topology: Topology,
    transport: Transport,
    ingress_ts: float,
) -> Event:
    """`normalise_phone` once the caller has found the household `home` of a message
    whose values are `fields` (`protocols.payloads.decode_phone_fields`).

    The hot path (every heartbeat comes this way): one table lookup for the
    meaning, and the `Event` built positionally by `new_event`.
    """
    household = home.id
    seq, ts, q, code, zone, part = fields
    try:
        kind, category, priority, stage = _MEANINGS[q][code]
    except KeyError:
        kind, category, priority, stage = _meaning(q, code)
    return new_event(
        _PHONE,
        transport,
        household,
        kind,
        category,
        priority,
        stage,
        f"ph/{household}/{seq}",
        f"{household}/{q}/{code}/{zone}/{part}",  # content_key(...), inlined
        ts,
        ingress_ts,
        topology.villages[home.village].township,
        home.village,
        home.group,
        household,
        None,
        {"seq": seq, "q": q, "code": code, "zone": zone, "part": part},
    )


def normalise_receiver_event(
    record: ReceiverEvent, topology: Topology, *, ingress_ts: float
) -> Event | Rejected:
    """An alarm receiver's Contact ID record as the same `Event` a phone would give.

    The record carries no sequence number and no device clock (PROTOCOLS.md,
    receiver output), so its identity is the content plus the time it arrived;
    the core recognises the same alarm from another path by `content_key`.
    """
    home = topology.by_account.get(record.account)
    if home is None:
        return Rejected(
            Reason.UNKNOWN_ACCOUNT,
            record.raw,
            f"account {record.account!r} belongs to no household",
        )
    what = content_key(home.id, int(record.qualifier), record.code, record.zone, record.group)
    return _event(
        home,
        topology,
        transport=Transport.SERIAL,
        # Two records for one household in the same millisecond differ by content.
        dedup_key=f"rx/{what}@{round(ingress_ts * 1000)}",
        q=int(record.qualifier),
        code=record.code,
        zone=record.zone,
        part=record.group,
        device_ts=None,
        ingress_ts=ingress_ts,
        extra={"account": record.account, "receiver": record.receiver, "line": record.line},
        sequenced=False,
    )
