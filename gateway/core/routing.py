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
from protocols.payloads import unfrozen_builder

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
_new_target = unfrozen_builder(Target)  # Target(...), without the frozen cost

# Enum members the hot path uses, read once: in Python 3.11 `Enum.MEMBER` goes
# through the enum metaclass's __getattr__ hook (50 ns); a module global is 8 ns.
_PASS = Category.PASS


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
        # Each role's highest level on the chain (a role may appear twice).
        self._chain_level = {role: level for level, role in enumerate(self._chain)}
        self._pass_cache: dict[str, tuple[str, tuple[Target, ...]]] = {}
        """Checkpoint id → (the township it was resolved for, its pass targets).
        Bounded by the configuration: only configured checkpoints get here."""

    @property
    def chain(self) -> tuple[str, ...]:
        """Escalation levels, lowest first (village → township → bureau)."""
        return self._chain

    def targets(self, event: Event) -> tuple[Target, ...]:
        """Every sink this event goes to, in policy order, without repeats."""
        category = event.category
        if category is _PASS:
            return self._pass_targets(event)
        if category in _NOT_DISPATCHED:
            return ()
        roles = self._roles.get(category, ())
        sinks: list[tuple[str, str]] = []
        for role in roles:
            sink = self._sink(role, event)
            # Every target resolved here is on the alarms channel at QoS 1, so
            # two are the same target exactly when their sinks are the same.
            if sink is not None and sink not in sinks:
                sinks.append(sink)
        if not sinks:
            if not roles:
                return ()
            # Nothing applies (a checkpoint has no village): its township centre,
            # or for a district-wide device (a receiver line) the bureau.
            return (
                (_new_target("township", event.township),)
                if event.township
                else (_new_target("bureau", self._bureau),)
            )
        return tuple([_new_target(kind, sink_id) for kind, sink_id in sinks])

    def resolve(self, role: str, event: Event) -> Target | None:
        """The sink playing `role` for this event's place, or None where none applies."""
        sink = self._sink(role, event)
        return None if sink is None else _new_target(sink[0], sink[1])

    def _sink(self, role: str, event: Event) -> tuple[str, str] | None:
        if role == "village":
            return None if event.village is None else ("village", event.village)
        if role == "township":
            return ("township", event.township) if event.township else None
        if role == "group":
            return None if event.group is None else ("group", event.group)
        if role == "station":
            if not event.township:
                return None
            station = self._topology.townships[event.township].station
            return None if station is None else ("station", station)
        if role == "bureau":
            return ("bureau", self._bureau)
        if role == "unit" and event.checkpoint is not None:
            unit = self._topology.checkpoints[event.checkpoint].unit
            return (unit.kind, unit.id)
        return None

    def level(self, targets: tuple[Target, ...]) -> int:
        """The highest escalation level these targets reach (-1: none on the chain)."""
        chain_level = self._chain_level
        return max([chain_level.get(t.sink_kind, -1) for t in targets], default=-1)

    def escalation_target(self, event: Event, level: int) -> Target | None:
        """The sink at chain `level` for this event, or None past the top."""
        if level >= len(self._chain):
            return None
        return self.resolve(self._chain[level], event)

    def _pass_targets(self, event: Event) -> tuple[Target, ...]:
        checkpoint = event.checkpoint
        assert checkpoint is not None
        township = event.township
        cached = self._pass_cache.get(checkpoint)
        if cached is not None and cached[0] == township:
            return cached[1]
        site = self._topology.checkpoints[checkpoint]
        found: tuple[Target, ...] = ()
        if self._passes.get(site.cls, False):
            found = (_new_target("township", township, Channel.PASSES, self._passes_qos),)
        self._pass_cache[checkpoint] = (township, found)
        return found
