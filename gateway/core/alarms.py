"""The alarm lifecycle: raised → dispatched → acknowledged | escalated (STYLE.md 6).

This one module owns an alarm's state. Every transition is a row of
`_TRANSITIONS`; anything else is a bug in the caller (an `AlarmStateError`).

Escalation (CONTRACT.md): an alarm not acknowledged within its priority's
deadline is re-dispatched, with `escalated: true` and the same `alarm_id`, to
the next level of the chain above the highest level it already reached
(village → township → bureau); each level gets its own deadline; past the top
the alarm stays escalated until someone acknowledges it. An acknowledgement from
any sink stops it. Deadlines of different priorities differ, so due alarms are
kept in a heap; acknowledged ones are skipped lazily when they surface.

Pure: the caller passes `now`, and asks `next_deadline()` when to call back.
"""

from __future__ import annotations

import enum
import heapq
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from config.model import Priority
from devices.events import Event

__all__ = ["Alarm", "AlarmBook", "AlarmState", "AlarmStateError", "Due"]


class AlarmState(enum.StrEnum):
    """Where an alarm is in its life."""

    RAISED = "raised"
    DISPATCHED = "dispatched"
    ESCALATED = "escalated"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"
    """The condition ended by itself (a device came back): no more escalation,
    though an operator may still acknowledge it."""


class _Input(enum.Enum):
    DISPATCHED = "dispatched"
    DEADLINE = "deadline"
    ACK = "ack"
    CLEAR = "clear"


_TRANSITIONS: Mapping[tuple[AlarmState, _Input], AlarmState] = {
    (AlarmState.RAISED, _Input.DISPATCHED): AlarmState.DISPATCHED,
    (AlarmState.RAISED, _Input.ACK): AlarmState.ACKNOWLEDGED,
    (AlarmState.RAISED, _Input.DEADLINE): AlarmState.ESCALATED,
    (AlarmState.DISPATCHED, _Input.DISPATCHED): AlarmState.DISPATCHED,
    (AlarmState.DISPATCHED, _Input.DEADLINE): AlarmState.ESCALATED,
    (AlarmState.DISPATCHED, _Input.ACK): AlarmState.ACKNOWLEDGED,
    (AlarmState.ESCALATED, _Input.DISPATCHED): AlarmState.ESCALATED,
    (AlarmState.ESCALATED, _Input.DEADLINE): AlarmState.ESCALATED,
    (AlarmState.ESCALATED, _Input.ACK): AlarmState.ACKNOWLEDGED,
    (AlarmState.ACKNOWLEDGED, _Input.DISPATCHED): AlarmState.ACKNOWLEDGED,
    (AlarmState.ACKNOWLEDGED, _Input.ACK): AlarmState.ACKNOWLEDGED,
    (AlarmState.ACKNOWLEDGED, _Input.CLEAR): AlarmState.ACKNOWLEDGED,
    (AlarmState.RAISED, _Input.CLEAR): AlarmState.CLEARED,
    (AlarmState.DISPATCHED, _Input.CLEAR): AlarmState.CLEARED,
    (AlarmState.ESCALATED, _Input.CLEAR): AlarmState.CLEARED,
    (AlarmState.CLEARED, _Input.CLEAR): AlarmState.CLEARED,
    (AlarmState.CLEARED, _Input.DISPATCHED): AlarmState.CLEARED,
    (AlarmState.CLEARED, _Input.ACK): AlarmState.ACKNOWLEDGED,
}


_MAX_ROTATIONS = 8


class AlarmStateError(RuntimeError):
    """A transition the lifecycle table does not allow (a bug, not peer input)."""


@dataclass(slots=True)
class Alarm:
    """One alarm the gateway raised, with what it needs to escalate and time its ack."""

    event: Event
    raised_at: float
    level: int
    """Highest escalation-chain level reached so far (-1: none)."""
    deadline_s: float | None
    state: AlarmState = AlarmState.RAISED
    attempt: int = 1
    dispatched_at: float | None = None
    deadline: float | None = None
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    escalations: int = 0
    sinks: list[tuple[str, str]] = field(default_factory=list)

    def _step(self, what: _Input) -> None:
        try:
            self.state = _TRANSITIONS[(self.state, what)]
        except KeyError:
            raise AlarmStateError(f"{self.event.alarm_id}: {what.value} in {self.state}") from None


@dataclass(frozen=True, slots=True)
class Due:
    """An alarm whose deadline passed: escalate it to chain `level`."""

    alarm: Alarm
    level: int


class AlarmBook:
    """Every alarm raised recently, its state, and the escalation deadlines."""

    def __init__(
        self,
        deadlines: Mapping[Priority, float | None],
        *,
        chain_length: int,
        applies: Callable[[Alarm, int], bool] = lambda _alarm, _level: True,
        max_alarms: int = 50_000,
    ) -> None:
        self._deadlines = dict(deadlines)
        self._chain_length = chain_length
        self._applies = applies
        self._max = max_alarms
        self._alarms: OrderedDict[str, Alarm] = OrderedDict()
        self._heap: list[tuple[float, int, str]] = []
        self._counter = 0

    def __len__(self) -> int:
        return len(self._alarms)

    def get(self, alarm_id: str) -> Alarm | None:
        """The alarm with this id, if it is still remembered."""
        return self._alarms.get(alarm_id)

    def raised(self, event: Event, level: int, now: float) -> Alarm:
        """Record a new alarm (its first dispatches are about to go out)."""
        deadline_s = self._deadlines.get(event.priority)
        if deadline_s is not None and deadline_s <= 0:
            deadline_s = None
        alarm = Alarm(event=event, raised_at=now, level=level, deadline_s=deadline_s)
        self._alarms[event.alarm_id] = alarm
        self._arm(alarm, now)
        self._bound()
        return alarm

    def _bound(self) -> None:
        """Forget the oldest alarms past `max_alarms`, but never one still waiting
        for its deadline: an open alarm is moved to the back instead (a few per
        call, so a book full of open alarms grows rather than loses one)."""
        alarms = self._alarms
        rotations = 0
        while len(alarms) > self._max and rotations < _MAX_ROTATIONS:
            alarm_id, oldest = next(iter(alarms.items()))
            if oldest.deadline is None:
                del alarms[alarm_id]
            else:
                alarms.move_to_end(alarm_id)
                rotations += 1

    def dispatched(self, alarm_id: str, sink: tuple[str, str], now: float) -> Alarm | None:
        """The broker confirmed one dispatch of this alarm."""
        alarm = self._alarms.get(alarm_id)
        if alarm is None:
            return None
        alarm._step(_Input.DISPATCHED)
        if alarm.dispatched_at is None:
            alarm.dispatched_at = now
        if sink not in alarm.sinks:
            alarm.sinks.append(sink)
        return alarm

    def acknowledge(self, alarm_id: str, by: str, now: float) -> tuple[Alarm, bool] | None:
        """An operator acknowledged; returns the alarm and whether this ack was the first."""
        alarm = self._alarms.get(alarm_id)
        if alarm is None:
            return None
        first = alarm.state is not AlarmState.ACKNOWLEDGED
        alarm._step(_Input.ACK)
        if first:
            alarm.acknowledged_at = now
            alarm.acknowledged_by = by
            alarm.deadline = None
        return alarm, first

    def restore(self, alarm: Alarm) -> None:
        """Take back an alarm recorded before a restart, with its pending deadline."""
        self._alarms[alarm.event.alarm_id] = alarm
        if alarm.deadline is not None:
            self._counter += 1
            heapq.heappush(self._heap, (alarm.deadline, self._counter, alarm.event.alarm_id))

    def forget(self, alarm_id: str) -> None:
        """Drop an alarm that was never accepted after all (its store write failed)."""
        self._alarms.pop(alarm_id, None)

    def clear(self, alarm_id: str) -> Alarm | None:
        """The condition ended by itself: stop escalating (the alarm stays on record)."""
        alarm = self._alarms.get(alarm_id)
        if alarm is None:
            return None
        alarm._step(_Input.CLEAR)
        alarm.deadline = None
        return alarm

    def due(self, now: float) -> list[Due]:
        """Alarms whose deadline has passed, each moved one level up the chain."""
        found: list[Due] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, alarm_id = heapq.heappop(heap)
            alarm = self._alarms.get(alarm_id)
            if alarm is None or alarm.deadline != deadline:
                continue  # acknowledged, forgotten, or re-armed since
            alarm.deadline = None
            level = self._next_level(alarm)
            if level is None:  # pragma: no cover - _arm only arms with a level above
                continue
            alarm._step(_Input.DEADLINE)
            alarm.escalations += 1
            alarm.attempt += 1
            alarm.level = level
            found.append(Due(alarm, level))
            self._arm(alarm, now)
        return found

    def next_deadline(self) -> float | None:
        """The earliest pending escalation deadline.

        Entries of alarms acknowledged, cleared or forgotten since they were armed
        are dropped from the top first: left there, each would wake the caller
        for nothing at its old deadline (with every alarm acknowledged in time,
        one empty wake-up per alarm, a deadline after it was raised).
        """
        heap = self._heap
        alarms = self._alarms
        while heap:
            deadline, _, alarm_id = heap[0]
            alarm = alarms.get(alarm_id)
            if alarm is not None and alarm.deadline == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def _next_level(self, alarm: Alarm) -> int | None:
        """The next chain level above the alarm's that has a sink for it.

        A level that does not apply to the device (a checkpoint has no village)
        is climbed past, so it never costs a whole deadline.
        """
        for level in range(alarm.level + 1, self._chain_length):
            if self._applies(alarm, level):
                return level
        return None

    def _arm(self, alarm: Alarm, now: float) -> None:
        """Set the next deadline, unless there is no level left above this one."""
        if alarm.deadline_s is None or self._next_level(alarm) is None:
            return
        alarm.deadline = now + alarm.deadline_s
        self._counter += 1
        heapq.heappush(self._heap, (alarm.deadline, self._counter, alarm.event.alarm_id))
