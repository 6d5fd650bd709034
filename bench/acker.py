"""The acker: the operators of every police room and centre, acknowledging alarms.

Its own process and its own MQTT connection (`bench.wire`), so that its CPU is
measured and reported apart and the sink's timestamping never waits for it. It
subscribes to `<base>/out/+/+/alarms`; the first time an alarm id arrives (on
whichever sink's topic came first), and if the policy says so, it publishes
`{"alarm_id", "by": "bench", "ts"}` (MessagePack, QoS 1; CONTRACT.md) to
`<base>/ack/<sink_kind>/<sink_id>` of that sink, `delay_s` after receipt (an
operator a few milliseconds after the alarm showed on the console). Each alarm
id is acknowledged at most once; escalated copies are never acknowledged.

Policies (`should_ack`): `all`, `none`, `even` (alarms whose event number is
even: the panic storm's seeded half, `bench.scenarios`).

Commands over the pipe: ("policy", name, delay_s); ("counts",) returns and
resets the counts; ("stop",).
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Final

import msgpack

from bench.wire import open_wire, publish_parts

__all__ = ["POLICIES", "AckDecision", "acker_main", "decide", "should_ack"]

POLICIES: Final = ("all", "none", "even")
_WINDOW_CAP: Final = 1000
_SEEN_CAP: Final = 1_000_000
"""Alarm ids remembered; past this many the memory starts afresh (never in a run)."""


def should_ack(policy: str, number: int) -> bool:
    """Whether an alarm with this event number is acknowledged under `policy`."""
    if policy == "all":
        return True
    if policy == "even":
        return number % 2 == 0
    if policy == "none":
        return False
    raise ValueError(f"unknown ack policy {policy!r}; known: {POLICIES}")


AckDecision = tuple[str, str] | None
"""(ack topic, alarm id), or None: nothing to acknowledge."""


def decide(base: str, policy: str, topic: str, body: object, seen: set[str]) -> AckDecision:
    """Pure: what one alarm message calls for, remembering acknowledged ids in `seen`."""
    if not isinstance(body, dict) or body.get("escalated") is True:
        return None
    alarm_id = body.get("alarm_id")
    event = body.get("event")
    if not isinstance(alarm_id, str) or alarm_id in seen or not isinstance(event, dict):
        return None
    number = event.get("seq", event.get("id"))
    if not isinstance(number, int) or not should_ack(policy, number):
        return None
    parts = topic.split("/")
    # <base>/out/<sink_kind>/<sink_id>/alarms
    if len(parts) < 5 or parts[-1] != "alarms":
        return None
    seen.add(alarm_id)
    return f"{base}/ack/{parts[-3]}/{parts[-2]}", alarm_id


class _Acker:
    def __init__(self, base: str) -> None:
        self.base = base
        self.policy = "all"
        self.delay_s = 0.002
        self.seen: set[str] = set()
        self.free: list[int] = []
        self.pending: deque[bytes] = deque()
        self.write: Callable[[bytes], None] | None = None
        self.counts = {"alarms_seen": 0, "escalated_seen": 0, "acks_sent": 0, "acks_confirmed": 0}
        self.ids = [b""] + [struct.pack("!H", n) for n in range(1, _WINDOW_CAP + 1)]

    def on_publish(self, _now: float, topic: bytes, payload: bytes) -> None:
        try:
            body = msgpack.unpackb(payload, raw=False)
        except (ValueError, msgpack.UnpackException):
            return
        self.counts["alarms_seen"] += 1
        if isinstance(body, dict) and body.get("escalated") is True:
            self.counts["escalated_seen"] += 1
        if len(self.seen) > _SEEN_CAP:
            self.seen.clear()
        found = decide(self.base, self.policy, topic.decode("utf-8", "replace"), body, self.seen)
        if found is None:
            return
        ack_topic, alarm_id = found
        loop = asyncio.get_running_loop()
        loop.call_later(self.delay_s, self._send, ack_topic, alarm_id)

    def _send(self, ack_topic: str, alarm_id: str) -> None:
        payload = msgpack.packb({"alarm_id": alarm_id, "by": "bench", "ts": time.time()})
        head, tail = publish_parts(ack_topic, payload, 1)
        self.pending.append(head)
        self.pending.append(tail)
        self._flush()

    def _flush(self) -> None:
        out: list[bytes] = []
        pending = self.pending
        while pending and self.free:
            out.append(pending.popleft())
            out.append(self.ids[self.free.pop()])
            out.append(pending.popleft())
        if out:
            self.counts["acks_sent"] += len(out) // 3
            assert self.write is not None
            self.write(b"".join(out))

    def on_puback(self, packet_id: int) -> None:
        self.free.append(packet_id)
        self.counts["acks_confirmed"] += 1
        if self.pending:
            self._flush()


async def _serve(connection: Connection, host: str, port: int, base: str) -> None:
    acker = _Acker(base)
    wire, broker_maximum = await open_wire(
        host, port, "bench-acker", on_publish=acker.on_publish, on_puback=acker.on_puback
    )
    acker.free = list(range(max(1, min(broker_maximum, _WINDOW_CAP)), 0, -1))
    acker.write = wire.write
    await wire.subscribe(f"{base}/out/+/+/alarms", qos=1)
    loop = asyncio.get_running_loop()
    connection.send(("ready", {}))
    try:
        while True:
            command = await loop.run_in_executor(None, connection.recv)
            if command[0] == "stop":
                break
            if command[0] == "policy":
                _, policy, delay_s = command
                should_ack(policy, 0)  # an unknown policy fails here, not per message
                acker.policy, acker.delay_s = policy, delay_s
                connection.send(("policy", {}))
            elif command[0] == "counts":
                counts = dict(acker.counts) | {"error": wire.error}
                for key in acker.counts:
                    acker.counts[key] = 0
                connection.send(("counts", counts))
    finally:
        await wire.close()


def acker_main(connection: Connection, host: str, port: int, base: str) -> None:
    """Process entry point: subscribe to every alarms topic, acknowledge per the policy."""
    asyncio.run(_serve(connection, host, port, base))
