"""What a checkpoint camera's message means.

A checkpoint's class, ring, township and managing unit come from the
configuration, never from the payload (CONTRACT.md). A `pass` is traffic to be
routed by class; a pass whose plate is on the watchlist (布控) is also an alarm
(GA/T 497: hits must alarm on site and remotely); a `fault` is a trouble for
the managing unit; a `heartbeat` only feeds supervision.
"""

from __future__ import annotations

from collections.abc import Collection

from config.model import Checkpoint, Priority, Topology
from devices.events import Category, Event, Kind, Source, Stage, Transport, new_event
from protocols.payloads import CheckpointEventType, CheckpointMessage
from protocols.reasons import Reason, Rejected

__all__ = ["checkpoint_event", "normalise_checkpoint", "normalise_plate", "watchlist_event"]

# Chinese plate serials never use I or O (PROTOCOLS.md), so these are safe
# corrections of a recogniser's misreads before watchlist matching.
_SERIAL_FIXES = str.maketrans({"O": "0", "I": "1"})
_SEPARATORS = str.maketrans("", "", " ·.-")

# Enum members the hot path uses, read once: in Python 3.11 `Enum.MEMBER` goes
# through the enum metaclass's __getattr__ hook (50 ns); a module global is 8 ns.
_CHECKPOINT = Source.CHECKPOINT
_NEW = Stage.NEW
_PASS = Category.PASS


def normalise_plate(plate: str) -> str:
    """Upper-case, no spaces or separators, I→1 and O→0 in the serial part.

    The first character is the province (a Chinese character), the second the
    city letter; only the serial after them is corrected.
    """
    compact = plate.upper().translate(_SEPARATORS)
    if len(compact) <= 2:
        return compact
    return compact[:2] + compact[2:].translate(_SERIAL_FIXES)


# What each record type means: kind, routing category, priority, and the type's
# contract text for the event map (looked up once instead of per attribute).
_MEANINGS: dict[CheckpointEventType, tuple[Kind, Category, Priority, str]] = {
    CheckpointEventType.PASS: (Kind.PASS, Category.PASS, Priority.INFO, "pass"),
    CheckpointEventType.FAULT: (
        Kind.CHECKPOINT_FAULT,
        Category.CHECKPOINT_FAULT,
        Priority.TROUBLE,
        "fault",
    ),
    CheckpointEventType.HEARTBEAT: (Kind.HEARTBEAT, Category.HEARTBEAT, Priority.INFO, "heartbeat"),
}


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
    return checkpoint_event(message, site, transport, ingress_ts)


def checkpoint_event(
    message: CheckpointMessage, site: Checkpoint, transport: Transport, ingress_ts: float
) -> Event:
    """`normalise_checkpoint` once the caller has found the message's checkpoint `site`.

    The event map is the contract map less `v` (`checkpoint_payload`'s keys, in
    its order, without the keys that are None), built here directly.
    """
    kind, category, priority, type_text = _MEANINGS[message.type]
    body: dict[str, object] = {"id": message.id, "type": type_text, "ts": message.ts}
    if message.plate is not None:
        body["plate"] = message.plate
    if message.conf is not None:
        body["conf"] = message.conf
    if message.lane is not None:
        body["lane"] = message.lane
    if message.dir is not None:
        body["dir"] = message.dir
    if message.speed is not None:
        body["speed"] = message.speed
    if message.vtype is not None:
        body["vtype"] = message.vtype
    if message.color is not None:
        body["color"] = message.color
    if message.img is not None:
        body["img"] = message.img
    if message.fault is not None:
        body["fault"] = message.fault
    checkpoint = site.id
    return new_event(
        _CHECKPOINT,
        transport,
        checkpoint,
        kind,
        category,
        priority,
        _NEW,
        f"cp/{checkpoint}/{message.id}",
        None,
        message.ts,
        ingress_ts,
        site.township,
        None,
        None,
        None,
        checkpoint,
        body,
    )


def watchlist_event(passed: Event, watchlist: Collection[str]) -> Event | None:
    """The watchlist alarm a pass raises, or None.

    Matching is exact on the normalised plate; the pass itself is still routed
    as traffic. The alarm has its own identity so its dedup and escalation do
    not collide with the pass.
    """
    if passed.category is not _PASS or passed.event is None:
        return None
    plate = passed.event.get("plate")
    if not isinstance(plate, str) or not plate:
        return None
    if normalise_plate(plate) not in watchlist:
        return None
    return new_event(
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
