"""The open-loop load generator: its own process, sending on a clock whatever the system does.

Open loop (docs/benchmark.md, "Method"): the schedule (`bench.load.schedule`) is
fixed before the step starts; each event is sent as soon as its scheduled time
has come, whether or not earlier ones were answered. Latency is measured from
the scheduled time, so a stall anywhere (the system, the broker, this
generator) shows in the figures instead of silently slowing the offered load
(the "coordinated omission" of closed-loop generators).

Every PUBLISH is built before the clock starts (`bench.wire.publish_parts`); at
send time only the packet id is spliced in and everything due in one loop
iteration goes out in one write. Waits shorter than 3 ms are a blocking
`time.sleep` (the event loop's timers round up to whole milliseconds, which
would make every send up to 1 ms late); longer ones go through the loop so that
PUBACKs are read meanwhile. Sends are QoS 1 with a window of unacknowledged
PUBLISHes equal to the broker's Receive Maximum (mosquitto's
`max_inflight_messages`); if the window is full the generator waits, and that
wait shows up as lateness: the step result carries the lateness percentiles
(actual minus scheduled send time) so a generator that could not keep up is
reported, not hidden.

The process is driven over a `multiprocessing` pipe: ("step", StepSpec) runs a
step and answers ("done", figures); ("stop",) disconnects and exits.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Final

from bench.load import Population, StepSpec, schedule
from bench.stats import percentiles
from bench.wire import open_wire, publish_parts

__all__ = ["generator_main"]

_WINDOW_CAP: Final = 4096
"""At most this many unacknowledged PUBLISHes, whatever the broker allows."""
_ACK_TIMEOUT_S: Final = 30.0
_COARSE_S: Final = 0.003
"""Waits longer than this go through the event loop; shorter ones are a plain sleep."""
_MARGIN_S: Final = 0.002
"""How much earlier than due a loop wait ends; the rest is a plain sleep."""


class _Window:
    """Free packet ids; waiters wake when a PUBACK frees one."""

    def __init__(self, size: int) -> None:
        self.free = list(range(size, 0, -1))
        self.size = size
        self.waiter: asyncio.Future[None] | None = None
        self.all_free = asyncio.Event()
        self.all_free.set()

    def acked(self, packet_id: int) -> None:
        self.free.append(packet_id)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if len(self.free) == self.size:
            self.all_free.set()

    async def wait_free(self) -> None:
        self.waiter = asyncio.get_running_loop().create_future()
        await self.waiter
        self.waiter = None


async def _step(
    wire_write: Callable[[bytes], None], window: _Window, spec: StepSpec, population: Population
) -> dict[str, object]:
    built = time.time()
    plan = schedule(spec, population)
    times = [p.t for p in plan]
    heads: list[bytes] = []
    tails: list[bytes] = []
    for item in plan:
        head, tail = publish_parts(item.topic, item.payload, 1)
        heads.append(head)
        tails.append(tail)
    ids = [b""] + [struct.pack("!H", n) for n in range(1, window.size + 1)]
    build_s = time.time() - built
    late: list[float] = []
    window_waits = 0
    free = window.free
    count = len(plan)
    index = 0
    if count:
        await asyncio.sleep(max(0.0, times[0] - time.time()))
    started = time.time()
    while index < count:
        now = time.time()
        out: list[bytes] = []
        while index < count and times[index] <= now and free:
            out.append(heads[index])
            out.append(ids[free.pop()])
            out.append(tails[index])
            late.append(now - times[index])
            index += 1
        if out:
            window.all_free.clear()
            wire_write(b"".join(out))
        if index >= count:
            break
        if not free:
            window_waits += 1
            await window.wait_free()
            continue
        delay = times[index] - time.time()
        if delay > _COARSE_S:
            # The loop's timer rounds up to whole milliseconds (epoll) and may be
            # late by a scheduling quantum: wake well before...
            await asyncio.sleep(delay - _MARGIN_S)
        elif delay > 0:
            # ...and sleep the last stretch precisely, then let PUBACKs in.
            time.sleep(delay)  # noqa: ASYNC251 - on purpose, see the module docstring
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(0)
    finished = time.time()
    try:
        await asyncio.wait_for(window.all_free.wait(), _ACK_TIMEOUT_S)
        unacked = 0
    except TimeoutError:
        unacked = window.size - len(window.free)
    lateness = percentiles(x * 1000.0 for x in late)
    return {
        "sent": index,
        "scheduled": count,
        "build_s": round(build_s, 3),
        "send_span_s": round(finished - started, 3),
        "ready_before_t0_s": round(spec.t0 - (built + build_s), 3),
        "lateness_ms": None if lateness is None else lateness.as_dict(),
        "window": window.size,
        "window_waits": window_waits,
        "unacked_at_end": unacked,
    }


async def _serve(
    connection: Connection, host: str, port: int, population: Population, client_id: str
) -> None:
    holder: list[_Window] = []

    def on_puback(packet_id: int) -> None:
        holder[0].acked(packet_id)

    wire, broker_maximum = await open_wire(host, port, client_id, on_puback=on_puback)
    window = _Window(max(1, min(broker_maximum, _WINDOW_CAP)))
    holder.append(window)
    loop = asyncio.get_running_loop()
    connection.send(("ready", {"broker_receive_maximum": broker_maximum}))
    try:
        while True:
            command = await loop.run_in_executor(None, connection.recv)
            if command[0] == "stop":
                break
            if command[0] == "step":
                result = await _step(wire.write, window, command[1], population)
                result["error"] = wire.error
                connection.send(("done", result))
    finally:
        await wire.close()


def generator_main(
    connection: Connection,
    host: str,
    port: int,
    population: Population,
    client_id: str = "bench-generator",
) -> None:
    """Process entry point: connect to the broker, then run steps as the pipe commands."""
    asyncio.run(_serve(connection, host, port, population, client_id))
