"""Who gets an event: a pure index built once from the configuration (STYLE.md 9).

The `[routing]` policy names targets by role ("village", "township", "group",
"station", "bureau", "unit"); each event resolves a role to the concrete sink
of *its* place in the district: a household's village police room, its
township centre, its ten-household group (so the neighbours' phones ring), the
township's police station, the district's bureau, a checkpoint's managing unit.

Defaults (CONTRACT.md and the gateway issue): life-safety alarms to village,
township and group; property alarms to village and township; troubles (AC loss,
low battery, tamper, device offline) to the village room; checkpoint faults to
the managing unit; passes to the township's passes topic for the classes the
policy lists. A role that does not apply to a device (a checkpoint has no
village) is skipped; if none applies, the event goes to its township centre, so
nothing routed is ever routed to nobody.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from config.model import Config
from devices.events import Category, Event

__all__ = ["Channel", "Router", "Target"]


class Channel(enum.StrEnum):
    """The egress topic family of a dispatch (`.../alarms` or `.../passes`)."""

    ALARMS = "alarms"
    PASSES = "passes"


@dataclass(frozen=True, slots=True)
class Target:
    """One sink and channel an event is dispatched to."""

    sink_kind: str
    sink_id: str
    channel: Channel = Channel.ALARMS
    qos: int = 1


_NOT_DISPATCHED = frozenset({Category.HEARTBEAT})
_DEFAULT_WATCHLIST = ("township", "unit")


class Router:
    """Resolves an event's routing category to concrete sinks."""

    def __init__(self, config: Config) -> None:
        self._topology = config.topology
        self._bureau = config.bureau
        self._roles: dict[Category, tuple[str, ...]] = {}
        for category in Category:
            roles = config.routing.targets.get(category.value)
            if roles is not None:
                self._roles[category] = tuple(roles)
        self._roles.setdefault(Category.WATCHLIST, _DEFAULT_WATCHLIST)
        self._passes = dict(config.routing.passes)
        self._passes_qos = config.routing.passes_qos
        self._chain = tuple(config.escalation.chain)

    @property
    def chain(self) -> tuple[str, ...]:
        """Escalation levels, lowest first (village → township → bureau)."""
        return self._chain

    def targets(self, event: Event) -> tuple[Target, ...]:
        """Every sink this event goes to, in policy order, without repeats."""
        if event.category in _NOT_DISPATCHED:
            return ()
        if event.category is Category.PASS:
            return self._pass_targets(event)
        roles = self._roles.get(event.category, ())
        found: list[Target] = []
        for role in roles:
            target = self.resolve(role, event)
            if target is not None and target not in found:
                found.append(target)
        if not found and roles:
            # Nothing applies (a checkpoint has no village): its township centre,
            # or for a district-wide device (a receiver line) the bureau.
            found.append(
                Target("township", event.township)
                if event.township
                else Target("bureau", self._bureau)
            )
        return tuple(found)

    def resolve(self, role: str, event: Event) -> Target | None:
        """The sink playing `role` for this event's place, or None where none applies."""
        sink: tuple[str, str] | None = None
        if role == "village":
            sink = None if event.village is None else ("village", event.village)
        elif role == "township":
            sink = ("township", event.township) if event.township else None
        elif role == "group":
            sink = None if event.group is None else ("group", event.group)
        elif role == "station" and event.township:
            station = self._topology.townships[event.township].station
            sink = None if station is None else ("station", station)
        elif role == "bureau":
            sink = ("bureau", self._bureau)
        elif role == "unit" and event.checkpoint is not None:
            unit = self._topology.checkpoints[event.checkpoint].unit
            sink = (unit.kind, unit.id)
        return None if sink is None else Target(sink[0], sink[1])

    def level(self, targets: tuple[Target, ...]) -> int:
        """The highest escalation level these targets reach (-1: none on the chain)."""
        kinds = {t.sink_kind for t in targets}
        reached = [i for i, role in enumerate(self._chain) if role in kinds]
        return max(reached, default=-1)

    def escalation_target(self, event: Event, level: int) -> Target | None:
        """The sink at chain `level` for this event, or None past the top."""
        if level >= len(self._chain):
            return None
        return self.resolve(self._chain[level], event)

    def _pass_targets(self, event: Event) -> tuple[Target, ...]:
        assert event.checkpoint is not None
        site = self._topology.checkpoints[event.checkpoint]
        if not self._passes.get(site.cls, False):
            return ()
        return (Target("township", event.township, Channel.PASSES, self._passes_qos),)
