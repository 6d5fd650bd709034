"""Accepted means stored: the bridge between the core's decisions and the durable store.

DESIGN.md, "The way of an event": the shell performs an outcome in order:
outbox append (durable), then the device's acknowledgement, then the
dispatches. `Journal.record(...)` is the first step: it writes the event's
identity (dedup survives restarts), every publish the outcome owes (dispatches,
availability, dead letters) and every alarm it raised or changed, in one group
commit, and only then hands the publishes to the in-memory lanes. The caller
acknowledges the device when `record` returns True; on False (the store cannot be
written) it does not, and the device (or the broker, for MQTT) sends again.

After a restart `recover()` puts back what was pending: dedup identities within
the window, alarms with their escalation deadlines and acknowledgements, and
every publish not yet confirmed, in lane-then-age order. Confirmations
(`delivered`) are written without waiting, gathered once per event-loop turn: if
one is lost in a crash the dispatch is sent again after the restart, and a
consumer sees a duplicate with the same `alarm_id` (CONTRACT.md allows it), never
a loss.

With `store=None` (the benchmark's durability-off mode) nothing is written and
`record` hands the publishes straight to the lanes.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgpack

from devices.events import Event, Transport
from gateway.adapters.outbox import MemoryOutbox, Outgoing
from gateway.adapters.store import (
    AlarmPut,
    Op,
    OutboxAdd,
    OutboxDelivered,
    SeenOp,
    Store,
    StoreUnavailable,
)
from gateway.core.alarms import Alarm
from gateway.core.interception import ACTIVATION_PREFIX, Activation
from gateway.core.pipeline import Core, Dispatch
from gateway.core.records import (
    ACTIVATION_RECORD,
    OPEN_STATES,
    activation_from_record,
    activation_record,
    alarm_from_record,
    alarm_record,
    dispatch_from_record,
    dispatch_record_head,
)
from protocols.payloads import encode, packed_str, with_packed_entries

__all__ = ["Journal", "Recovered"]

_DISPATCH = b"d"
_RAW = b"r"
_BODY = packed_str("body")


@dataclass(frozen=True, slots=True)
class Recovered:
    """What a restart found in the store."""

    seen: int
    alarms: int
    pending: int


class Journal:
    """Writes outcomes durably (when it has a store) and feeds the outbox lanes."""

    def __init__(self, store: Store | None, outbox: MemoryOutbox) -> None:
        self.store = store
        self.outbox = outbox
        self._ids = itertools.count(1)
        self._marks: list[int] = []
        self._marked_at = 0.0

    @property
    def durable(self) -> bool:
        """Whether events are stored before devices are acknowledged."""
        return self.store is not None

    @property
    def writable(self) -> bool:
        """False while the store cannot be written (devices are not acknowledged)."""
        return self.store is None or self.store.writable

    # -- start-up -----------------------------------------------------------------
    def recover(self, core: Core, now: float) -> Recovered:
        """Load dedup identities, alarms and pending publishes back into memory."""
        store = self.store
        if store is None:
            return Recovered(0, 0, 0)
        self._ids = itertools.count(store.max_outbox_id() + 1)
        seen = store.load_seen(now - core.dedup.window_s)
        for row in seen:
            core.dedup.remember(row.key, row.ts, row.content, Transport(row.transport))
        # Open alarms and running activations, and whatever changed within the dedup
        # window (a late second ack still finds its alarm); not the year of history
        # the store keeps for the monthly report.
        alarms = store.load_alarms(OPEN_STATES, updated_since=now - core.dedup.window_s)
        for alarm_row in alarms:
            record = msgpack.unpackb(alarm_row.data, raw=False)
            if record.get("t") == ACTIVATION_RECORD:
                core.interception.restore(activation_from_record(record))
            elif alarm_row.alarm_id.startswith(ACTIVATION_PREFIX):
                core.interception.restore_request(alarm_from_record(record))
            else:
                core.alarms.restore(alarm_from_record(record))
        pending = store.load_pending()
        for out_row in pending:
            if out_row.meta == _DISPATCH:
                dispatch = dispatch_from_record(msgpack.unpackb(out_row.data, raw=False))
                item = Outgoing(out_row.topic, out_row.qos, out_row.retain, dispatch=dispatch)
            else:
                item = Outgoing(out_row.topic, out_row.qos, out_row.retain, payload=out_row.data)
            item.outbox_id = out_row.id
            self.outbox.put(out_row.lane, item)
        return Recovered(len(seen), len(alarms), len(pending))

    # -- the hot path -----------------------------------------------------------------
    async def record(
        self,
        publishes: Sequence[tuple[int, Outgoing]],
        *,
        seen: Iterable[Event] = (),
        alarms: Iterable[Alarm],
        activations: Iterable[Activation] = (),
        now: float,
        urgent: bool = False,
    ) -> bool:
        """Store, then queue `publishes` (lane, item); False if the store refused.

        `seen`: the events whose dedup identities must outlive a restart. One
        call may carry a whole batch of events: one submission, one commit.

        `urgent` (life safety) commits ahead of the pending group: a panic never
        waits behind a backlog of plate reads in the store either.
        """
        store = self.store
        if store is None:
            self._queue(publishes)
            return True
        ops: list[Op] = [
            SeenOp(event.dedup_key, event.content_key, event.transport.value, now) for event in seen
        ]
        # An event's dispatches to its sinks share one body: packed once for all.
        packed: tuple[object, bytes] | None = None
        for lane, item in publishes:
            item.outbox_id = next(self._ids)
            dispatch = item.dispatch
            if dispatch is None:
                ops.append(_raw_add(item, lane, now))
                continue
            if packed is None or packed[0] is not dispatch.body:
                packed = (dispatch.body, encode(dispatch.body))
            ops.append(_dispatch_add(item, dispatch, packed[1], lane, now))
        ops.extend(_alarm_put(alarm, now) for alarm in alarms)
        ops.extend(_activation_put(activation, now) for activation in activations)
        if not ops:
            self._queue(publishes)
            return True
        try:
            await store.submit(ops, urgent=urgent)
        except StoreUnavailable:
            return False
        self._queue(publishes)
        return True

    def delivered(self, item: Outgoing, now: float) -> None:
        """The broker confirmed `item`: mark it done (not waited for).

        Marks are gathered and handed to the store once per event-loop turn:
        one submission for all the confirmations that arrived together.
        """
        if self.store is None or item.outbox_id is None:
            return
        if not self._marks:
            asyncio.get_running_loop().call_soon(self._flush_marks)
        self._marks.append(item.outbox_id)
        self._marked_at = now

    def _flush_marks(self) -> None:
        # One time for the whole turn's marks (they differ by microseconds), so the
        # store writes them with one statement.
        ids, self._marks = self._marks, []
        if self.store is not None and self.store.writable:
            at = self._marked_at
            _quiet(self.store.submit([OutboxDelivered(outbox_id, at) for outbox_id in ids]))

    def _queue(self, publishes: Sequence[tuple[int, Outgoing]]) -> None:
        for lane, item in publishes:
            self.outbox.put(lane, item)


def _dispatch_add(
    item: Outgoing, dispatch: Dispatch, body: bytes, lane: int, now: float
) -> OutboxAdd:
    """The outbox row of a dispatch whose body is already packed.

    The body is packed once: into the stored record here, and onto the wire at
    send time with `dispatch_ts` appended (`Outgoing.payload`).
    """
    assert item.outbox_id is not None
    item.payload = body
    data = with_packed_entries(msgpack.packb(dispatch_record_head(dispatch)), _BODY + body)
    return OutboxAdd(item.outbox_id, lane, item.topic, item.qos, item.retain, data, _DISPATCH, now)


def _raw_add(item: Outgoing, lane: int, now: float) -> OutboxAdd:
    """The outbox row of a raw publish (availability, state, dead letter)."""
    assert item.outbox_id is not None
    return OutboxAdd(
        item.outbox_id, lane, item.topic, item.qos, item.retain, item.payload, _RAW, now
    )


def _alarm_put(alarm: Alarm, now: float) -> AlarmPut:
    data = msgpack.packb(alarm_record(alarm))
    return AlarmPut(alarm.event.alarm_id, data, alarm.state.value, alarm.deadline, now)


def _activation_put(activation: Activation, now: float) -> AlarmPut:
    """An activation's row in the alarms table (its end as the deadline)."""
    data = msgpack.packb(activation_record(activation))
    return AlarmPut(activation.activation_id, data, activation.state.value, activation.until, now)


def _quiet(future: asyncio.Future[None]) -> None:
    """A write nobody waits for: its failure is reported by the store's state, not here."""
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
