"""The core's decisions for one event, one tick and one acknowledgement.

`Core.accept(event, now)` answers everything the shell needs to know about an
accepted event, as values it performs in order (DESIGN.md, "The way of an
event"): is it a duplicate; which dispatches go out, each a contract alarm map
for one sink; did the device come back online. `Core.tick(now)` does what time
alone decides: devices whose silence outlasted their timeout raise one
`device_offline` trouble each, and alarms past their deadline escalate.
`Core.acknowledge(...)` stops an alarm's escalation and times the ack.

No clocks, no I/O: the shell passes `now` and sleeps until `next_deadline()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from config.model import Config, Priority
from devices.checkpoint import normalise_plate, watchlist_event
from devices.events import Category, Event, Kind, Source, Stage, Transport
from devices.supervision import DeviceClass, Supervisor, Transition
from gateway.core.alarms import Alarm, AlarmBook
from gateway.core.dedup import Deduplicator
from gateway.core.interception import (
    ACTIVATION_PREFIX,
    Activation,
    Command,
    Interception,
    InterceptionChange,
)
from gateway.core.routing import Router, Target
from protocols.payloads import unfrozen_builder

__all__ = [
    "CONTRACT_VERSION",
    "AckOutcome",
    "Availability",
    "Core",
    "Dispatch",
    "Outcome",
    "TickOutcome",
    "alarm_body",
]

CONTRACT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Dispatch:
    """One alarm (or pass) for one sink. The shell adds `dispatch_ts` when it publishes."""

    alarm_id: str
    target: Target
    priority: Priority
    source: Source
    body: Mapping[str, object]
    ingress_ts: float
    device_ts: float | None

    @classmethod
    def of(cls, event: Event, target: Target, body: Mapping[str, object]) -> Dispatch:
        """The dispatch of `event`'s alarm map `body` to `target`."""
        return cls(
            event.alarm_id,
            target,
            event.priority,
            event.source,
            body,
            event.ingress_ts,
            event.device_ts,
        )


@dataclass(frozen=True, slots=True)
class Availability:
    """A device's retained availability changed."""

    device_class: DeviceClass
    device_id: str
    online: bool
    at: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do with one accepted event."""

    event: Event
    duplicate: bool
    dispatches: tuple[Dispatch, ...] = ()
    availability: Availability | None = None
    alarms: tuple[Alarm, ...] = ()
    """Alarms this outcome raised or changed: what the journal must write down."""
    commands: tuple[Command, ...] = ()
    """Orders to checkpoints (interception): published retained after the store."""
    activations: tuple[Activation, ...] = ()
    """Interceptions started or changed: what the journal must write down."""


@dataclass(frozen=True, slots=True)
class TickOutcome:
    """What time alone decided."""

    dispatches: tuple[Dispatch, ...]
    availability: tuple[Availability, ...]
    escalated: tuple[str, ...]
    """Alarm ids escalated by this tick (one count each for `alarmgw_escalations_total`)."""
    alarms: tuple[Alarm, ...] = ()
    """Alarms this tick raised or changed: what the journal must write down."""
    commands: tuple[Command, ...] = ()
    activations: tuple[Activation, ...] = ()


@dataclass(frozen=True, slots=True)
class AckOutcome:
    """An operator's acknowledgement, judged."""

    alarm_id: str
    known: bool
    first: bool
    latency_s: float | None
    """From the first confirmed dispatch (or raising) to this ack, for the first ack only."""


def alarm_body(event: Event, *, attempt: int = 1, escalated: bool = False) -> dict[str, object]:
    """The contract's dispatched alarm map, less `dispatch_ts` (CONTRACT.md, Egress)."""
    # The enums' plain values from one dict each: `.value` is a descriptor call.
    body: dict[str, object] = {
        "v": CONTRACT_VERSION,
        "alarm_id": event.dedup_key,  # `event.alarm_id`, without the property call
        "source": _SOURCES[event.source],
        "kind": _KINDS[event.kind],
        "category": _CATEGORIES[event.category],
        "stage": _STAGES[event.stage],
        "priority": int(event.priority),
        "device_id": event.device_id,
        "township": event.township,
        "village": event.village,
        "device_ts": event.device_ts,
        "ingress_ts": event.ingress_ts,
        "attempt": attempt,
        "escalated": escalated,
        "event": dict(event.event) if event.event is not None else {},
    }
    if event.household is not None:
        body["household"] = event.household
        body["group"] = event.group
    if event.checkpoint is not None:
        body["checkpoint"] = event.checkpoint
    return body


_SOURCES = {member: member.value for member in Source}
_KINDS = {member: member.value for member in Kind}
_CATEGORIES = {member: member.value for member in Category}
_STAGES = {member: member.value for member in Stage}

_SUPERVISED = {Source.PHONE: DeviceClass.PHONE, Source.CHECKPOINT: DeviceClass.CHECKPOINT}

# Enum members the hot path uses, read once: in Python 3.11 `Enum.MEMBER` goes
# through the enum metaclass's __getattr__ hook (50 ns); a module global is 8 ns.
_HEARTBEAT = Category.HEARTBEAT
_PASS = Category.PASS

# The values every event builds, built without the frozen cost and as immutable
# (protocols.payloads.unfrozen_builder).
_new_outcome = unfrozen_builder(Outcome)
_new_dispatch = unfrozen_builder(Dispatch)
_new_availability = unfrozen_builder(Availability)


class Core:
    """Dedup, routing, supervision and escalation, fed events and the time."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self.topology = config.topology
        self.operators = config.operators
        """Who may acknowledge each sink's alarms (`[operators]`; empty: not checked)."""
        self.router = Router(config)
        self.dedup = Deduplicator(
            window_s=config.dedup.window_s, max_entries=config.dedup.max_entries
        )
        self.alarms = AlarmBook(
            config.escalation.deadline_s,
            chain_length=len(self.router.chain),
            applies=lambda alarm, level: (
                self.router.escalation_target(alarm.event, level) is not None
            ),
        )
        self._touched: list[Alarm] = []
        self._offline_alarms: dict[str, str] = {}
        """Device id → its open `device_offline` alarm, cleared when the device is back."""
        timeouts = {
            DeviceClass.PHONE: config.supervision.phone_timeout_s,
            DeviceClass.CHECKPOINT: config.supervision.checkpoint_timeout_s,
        }
        self.supervisor = Supervisor(timeouts)
        # Alarm-receiver lines: each has its own timeout (a port may override the
        # district's), so each has its own one-device supervisor.
        self._lines: dict[str, tuple[str | None, Supervisor]] = {
            port.name: (
                port.township,
                Supervisor(
                    {
                        DeviceClass.RECEIVER: port.receiver_timeout_s
                        or config.supervision.receiver_timeout_s
                    }
                ),
            )
            for port in config.serial
            if port.protocol == "receiver"
        }
        self._watchlist = frozenset(normalise_plate(p) for p in config.watchlist)
        self.interception = Interception(config, self.router)
        """The rings: activations and their staffing requests (a second alarm book)."""
        self._intercepting = frozenset(
            kind
            for kind in Kind
            if config.interception.enabled
            and (kind is Kind.WATCHLIST_HIT or kind.value in config.interception.alarm_kinds)
        )
        self._changes: list[InterceptionChange] = []

    # -- events ----------------------------------------------------------------
    def accept(self, event: Event, now: float) -> Outcome:
        """Decide what an accepted event leads to."""
        # The values are built positionally: keywords cost 0.15 µs each time.
        availability: Availability | None = None
        dispatches: tuple[Dispatch, ...] = ()
        device_class = _SUPERVISED.get(event.source)
        if device_class is not None:
            back = self.supervisor.seen(device_class, event.device_id, now)
            if back is not None:
                availability = _new_availability(device_class, event.device_id, True, now)  # noqa: FBT003
                if back.last_seen is not None:
                    dispatches = self._raise_offline(back, now)
        # Heartbeats only feed supervision (most of all traffic): never deduped
        # (a repeated one changes nothing, and 130,000 phones' heartbeats would
        # crowd every alarm out of dedup memory), never routed.
        if event.category is _HEARTBEAT:
            touched = self._take_touched() if self._touched else ()
            return _new_outcome(event, False, dispatches, availability, touched)  # noqa: FBT003
        if self.dedup.is_duplicate(event, now):
            return _new_outcome(event, True, dispatches, availability, self._take_touched())  # noqa: FBT003
        dispatches += self._raise(event, now)
        if self._watchlist:
            hit = watchlist_event(event, self._watchlist)
            if hit is not None:
                dispatches += self._raise(hit, now)
        if self._changes:  # an interception started or grew: rare, off the usual path
            return self._with_changes(event, dispatches, availability)
        return _new_outcome(event, False, dispatches, availability, self._take_touched())  # noqa: FBT003

    def _with_changes(
        self, event: Event, dispatches: tuple[Dispatch, ...], availability: Availability | None
    ) -> Outcome:
        changes, self._changes = self._changes, []
        requests = [d for change in changes for d in self._requests(change)]
        return Outcome(
            event,
            duplicate=False,
            dispatches=(*dispatches, *requests),
            availability=availability,
            alarms=(*self._take_touched(), *(a for c in changes for a in c.alarms)),
            commands=tuple(command for change in changes for command in change.commands),
            activations=tuple(a for change in changes for a in change.activations),
        )

    def _requests(self, change: InterceptionChange) -> list[Dispatch]:
        """The dispatches of an interception's staffing requests (first or escalated)."""
        climbed = set(change.escalated)
        found: list[Dispatch] = []
        for request, target in change.requests:
            if request.alarm_id in climbed:
                alarm = self.interception.requests.get(request.alarm_id)
                attempt = alarm.attempt if alarm is not None else 1
                body = alarm_body(request, attempt=attempt, escalated=True)
            else:
                body = alarm_body(request)
            found.append(Dispatch.of(request, target, body))
        return found

    def _raise(self, event: Event, now: float) -> tuple[Dispatch, ...]:
        targets = self.router.targets(event)
        if not targets:
            return ()
        if event.category is not _PASS:
            self._touched.append(self.alarms.raised(event, self.router.level(targets), now))
            if event.kind in self._intercepting:
                change = self.interception.trigger(event, now)
                if change.activations:
                    self._changes.append(change)
        body = alarm_body(event)
        alarm_id = event.dedup_key  # `event.alarm_id`, without the property call
        priority = event.priority
        source = event.source
        ingress_ts = event.ingress_ts
        device_ts = event.device_ts
        return tuple(
            [
                _new_dispatch(alarm_id, target, priority, source, body, ingress_ts, device_ts)
                for target in targets
            ]
        )

    def line_heard(self, line: str, now: float) -> Outcome | None:
        """An alarm receiver's heartbeat (or any record) on serial line `line`.

        Returns the availability change and, when the line had gone silent, the
        restore of its `device_offline` trouble; None when nothing changed.
        """
        township, supervisor = self._lines[line]
        back = supervisor.seen(DeviceClass.RECEIVER, line, now)
        if back is None:
            return None
        # A line with no township in the configuration is the district's: the
        # fallback routing then tells its bureau.
        event = _availability_event(back, now, township=township or "")
        dispatches = self._raise_offline(back, now) if back.last_seen is not None else ()
        return Outcome(
            event,
            duplicate=False,
            dispatches=dispatches,
            availability=Availability(DeviceClass.RECEIVER, line, online=True, at=now),
            alarms=self._take_touched(),
        )

    def lines_online(self) -> int:
        """Alarm-receiver lines whose heartbeat is current."""
        return sum(s.online_count(DeviceClass.RECEIVER) for _, s in self._lines.values())

    def _take_touched(self) -> tuple[Alarm, ...]:
        if not self._touched:  # most events touch no alarm: no new list
            return ()
        touched, self._touched = tuple(self._touched), []
        return touched

    def rollback(self, outcome: Outcome) -> None:
        """Undo `accept` for an event that could not be stored: the device was not
        acknowledged and will send it again, which must not look like a duplicate."""
        if outcome.duplicate:
            return
        event = outcome.event
        self.dedup.forget(event.dedup_key, event.content_key)
        for alarm_id in {d.alarm_id for d in outcome.dispatches}:
            self.alarms.forget(alarm_id)
        raised = {d.alarm_id for d in outcome.dispatches}
        for activation in outcome.activations:
            if activation.triggers and activation.triggers[-1] in raised:
                self.interception.forget(activation, activation.triggers[-1])

    def dispatched(self, dispatch: Dispatch, now: float) -> Alarm | None:
        """The broker confirmed a dispatch (starts the ack clock on the first)."""
        target = dispatch.target
        return self._book(dispatch.alarm_id).dispatched(
            dispatch.alarm_id, (target.sink_kind, target.sink_id), now
        )

    def _book(self, alarm_id: str) -> AlarmBook:
        """The book an alarm id belongs to: staffing requests have their own."""
        return self.interception.requests if alarm_id.startswith(ACTIVATION_PREFIX) else self.alarms

    def find_alarm(self, alarm_id: str) -> Alarm | None:
        """An alarm or staffing request, by id, if it is still remembered."""
        return self._book(alarm_id).get(alarm_id)

    # -- time ------------------------------------------------------------------
    def tick(self, now: float) -> TickOutcome:
        """Offline devices and due escalations at `now`."""
        dispatches: list[Dispatch] = []
        availability: list[Availability] = []
        expired = self.supervisor.expire(now)
        for _, line_supervisor in self._lines.values():
            expired.extend(line_supervisor.expire(now))
        for gone in expired:
            availability.append(
                Availability(gone.device_class, gone.device_id, online=False, at=gone.at)
            )
            dispatches.extend(self._raise_offline(gone, now))
        escalated: list[str] = []
        for due in self.alarms.due(now):
            target = self.router.escalation_target(due.alarm.event, due.level)
            if target is None:
                continue
            escalated.append(due.alarm.event.alarm_id)
            self._touched.append(due.alarm)
            event = due.alarm.event
            body = alarm_body(event, attempt=due.alarm.attempt, escalated=True)
            dispatches.append(Dispatch.of(event, target, body))
        change = self.interception.tick(now)
        dispatches.extend(self._requests(change))
        escalated.extend(change.escalated)
        return TickOutcome(
            tuple(dispatches),
            tuple(availability),
            tuple(escalated),
            (*self._take_touched(), *change.alarms),
            change.commands,
            change.activations,
        )

    def request(
        self, api: str, op: str, fields: Mapping[str, object], now: float
    ) -> tuple[dict[str, object], TickOutcome | None]:
        """A request to one of the request/response APIs: its answer, and what it changed."""
        if api != "interception":
            return {"status": "error", "error": f"unknown API {api!r}"}, None
        names = frozenset(name for names in self.operators.values() for name in names)
        answer, change = self.interception.answer(op, fields, now, operators=names)
        if change is None:
            return answer, None
        return answer, TickOutcome((), (), (), change.alarms, change.commands, change.activations)

    def next_deadline(self) -> float | None:
        """When `tick` next has something to do."""
        candidates = [
            self.supervisor.next_deadline(),
            self.alarms.next_deadline(),
            self.interception.next_deadline(),
        ]
        candidates.extend(s.next_deadline() for _, s in self._lines.values())
        return min((d for d in candidates if d is not None), default=None)

    def _raise_offline(self, change: Transition, now: float) -> tuple[Dispatch, ...]:
        """A `device_offline` trouble, or its restore when the device is back."""
        event = self._offline_event(change, now)
        if event is None:
            return ()
        if change.online:
            open_alarm = self._offline_alarms.pop(change.device_id, None)
            if open_alarm is not None:
                cleared = self.alarms.clear(open_alarm)
                if cleared is not None:
                    self._touched.append(cleared)
        else:
            self._offline_alarms[change.device_id] = event.alarm_id
        return self._raise(event, now)

    def _offline_event(self, gone: Transition, now: float) -> Event | None:
        topo = self.topology
        household = checkpoint = village = group = None
        if gone.device_class is DeviceClass.PHONE:
            home = topo.households.get(gone.device_id)
            if home is None:
                return None
            household, village, group, township = home.id, home.village, home.group, home.township
        elif gone.device_class is DeviceClass.CHECKPOINT:
            site = topo.checkpoints.get(gone.device_id)
            if site is None:
                return None
            checkpoint, township = site.id, site.township
        elif gone.device_class is DeviceClass.RECEIVER and gone.device_id in self._lines:
            return _availability_event(gone, now, township=self._lines[gone.device_id][0] or "")
        else:
            return None
        return _availability_event(
            gone,
            now,
            township=township,
            village=village,
            group=group,
            household=household,
            checkpoint=checkpoint,
        )

    # -- operators -------------------------------------------------------------
    def acknowledge(self, alarm_id: str, by: str, now: float) -> AckOutcome:
        """An operator's ack from any sink: stops escalation, times the first ack."""
        found = self._book(alarm_id).acknowledge(alarm_id, by, now)
        if found is None:
            return AckOutcome(alarm_id, known=False, first=False, latency_s=None)
        alarm, first = found
        start = alarm.dispatched_at if alarm.dispatched_at is not None else alarm.raised_at
        latency = max(0.0, now - start) if first else None
        return AckOutcome(alarm_id, known=True, first=first, latency_s=latency)


def _availability_event(
    change: Transition,
    now: float,
    *,
    township: str,
    village: str | None = None,
    group: str | None = None,
    household: str | None = None,
    checkpoint: str | None = None,
) -> Event:
    """The gateway's own `device_offline` trouble for a device gone silent, or its
    restore (info priority, never escalated) when the device is heard again."""
    state = "online" if change.online else "offline"
    return Event(
        source=Source.GATEWAY,
        transport=Transport.INTERNAL,
        device_id=change.device_id,
        kind=Kind.DEVICE_OFFLINE,
        category=Category.DEVICE_OFFLINE,
        priority=Priority.INFO if change.online else Priority.TROUBLE,
        stage=Stage.RESTORE if change.online else Stage.NEW,
        dedup_key=f"gw/{state}/{change.device_id}/{round(change.at * 1000)}",
        content_key=None,
        device_ts=None,
        ingress_ts=now,
        township=township,
        village=village,
        group=group,
        household=household,
        checkpoint=checkpoint,
        event={
            "device_class": change.device_class.value,
            "last_seen": change.last_seen,
            "at": change.at,
        },
    )
