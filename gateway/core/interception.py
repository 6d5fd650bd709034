"""Interception rings (三道堵控圈): which checkpoints to staff, and who has not confirmed.

The district's checkpoints exist to stop a vehicle. A-class ones are staffed
around the clock; B-class (the police station's) are staffed on command, C-class
when needed. When a listed vehicle is seen (a watchlist hit), or, by policy, a
household raises a robbery-type alarm, the rings that close around it must be
staffed: the B and C checkpoints of those rings are *activated*.

An **activation** (`ic/<trigger alarm id>`) names what to look for (the plate,
its list and reason; or the household and its alarm), its rings, its
checkpoints and until when. For each checkpoint it owes two things:

* a **command** on the checkpoint's own topic
  (`<base>/out/checkpoint/<id>/commands`, retained, so a box that reconnects sees
  the current order): `activate` with what to look for and until when, later
  `deactivate`;
* a **staffing request**, an alarm (`ic/<trigger>/<checkpoint>`, kind
  `interception`) to the checkpoint's managing unit, which confirms the post is
  staffed by acknowledging it on its ack topic like any alarm. One not confirmed
  within `staff_deadline_s` climbs the policy's chain (unit → station → bureau),
  each level once, a level whose sink is one already told being skipped.

Repeated sightings extend, not multiply: a trigger whose target (the listed
plate, or the alarm) already has an activation running extends its end and
adds the checkpoints of rings it did not cover; the checkpoints already
activated get the new end in a fresh `activate` command, their staffing
requests stand. The checkpoint that saw the vehicle is not activated (its unit
has the hit itself).

An activation ends by an operator's command (`end`) or when its time is up
(`expire`): every checkpoint gets `deactivate`, and staffing requests still
open are cleared (no more escalation; a late confirmation is still recorded).

Pure, like the rest of the core: `now` is an argument, the caller persists the
activations and alarms it is handed (`touched`) and publishes the commands and
dispatches it is given, and asks `next_deadline()` when to call back.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from config.model import CheckpointClass, Config, Priority
from devices.checkpoint import normalise_plate
from devices.events import Category, Event, Kind, Source, Stage, Transport
from gateway.core.alarms import Alarm, AlarmBook
from gateway.core.routing import Router, Target

__all__ = [
    "ACTIVATION_PREFIX",
    "Activation",
    "ActivationState",
    "Command",
    "Interception",
    "InterceptionChange",
]

ACTIVATION_PREFIX = "ic/"
"""Activation ids and their staffing requests' alarm ids start with this."""

_CALLED = frozenset({CheckpointClass.B, CheckpointClass.C})
"""Checkpoint classes staffed on command: the ones an activation calls."""


class ActivationState(enum.StrEnum):
    """Where an activation is in its life."""

    ACTIVE = "active"
    ENDED = "ended"
    """Ended by an operator's command."""
    EXPIRED = "expired"
    """Its time ran out."""


@dataclass(slots=True)
class Activation:
    """One interception: what to look for, where, until when, and how it stands."""

    activation_id: str
    trigger: str
    """The alarm id of the hit or alarm that started it."""
    target: str
    """What it is after (`plate:<normalised plate>` or `alarm:<alarm id>`): one
    activation runs per target; a new trigger for it extends that one."""
    look_for: Mapping[str, object]
    rings: list[int]
    checkpoints: list[str]
    started_at: float
    until: float
    state: ActivationState = ActivationState.ACTIVE
    triggers: list[str] = field(default_factory=list)
    """Every trigger since it started (the first is `trigger`)."""
    ended_at: float | None = None
    ended_by: str | None = None

    def staffing_id(self, checkpoint: str) -> str:
        """The alarm id of the staffing request to `checkpoint`'s unit."""
        return f"{self.activation_id}/{checkpoint}"


@dataclass(frozen=True, slots=True)
class Command:
    """A retained order to one checkpoint (`<base>/out/checkpoint/<id>/commands`)."""

    checkpoint: str
    body: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class InterceptionChange:
    """What one trigger, tick or end decided: the shell stores, then publishes, it all."""

    activations: tuple[Activation, ...] = ()
    """Activations started or changed: to be written down."""
    requests: tuple[tuple[Event, Target], ...] = ()
    """Staffing requests to dispatch (the alarm's event, its sink) — first ones and
    escalations alike; `escalated` says which are climbs of the chain."""
    escalated: tuple[str, ...] = ()
    """Staffing request ids that climbed a level."""
    commands: tuple[Command, ...] = ()
    alarms: tuple[Alarm, ...] = ()
    """Staffing requests raised or changed: to be written down."""


_NOTHING = InterceptionChange()


class Interception:
    """The rings of one district and the activations running on them."""

    def __init__(self, config: Config, router: Router) -> None:
        policy = config.interception
        self._policy = policy
        self._router = router
        self._topology = config.topology
        self._enabled = policy.enabled
        self._alarm_kinds = frozenset(policy.alarm_kinds)
        self._chain = tuple(policy.chain)
        self._called: dict[int, tuple[str, ...]] = {}
        """Ring → its B and C checkpoints, in configuration order."""
        for site in config.checkpoints:
            if site.cls in _CALLED:
                self._called[site.ring] = (*self._called.get(site.ring, ()), site.id)
        deadline = policy.staff_deadline_s
        self.requests = AlarmBook(
            dict.fromkeys(Priority, deadline),
            chain_length=len(self._chain),
            applies=self._applies,
        )
        """The staffing requests, escalated like alarms along the policy's chain."""
        self._active: dict[str, Activation] = {}
        """Activation id → activation, running ones only."""
        self._by_target: dict[str, str] = {}
        """Target → the id of the activation running for it."""
        self._ends: list[tuple[float, str]] = []
        """(until, activation id): a heap; stale entries are skipped."""

    # -- queries -----------------------------------------------------------------
    def active(self) -> list[Activation]:
        """Running activations, oldest first."""
        return sorted(self._active.values(), key=lambda a: a.started_at)

    def get(self, activation_id: str) -> Activation | None:
        """A running activation."""
        return self._active.get(activation_id)

    def standing(self) -> dict[str, int]:
        """Checkpoints of running activations by standing: waiting, escalated, confirmed."""
        counts: dict[str, int] = {}
        for activation in self._active.values():
            for checkpoint in activation.checkpoints:
                state = self._post_state(self.requests.get(activation.staffing_id(checkpoint)))
                counts[state] = counts.get(state, 0) + 1
        return counts

    @staticmethod
    def _post_state(request: Alarm | None) -> str:
        if request is None:
            return "unknown"
        if request.acknowledged_at is not None:
            return "confirmed"
        return "escalated" if request.escalations else "waiting"

    def triggers(self, event: Event) -> bool:
        """Whether `event`'s alarm may start or extend an activation (cheap: per alarm)."""
        if not self._enabled:
            return False
        if event.kind is Kind.WATCHLIST_HIT:
            return event.checkpoint is not None
        return event.household is not None and event.kind.value in self._alarm_kinds

    # -- decisions -----------------------------------------------------------------
    def trigger(self, event: Event, now: float) -> InterceptionChange:
        """A hit or an alarm that may activate rings; nothing if no ring closes around it."""
        if not self.triggers(event):
            return _NOTHING
        rings, seen_at, target, look_for = self._plan(event)
        checkpoints = [cp for ring in rings for cp in self._called.get(ring, ()) if cp != seen_at]
        if not checkpoints:
            return _NOTHING
        until = now + self._policy.duration_s
        running_id = self._by_target.get(target)
        running = self._active.get(running_id) if running_id is not None else None
        if running is None:
            activation = Activation(
                activation_id=f"{ACTIVATION_PREFIX}{event.alarm_id}",
                trigger=event.alarm_id,
                target=target,
                look_for=look_for,
                rings=list(rings),
                checkpoints=[],
                started_at=now,
                until=until,
                triggers=[event.alarm_id],
            )
            self._active[activation.activation_id] = activation
            self._by_target[target] = activation.activation_id
            fresh = _unique(checkpoints)
            renewed: list[str] = []
        else:
            activation = running
            activation.until = max(activation.until, until)
            activation.look_for = {**activation.look_for, **look_for}
            activation.triggers.append(event.alarm_id)
            activation.rings.extend(r for r in rings if r not in activation.rings)
            fresh = [cp for cp in _unique(checkpoints) if cp not in activation.checkpoints]
            renewed = list(activation.checkpoints)
        activation.checkpoints.extend(fresh)
        heapq.heappush(self._ends, (activation.until, activation.activation_id))
        requests: list[tuple[Event, Target]] = []
        alarms: list[Alarm] = []
        for checkpoint in fresh:
            request = self._request_event(activation, checkpoint, now)
            target_sink = self._resolve(0, request)
            alarm = self.requests.raised(request, 0, now)
            alarms.append(alarm)
            if target_sink is not None:
                requests.append((request, target_sink))
        commands = [self._activate(activation, cp, now) for cp in (*renewed, *fresh)]
        return InterceptionChange(
            activations=(activation,),
            requests=tuple(requests),
            commands=tuple(commands),
            alarms=tuple(alarms),
        )

    def end(self, activation_id: str, by: str, now: float) -> InterceptionChange | None:
        """An operator ends a running activation; None if none runs by that id."""
        activation = self._active.get(activation_id)
        if activation is None:
            return None
        return self._close(activation, ActivationState.ENDED, by, now)

    def tick(self, now: float) -> InterceptionChange:
        """Activations whose time is up, and staffing requests past their deadline."""
        activations: list[Activation] = []
        commands: list[Command] = []
        alarms: list[Alarm] = []
        while self._ends and self._ends[0][0] <= now:
            until, activation_id = heapq.heappop(self._ends)
            activation = self._active.get(activation_id)
            if activation is None or activation.until != until:
                continue  # ended, or extended since
            closed = self._close(activation, ActivationState.EXPIRED, None, now)
            activations.extend(closed.activations)
            commands.extend(closed.commands)
            alarms.extend(closed.alarms)
        requests: list[tuple[Event, Target]] = []
        escalated: list[str] = []
        for due in self.requests.due(now):
            target = self._resolve(due.level, due.alarm.event)
            if target is None:  # pragma: no cover - `applies` only arms levels that resolve
                continue
            requests.append((due.alarm.event, target))
            escalated.append(due.alarm.event.alarm_id)
            alarms.append(due.alarm)
        if not (activations or requests or alarms):
            return _NOTHING
        return InterceptionChange(
            activations=tuple(activations),
            requests=tuple(requests),
            escalated=tuple(escalated),
            commands=tuple(commands),
            alarms=tuple(alarms),
        )

    def next_deadline(self) -> float | None:
        """The earliest end of an activation or staffing deadline."""
        ends = self._ends
        while ends:
            until, activation_id = ends[0]
            activation = self._active.get(activation_id)
            if activation is not None and activation.until == until:
                break
            heapq.heappop(ends)
        candidates = [ends[0][0]] if ends else []
        request = self.requests.next_deadline()
        if request is not None:
            candidates.append(request)
        return min(candidates, default=None)

    # -- the request API (`<base>/interception/request/<op>`) ---------------------------
    def answer(
        self,
        op: str,
        fields: Mapping[str, object],
        now: float,
        *,
        operators: frozenset[str] = frozenset(),
    ) -> tuple[dict[str, object], InterceptionChange | None]:
        """The response (`status`, `data` or `error`) to one request, and what it changed.

        `list`: the running activations; `get {activation_id}`: one; `end
        {activation_id, by}`: end one now. `operators`, when not empty, are the only
        names `end` accepts as `by` (the `[operators]` table).
        """
        if op == "list":
            return _ok([self.summary(a) for a in self.active()]), None
        if op not in ("get", "end"):
            return _error(f"unknown operation {op!r}: list, get or end"), None
        activation_id = fields.get("activation_id")
        if not isinstance(activation_id, str) or not activation_id:
            return _error("'activation_id' (a string) is required"), None
        activation = self._active.get(activation_id)
        if activation is None:
            return _error(f"no running activation {activation_id!r}"), None
        if op == "get":
            return _ok(self.summary(activation)), None
        by = fields.get("by")
        if not isinstance(by, str) or not by.strip():
            return _error("'by' (who ends it) is required"), None
        if operators and by not in operators:
            return _error(f"{by!r} is not an operator ([operators])"), None
        change = self._close(activation, ActivationState.ENDED, by, now)
        return _ok(self.summary(activation)), change

    def summary(self, activation: Activation) -> dict[str, object]:
        """An activation as the request API and the console show it, with each
        checkpoint's standing: `confirmed` (by whom), `waiting` or `escalated`."""
        posts: dict[str, object] = {}
        for checkpoint in activation.checkpoints:
            request = self.requests.get(activation.staffing_id(checkpoint))
            post: dict[str, object] = {"state": self._post_state(request)}
            if request is not None:
                post["escalations"] = request.escalations
                if request.acknowledged_at is not None:
                    post["by"] = request.acknowledged_by
                    post["at"] = request.acknowledged_at
            posts[checkpoint] = post
        return {
            "activation_id": activation.activation_id,
            "state": activation.state.value,
            "trigger": activation.trigger,
            "triggers": list(activation.triggers),
            "look_for": dict(activation.look_for),
            "rings": list(activation.rings),
            "started_at": activation.started_at,
            "until": activation.until,
            "ended_at": activation.ended_at,
            "ended_by": activation.ended_by,
            "checkpoints": posts,
        }

    # -- restart ---------------------------------------------------------------------
    def restore(self, activation: Activation) -> None:
        """Take back an activation written down before a restart (running ones only)."""
        if activation.state is not ActivationState.ACTIVE:
            return
        self._active[activation.activation_id] = activation
        self._by_target[activation.target] = activation.activation_id
        heapq.heappush(self._ends, (activation.until, activation.activation_id))

    def forget(self, activation: Activation, trigger: str) -> None:
        """Undo an activation its trigger started, the trigger not being stored after
        all (the device sends it again, and it starts again). One a later trigger
        also extended stays: it is owed to that one too."""
        if activation.triggers != [trigger] or activation.activation_id not in self._active:
            return
        del self._active[activation.activation_id]
        if self._by_target.get(activation.target) == activation.activation_id:
            del self._by_target[activation.target]
        for checkpoint in activation.checkpoints:
            self.requests.forget(activation.staffing_id(checkpoint))

    def restore_request(self, alarm: Alarm) -> None:
        """Take back a staffing request written down before a restart."""
        self.requests.restore(alarm)

    # -- the parts ---------------------------------------------------------------------
    def _plan(self, event: Event) -> tuple[tuple[int, ...], str | None, str, dict[str, object]]:
        """Rings, the checkpoint that saw it, the target and what to look for."""
        body = event.event or {}
        if event.kind is Kind.WATCHLIST_HIT:
            assert event.checkpoint is not None
            site = self._topology.checkpoints[event.checkpoint]
            rings = self._policy.on_hit.get(site.ring, ())
            read = body.get("plate")
            listed = body.get("listed_plate", read)
            plate = listed if isinstance(listed, str) else ""
            look_for: dict[str, object] = {
                "what": "vehicle",
                "plate": plate,
                "seen_at": site.id,
                "seen_ring": site.ring,
                "seen_ts": event.device_ts,
                "hit": event.alarm_id,
            }
            for key in ("list", "reason", "dir", "lane", "img", "vtype", "color"):
                value = body.get(key)
                if value is not None:
                    look_for[key] = value
            if isinstance(read, str) and read != plate:
                look_for["plate_read"] = read
            return rings, site.id, f"plate:{normalise_plate(plate)}", look_for
        towns = self._policy.encloses
        rings = tuple(ring for ring in sorted(towns) if event.township in towns[ring])
        look_for = {
            "what": "alarm",
            "kind": event.kind.value,
            "household": event.household,
            "village": event.village,
            "township": event.township,
            "alarm": event.alarm_id,
        }
        return rings, None, f"alarm:{event.alarm_id}", look_for

    def _request_event(self, activation: Activation, checkpoint: str, now: float) -> Event:
        site = self._topology.checkpoints[checkpoint]
        alarm_id = activation.staffing_id(checkpoint)
        return Event(
            source=Source.GATEWAY,
            transport=Transport.INTERNAL,
            device_id=checkpoint,
            kind=Kind.INTERCEPTION,
            category=Category.INTERCEPTION,
            priority=Priority.PROPERTY,
            stage=Stage.NEW,
            dedup_key=alarm_id,
            content_key=None,
            device_ts=None,
            ingress_ts=now,
            township=site.township,
            checkpoint=checkpoint,
            event={
                "activation_id": activation.activation_id,
                "checkpoint": checkpoint,
                "class": site.cls.value,
                "ring": site.ring,
                "look_for": dict(activation.look_for),
                "until": activation.until,
                "confirm": "acknowledge this alarm once the checkpoint is staffed",
            },
        )

    def _activate(self, activation: Activation, checkpoint: str, now: float) -> Command:
        site = self._topology.checkpoints[checkpoint]
        return Command(
            checkpoint,
            {
                "v": 1,
                "command": "activate",
                "activation_id": activation.activation_id,
                "alarm_id": activation.staffing_id(checkpoint),
                "ring": site.ring,
                "look_for": dict(activation.look_for),
                "until": activation.until,
                "issued_ts": now,
            },
        )

    def _close(
        self, activation: Activation, state: ActivationState, by: str | None, now: float
    ) -> InterceptionChange:
        activation.state = state
        activation.ended_at = now
        activation.ended_by = by
        del self._active[activation.activation_id]
        if self._by_target.get(activation.target) == activation.activation_id:
            del self._by_target[activation.target]
        alarms: list[Alarm] = []
        commands: list[Command] = []
        for checkpoint in activation.checkpoints:
            request = self.requests.get(activation.staffing_id(checkpoint))
            if request is not None and request.deadline is not None:
                cleared = self.requests.clear(request.event.alarm_id)
                if cleared is not None:
                    alarms.append(cleared)
            body: dict[str, object] = {
                "v": 1,
                "command": "deactivate",
                "activation_id": activation.activation_id,
                "reason": state.value,
                "issued_ts": now,
            }
            if by is not None:
                body["by"] = by
            commands.append(Command(checkpoint, body))
        return InterceptionChange(
            activations=(activation,), commands=tuple(commands), alarms=tuple(alarms)
        )

    def _resolve(self, level: int, event: Event) -> Target | None:
        """The sink at chain `level` for a staffing request."""
        if level >= len(self._chain):
            return None
        return self._router.resolve(self._chain[level], event)

    def _applies(self, alarm: Alarm, level: int) -> bool:
        """A chain level escalates to a sink only if no lower level already had it."""
        target = self._resolve(level, alarm.event)
        if target is None:
            return False
        below = {self._resolve(lower, alarm.event) for lower in range(level)}
        return target not in below


def _unique(items: Iterable[str]) -> list[str]:
    """`items` without repeats, in order."""
    return list(dict.fromkeys(items))


def _ok(data: object) -> dict[str, object]:
    return {"status": "ok", "data": data}


def _error(reason: str) -> dict[str, object]:
    return {"status": "error", "error": reason}
