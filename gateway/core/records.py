"""The core's values as plain maps, for the durable store (and back).

The store is content-agnostic (blobs); these functions are the only place that
knows how an `Event`, a `Dispatch` or an `Alarm` is written down, so a restart
rebuilds exactly what was accepted. Plain dicts of str/int/float/bool/None/maps,
ready for MessagePack. A record carries a format version `f`; reading an unknown
one is a `ValueError` (our own data, so a bug or a downgrade, not peer input).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from config.model import Priority
from devices.events import Category, Event, Kind, Source, Stage, Transport
from gateway.core.alarms import Alarm, AlarmState
from gateway.core.interception import Activation, ActivationState
from gateway.core.pipeline import Dispatch
from gateway.core.routing import Channel, Target

__all__ = [
    "ACTIVATION_RECORD",
    "OPEN_STATES",
    "activation_from_record",
    "activation_record",
    "alarm_from_record",
    "alarm_record",
    "dispatch_from_record",
    "dispatch_record",
    "dispatch_record_head",
    "event_from_record",
    "event_record",
]

_FORMAT = 1

ACTIVATION_RECORD = "activation"
"""The `t` of an activation's record: it shares the alarms table with alarms."""

OPEN_STATES: tuple[str, ...] = (
    AlarmState.RAISED.value,
    AlarmState.DISPATCHED.value,
    AlarmState.ESCALATED.value,
    ActivationState.ACTIVE.value,
)
"""States of alarm-table rows still being worked on: what a restart must read back,
and what a report must see however long ago it began (a device still offline)."""


def _check(record: Mapping[str, Any]) -> None:
    if record.get("f") != _FORMAT:
        raise ValueError(f"unknown record format {record.get('f')!r}")


def event_record(event: Event) -> dict[str, Any]:
    """An `Event` as a plain map."""
    return {
        "f": _FORMAT,
        "source": event.source.value,
        "transport": event.transport.value,
        "device_id": event.device_id,
        "kind": event.kind.value,
        "category": event.category.value,
        "priority": int(event.priority),
        "stage": event.stage.value,
        "dedup_key": event.dedup_key,
        "content_key": event.content_key,
        "device_ts": event.device_ts,
        "ingress_ts": event.ingress_ts,
        "township": event.township,
        "village": event.village,
        "group": event.group,
        "household": event.household,
        "checkpoint": event.checkpoint,
        "event": dict(event.event) if event.event is not None else None,
        "sequenced": event.sequenced,
    }


def event_from_record(record: Mapping[str, Any]) -> Event:
    """The `Event` an `event_record` wrote."""
    _check(record)
    return Event(
        source=Source(record["source"]),
        transport=Transport(record["transport"]),
        device_id=record["device_id"],
        kind=Kind(record["kind"]),
        category=Category(record["category"]),
        priority=Priority(record["priority"]),
        stage=Stage(record["stage"]),
        dedup_key=record["dedup_key"],
        content_key=record["content_key"],
        device_ts=record["device_ts"],
        ingress_ts=record["ingress_ts"],
        township=record["township"],
        village=record["village"],
        group=record["group"],
        household=record["household"],
        checkpoint=record["checkpoint"],
        event=record["event"],
        sequenced=record["sequenced"],
    )


def dispatch_record(dispatch: Dispatch) -> dict[str, Any]:
    """A `Dispatch` (its body included) as a plain map."""
    return {**dispatch_record_head(dispatch), "body": dict(dispatch.body)}


def dispatch_record_head(dispatch: Dispatch) -> dict[str, Any]:
    """`dispatch_record` less its "body": for a writer that appends the body already
    packed (the journal packs each body once, for the store and the wire)."""
    target = dispatch.target
    return {
        "f": _FORMAT,
        "alarm_id": dispatch.alarm_id,
        "sink_kind": target.sink_kind,
        "sink_id": target.sink_id,
        "channel": target.channel.value,
        "qos": target.qos,
        "priority": int(dispatch.priority),
        "source": dispatch.source.value,
        "ingress_ts": dispatch.ingress_ts,
        "device_ts": dispatch.device_ts,
    }


def dispatch_from_record(record: Mapping[str, Any]) -> Dispatch:
    """The `Dispatch` a `dispatch_record` wrote."""
    _check(record)
    return Dispatch(
        alarm_id=record["alarm_id"],
        target=Target(
            record["sink_kind"], record["sink_id"], Channel(record["channel"]), record["qos"]
        ),
        priority=Priority(record["priority"]),
        source=Source(record["source"]),
        body=record["body"],
        ingress_ts=record["ingress_ts"],
        device_ts=record["device_ts"],
    )


def alarm_record(alarm: Alarm) -> dict[str, Any]:
    """An `Alarm` (its event, state, level and deadline) as a plain map."""
    return {
        "f": _FORMAT,
        "event": event_record(alarm.event),
        "raised_at": alarm.raised_at,
        "level": alarm.level,
        "deadline_s": alarm.deadline_s,
        "state": alarm.state.value,
        "attempt": alarm.attempt,
        "dispatched_at": alarm.dispatched_at,
        "deadline": alarm.deadline,
        "acknowledged_at": alarm.acknowledged_at,
        "acknowledged_by": alarm.acknowledged_by,
        "escalations": alarm.escalations,
        "sinks": [list(s) for s in alarm.sinks],
    }


def alarm_from_record(record: Mapping[str, Any]) -> Alarm:
    """The `Alarm` an `alarm_record` wrote."""
    _check(record)
    return Alarm(
        event=event_from_record(record["event"]),
        raised_at=record["raised_at"],
        level=record["level"],
        deadline_s=record["deadline_s"],
        state=AlarmState(record["state"]),
        attempt=record["attempt"],
        dispatched_at=record["dispatched_at"],
        deadline=record["deadline"],
        acknowledged_at=record["acknowledged_at"],
        acknowledged_by=record["acknowledged_by"],
        escalations=record["escalations"],
        sinks=[(s[0], s[1]) for s in record["sinks"]],
    )


def activation_record(activation: Activation) -> dict[str, Any]:
    """An interception `Activation` as a plain map (`t` tells it from an alarm's)."""
    return {
        "f": _FORMAT,
        "t": ACTIVATION_RECORD,
        "activation_id": activation.activation_id,
        "trigger": activation.trigger,
        "target": activation.target,
        "look_for": dict(activation.look_for),
        "rings": list(activation.rings),
        "checkpoints": list(activation.checkpoints),
        "started_at": activation.started_at,
        "until": activation.until,
        "state": activation.state.value,
        "triggers": list(activation.triggers),
        "ended_at": activation.ended_at,
        "ended_by": activation.ended_by,
    }


def activation_from_record(record: Mapping[str, Any]) -> Activation:
    """The `Activation` an `activation_record` wrote."""
    _check(record)
    if record.get("t") != ACTIVATION_RECORD:
        raise ValueError(f"not an activation record: {record.get('t')!r}")
    return Activation(
        activation_id=record["activation_id"],
        trigger=record["trigger"],
        target=record["target"],
        look_for=record["look_for"],
        rings=list(record["rings"]),
        checkpoints=list(record["checkpoints"]),
        started_at=record["started_at"],
        until=record["until"],
        state=ActivationState(record["state"]),
        triggers=list(record["triggers"]),
        ended_at=record["ended_at"],
        ended_by=record["ended_by"],
    )
