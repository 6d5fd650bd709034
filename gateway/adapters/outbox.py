"""Pending dispatches between the core's decision and the broker's confirmation.

The in-memory half of the outbox: `Lanes` (gateway/core/lanes.py) decides the
order; this class adds the waiting. The publisher `await`s `get()` for the
first item and takes what else is due with `get_nowait()`; `put()` wakes one
waiting publisher (no thundering herd: one waiter woken per item). A failed
item is `defer`red and comes back at its retry time, ahead of newer items in
its lane.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gateway.core.lanes import PASS_LANE, Lanes, Queued
from gateway.core.pipeline import Dispatch

__all__ = ["MemoryOutbox", "Outgoing"]


@dataclass(slots=True)
class Outgoing:
    """One publish the gateway owes: a dispatch or a raw payload."""

    topic: str
    qos: int
    retain: bool = False
    dispatch: Dispatch | None = None
    payload: bytes = b""
    """The raw payload; for a dispatch, its body packed once (b"" until packed),
    to which the sender appends `dispatch_ts`."""
    attempts: int = 0
    outbox_id: int | None = None
    """Its row in the durable store, once recorded."""


class MemoryOutbox:
    """Priority lanes plus waiting publishers."""

    def __init__(
        self,
        *,
        max_passes: int = 100_000,
        max_passes_in_flight: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_passes_in_flight is not None and max_passes_in_flight < 1:
            raise ValueError("max_passes_in_flight must be positive")
        self.lanes: Lanes[Outgoing] = Lanes(max_passes=max_passes)
        self._clock = clock
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._pass_room: list[tuple[int, asyncio.Future[None]]] = []
        self.in_flight = 0
        self.passes_in_flight = 0
        self._max_passes_in_flight = max_passes_in_flight
        """Passes handed out and not yet done, at most (None: no limit). Under a
        flood of plate reads the broker holds only this many of ours, so a
        panic's dispatch never queues there behind a thousand of them."""

    def _passes_allowed(self) -> bool:
        cap = self._max_passes_in_flight
        return cap is None or self.passes_in_flight < cap

    @property
    def pending(self) -> int:
        """Queued plus being published: what the broker has not confirmed yet."""
        return len(self.lanes) + self.in_flight

    def put(self, lane: int, item: Outgoing) -> Queued[Outgoing] | None:
        """Queue an item; returns a pass displaced from a full pass lane."""
        dropped = self.lanes.push(lane, item)
        if lane != PASS_LANE or self._passes_allowed():  # else a pass's `done` wakes
            self._wake_one()
        return dropped

    def defer(self, queued: Queued[Outgoing], delay_s: float) -> None:
        """Retry a failed item after `delay_s`."""
        self._settled(queued)
        queued.item.attempts += 1
        self.lanes.defer(queued, self._clock() + delay_s)
        self._wake_one()

    def done(self, queued: Queued[Outgoing]) -> None:
        """One item the broker confirmed."""
        self._settled(queued)

    def _settled(self, queued: Queued[Outgoing]) -> None:
        self.in_flight -= 1
        if queued.lane == PASS_LANE:
            self.passes_in_flight -= 1
            if self.passes_in_flight + 1 == self._max_passes_in_flight:
                self._wake_one()  # passes may go again

    def get_nowait(self) -> Queued[Outgoing] | None:
        """The next item to publish now, or None if nothing is due (or only passes
        are, and as many are in flight as allowed)."""
        queued = self.lanes.pop(self._clock(), passes=self._passes_allowed())
        if queued is not None:
            self.in_flight += 1
            if queued.lane == PASS_LANE:
                self.passes_in_flight += 1
                if self._pass_room:
                    self._wake_pass_room()
        return queued

    async def wait_pass_room(self, at_most: int) -> None:
        """Return once at most `at_most` passes wait in the pass lane.

        For the reader of plate reads: it stops taking more from the broker
        while the broker cannot take our dispatches as fast, so a flood waits
        in the broker (built for it), not in the gateway's memory.
        """
        while self.lanes.queued(PASS_LANE) > at_most:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (at_most, waiter)
            self._pass_room.append(entry)
            try:
                await waiter
            finally:
                if entry in self._pass_room:
                    self._pass_room.remove(entry)

    def _wake_pass_room(self) -> None:
        waiting = self.lanes.queued(PASS_LANE)
        for at_most, waiter in self._pass_room:
            if waiting <= at_most and not waiter.done():
                waiter.set_result(None)

    async def get(self) -> Queued[Outgoing]:
        """The next item to publish, waiting for one if need be."""
        loop = asyncio.get_running_loop()
        while True:
            queued = self.get_nowait()
            if queued is not None:
                return queued
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            retry = self.lanes.next_retry()
            try:
                if retry is None:
                    await waiter
                else:
                    delay = max(0.0, retry - self._clock())
                    async with asyncio.timeout(delay):
                        await waiter
            except TimeoutError:
                pass
            finally:
                if not waiter.done():
                    waiter.cancel()
                    # A woken waiter is already gone from the deque.
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
