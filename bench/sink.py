"""The sink: one subscriber on `<base>/out/#` that timestamps every message on receipt.

It plays every police room and monitoring centre at once. Subscribed at QoS 1,
so the broker neither drops nor reorders what it owes us, and acknowledged at
once (`bench.wire`). During a step it only appends (receipt time, topic,
payload) to a list: decoding waits until the coordinator collects, after the
load, so the sink takes as little CPU as possible from the system under test
while it is measured.

Commands over the pipe: ("wait", owed, quiet_s, max_s) returns once `owed`
messages arrived, or nothing arrived for `quiet_s`, or `max_s` passed;
("collect",) returns every message since the last collect as `Received`
values and forgets them; ("stop",).

What identifies a message (CONTRACT.md, Egress): the dispatched map's
`device_id` and its `event` map's `seq` (phones) or `id` (checkpoints), both
set by the generator to the event's number; `escalated` is kept to tell
escalations apart. A message that cannot be decoded is reported with number -1.
"""

from __future__ import annotations

import asyncio
import time
from multiprocessing.connection import Connection
from typing import Final

import msgpack

from bench.stats import Received
from bench.wire import open_wire

__all__ = ["decode_received", "sink_main"]

_POLL_S: Final = 0.02
_SETTLE_S: Final = 0.3
"""After everything owed arrived, wait this long for duplicates before answering."""


def decode_received(t: float, topic: bytes, payload: bytes) -> Received:
    """One raw message as a `Received` (number -1 when it is not a dispatched map)."""
    topic_text = topic.decode("utf-8", "replace")
    try:
        body = msgpack.unpackb(payload, raw=False)
    except (ValueError, msgpack.UnpackException):
        return Received(t, topic_text, "", -1)
    if not isinstance(body, dict):
        return Received(t, topic_text, "", -1)
    event = body.get("event")
    ident: object = None
    if isinstance(event, dict):
        ident = event.get("seq", event.get("id"))
    try:
        number = int(ident) if isinstance(ident, int | str) else -1
    except ValueError:
        number = -1
    device = body.get("device_id")
    return Received(
        t,
        topic_text,
        device if isinstance(device, str) else "",
        number,
        body.get("escalated") is True,
        _stamp(body.get("ingress_ts")),
        _stamp(body.get("dispatch_ts")),
    )


def _stamp(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


async def _wait(
    records: list[tuple[float, bytes, bytes]], owed: int, quiet_s: float, max_s: float
) -> dict[str, object]:
    started = time.monotonic()
    last_count = len(records)
    last_change = started
    reason = "max"
    while time.monotonic() - started < max_s:
        count = len(records)
        if count != last_count:
            last_count, last_change = count, time.monotonic()
        if count >= owed:
            await asyncio.sleep(_SETTLE_S)
            reason = "complete"
            break
        if time.monotonic() - last_change >= quiet_s:
            reason = "quiet"
            break
        await asyncio.sleep(_POLL_S)
    return {"count": len(records), "reason": reason, "waited_s": time.monotonic() - started}


async def _serve(connection: Connection, host: str, port: int, topic_filter: str) -> None:
    records: list[tuple[float, bytes, bytes]] = []
    append = records.append

    def on_publish(now: float, topic: bytes, payload: bytes) -> None:
        append((now, topic, payload))

    wire, _ = await open_wire(host, port, "bench-sink", on_publish=on_publish)
    await wire.subscribe(topic_filter, qos=1)
    loop = asyncio.get_running_loop()
    connection.send(("ready", {}))
    try:
        while True:
            command = await loop.run_in_executor(None, connection.recv)
            if command[0] == "stop":
                break
            if command[0] == "wait":
                _, owed, quiet_s, max_s = command
                connection.send(("waited", await _wait(records, owed, quiet_s, max_s)))
            elif command[0] == "collect":
                taken = records[:]
                del records[: len(taken)]
                connection.send(("collected", [decode_received(*r) for r in taken]))
    finally:
        await wire.close()


def sink_main(connection: Connection, host: str, port: int, topic_filter: str) -> None:
    """Process entry point: subscribe, then answer the pipe's commands."""
    asyncio.run(_serve(connection, host, port, topic_filter))
