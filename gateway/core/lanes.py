"""Alarms first: the order in which pending dispatches leave (DESIGN.md principle 2).

Every pending dispatch waits in one lane per priority (1 life safety … 4 info)
plus one lane for checkpoint passes. `pop()` always serves the highest-priority
non-empty lane, oldest first within it, so a panic never waits behind a burst of
plate reads, however long the pass lane is.

Alarm lanes are unbounded: an accepted alarm is never dropped (the durable
store holds them; memory holds only what is pending). The pass lane is bounded:
when it is full the oldest pass is dropped and counted (`dropped`), an explicit
policy visible in the metrics (STYLE.md 8). Passes are traffic records, not
alarms; a watchlist hit is an alarm and has its own lane.

A dispatch that failed (broker down, refused) is `defer`red to `not_before`;
deferred items do not block the others in their lane (one failing sink never
stalls the rest). Pure: the caller passes `now`.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["PASS_LANE", "Lanes", "Queued"]

PASS_LANE = 5
"""Lane number of checkpoint passes: after every alarm priority (1-4)."""

T = TypeVar("T")


@dataclass(order=True, slots=True)
class Queued(Generic[T]):
    """An item with its lane and arrival order (for oldest-first within a lane)."""

    lane: int
    order: int
    item: T = field(compare=False)
    not_before: float = field(default=0.0, compare=False)


class Lanes(Generic[T]):
    """Priority lanes with a bounded pass lane and deferred retries."""

    def __init__(self, *, max_passes: int = 100_000) -> None:
        if max_passes <= 0:
            raise ValueError("max_passes must be positive")
        self._lanes: dict[int, deque[Queued[T]]] = {lane: deque() for lane in range(1, 6)}
        self._deferred: list[tuple[float, int, Queued[T]]] = []
        self._max_passes = max_passes
        self._order = 0
        self._size = 0
        self.dropped = 0
        """Passes dropped because the pass lane was full."""

    def __len__(self) -> int:
        return self._size

    def queued(self, lane: int) -> int:
        """Items waiting in one lane (deferred ones not counted)."""
        return len(self._lanes[lane])

    def push(self, lane: int, item: T) -> Queued[T] | None:
        """Queue an item; returns the pass it displaced, if the pass lane was full."""
        if lane not in self._lanes:
            raise ValueError(f"no lane {lane}")
        self._order += 1
        queue = self._lanes[lane]
        queue.append(Queued(lane, self._order, item))
        self._size += 1
        if lane == PASS_LANE and len(queue) > self._max_passes:
            self._size -= 1
            self.dropped += 1
            return queue.popleft()
        return None

    def pop(self, now: float, *, passes: bool = True) -> Queued[T] | None:
        """The next item to send: deferred items now due, then the best lane.

        `passes=False` leaves the pass lane alone (the caller has as many passes
        in flight as it allows): an alarm still comes out."""
        self._release(now)
        for lane in range(1, PASS_LANE + 1 if passes else PASS_LANE):
            queue = self._lanes[lane]
            if queue:
                self._size -= 1
                return queue.popleft()
        return None

    def defer(self, queued: Queued[T], not_before: float) -> None:
        """Put a failed item back, to be retried at `not_before` (ahead of newer ones)."""
        queued.not_before = not_before
        heapq.heappush(self._deferred, (not_before, queued.order, queued))
        self._size += 1

    def ready(self, now: float) -> bool:
        """Whether `pop(now)` would return something."""
        if any(self._lanes[lane] for lane in self._lanes):
            return True
        return bool(self._deferred) and self._deferred[0][0] <= now

    def next_retry(self) -> float | None:
        """When the earliest deferred item becomes due."""
        return self._deferred[0][0] if self._deferred else None

    def _release(self, now: float) -> None:
        deferred = self._deferred
        released: list[Queued[T]] = []
        while deferred and deferred[0][0] <= now:
            released.append(heapq.heappop(deferred)[2])
        # Back at the head of their lanes, oldest first: they are older than
        # anything queued since they first failed.
        for queued in sorted(released, key=lambda q: q.order, reverse=True):
            self._lanes[queued.lane].appendleft(queued)
