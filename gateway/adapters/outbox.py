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

from gateway.core.lanes import Lanes, Queued
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
        self, *, max_passes: int = 100_000, clock: Callable[[], float] = time.time
    ) -> None:
        self.lanes: Lanes[Outgoing] = Lanes(max_passes=max_passes)
        self._clock = clock
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.in_flight = 0

    @property
    def pending(self) -> int:
        """Queued plus being published: what the broker has not confirmed yet."""
        return len(self.lanes) + self.in_flight

    def put(self, lane: int, item: Outgoing) -> Queued[Outgoing] | None:
        """Queue an item; returns a pass displaced from a full pass lane."""
        dropped = self.lanes.push(lane, item)
        self._wake_one()
        return dropped

    def defer(self, queued: Queued[Outgoing], delay_s: float) -> None:
        """Retry a failed item after `delay_s`."""
        self.in_flight -= 1
        queued.item.attempts += 1
        self.lanes.defer(queued, self._clock() + delay_s)
        self._wake_one()

    def done(self) -> None:
        """One item the broker confirmed."""
        self.in_flight -= 1

    def get_nowait(self) -> Queued[Outgoing] | None:
        """The next item to publish now, or None if nothing is due."""
        queued = self.lanes.pop(self._clock())
        if queued is not None:
            self.in_flight += 1
        return queued

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
