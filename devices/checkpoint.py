"""What a checkpoint camera's message means.

A checkpoint's class, ring, township and managing unit come from the
configuration, never from the payload (CONTRACT.md). A `pass` is traffic to be
routed by class; a pass whose plate is on the watchlist (布控) is also an alarm
(GA/T 497: hits must alarm on site and remotely); a `fault` is a trouble for
the managing unit; a `heartbeat` only feeds supervision.
"""

from __future__ import annotations

from collections.abc import Collection

from config.model import Priority, Topology
from devices.events import Category, Event, Kind, Source, Stage, Transport
from protocols.payloads import CheckpointEventType, CheckpointMessage, checkpoint_payload
from protocols.reasons import Reason, Rejected

__all__ = ["normalise_checkpoint", "normalise_plate", "watchlist_event"]

# Chinese plate serials never use I or O (PROTOCOLS.md), so these are safe
# corrections of a recogniser's misreads before watchlist matching.
_SERIAL_FIXES = str.maketrans({"O": "0", "I": "1"})


def normalise_plate(plate: str) -> str:
    """Upper-case, no spaces or separators, I→1 and O→0 in the serial part.

    The first character is the province (a Chinese character), the second the
    city letter; only the serial after them is corrected.
    """
    compact = "".join(ch for ch in plate.upper() if ch not in " ·.-")
    if len(compact) <= 2:
        return compact
    return compact[:2] + compact[2:].translate(_SERIAL_FIXES)


def normalise_checkpoint(
    message: CheckpointMessage,
    topology: Topology,
    *,
    transport: Transport,
    ingress_ts: float,
) -> Event | Rejected:
    """A checkpoint's contract message (MQTT or native frame) as an `Event`."""
    site = topology.checkpoints.get(message.checkpoint)
    if site is None:
        return Rejected(
            Reason.UNKNOWN_DEVICE,
            message.checkpoint.encode(),
            f"checkpoint {message.checkpoint!r} is not in the configuration",
        )
    if message.type is CheckpointEventType.PASS:
        kind, category, priority = Kind.PASS, Category.PASS, Priority.INFO
    elif message.type is CheckpointEventType.FAULT:
        kind, category, priority = (
            Kind.CHECKPOINT_FAULT,
            Category.CHECKPOINT_FAULT,
            Priority.TROUBLE,
        )
    else:
        kind, category, priority = Kind.HEARTBEAT, Category.HEARTBEAT, Priority.INFO
    body = checkpoint_payload(message)
    body.pop("v", None)
    return Event(
        source=Source.CHECKPOINT,
        transport=transport,
        device_id=site.id,
        kind=kind,
        category=category,
        priority=priority,
        stage=Stage.NEW,
        dedup_key=f"cp/{site.id}/{message.id}",
        content_key=None,
        device_ts=message.ts,
        ingress_ts=ingress_ts,
        township=site.township,
        checkpoint=site.id,
        event=body,
    )


def watchlist_event(passed: Event, watchlist: Collection[str]) -> Event | None:
    """The watchlist alarm a pass raises, or None.

    Matching is exact on the normalised plate; the pass itself is still routed
    as traffic. The alarm has its own identity so its dedup and escalation do
    not collide with the pass.
    """
    if passed.category is not Category.PASS or passed.event is None:
        return None
    plate = passed.event.get("plate")
    if not isinstance(plate, str) or not plate:
        return None
    if normalise_plate(plate) not in watchlist:
        return None
    return Event(
        source=passed.source,
        transport=passed.transport,
        device_id=passed.device_id,
        kind=Kind.WATCHLIST_HIT,
        category=Category.WATCHLIST,
        priority=Priority.PROPERTY,
        stage=Stage.NEW,
        dedup_key=f"wl/{passed.dedup_key}",
        content_key=None,
        device_ts=passed.device_ts,
        ingress_ts=passed.ingress_ts,
        township=passed.township,
        checkpoint=passed.checkpoint,
        event={**passed.event, "match": "exact"},
    )
