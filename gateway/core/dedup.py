"""Is this event a duplicate? Across retransmissions, paths and (later) restarts.

Two identities (CONTRACT.md): an event's own (`dedup_key`: household + seq,
checkpoint + record id) catches retransmissions, including a broker's
redelivery of an unacknowledged QoS 1 message; its content (`content_key`:
household, qualifier, code, zone, partition) catches the same alarm arriving a
second time by another path (a phone that reports over 4G and through an alarm
receiver) within `cross_path_window_s`, and an alarm receiver replaying its
buffer after an outage (its records carry no sequence number, PROTOCOLS.md).

Memory is bounded twice: entries older than the window are dropped, and the
oldest entries go first once `max_entries` is reached (about 180 bytes an
entry). Checkpoint traffic (`cp/` identities: plate reads, thousands a minute)
is remembered apart from everything else, each with its own bound, so a flood
of passes can never push an alarm's identity out. The maps are `OrderedDict`s
in arrival order, so eviction only ever looks at the front. Heartbeats are not
remembered at all (the core does not ask): a repeated one changes nothing.
Pure: the caller passes `now`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

from devices.events import Event, Transport

__all__ = ["TRAFFIC_PREFIX", "Deduplicator"]

TRAFFIC_PREFIX = "cp/"
"""Identities of checkpoint records (devices/checkpoint.py), remembered apart."""

_V = TypeVar("_V")


class Deduplicator:
    """Remembers what was accepted; answers whether a new event repeats one of them."""

    def __init__(
        self, *, window_s: float, max_entries: int, cross_path_window_s: float = 120.0
    ) -> None:
        if window_s <= 0 or max_entries <= 0 or cross_path_window_s <= 0:
            raise ValueError("dedup windows and size must be positive")
        self._window = window_s
        self._max = max_entries
        self._cross_window = cross_path_window_s
        self._alarms: OrderedDict[str, float] = OrderedDict()
        self._traffic: OrderedDict[str, float] = OrderedDict()
        # Content key -> (when, the transport's value): a plain str, not the enum
        # member, so that the collector can stop tracking the tuple.
        self._content: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._alarms) + len(self._traffic)

    def _partition(self, dedup_key: str) -> OrderedDict[str, float]:
        return self._traffic if dedup_key.startswith(TRAFFIC_PREFIX) else self._alarms

    @property
    def window_s(self) -> float:
        """How long an identity is remembered."""
        return self._window

    def is_duplicate(self, event: Event, now: float) -> bool:
        """True for a repeat; False records the event as seen."""
        self._evict(now)
        dedup_key = event.dedup_key
        seen = self._traffic if dedup_key.startswith(TRAFFIC_PREFIX) else self._alarms
        if dedup_key in seen:
            return True
        key = event.content_key
        if key is not None:
            earlier = self._content.get(key)
            if (
                earlier is not None
                and now - earlier[0] <= self._cross_window
                and (earlier[1] != event.transport or not event.sequenced)
            ):
                # Remember this path's own identity too: its retransmission after
                # the cross-path window is still the same event.
                seen[dedup_key] = now
                _bound(seen, self._max)
                return True
            self._content[key] = (now, event.transport._value_)
            self._content.move_to_end(key)
            _bound(self._content, self._max)
        seen[dedup_key] = now
        if len(seen) > self._max:
            _bound(seen, self._max)
        return False

    def remember(
        self,
        dedup_key: str,
        at: float,
        content_key: str | None = None,
        transport: Transport | None = None,
    ) -> None:
        """Record an identity accepted earlier (restoring state from the store, oldest first)."""
        seen = self._partition(dedup_key)
        seen[dedup_key] = at
        _bound(seen, self._max)
        if content_key is not None and transport is not None:
            self._content[content_key] = (at, transport._value_)
            _bound(self._content, self._max)

    def forget(self, dedup_key: str, content_key: str | None = None) -> None:
        """Un-see an event whose acceptance was rolled back (it will come again)."""
        self._partition(dedup_key).pop(dedup_key, None)
        if content_key is not None:
            self._content.pop(content_key, None)

    def _evict(self, now: float) -> None:
        # Only the age bound here: the size bound is applied after an insert, so
        # that `max_entries` identities are remembered, not `max_entries - 1`.
        horizon = now - self._window
        seen = self._alarms
        while seen and next(iter(seen.values())) < horizon:
            seen.popitem(last=False)
        seen = self._traffic
        while seen and next(iter(seen.values())) < horizon:
            seen.popitem(last=False)
        content = self._content
        cross_horizon = now - self._cross_window
        while content and next(iter(content.values()))[0] < cross_horizon:
            content.popitem(last=False)


def _bound(entries: OrderedDict[str, _V], size: int) -> None:
    """Drop the oldest entries until at most `size` remain."""
    while len(entries) > size:
        entries.popitem(last=False)
