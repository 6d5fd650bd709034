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
of passes can never push an alarm's identity out. Heartbeats are not
remembered at all (the core does not ask): a repeated one changes nothing.
Pure: the caller passes `now`.

Each map is a `_Recent`: `OrderedDict`s in arrival order, so eviction only ever
looks at the front, split by key hash into shards of about 8,192 entries. A
full map is a FIFO (one insert and one eviction per event), and CPython
rebuilds a dict once deletions have used up its free slots: at 500,000 entries
(the default bound) that rebuild held the event loop for 45 ms on the
benchmark's machine, 100-200 ms with the CPU contended, and every alarm waited
behind it (docs/benchmark.md). A shard's rebuild walks a sixtieth of that
(under 2 ms), for about 0.3 µs more per event. Within a shard the oldest go
first; across shards the bound is per shard (`max_entries // shards` each), so
a full map keeps about the newest `max_entries`, the hash spreading keys
evenly. Age is judged on the identity's own shard at every lookup, so the
window is exact; expired entries leave as their shard is next written.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final, Generic, TypeVar

from devices.events import Event, Transport

__all__ = ["TRAFFIC_PREFIX", "Deduplicator"]

TRAFFIC_PREFIX = "cp/"
"""Identities of checkpoint records (devices/checkpoint.py), remembered apart."""

_V = TypeVar("_V")

_SHARD_ENTRIES: Final = 8192
"""Entries per shard a map aims at (a shard's rebuild took at most 1.8 ms here)."""
_MAX_SHARDS: Final = 256
"""Past 256 x 8,192 entries (about 2 million) the shards grow instead."""


class _Recent(Generic[_V]):
    """A bounded map of recent identities, insertion-ordered, sharded by key hash.

    `max_entries` below 2 x `_SHARD_ENTRIES` is one shard: exactly the last
    `max_entries` are kept, oldest out first. Larger maps keep at most
    `max_entries` in all, `max_entries // shards` per shard.
    """

    __slots__ = ("cap", "shards")

    def __init__(self, max_entries: int) -> None:
        count = max(1, min(_MAX_SHARDS, max_entries // _SHARD_ENTRIES))
        self.shards: list[OrderedDict[str, _V]] = [OrderedDict() for _ in range(count)]
        """Shard `hash(key) % len(shards)` holds `key`."""
        self.cap = max_entries // count
        """Entries per shard, at most."""

    def __len__(self) -> int:
        return sum(len(shard) for shard in self.shards)

    def shard(self, key: str) -> OrderedDict[str, _V]:
        """The shard that holds (or would hold) `key`."""
        shards = self.shards
        return shards[hash(key) % len(shards)]


class Deduplicator:
    """Remembers what was accepted; answers whether a new event repeats one of them."""

    def __init__(
        self, *, window_s: float, max_entries: int, cross_path_window_s: float = 120.0
    ) -> None:
        if window_s <= 0 or max_entries <= 0 or cross_path_window_s <= 0:
            raise ValueError("dedup windows and size must be positive")
        self._window = window_s
        self._cross_window = cross_path_window_s
        self._alarms: _Recent[float] = _Recent(max_entries)
        self._traffic: _Recent[float] = _Recent(max_entries)
        # Content key -> (when, the transport's value): a plain str, not the enum
        # member, so that the collector can stop tracking the tuple.
        self._content: _Recent[tuple[float, str]] = _Recent(max_entries)

    def __len__(self) -> int:
        return len(self._alarms) + len(self._traffic)

    def _partition(self, dedup_key: str) -> _Recent[float]:
        return self._traffic if dedup_key.startswith(TRAFFIC_PREFIX) else self._alarms

    @property
    def window_s(self) -> float:
        """How long an identity is remembered."""
        return self._window

    def is_duplicate(self, event: Event, now: float) -> bool:
        """True for a repeat; False records the event as seen."""
        dedup_key = event.dedup_key
        recent = self._traffic if dedup_key.startswith(TRAFFIC_PREFIX) else self._alarms
        shards = recent.shards  # inlined `recent.shard(dedup_key)`: once per event
        seen = shards[hash(dedup_key) % len(shards)]
        _expire(seen, now - self._window)
        if dedup_key in seen:
            return True
        key = event.content_key
        if key is not None:
            contents = self._content.shard(key)
            _expire_content(contents, now - self._cross_window)
            earlier = contents.get(key)
            if earlier is not None and (earlier[1] != event.transport or not event.sequenced):
                # Remember this path's own identity too: its retransmission after
                # the cross-path window is still the same event.
                seen[dedup_key] = now
                _bound(seen, recent.cap)
                return True
            contents[key] = (now, event.transport._value_)
            contents.move_to_end(key)
            _bound(contents, self._content.cap)
        seen[dedup_key] = now
        if len(seen) > recent.cap:
            _bound(seen, recent.cap)
        return False

    def remember(
        self,
        dedup_key: str,
        at: float,
        content_key: str | None = None,
        transport: Transport | None = None,
    ) -> None:
        """Record an identity accepted earlier (restoring state from the store, oldest first)."""
        recent = self._partition(dedup_key)
        seen = recent.shard(dedup_key)
        seen[dedup_key] = at
        _bound(seen, recent.cap)
        if content_key is not None and transport is not None:
            contents = self._content.shard(content_key)
            contents[content_key] = (at, transport._value_)
            _bound(contents, self._content.cap)

    def forget(self, dedup_key: str, content_key: str | None = None) -> None:
        """Un-see an event whose acceptance was rolled back (it will come again)."""
        self._partition(dedup_key).shard(dedup_key).pop(dedup_key, None)
        if content_key is not None:
            self._content.shard(content_key).pop(content_key, None)


def _expire(entries: OrderedDict[str, float], horizon: float) -> None:
    """Drop the entries (oldest first) seen before `horizon`."""
    while entries and next(iter(entries.values())) < horizon:
        entries.popitem(last=False)


def _expire_content(entries: OrderedDict[str, tuple[float, str]], horizon: float) -> None:
    """`_expire` for the content map, whose values are (when, transport)."""
    while entries and next(iter(entries.values()))[0] < horizon:
        entries.popitem(last=False)


def _bound(entries: OrderedDict[str, _V], size: int) -> None:
    """Drop the oldest entries until at most `size` remain."""
    while len(entries) > size:
        entries.popitem(last=False)
